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

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._cases import case_command, report, run_case  # noqa: E402
from bench.train_throughput import (  # noqa: E402
    MODELS,
    CompiledSteps,
    _peak_mib,
    seconds_per_call,
    seconds_per_train_on_batch,
    training_setup,
)

DISPLAYS = ("step", "zoo", "verbose1", "verbose2")


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


def measure(args) -> dict:
    import keras

    from nonlocal_tf import models, runtime, training

    keras.config.set_dtype_policy(args.dtype)
    label, variant, frames = MODELS[args.model]
    row = {
        "model": label,
        "display": args.display,
        "cuda_graph": args.cuda_graph,
        "backend": keras.backend.backend(),
        "dtype": args.dtype,
        "batch": args.batch,
        "size": args.size,
    }
    if args.display == "step":
        model, x, y = training_setup(variant, frames, args.size, args.batch)
        if args.cuda_graph:
            from bench.torch_cuda_graph import graph_train_step

            graph_train_step(model, x, y)
        if keras.backend.backend() == "jax":
            seconds = seconds_per_call(CompiledSteps(model, x, y), args.warmup, args.steps)
        else:
            seconds = seconds_per_train_on_batch(model, x, y, args.warmup, args.steps)
        return {**row, "clips_per_s": round(args.batch / seconds, 2), "peak_mib": _peak_mib()}
    model = models.create_model(
        variant,
        input_shape=(frames, args.size, args.size, 3),
        classes=400,
        include_preprocessing=True,
    )
    model.compile(
        optimizer=training.make_optimizer(training.OFFICIAL, 10_000, args.batch),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
        jit_compile=runtime.jit_compile(),
    )
    if args.cuda_graph:
        from bench.torch_cuda_graph import graph_train_step

        graph_train_step(model, *next(host_batches(args.batch, frames, args.size, pool=1)))
    times = EpochTimes()
    with tempfile.TemporaryDirectory() as backup:
        callbacks, verbose = display_callbacks(args.display, os.path.join(backup, "b"))
        model.fit(
            host_batches(args.batch, frames, args.size),
            epochs=2,
            steps_per_epoch=args.steps,
            verbose=verbose,
            callbacks=[*callbacks, times],
        )
    return {
        **row,
        "jit_compile": model.jit_compile,
        "clips_per_s": round(args.batch * args.steps / times.seconds[1], 2),
        "first_epoch_s": round(times.seconds[0], 1),
        "peak_mib": _peak_mib(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", default="2", help="indices into train_throughput.MODELS")
    parser.add_argument("--displays", default=",".join(DISPLAYS))
    parser.add_argument("--dtype", default="mixed_bfloat16")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=60, help="steps per epoch")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up steps of 'step'")
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument(
        "--cuda_graph",
        action="store_true",
        help="PyTorch: replay the training step as a CUDA graph (experiment, bench/torch_cuda_graph.py)",
    )
    parser.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--display", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        report(measure(args))
        return
    rows = []
    for index in (int(i) for i in args.models.split(",")):
        for display in args.displays.split(","):
            cmd = case_command(__file__, args, model=index, display=display)
            row = {"model": MODELS[index][0], "display": display, "dtype": args.dtype}
            row = run_case(cmd, row, args.timeout)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print("\n| model | display | clips/s | peak MiB |\n|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['display']} | {r.get('clips_per_s', r.get('error'))} "
            f"| {r.get('peak_mib')} |"
        )


if __name__ == "__main__":
    main()
