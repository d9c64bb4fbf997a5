"""`model.fit` throughput as users run it, next to the compiled step.

The path of `zoo.train`: uint8 clips from host memory (a generator of NumPy
batches, copied to the device by `fit`), normalised inside the model
(``include_preprocessing=True``), the official SGD step, ``jit_compile`` as
`nonlocal_tf.runtime.jit_compile` chooses, and a progress display:

- ``zoo``: the callbacks `zoo.train` uses (`ProgressBar` and `StopOnNaN` every
  50 steps, `StepBackup` every 100 steps), ``verbose=0``;
- ``verbose1`` / ``verbose2``: Keras's own progress bar / one line per epoch.

Rate: clips/s over the second epoch (the first compiles). ``step`` is the
training step alone on data already on the device (`train_throughput.py`'s
figure: the compiled step back to back on JAX, ``train_on_batch`` elsewhere).
Each case in a fresh process.

    KERAS_BACKEND=jax python bench/fit_throughput.py --models=2 --displays=step,zoo,verbose1,verbose2
    python bench/fit_throughput.py --batch=2 --size=64 --steps=4 --models=0   # small, on CPU
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._cases import FLAGS, flags, main, peak_mib  # noqa: E402
from bench._steps import (  # noqa: E402
    MODELS,
    CompiledSteps,
    seconds_per_call,
    seconds_per_train_on_batch,
    training_setup,
)

DISPLAYS = ("step", "zoo", "verbose1", "verbose2")
flags.DEFINE_list("models", ["2"], "Indices into _steps.MODELS.")
flags.DEFINE_list("displays", list(DISPLAYS), "Which of " + ", ".join(DISPLAYS))
flags.DEFINE_string("dtype", "mixed_bfloat16", "Keras dtype policy.")
flags.DEFINE_integer("batch", 16, "Batch.")
flags.DEFINE_integer("size", 224, "Frame size.")
flags.DEFINE_integer("steps", 60, "Steps per epoch.")
flags.DEFINE_integer("warmup", 3, "Warm-up steps of 'step'.")
flags.DEFINE_bool(
    "cuda_graph",
    False,
    "PyTorch: replay the training step as a CUDA graph (experiment, bench/torch_cuda_graph.py).",
)
flags.DEFINE_integer("model", 2, "(a case) index into MODELS.")
flags.DEFINE_enum("display", "zoo", list(DISPLAYS), "(a case) the progress display.")


def host_batches(batch: int, frames: int, size: int, pool: int = 4):
    """Endless ``(uint8 clips, labels)`` NumPy batches cycling over ``pool``
    distinct ones (host memory, as a decoded input pipeline hands them over)."""
    import numpy as np

    rng = np.random.default_rng(0)
    batches = [
        (
            rng.integers(0, 256, (batch, frames, size, size, 3), dtype=np.uint8),
            rng.integers(0, 400, batch).astype("int32"),
        )
        for _ in range(pool)
    ]
    while True:
        yield from batches


class EpochTimes:
    """Wall time of each epoch; epoch hooks only, so it never syncs a step."""

    def __new__(cls):
        import keras

        class _EpochTimes(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seconds = []

            def on_epoch_begin(self, epoch, logs=None):
                self.started = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(time.perf_counter() - self.started)

        return _EpochTimes()


def display_callbacks(display: str, backup_dir: str):
    from nonlocal_tf import training

    if display != "zoo":
        return [], {"verbose1": 1, "verbose2": 2}[display]
    return [
        training.StepBackup(backup_dir, save_freq=100),
        training.StopOnNaN(every=50),
        training.ProgressBar(every=50),
    ], 0


def measure() -> dict:
    import keras

    from nonlocal_tf import models, runtime, training

    keras.config.set_dtype_policy(FLAGS.dtype)
    label, variant, frames = MODELS[FLAGS.model]
    row = {
        "model": label,
        "display": FLAGS.display,
        "cuda_graph": FLAGS.cuda_graph,
        "backend": keras.backend.backend(),
        "dtype": FLAGS.dtype,
        "batch": FLAGS.batch,
        "size": FLAGS.size,
    }
    if FLAGS.display == "step":
        model, x, y = training_setup(variant, frames, FLAGS.size, FLAGS.batch)
        if FLAGS.cuda_graph:
            from bench.torch_cuda_graph import graph_train_step

            graph_train_step(model, x, y)
        if keras.backend.backend() == "jax":
            seconds = seconds_per_call(CompiledSteps(model, x, y), FLAGS.warmup, FLAGS.steps)
        else:
            seconds = seconds_per_train_on_batch(model, x, y, FLAGS.warmup, FLAGS.steps)
        return {**row, "clips_per_s": round(FLAGS.batch / seconds, 2), "peak_mib": peak_mib()}
    model = models.create_model(
        variant,
        input_shape=(frames, FLAGS.size, FLAGS.size, 3),
        classes=400,
        include_preprocessing=True,
    )
    model.compile(
        optimizer=training.make_optimizer(training.OFFICIAL, 10_000, FLAGS.batch),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
        jit_compile=runtime.jit_compile(),
    )
    if FLAGS.cuda_graph:
        from bench.torch_cuda_graph import graph_train_step

        graph_train_step(model, *next(host_batches(FLAGS.batch, frames, FLAGS.size, pool=1)))
    times = EpochTimes()
    with tempfile.TemporaryDirectory() as backup:
        callbacks, verbose = display_callbacks(FLAGS.display, os.path.join(backup, "b"))
        model.fit(
            host_batches(FLAGS.batch, frames, FLAGS.size),
            epochs=2,
            steps_per_epoch=FLAGS.steps,
            verbose=verbose,
            callbacks=[*callbacks, times],
        )
    return {
        **row,
        "jit_compile": model.jit_compile,
        "clips_per_s": round(FLAGS.batch * FLAGS.steps / times.seconds[1], 2),
        "first_epoch_s": round(times.seconds[0], 1),
        "peak_mib": peak_mib(),
    }


def cases():
    for index in map(int, FLAGS.models):
        for display in FLAGS.displays:
            yield {"model": index, "display": display}


COLUMNS = {
    "model": lambda r: r["model"] if isinstance(r["model"], str) else MODELS[r["model"]][0],
    "display": "display",
    "clips/s": "clips_per_s",
    "peak MiB": "peak_mib",
}

if __name__ == "__main__":
    main(measure, cases, COLUMNS)
