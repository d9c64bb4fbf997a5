"""Exports a model as a SavedModel (signatures: see `nonlocal_tf.export`) and,
with ``--onnx``, as ONNX through Keras's own exporter, checked in onnxruntime.

    python -m zoo.export --model=i3d_nl5_r50_8x8 --weights=i3d_nl5_r50_8x8.k400 --output_dir=export/
"""

from __future__ import annotations

import os

from absl import flags

from zoo import _cli

FLAGS = flags.FLAGS
_cli.define_model_flags()
flags.DEFINE_bool(
    "fully_convolutional", False, "Export the official fully-convolutional test head."
)
flags.DEFINE_string("output_dir", "export", "Output folder.")
flags.DEFINE_bool(
    "onnx",
    False,
    "Also export model.onnx (pip install nonlocal-tf[onnx]) and compare it with "
    "Keras in onnxruntime.",
)
flags.DEFINE_integer(
    "onnx_size", 224, "Frame size of the ONNX model's static input.", lower_bound=32
)


def main(argv) -> int:
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    from nonlocal_tf.export import export_saved_model

    _cli.output_dir(FLAGS.output_dir)
    frames, _ = _cli.clip_of(FLAGS.model)
    kwargs = {
        "include_preprocessing": True,
        "fully_convolutional": FLAGS.fully_convolutional,
        "input_shape": (None, None, None, 3),
    }
    if FLAGS.classes:
        kwargs["classes"] = FLAGS.classes
    model = _cli.build(FLAGS.model, FLAGS.weights, FLAGS.width_per_group, **kwargs)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    path = export_saved_model(model, os.path.join(FLAGS.output_dir, "saved_model"))
    print(f"SavedModel: {path} (signatures serve, serve_uint8, serve_views)")
    if FLAGS.onnx:
        import onnxruntime

        # ONNX wants static clip shapes (the chunked non-local path's loop has no ONNX op).
        static = _cli.architecture(
            FLAGS.model,
            FLAGS.width_per_group,
            **{
                **kwargs,
                "input_shape": (frames, FLAGS.onnx_size, FLAGS.onnx_size, 3),
                "classes": model.get_layer("pred").units,
            },
        )
        static.set_weights(model.get_weights())
        x = np.random.default_rng(0).uniform(
            0, 255, (1, frames, FLAGS.onnx_size, FLAGS.onnx_size, 3)
        )
        x = x.astype("float32")
        want = np.asarray(static(x, training=False))
        onnx_path = os.path.join(FLAGS.output_dir, "model.onnx")
        static.export(onnx_path, format="onnx")
        session = onnxruntime.InferenceSession(onnx_path)
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        print(f"ONNX: {onnx_path}, max difference to Keras {np.abs(got - want).max():.2e}")
    return 0


if __name__ == "__main__":
    _cli.run(main)
