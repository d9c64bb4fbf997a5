"""Training and 30-view test throughput of the video models (Keras, any backend).

Training: clips/s at steady state (after warm-up) of a full SGD Nesterov step,
synthetic data already on the device, and peak device memory. Test: videos/s of
the official 30-view protocol (30 views of 256x256 in one batch through the
fully-convolutional head): on JAX and PyTorch the compiled predict function
called back to back on views already on the device (as `predict` runs it over
many videos), with `predict_on_batch` (which reads each result back) and
`predict` over a generator of host float32 views as extras; on TensorFlow
`predict_on_batch`. Each case runs in a fresh
process.

    KERAS_BACKEND=jax python bench/train_throughput.py --dtype=mixed_bfloat16
    KERAS_BACKEND=jax python bench/train_throughput.py --cases=test --dtype=mixed_bfloat16
    python bench/train_throughput.py --batch=2 --size=64 --steps=3    # small, on CPU
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._cases import FLAGS, flags, main, peak_mib  # noqa: E402
from bench._steps import (  # noqa: E402
    MODELS,
    CompiledPredict,
    CompiledSteps,
    device_arrays,
    seconds_per_call,
    seconds_per_train_on_batch,
    training_setup,
)

flags.DEFINE_list("cases", ["train"], "train, test or train,test")
flags.DEFINE_list("models", ["0", "1", "2", "3"], "Indices into _steps.MODELS.")
flags.DEFINE_string("dtype", "mixed_bfloat16", "Keras dtype policy.")
flags.DEFINE_integer("batch", 16, "Training batch.")
flags.DEFINE_integer("size", 224, "Training frame size.")
flags.DEFINE_integer("test_size", 256, "Test view size.")
flags.DEFINE_integer("warmup", 3, "Warm-up calls.")
flags.DEFINE_integer("steps", 10, "Timed calls.")
flags.DEFINE_enum("conv_implementation", "auto", ["auto", "folded", "native"], "VideoResNet's.")
flags.DEFINE_enum(
    "jit_compile",
    "auto",
    ["auto", "on", "off"],
    "Training: auto = nonlocal_tf.runtime.jit_compile (XLA on JAX, eager on PyTorch).",
)
flags.DEFINE_enum(
    "view_dtype", "uint8", ["uint8", "float32"], "Test views (the pipelines yield uint8)."
)
flags.DEFINE_integer("model", 0, "(a case) index into MODELS.")
flags.DEFINE_enum("mode", "train", ["train", "test"], "(a case) train or test.")


def measure() -> dict:
    import keras
    import numpy as np

    from nonlocal_tf import models, runtime

    keras.config.set_dtype_policy(FLAGS.dtype)
    label, variant, frames = MODELS[FLAGS.model]
    rng = np.random.default_rng(0)
    extra = {}
    if FLAGS.mode == "train":
        model, x, y = training_setup(
            variant, frames, FLAGS.size, FLAGS.batch, FLAGS.conv_implementation, FLAGS.jit_compile
        )
        seconds = seconds_per_train_on_batch(model, x, y, FLAGS.warmup, FLAGS.steps)
        extra["train_on_batch_clips_per_s"] = round(FLAGS.batch / seconds, 2)
        if keras.backend.backend() == "jax":  # the figure reported on JAX
            seconds = seconds_per_call(CompiledSteps(model, x, y), FLAGS.warmup, FLAGS.steps)
        rate = FLAGS.batch / seconds
    else:
        size = FLAGS.test_size
        model = models.create_model(
            variant,
            input_shape=(frames, size, size, 3),
            classes=400,
            fully_convolutional=True,
            include_preprocessing=True,  # views as the pipelines hand them over
            conv_implementation=FLAGS.conv_implementation,
        )
        views = rng.integers(0, 256, (30, frames, size, size, 3)).astype(FLAGS.view_dtype)
        (x,) = device_arrays(views)
        seconds = seconds_per_call(lambda: model.predict_on_batch(x), FLAGS.warmup, FLAGS.steps)
        if keras.backend.backend() != "tensorflow":  # TensorFlow: predict_on_batch is reported
            extra["predict_on_batch_videos_per_s"] = round(1.0 / seconds, 2)
            # `predict` over a generator of host arrays, one video each: as Keras feeds it,
            # and as `nonlocal_tf.evaluation` (zoo.evaluate) does, the next videos copied
            # from a thread. The difference of a long and a short call: no fixed cost.
            from nonlocal_tf import prefetch

            for key, feed in (("keras", iter), ("prefetch", prefetch.to_device)):

                def call(n, feed=feed):
                    return model.predict(feed((views,) for _ in range(n)), verbose=0)

                call(2)  # compiled
                short = seconds_per_call(lambda call=call: call(5), 0, 1)
                long = seconds_per_call(lambda call=call: call(5 + 4 * FLAGS.steps), 0, 1)
                extra[f"predict_host_{key}_videos_per_s"] = round(
                    4 * FLAGS.steps / (long - short), 2
                )
            # the figure reported: the compiled predict function back to back on the device
            seconds = seconds_per_call(CompiledPredict(model, x), FLAGS.warmup, FLAGS.steps)
        rate = 1.0 / seconds
    return {
        "model": label,
        "conv_implementation": FLAGS.conv_implementation,
        "cuda_graphs": runtime.cuda_graphs(),  # PyTorch on a GPU; NONLOCAL_TF_CUDA_GRAPHS=0: eager
        "jit_compile": model.jit_compile if FLAGS.mode == "train" else None,
        "mode": FLAGS.mode,
        "dtype": FLAGS.dtype,
        "backend": keras.backend.backend(),
        "batch": FLAGS.batch if FLAGS.mode == "train" else 30,
        "size": FLAGS.size if FLAGS.mode == "train" else FLAGS.test_size,
        "view_dtype": None if FLAGS.mode == "train" else FLAGS.view_dtype,
        "step_s": round(seconds, 4),
        ("clips_per_s" if FLAGS.mode == "train" else "videos_per_s"): round(rate, 2),
        "peak_mib": peak_mib(),
        **extra,
    }


def cases():
    for mode in FLAGS.cases:
        for index in map(int, FLAGS.models):
            yield {"model": index, "mode": mode}


COLUMNS = {
    "model": lambda r: r.get("model") if isinstance(r.get("model"), str) else MODELS[r["model"]][0],
    "mode": "mode",
    "dtype": lambda r: r.get("dtype", FLAGS.dtype),
    "rate": lambda r: r.get("clips_per_s", r.get("videos_per_s", "")),
    "peak MiB": "peak_mib",
}

if __name__ == "__main__":
    main(measure, cases, COLUMNS)
