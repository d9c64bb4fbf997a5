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

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._cases import case_command, report, run_case  # noqa: E402

# (label, variant, frames)
MODELS = [
    ("C2D R50 8x8", "c2d_r50_8x8", 8),
    ("I3D R50 8x8", "i3d_r50_8x8", 8),
    ("I3D-NL5 R50 8x8", "i3d_nl5_r50_8x8", 8),
    ("I3D-NL5 R50 32 frames", "i3d_nl5_r50_8x8", 32),
]


def _sync(x):
    """Waits for ``x`` (a tensor or a structure of them) by reading it back."""
    import keras

    return keras.tree.map_structure(keras.ops.convert_to_numpy, x)


def _device_arrays(*arrays):
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return [jax.device_put(a) for a in arrays]
    return [keras.ops.convert_to_tensor(a) for a in arrays]


def _peak_mib():
    import keras

    if keras.backend.backend() == "jax":
        import jax

        peak = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
        return None if peak is None else round(peak / 2**20, 1)  # None: not measured (CPU)
    if keras.backend.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return None


def resolve_jit_compile(choice: str = "auto"):
    """``"auto"``: `nonlocal_tf.runtime.jit_compile` (XLA on JAX, eager on
    PyTorch, ...); ``"on"`` / ``"off"``: True / False."""
    from nonlocal_tf import runtime

    return {"auto": runtime.jit_compile(), "on": True, "off": False}[choice]


def training_setup(
    variant,
    frames,
    size,
    batch,
    conv_implementation="auto",
    jit_compile="auto",
    width_per_group=None,
):
    """A model compiled with the official SGD step (``jit_compile``: see
    `resolve_jit_compile`; ``width_per_group``: the variant's when None) and
    one synthetic batch already on the device: ``(model, x, y)``. Call after
    setting the dtype policy."""
    import keras
    import numpy as np

    from nonlocal_tf import models, training

    model = models.create_model(
        variant,
        input_shape=(frames, size, size, 3),
        classes=400,
        conv_implementation=conv_implementation,
        **({} if width_per_group is None else {"width_per_group": width_per_group}),
    )
    model.compile(
        optimizer=training.make_optimizer(training.OFFICIAL, 10_000, batch),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        jit_compile=resolve_jit_compile(jit_compile),
    )
    rng = np.random.default_rng(0)
    x, y = _device_arrays(
        rng.normal(size=(batch, frames, size, size, 3)).astype("float32"),
        rng.integers(0, 400, batch).astype("int32"),
    )
    return model, x, y


def seconds_per_call(call, warmup: int, steps: int) -> float:
    """Seconds per ``call()`` over ``steps`` calls after ``warmup`` calls; the
    last result is read back before the clock stops."""
    for _ in range(warmup):
        _sync(call())
    started = time.perf_counter()
    for _ in range(steps):
        out = call()
    _sync(out)
    return (time.perf_counter() - started) / steps


def seconds_per_train_on_batch(model, x, y, warmup: int, steps: int) -> float:
    return seconds_per_call(lambda: model.train_on_batch(x, y), warmup, steps)


class CompiledSteps:
    """The model's compiled Keras train function called back to back on the JAX
    backend (as `fit` runs it: the host queues step n + 1 while the device runs
    step n; `train_on_batch` waits for each loss), the state passed along."""

    def __init__(self, model, x, y):
        self.model, self.data = model, (x, y, None)
        model.optimizer.build(model.trainable_variables)
        model.make_train_function()
        self.state = model._get_jax_state(
            trainable_variables=True,
            non_trainable_variables=True,
            optimizer_variables=True,
            metrics_variables=True,
        )

    def __call__(self):
        """Runs one step; returns its logs."""
        logs, self.state = self.model.train_function(self.state, iter([self.data]))
        return logs

    def run(self, steps: int) -> float:
        """Runs ``steps`` steps; returns the seconds per step."""
        return seconds_per_call(self, 0, steps)


class CompiledPredict:
    """The model's compiled Keras predict function (JAX or PyTorch) called back
    to back on data already on the device, without reading each result back to
    the host (`predict_on_batch` does: it returns NumPy), as `predict` over
    many videos runs it. Each call runs one batch and returns its output."""

    def __init__(self, model, x):
        import keras

        self.model, self.x = model, x
        self.backend = keras.backend.backend()
        model.make_predict_function()
        if self.backend == "jax":
            self.state = model._get_jax_state(
                trainable_variables=True,
                non_trainable_variables=True,
                metrics_variables=False,
                purge_model_variables=False,
            )

    def __call__(self):
        if self.backend == "jax":
            out, self.state = self.model.predict_function(self.state, iter([(self.x,)]))
            return out
        return self.model.predict_function([(self.x,)])


def measure(args) -> dict:
    import keras
    import numpy as np

    from nonlocal_tf import models

    keras.config.set_dtype_policy(args.dtype)
    label, variant, frames = MODELS[args.model]
    rng = np.random.default_rng(0)
    extra = {}
    if args.mode == "train":
        model, x, y = training_setup(
            variant, frames, args.size, args.batch, args.conv_implementation, args.jit_compile
        )
        if args.cuda_graph:
            from bench.torch_cuda_graph import graph_train_step

            graph_train_step(model, x, y)
        seconds = seconds_per_train_on_batch(model, x, y, args.warmup, args.steps)
        extra["train_on_batch_clips_per_s"] = round(args.batch / seconds, 2)
        if keras.backend.backend() == "jax":  # the figure reported on JAX
            seconds = seconds_per_call(CompiledSteps(model, x, y), args.warmup, args.steps)
        rate = args.batch / seconds
    else:
        size = args.test_size
        model = models.create_model(
            variant,
            input_shape=(frames, size, size, 3),
            classes=400,
            fully_convolutional=True,
            conv_implementation=args.conv_implementation,
        )
        views = rng.normal(size=(30, frames, size, size, 3)).astype("float32")
        (x,) = _device_arrays(views)
        seconds = seconds_per_call(lambda: model.predict_on_batch(x), args.warmup, args.steps)
        if keras.backend.backend() != "tensorflow":  # TensorFlow: predict_on_batch is reported
            extra["predict_on_batch_videos_per_s"] = round(1.0 / seconds, 2)
            # zoo.evaluate's path: `predict` over a generator of host arrays, one per video
            seconds = seconds_per_call(
                lambda: model.predict(((views,) for _ in range(args.steps)), verbose=0),
                1,
                1,
            )
            extra["predict_host_videos_per_s"] = round(args.steps / seconds, 2)
            # the figure reported: the compiled predict function back to back on the device
            seconds = seconds_per_call(CompiledPredict(model, x), args.warmup, args.steps)
        rate = 1.0 / seconds
    return {
        "model": label,
        "conv_implementation": args.conv_implementation,
        "cuda_graph": args.cuda_graph,
        "jit_compile": model.jit_compile if args.mode == "train" else None,
        "mode": args.mode,
        "dtype": args.dtype,
        "backend": keras.backend.backend(),
        "batch": args.batch if args.mode == "train" else 30,
        "size": args.size if args.mode == "train" else args.test_size,
        "step_s": round(seconds, 4),
        ("clips_per_s" if args.mode == "train" else "videos_per_s"): round(rate, 2),
        "peak_mib": _peak_mib(),
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--cases", default="train", help="train, test or train,test")
    parser.add_argument("--models", default="0,1,2,3", help="indices into MODELS")
    parser.add_argument("--dtype", default="mixed_bfloat16")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--test_size", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument(
        "--conv_implementation", default="auto", help="VideoResNet's: auto, folded or native"
    )
    parser.add_argument(
        "--jit_compile",
        default="auto",
        choices=["auto", "on", "off"],
        help="training: auto = nonlocal_tf.runtime.jit_compile (XLA on JAX, eager on PyTorch)",
    )
    parser.add_argument(
        "--cuda_graph",
        action="store_true",
        help="PyTorch: replay the training step as a CUDA graph (experiment, bench/torch_cuda_graph.py)",
    )
    parser.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        report(measure(args))
        return
    rows = []
    for mode in args.cases.split(","):
        for index in (int(i) for i in args.models.split(",")):
            cmd = case_command(__file__, args, model=index, mode=mode)
            row = {"model": MODELS[index][0], "mode": mode, "dtype": args.dtype}
            row = run_case(cmd, row, args.timeout)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print("\n| model | mode | dtype | rate | peak MiB |\n|---|---|---|---|---|")
    for r in rows:
        rate = r.get("clips_per_s", r.get("videos_per_s", r.get("error", "")))
        print(f"| {r['model']} | {r['mode']} | {r['dtype']} | {rate} | {r.get('peak_mib')} |")


if __name__ == "__main__":
    main()
