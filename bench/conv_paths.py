"""Which 3D-convolution path and which ``jit_compile`` train fastest on the
current Keras backend and device: the measurements behind
`nonlocal_tf.runtime.conv_implementation` and `nonlocal_tf.runtime.jit_compile`.

Every combination of ``conv_implementation`` (``native``: Keras's Conv3D /
MaxPooling3D, with PyTorch's own ops on that backend; ``folded``: 2D
convolutions and matrix products, `nonlocal_tf.layers.VideoConv3D`) and
``jit_compile`` (off / on: XLA on TensorFlow and JAX, ``torch.compile`` on
PyTorch) trains a model with ``train_on_batch`` from host NumPy batches, as
`fit` feeds it; each case in a fresh process. Reported: seconds per step after
the warm-up, and the seconds until the first step returned (tracing and
compilation included).

Models: ``demo`` is `make demo`'s non-local C2D (`nonlocal_tf.demo`: width 4, 8x32x32 clips,
batch 32, its AdamW step); ``i3d`` is I3D-NL5 R50 at width 8 on 8x64x64 clips, batch
4, with the official SGD step (temporal kernels, which the demo lacks).

    KERAS_BACKEND=tensorflow python bench/conv_paths.py
    TF_ENABLE_ONEDNN_OPTS=0 KERAS_BACKEND=tensorflow python bench/conv_paths.py
    KERAS_BACKEND=jax python bench/conv_paths.py --models=demo,i3d
"""

from __future__ import annotations

import itertools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._cases import FLAGS, flags, main  # noqa: E402
from bench._steps import seconds_per_train_on_batch, training_setup  # noqa: E402

IMPLEMENTATIONS = ("native", "folded")
JIT = ("off", "on")
flags.DEFINE_list("models", ["demo", "i3d"], "demo, i3d")
flags.DEFINE_list("implementations", list(IMPLEMENTATIONS), "native, folded")
flags.DEFINE_list("jit", list(JIT), "off, on")
flags.DEFINE_integer("warmup", 3, "Warm-up steps.")
flags.DEFINE_integer("steps", 10, "Timed steps.")
flags.DEFINE_enum("model", "demo", ["demo", "i3d"], "(a case) the model.")
flags.DEFINE_enum("conv_implementation", "native", list(IMPLEMENTATIONS), "(a case)")
flags.DEFINE_enum("jit_compile", "off", list(JIT), "(a case)")


def i3d_step_time(conv_implementation: str, jit_compile: str, warmup: int, steps: int) -> dict:
    """I3D-NL5 R50 (width 8, 8x64x64, batch 4, official SGD step,
    `_steps.training_setup`), timed as `nonlocal_tf.demo.step_time` times the
    demo's model."""
    from nonlocal_tf import training

    started = time.perf_counter()
    model, x, y = training_setup(
        "i3d_nl5_r50_8x8", 8, 64, 4, conv_implementation, jit_compile, width_per_group=8
    )
    training.prepare_for_fit(model, (x[:1], y[:1]))
    float(model.train_on_batch(x, y))
    first = time.perf_counter() - started
    step = seconds_per_train_on_batch(model, x, y, warmup, steps)
    return {"first_step_s": round(first, 2), "step_s": round(step, 4)}


def measure() -> dict:
    import keras

    from nonlocal_tf import demo, runtime

    if FLAGS.model == "demo":
        timing = demo.step_time(
            conv_implementation=FLAGS.conv_implementation,
            jit_compile=FLAGS.jit_compile == "on",
            warmup=FLAGS.warmup,
            steps=FLAGS.steps,
        )
    else:
        timing = i3d_step_time(
            FLAGS.conv_implementation, FLAGS.jit_compile, FLAGS.warmup, FLAGS.steps
        )
    return {
        "model": FLAGS.model,
        "backend": keras.backend.backend(),
        "device": runtime.accelerator(),
        "onednn": runtime.onednn_enabled() if keras.backend.backend() == "tensorflow" else None,
        "conv_implementation": FLAGS.conv_implementation,
        "jit_compile": FLAGS.jit_compile,
        **timing,
    }


def cases():
    for model, implementation, jit in itertools.product(
        FLAGS.models, FLAGS.implementations, FLAGS.jit
    ):
        yield {"model": model, "conv_implementation": implementation, "jit_compile": jit}


COLUMNS = {
    "model": "model",
    "conv_implementation": "conv_implementation",
    "jit_compile": "jit_compile",
    "s/step": "step_s",
    "first step s": "first_step_s",
}

if __name__ == "__main__":
    main(measure, cases, COLUMNS)
