"""Writes zoo/MODEL_ZOO.md from the weights catalogue: ``python -m zoo.make_model_zoo``
(``--check``: only say whether the file is up to date, exit 1 if not).

A test fails when the file differs from what this renders."""

from __future__ import annotations

import os

from absl import flags

from nonlocal_tf.pretrained.catalog import DEMO, ENTRIES
from zoo import _cli

flags.DEFINE_bool("check", False, "Write nothing; exit 1 if MODEL_ZOO.md is out of date.")
PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "MODEL_ZOO.md")

HEADER = """# Model zoo

Generated from `nonlocal_tf/pretrained/catalog.py` by `python -m zoo.make_model_zoo`; do not edit.

Load any entry with `nonlocal_tf.create_model("<name>")` (or `--model=<name>` on every `zoo`
command), or pass `weights="<name>"` to the builder named in the table. Sources are downloaded
once, checked, converted once and cached (`$NONLOCAL_TF_HOME`, default `~/.cache/nonlocal_tf`).
Kinetics-400 entries carry the 400 class names in their source's label order
(`nonlocal_tf/pretrained/labels/`). Metrics are the ones the source reports, not measured here.
The official video-nonlocal-net weights are licensed CC-BY-NC 4.0 (non-commercial use only).

"""


def render() -> str:
    lines = [HEADER]
    for dataset in ("Kinetics-400", "ImageNet-1k", DEMO.dataset):
        lines.append(f"## {dataset}\n\n")
        lines.append(
            "| name | builder | frames x rate | crop | top-1 / top-5 | source format | license | sha256 |\n"
            "|---|---|---|---|---|---|---|---|\n"
        )
        for e in (e for e in ENTRIES if e.dataset == dataset):
            metrics = (
                " / ".join(f"{e.metrics[k]:g}" for k in ("top1", "top5") if k in e.metrics) or "n/a"
            )
            sha = e.sha256 or (
                f"{e.sha256_prefix}... (prefix)"
                if e.sha256_prefix
                else "recorded on first download"
            )
            clip = f"{e.frames} x {e.rate}" if dataset != "ImageNet-1k" else "image"
            url = e.url.removeprefix("package://zoo/")  # shipped files: relative to this table
            lines.append(
                f"| `{e.name}` | `{e.builder}` | {clip} | {e.crop} | {metrics} | "
                f"[{e.format}]({url}) | {e.license} | {sha} |\n"
            )
        lines.append("\n")
    lines.append("## Notes\n\n")
    for e in ENTRIES:
        extra = ", ".join(
            f"{k}={v!r}" for k, v in e.builder_kwargs.items() if k != "nonlocal_kwargs"
        )
        nl = dict(e.builder_kwargs.get("nonlocal_kwargs", {}))
        detail = "; ".join(
            p
            for p in (
                e.notes.rstrip("."),
                f"builder arguments: {extra}" if extra else "",
                f"non-local options: {nl}" if nl else "",
                f"mean {e.mean} / std {e.std} (RGB, 0-255)",
                f"metrics: {e.metrics_source}",
            )
            if p
        )
        lines.append(f"- `{e.name}`: {detail}.\n")
    return "".join(lines)


def main(argv) -> int:
    del argv
    from nonlocal_tf import files

    text = render()
    with open(PATH, encoding="utf-8") as f:
        current = f.read()
    if flags.FLAGS.check:
        print(f"{PATH} is {'up to date' if current == text else 'out of date'}")
        return 0 if current == text else 1
    if current == text:
        print(f"nothing to do: {PATH} is up to date")
        return 0
    with files.atomic_path(PATH) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    _cli.run(main)
