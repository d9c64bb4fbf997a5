"""Converts a checkpoint to a Keras ``.weights.h5`` and prints the mapping.

    python -m zoo.convert --model=i3d_nl5_r50_8x8.k400 --output_dir=converted/
    python -m zoo.convert --source=I3D_NLN_8x8_R50.pyth --model=i3d_nl5_r50_8x8 \\
        --builder_kwargs='{"stem_pool_padding": true}' --output_dir=converted/

``--model`` is a catalogue entry (its source is downloaded unless ``--source``
is given) or a builder of `nonlocal_tf.models` (then ``--source`` is required).
``--source`` is a local file or a URL (Caffe2 .pkl, PySlowFast .pyth,
mmaction2 or torchvision .pth).
"""

from __future__ import annotations

import json
import os

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "source", None, "Checkpoint path or URL; default: the catalogue entry's source."
)
flags.DEFINE_string("model", None, "Catalogue entry (arch.tag) or builder name.", required=True)
flags.DEFINE_string("output_dir", ".", "Where to write <name>.weights.h5.")
flags.DEFINE_string(
    "format", None, "Source format (caffe2_pkl, pyslowfast_pyth, mmaction2_pth, torchvision_pth)."
)
flags.DEFINE_string("builder_kwargs", "{}", "JSON object of extra builder arguments.")
flags.DEFINE_integer(
    "classes", None, "Classifier size when --model is a builder; default: the checkpoint's."
)
flags.DEFINE_bool("strict", True, "Fail on any unmatched blob, missing weight or shape mismatch.")


def main(argv) -> int:
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from nonlocal_tf import models, weights
    from zoo import _cli

    _cli.output_dir(FLAGS.output_dir)
    builders = {**models.VARIANTS, **models.IMAGE_VARIANTS}
    try:
        kwargs = json.loads(FLAGS.builder_kwargs)
    except json.JSONDecodeError as exc:
        raise app.UsageError(f"--builder_kwargs is not JSON: {exc}") from exc
    if FLAGS.model in weights.CATALOG:
        entry = weights.CATALOG[FLAGS.model]
        source = FLAGS.source or weights.source_path(entry)
        fmt = FLAGS.format or (entry.format if FLAGS.source is None else None)
        model = entry.build(**kwargs)
        print(f"{entry.name}: license {entry.license}")
    elif FLAGS.model in builders:
        if not FLAGS.source:
            raise app.UsageError(
                "--source is required when --model is a builder, not a catalogue entry."
            )
        source, fmt = FLAGS.source, FLAGS.format
        if FLAGS.classes:
            kwargs["classes"] = FLAGS.classes
        model = builders[FLAGS.model](**kwargs)
    else:
        raise app.UsageError(
            f"Unknown --model {FLAGS.model!r}: neither a catalogue entry nor a builder "
            f"({', '.join(sorted(builders))})."
        )
    if source.startswith(("http://", "https://", "file://")):
        source = weights.fetch(source)
    blobs = weights.read_blobs(source, fmt)
    if "classes" not in kwargs and "pred_w" in blobs and FLAGS.model not in weights.CATALOG:
        model = builders[FLAGS.model](**kwargs, classes=int(blobs["pred_w"].shape[0]))
    report = weights.assign_blobs(model, blobs, strict=FLAGS.strict)
    out = os.path.join(FLAGS.output_dir, f"{FLAGS.model}.weights.h5")
    model.save_weights(out)
    print(report.summary())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    from zoo import _cli

    _cli.run(main)
