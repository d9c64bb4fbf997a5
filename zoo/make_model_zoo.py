"""Writes zoo/MODEL_ZOO.md from the weights catalogue: ``python -m zoo.make_model_zoo``.

A test fails when the file differs from what this renders."""

from __future__ import annotations

import os

from nonlocal_tf.pretrained.catalog import DEMO, ENTRIES

HEADER = """# Model zoo

Generated from `nonlocal_tf/pretrained/catalog.py` by `python -m zoo.make_model_zoo`; do not edit.

Load any entry with `nonlocal_tf.pretrained.load_model("<name>")`, or pass `weights="<name>"` to
the builder named in the table. Sources are downloaded once, checked, converted once and cached
(`$NONLOCAL_TF_HOME`, default `~/.cache/nonlocal_tf`). Metrics are the ones the source reports,
not measured here. The official video-nonlocal-net weights are licensed CC-BY-NC 4.0
(non-commercial use only).

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


def main() -> None:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "MODEL_ZOO.md")
    with open(path, "w") as f:
        f.write(render())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
