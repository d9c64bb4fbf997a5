"""`model.fit` throughput as users run it, on one GPU or several, next to the
compiled step.

The path of `zoo.train`: uint8 clips from host memory (a generator of NumPy
batches), normalised inside the model (``include_preprocessing=True``), the
official SGD step, ``jit_compile`` as `nonlocal_tf.runtime.jit_compile`
chooses, and a progress display:

- ``zoo``: the callbacks `zoo.train` uses (`ProgressBar` and `StopOnNaN` every
  50 steps, `StepBackup` every 100 steps), ``verbose=0``;
- ``verbose1`` / ``verbose2``: Keras's own progress bar / one line per epoch;
- ``step``: the training step alone on data already on the devices (the
  compiled step back to back on JAX, the batch split over the GPUs as `fit`
  splits it; ``train_on_batch`` elsewhere, one device).

Several GPUs (JAX): ``--gpus=1,2`` runs each case on the first 1 and 2 GPUs,
``--batch`` clips per GPU, with `keras.distribution.DataParallel`
(`nonlocal_tf.training.distribute`), as one process (``--processes=1``) or one
process per GPU joined by ``jax.distributed`` (``--processes=per_gpu``, the
code path of several hosts). ``--prefetch`` feeds `fit` through
`prefetch.to_device`, as `zoo.train` does; ``--noprefetch``
hands Keras the host batches (its own copy in the training loop).

Rate: clips/s over the second epoch (the first compiles). Each case in a fresh
process (and its processes' own).

    KERAS_BACKEND=jax python bench/fit_throughput.py --models=2 --displays=step,zoo,verbose1,verbose2
    KERAS_BACKEND=jax python bench/fit_throughput.py --models=0,2 --displays=zoo --gpus=1,2
    python bench/fit_throughput.py --batch=2 --size=64 --steps=4 --models=0   # small, on CPU
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
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
flags.DEFINE_list("gpus", [], "GPU counts to compare (JAX), e.g. 1,2; empty: the default device.")
flags.DEFINE_enum("processes", "1", ["1", "per_gpu"], "One process, or one per GPU.")
flags.DEFINE_bool("prefetch", True, "Feed fit through prefetch.to_device.")
flags.DEFINE_string("dtype", "mixed_bfloat16", "Keras dtype policy.")
flags.DEFINE_integer("batch", 16, "Clips per GPU.")
flags.DEFINE_integer("size", 224, "Frame size.")
flags.DEFINE_integer("steps", 60, "Steps per epoch.")
flags.DEFINE_integer("warmup", 3, "Warm-up steps of 'step'.")
flags.DEFINE_integer("model", 2, "(a case) index into MODELS.")
flags.DEFINE_enum("display", "zoo", list(DISPLAYS), "(a case) the progress display.")
flags.DEFINE_integer("gpu_count", 0, "(a case) GPUs to use; 0: the default device.")
flags.DEFINE_integer("process_index", -1, "(a process of a case) its index.")
flags.DEFINE_integer("port", 0, "(a process of a case) the coordinator's port.")


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
    """The display's callbacks; on several processes all of them run the
    callbacks (their model reads are collectives), only process 0 writes."""
    from nonlocal_tf import training
    from nonlocal_tf.training import distribute

    chief = distribute.is_chief()
    if display != "zoo":
        return [], {"verbose1": 1, "verbose2": 2}[display] if chief else 0
    return [
        training.StepBackup(backup_dir, save_freq=100, write=chief),
        training.StopOnNaN(every=50),
        training.ProgressBar(every=50, display=chief),
    ], 0


def _spawn_processes() -> dict:
    """Runs this case as one process per GPU; returns process 0's row."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = [sys.executable, os.path.abspath(sys.argv[0]), *sys.argv[1:], f"--port={port}"]
    procs = [
        subprocess.Popen(
            [*base, f"--process_index={i}"],
            env={**os.environ, "CUDA_VISIBLE_DEVICES": str(i)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(FLAGS.gpu_count)
    ]
    outputs = [p.communicate(timeout=FLAGS.timeout) for p in procs]
    found = [ln for ln in outputs[0][0].splitlines() if ln.startswith("RESULT ")]
    if not found:
        raise RuntimeError(" | ".join(outputs[0][1].strip().splitlines()[-3:]))
    return json.loads(found[-1][len("RESULT ") :])


def measure() -> dict:
    per_gpu = FLAGS.processes == "per_gpu" and FLAGS.gpu_count > 1
    if per_gpu and FLAGS.process_index < 0:
        return _spawn_processes()
    if FLAGS.gpu_count and not per_gpu:  # before JAX starts
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, range(FLAGS.gpu_count)))
    import keras

    from nonlocal_tf import models, prefetch, runtime, training
    from nonlocal_tf.training import distribute

    processes = 1
    if per_gpu:
        _, processes = distribute.initialize(
            f"127.0.0.1:{FLAGS.port}", FLAGS.gpu_count, FLAGS.process_index
        )
    replicas = distribute.data_parallel() if FLAGS.gpu_count > 1 else 1
    keras.utils.set_random_seed(0)  # the same initial weights in every process
    keras.config.set_dtype_policy(FLAGS.dtype)
    label, variant, frames = MODELS[FLAGS.model]
    global_batch = FLAGS.batch * replicas
    row = {
        "model": label,
        "display": FLAGS.display,
        "gpus": FLAGS.gpu_count or None,
        "processes": processes,
        "prefetch": FLAGS.prefetch,
        "cuda_graphs": runtime.cuda_graphs(),  # PyTorch on a GPU; NONLOCAL_TF_CUDA_GRAPHS=0: eager
        "backend": keras.backend.backend(),
        "dtype": FLAGS.dtype,
        "global_batch": global_batch,
        "size": FLAGS.size,
    }
    if FLAGS.display == "step":
        if replicas > 1 and keras.backend.backend() != "jax":
            raise ValueError("display 'step' times several GPUs on JAX only")
        model, x, y = training_setup(variant, frames, FLAGS.size, global_batch)
        if keras.backend.backend() == "jax":
            seconds = seconds_per_call(CompiledSteps(model, x, y), FLAGS.warmup, FLAGS.steps)
        else:
            seconds = seconds_per_train_on_batch(model, x, y, FLAGS.warmup, FLAGS.steps)
        return {**row, "clips_per_s": round(global_batch / seconds, 2), "peak_mib": peak_mib()}
    model = models.create_model(
        variant,
        input_shape=(frames, FLAGS.size, FLAGS.size, 3),
        classes=400,
        include_preprocessing=True,
    )
    model.compile(
        optimizer=training.make_optimizer(training.OFFICIAL, 10_000, global_batch),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
        jit_compile=runtime.jit_compile(),
    )
    local_batch = global_batch // processes
    training.prepare_for_fit(model, next(host_batches(1, frames, FLAGS.size, pool=1)))
    batches = host_batches(local_batch, frames, FLAGS.size)
    if FLAGS.prefetch:
        batches = prefetch.to_device(batches)
    times = EpochTimes()  # first: its epoch ends before the epoch-end backup is written
    with tempfile.TemporaryDirectory() as backup:
        callbacks, verbose = display_callbacks(FLAGS.display, os.path.join(backup, "b"))
        model.fit(
            batches,
            epochs=2,
            steps_per_epoch=FLAGS.steps,
            verbose=verbose,
            callbacks=[times, *callbacks],
        )
        backup_s = None
        if FLAGS.display == "zoo":  # what one backup of the training state costs
            started = time.perf_counter()
            callbacks[0].save()
            backup_s = round(time.perf_counter() - started, 2)
    return {
        **row,
        "jit_compile": model.jit_compile,
        "clips_per_s": round(global_batch * FLAGS.steps / times.seconds[1], 2),
        "first_epoch_s": round(times.seconds[0], 1),
        "backup_s": backup_s,
        "peak_mib": peak_mib(),
    }


def cases():
    for index in map(int, FLAGS.models):
        for display in FLAGS.displays:
            for gpus in map(int, FLAGS.gpus or ["0"]):
                yield {"model": index, "display": display, "gpu_count": gpus}


COLUMNS = {
    "model": lambda r: r["model"] if isinstance(r["model"], str) else MODELS[r["model"]][0],
    "display": "display",
    "GPUs (processes)": lambda r: (
        f"{r.get('gpus') or r.get('gpu_count') or '-'} ({r.get('processes', '')})"
    ),
    "global batch": "global_batch",
    "clips/s": "clips_per_s",
    "peak MiB": "peak_mib",
}

if __name__ == "__main__":
    main(measure, cases, COLUMNS)
