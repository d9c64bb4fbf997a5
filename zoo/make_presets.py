"""Converts catalogue entries into presets in keras-hub's format, ready to upload.

    python -m zoo.make_presets --models=i3d_nl5_r50_8x8.k400,c2d_r50_8x8.k400 --output_dir=presets/
    python -m zoo.make_presets --models=all --output_dir=presets/

Each entry's source checkpoint is downloaded and verified (sha256), converted
afresh, written as ``<output_dir>/<entry>/`` (`nonlocal_tf.pretrained.save_to_preset`:
``config.json``, ``model.weights.h5``, ``metadata.json`` with the entry, class
names, the source's sha256 and the conversion report), then loaded back
(`from_preset`) and its logits compared with those of the converted source
checkpoint on a generated clip; a preset that differs is removed and the
command fails. Presets already made from the same source are kept. Upload one
with ``keras_hub.upload_preset("hf://<user>/<name>", "presets/<entry>")``.
"""

from __future__ import annotations

import os
import shutil

from absl import app, flags

from zoo import _cli

FLAGS = flags.FLAGS
flags.DEFINE_list("models", None, "Catalogue entries, or 'all'.", required=True)
flags.DEFINE_string("output_dir", None, "Where the preset folders go.", required=True)
flags.DEFINE_float(
    "tolerance", 1e-5, "Largest |logit difference| allowed, relative to the largest logit."
)


def make_preset(entry, folder: str, tolerance: float = 1e-5) -> dict:
    """``entry`` converted from its source and written as a preset in
    ``folder``, then checked: loaded back, its logits against the converted
    checkpoint's. Returns a report row; raises ValueError (after removing the
    preset) if the logits differ by more than ``tolerance`` of the largest."""
    import numpy as np
    from keras import ops

    from nonlocal_tf import pretrained

    _, digest = pretrained.verified_source(entry)
    if _made_from(folder, digest):
        return {"entry": entry.name, "folder": folder, "status": "kept (same source)"}
    model, digest, report = pretrained.converted(entry, cached=False)
    if os.path.exists(folder):
        shutil.rmtree(folder)
    pretrained.save_to_preset(
        model,
        folder,
        entry=entry,
        source={"url": entry.url, "sha256": digest},
        conversion=report.summary() if report is not None else None,
    )
    # Logits (no softmax) of both, on one clip of the entry's size.
    reference = entry.build(classifier_activation=None)
    reference.set_weights(model.get_weights())
    loaded = pretrained.from_preset(folder, classifier_activation=None)
    x = _clip(reference, entry)
    want = ops.convert_to_numpy(reference(x, training=False))
    got = ops.convert_to_numpy(loaded(x, training=False))
    difference = float(np.abs(got - want).max())
    scale = max(float(np.abs(want).max()), 1e-12)
    if not difference <= tolerance * scale:
        shutil.rmtree(folder)
        raise ValueError(
            f"{entry.name}: the preset's logits differ from the converted checkpoint's by "
            f"{difference:.3g} (largest logit {scale:.3g}); preset removed."
        )
    size = sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder))
    return {
        "entry": entry.name,
        "folder": folder,
        "status": f"made, {size / 2**20:.1f} MiB, max |logit difference| {difference:.2g}",
        "sha256": digest,
    }


def _made_from(folder: str, digest: str) -> bool:
    from nonlocal_tf import pretrained

    if not pretrained.is_preset(folder):
        return False
    try:
        source = pretrained.preset_metadata(folder)["nonlocal_tf"]["source"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(source, dict) and source.get("sha256") == digest


def _clip(model, entry):
    """A generated clip (or image) of the entry's input size, pixels in [0, 255]."""
    import numpy as np

    dims = [d if d is not None else entry.crop for d in model.input_shape[1:-1]]
    return np.random.default_rng(0).uniform(0, 255, (1, *dims, 3)).astype("float32")


def main(argv) -> int:
    del argv
    import math

    from nonlocal_tf import pretrained

    if not math.isfinite(FLAGS.tolerance) or FLAGS.tolerance < 0:
        raise app.UsageError(f"--tolerance must be a number >= 0. Received: {FLAGS.tolerance}")
    if not FLAGS.models:
        raise app.UsageError("--models is empty: name catalogue entries, or 'all'.")
    names = sorted(pretrained.CATALOG) if FLAGS.models == ["all"] else FLAGS.models
    unknown = [n for n in names if n not in pretrained.CATALOG]
    if unknown:
        raise app.UsageError(
            f"--models: not catalogue entries: {unknown}; known: {', '.join(sorted(pretrained.CATALOG))}"
        )
    folder = _cli.output_dir(FLAGS.output_dir)
    with _cli.hold_output_dir(folder):
        for name in names:
            entry = pretrained.CATALOG[name]
            row = make_preset(entry, os.path.join(folder, name), FLAGS.tolerance)
            print(f"{name}: {row['status']} -> {row['folder']}  (license {entry.license})")
    return 0


if __name__ == "__main__":
    _cli.run(main)
