"""Forward+backward time and peak memory of one NonLocalBlock, naive against
memory-efficient, at the query/key counts of the official models and beyond.

Each case runs in a fresh subprocess so that peak memory is its own:
- CPU: the process's peak resident set (VmHWM) minus its resident set just
  before the first step (inputs and weights already allocated);
- GPU (JAX): the device allocator's ``peak_bytes_in_use`` minus the bytes in
  use before the first step.

Usage (the backend comes from KERAS_BACKEND):
    KERAS_BACKEND=tensorflow python bench/nonlocal_block.py --sizes 3136,12544 --impls naive,auto
    KERAS_BACKEND=jax python bench/nonlocal_block.py --dtype bfloat16 --impls naive,chunked,fused
Prints one JSON row per case and a Markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench._cases import case_command, report, run_case  # noqa: E402

# Query positions -> (T, H, W) of the input; keys are T x H/2 x W/2.
GRIDS = {
    3136: (4, 28, 28),  # official res3 at 224 (784 keys)
    12544: (16, 28, 28),  # 3,136 keys
    50176: (16, 56, 56),  # 12,544 keys
    100352: (32, 56, 56),  # 25,088 keys
}


def _rss_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(args) -> dict:
    import keras
    import numpy as np

    from nonlocal_tf import NonLocalBlock

    backend = keras.backend.backend()
    t, h, w = GRIDS[args.size]
    shape = (args.batch, t, h, w, args.channels)
    layer = NonLocalBlock(implementation=args.impl, chunk_size=args.chunk_size, dtype=args.dtype)
    layer.build(shape)
    x_np = np.random.default_rng(0).normal(size=shape).astype("float32")
    on_gpu = False
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.cast(tf.constant(x_np), layer.compute_dtype)
        weights = layer.trainable_weights

        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(tf.cast(layer(x, training=True), "float32"))
            return tape.gradient(loss, [x, *weights])

        def run():
            return [g.numpy() for g in step(x)][0]

    elif backend == "jax":
        import jax

        on_gpu = jax.default_backend() == "gpu"
        x = jax.device_put(x_np.astype(layer.compute_dtype))
        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss_fn(xin, tv):
            out, _ = layer.stateless_call(tv, non_trainable, xin, training=True)
            return out.astype("float32").sum()

        grad = jax.jit(jax.grad(loss_fn, argnums=(0, 1)))

        def run():
            return jax.block_until_ready(grad(x, trainable))

    else:
        import torch

        on_gpu = torch.cuda.is_available()
        device = "cuda" if on_gpu else "cpu"
        x = torch.tensor(x_np, device=device).to(getattr(torch, layer.compute_dtype))

        def run():
            xin = x.detach().requires_grad_(True)
            loss = layer(xin, training=True).float().sum()
            loss.backward()
            if on_gpu:
                torch.cuda.synchronize()
            return xin.grad

    base = _gpu_bytes_in_use(backend) if on_gpu else _rss_mib("VmRSS")
    started = time.perf_counter()
    run()  # compile + first step
    first = time.perf_counter() - started
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    peak = (_gpu_peak_bytes(backend) - base) / 2**20 if on_gpu else _rss_mib("VmHWM") - base
    return {
        "backend": backend,
        "device": "gpu" if on_gpu else "cpu",
        "dtype": args.dtype,
        "queries": t * h * w,
        "keys": t * (h // 2) * (w // 2),
        "batch": args.batch,
        "channels": args.channels,
        "impl": args.impl,
        "resolved_impl": layer._resolve_implementation(*_probe(layer, shape)),
        "first_step_s": round(first, 3),
        "step_s": round(min(times), 4),
        "peak_mib": round(peak, 1),
    }


def _probe(layer, shape):
    """Tensors with the grouped q/k/v shapes, to report what "auto" picks."""
    from keras import ops

    t, h, w = shape[1:4]
    inner = layer._inner
    dtype = layer.compute_dtype
    q = ops.zeros((shape[0], t * h * w, inner), dtype=dtype)
    k = ops.zeros((shape[0], t * (h // 2) * (w // 2), inner), dtype=dtype)
    return q, k, k


def _gpu_bytes_in_use(backend: str) -> int:
    if backend == "jax":
        import jax

        return jax.devices()[0].memory_stats()["bytes_in_use"]
    import torch

    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def _gpu_peak_bytes(backend: str) -> int:
    if backend == "jax":
        import jax

        return jax.devices()[0].memory_stats()["peak_bytes_in_use"]
    import torch

    return torch.cuda.max_memory_allocated()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="3136,12544,50176", help=f"query counts among {sorted(GRIDS)}"
    )
    parser.add_argument("--impls", default="naive,auto")
    parser.add_argument("--dtype", default="float32", help="float32, mixed_bfloat16, bfloat16, ...")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument(
        "--channels", type=int, default=512, help="block input channels (inner = C/2)"
    )
    parser.add_argument("--chunk_size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per case")
    parser.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        report(measure(args))
        return
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for impl in args.impls.split(","):
            cmd = case_command(__file__, args, size=size, impl=impl)
            row = {"queries": size, "impl": impl}
            row = run_case(cmd, row, args.timeout)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print("\n| queries x keys | impl (resolved) | step s | peak MiB |\n|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['queries']} | {r['impl']} | {r['error']} | |")
        else:
            print(
                f"| {r['queries']:,} x {r['keys']:,} | {r['impl']} ({r['resolved_impl']}) | "
                f"{r['step_s']} | {r['peak_mib']} |"
            )


if __name__ == "__main__":
    main()
