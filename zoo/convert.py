"""Converts a checkpoint to a Keras ``.weights.h5`` and prints the mapping.

    python -m zoo.convert --model=i3d_nl5_r50_8x8.k400 --output_dir=converted/
    python -m zoo.convert --source=I3D_NLN_8x8_R50.pyth --model=i3d_nl5_r50_8x8 \\
        --builder_kwargs='{"stem_pool_padding": true}' --output_dir=converted/

``--model`` is a catalogue entry (its source is downloaded unless ``--source``
is given) or a named model of `nonlocal_tf.models` (``VARIANTS`` or
``IMAGE_VARIANTS``; then ``--source`` is required).
``--source`` is a local file or a URL (Caffe2 .pkl, PySlowFast .pyth,
mmaction2 or torchvision .pth).
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from zoo import _cli

FLAGS = flags.FLAGS
_cli.define_model_flags(weights=False)
flags.DEFINE_string(
    "source", None, "Checkpoint path or URL; default: the catalogue entry's source."
)
flags.DEFINE_string("output_dir", ".", "Where to write <model>.weights.h5.")
flags.DEFINE_string(
    "format", None, "Source format (caffe2_pkl, pyslowfast_pyth, mmaction2_pth, torchvision_pth)."
)
flags.DEFINE_string("builder_kwargs", "{}", "JSON object of extra builder arguments.")
flags.DEFINE_bool("strict", True, "Fail on any unmatched blob, missing weight or shape mismatch.")


def main(argv) -> int:
    del argv
    from nonlocal_tf import files, pretrained, weights

    _cli.output_dir(FLAGS.output_dir)
    try:
        kwargs = json.loads(FLAGS.builder_kwargs)
    except json.JSONDecodeError as exc:
        raise app.UsageError(f"--builder_kwargs is not JSON: {exc}") from None
    if FLAGS.classes:
        kwargs["classes"] = FLAGS.classes
    kind = _cli.model_info().kind  # an unknown --model is a usage error here
    if kind not in ("variant", "entry"):
        raise app.UsageError(
            f"--model must be a named model or a catalogue entry (a {kind} holds converted "
            "weights already)."
        )
    entry = pretrained.CATALOG.get(FLAGS.model)
    if entry is None and not FLAGS.source:
        raise app.UsageError("--source is required when --model is not a catalogue entry.")
    source = FLAGS.source or pretrained.source_path(entry)
    fmt = FLAGS.format or (entry.format if entry is not None and not FLAGS.source else None)
    if source.startswith(("http://", "https://", "file://")):
        source = weights.fetch(source)
    blobs = weights.read_blobs(source, fmt)
    if entry is None and "classes" not in kwargs and "pred_w" in blobs:
        kwargs["classes"] = int(blobs["pred_w"].shape[0])  # the checkpoint's head
    if FLAGS.width_per_group:
        kwargs.setdefault("width_per_group", FLAGS.width_per_group)
    model = pretrained.create_model(FLAGS.model, weights=None, **kwargs)
    if entry is not None:
        print(f"{entry.name}: license {entry.license}")
    report = weights.assign_blobs(model, blobs, strict=FLAGS.strict)
    out = os.path.join(FLAGS.output_dir, f"{FLAGS.model}.weights.h5")
    with files.atomic_path(out) as tmp:
        model.save_weights(tmp)
    print(report.summary())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    _cli.run(main)
