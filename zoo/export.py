"""Exports a model as a SavedModel (signatures: see `nonlocal_tf.export`) and,
for one clip shape, as ONNX (``--onnx``) and TFLite (``--tflite=float32,
float16,dynamic_int8``); each file is run on generated clips next to the Keras
model (largest probability difference, top-1 agreement) and timed per clip.

    python -m zoo.export --model=i3d_nl5_r50_8x8.k400 --output_dir=export/
    python -m zoo.export --model=runs/my_run --output_dir=export/
    python -m zoo.export --model=reappear_c2d_nl5_r50.demo --onnx --tflite=float32,dynamic_int8 \\
        --clip_size=32 --output_dir=export/

``--model``: any model `nonlocal_tf.create_model` takes; its class names go into
every file (the SavedModel's ``assets/class_names.txt`` and ``top_class``
output, ONNX ``metadata_props``, TFLite metadata).
"""

from __future__ import annotations

import json
import os
import time
import warnings

from absl import app, flags

from zoo import _cli

FLAGS = flags.FLAGS
_cli.define_model_flags()
flags.DEFINE_bool(
    "fully_convolutional", False, "Export the official fully-convolutional test head."
)
flags.DEFINE_string("output_dir", "export", "Output folder.")
flags.DEFINE_bool(
    "onnx", False, "Also write model.onnx (pip install nonlocal-tf[onnx]) and check it."
)
flags.DEFINE_list(
    "tflite", [], "Also write model_<q>.tflite for these of float32, float16, dynamic_int8."
)
flags.DEFINE_integer(
    "clip_size", 224, "Frame size of the ONNX / TFLite models' fixed input.", lower_bound=8
)
flags.DEFINE_alias("onnx_size", "clip_size")
flags.DEFINE_integer(
    "check_clips", 8, "Generated clips each file is checked and timed on.", lower_bound=1
)
flags.DEFINE_bool("verbose", False, "Show TensorFlow's and the converters' log lines.")


def check(name: str, run, clips, want) -> dict:
    """``run(clip) -> probs`` against the Keras ``want``: largest difference
    of the probabilities and of their logarithms (the relative error, which
    stays visible when an untrained model's probabilities are all near
    ``1 / classes``), top-1 agreement, median seconds per clip (after one
    warm-up call)."""
    import numpy as np

    run(clips[:1])
    got, seconds = [], []
    for clip in clips:
        started = time.perf_counter()
        got.append(np.asarray(run(clip[None]), np.float32)[0])
        seconds.append(time.perf_counter() - started)
    got = np.stack(got)
    log_got, log_want = np.log(np.maximum(got, 1e-30)), np.log(np.maximum(want, 1e-30))
    return {
        "format": name,
        "max_abs_difference": float(np.abs(got - want).max()),
        "max_log_difference": float(np.abs(log_got - log_want).max()),
        "top1_agreement": float(np.mean(got.argmax(-1) == want.argmax(-1))),
        "ms_per_clip": round(1000 * float(np.median(seconds)), 2),
    }


def edge_files(model, kwargs: dict, frames: int) -> list[dict]:
    """The ONNX and TFLite files asked for, each checked and timed."""
    import numpy as np
    import tensorflow as tf

    from nonlocal_tf import export

    size = FLAGS.clip_size
    static = _cli.create_model(
        **{
            **kwargs,
            "input_shape": (frames, size, size, 3),
            "classes": model.get_layer("pred").units,
        }
    )
    static.set_weights(model.get_weights())
    static.info = model.info
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (FLAGS.check_clips, frames, size, size, 3)).astype("float32")
    want = np.asarray(static.predict(clips, batch_size=1, verbose=0), np.float32)
    saved = tf.saved_model.load(os.path.join(FLAGS.output_dir, "saved_model"))
    rows = [check("SavedModel", lambda x: saved.serve(tf.constant(x))["probs"], clips, want)]
    if FLAGS.onnx:
        import onnxruntime

        path = export.export_onnx(static, os.path.join(FLAGS.output_dir, "model.onnx"))
        session = onnxruntime.InferenceSession(path)
        name = session.get_inputs()[0].name
        rows.append(check("ONNX Runtime", lambda x: session.run(None, {name: x})[0], clips, want))
        rows[-1]["file"] = path
    tflite = {q: os.path.join(FLAGS.output_dir, f"model_{q}.tflite") for q in FLAGS.tflite}
    if tflite:
        export.export_tflite_files(static, tflite)
    for quantization, path in tflite.items():
        interpreter = tf.lite.Interpreter(model_path=path, num_threads=os.cpu_count())
        interpreter.allocate_tensors()
        source, result = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

        def run(x, interpreter=interpreter, source=source, result=result):
            interpreter.set_tensor(source["index"], x)
            interpreter.invoke()
            return interpreter.get_tensor(result["index"])

        rows.append(check(f"TFLite {quantization}", run, clips, want))
        rows[-1]["file"] = path
    for row in rows:
        if "file" in row:
            row["megabytes"] = round(os.path.getsize(row["file"]) / 2**20, 2)
    return rows


def quiet() -> None:
    """TensorFlow's, tf2onnx's and absl's INFO lines off (``--verbose`` keeps them)."""
    import logging

    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    for name in ("tensorflow", "tf2onnx", "keras"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # tf.lite.Interpreter's notice that it moves to ai_edge_litert (used to check the file)
    warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")


def check_extras() -> None:
    """The packages the asked-for formats need, before any work."""
    missing = []
    if FLAGS.onnx:
        for module in ("tf2onnx", "onnx", "onnxruntime"):
            try:
                __import__(module)
            except ImportError:
                missing.append(module)
    if missing:
        raise app.UsageError(f"--onnx needs {', '.join(missing)}: pip install 'nonlocal-tf[onnx]'.")


def main(argv) -> int:
    del argv
    from nonlocal_tf import export, files

    _cli.output_dir(FLAGS.output_dir)
    bad = sorted(set(FLAGS.tflite) - set(export.QUANTIZATIONS))
    if bad:
        raise app.UsageError(f"--tflite takes {', '.join(export.QUANTIZATIONS)}. Received: {bad}")
    check_extras()
    if not FLAGS.verbose:
        quiet()
    info = _cli.model_info()
    frames = info.frames
    kwargs = {
        "include_preprocessing": True,
        "fully_convolutional": FLAGS.fully_convolutional,
        "input_shape": (None, None, None, 3),
    }
    model = _cli.create_model(**kwargs)
    path = export.export_saved_model(model, os.path.join(FLAGS.output_dir, "saved_model"))
    names = export.class_names_of(model)
    print(
        f"SavedModel: {path} (signatures serve, serve_uint8, serve_views; "
        f"{len(names)} classes: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
    )
    if FLAGS.onnx or FLAGS.tflite:
        rows = edge_files(model, kwargs, frames)
        print(
            f"\nclips of {frames}x{FLAGS.clip_size}x{FLAGS.clip_size}, {FLAGS.check_clips} checked:"
        )
        print(
            "| format | MB | max abs. difference | max log difference | top-1 agreement | ms per clip |"
        )
        print("|---|---|---|---|---|---|")
        for row in rows:
            print(
                f"| {row['format']} | {row.get('megabytes', '')} | {row['max_abs_difference']:.2e} "
                f"| {row['max_log_difference']:.2e} | {row['top1_agreement']:.2f} | {row['ms_per_clip']} |"
            )
        files.write_json(os.path.join(FLAGS.output_dir, "edge_report.json"), rows)
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    _cli.run(main)
