"""Forward+backward time and peak memory of one NonLocalBlock, naive against
memory-efficient, at the query/key counts of the official models and beyond.

Each case runs in a fresh subprocess so that peak memory is its own
(`bench._cases.peak_mib`): the GPU allocator's peak, or on CPU the process's
peak resident set (VmHWM), minus what was in use just before the first step
(inputs and weights already allocated).

Usage (the backend comes from KERAS_BACKEND):
    KERAS_BACKEND=tensorflow python bench/nonlocal_block.py --sizes=3136,12544 --impls=naive,auto
    KERAS_BACKEND=jax python bench/nonlocal_block.py --dtype=bfloat16 --impls=naive,chunked,fused
Prints one JSON row per case and a Markdown table at the end.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._cases import FLAGS, flags, main, memory_mark, peak_mib  # noqa: E402

# Query positions -> (T, H, W) of the input; keys are T x H/2 x W/2.
GRIDS = {
    3136: (4, 28, 28),  # official res3 at 224 (784 keys)
    12544: (16, 28, 28),  # 3,136 keys
    50176: (16, 56, 56),  # 12,544 keys
    100352: (32, 56, 56),  # 25,088 keys
}
flags.DEFINE_list("sizes", ["3136", "12544", "50176"], f"Query counts among {sorted(GRIDS)}.")
flags.DEFINE_list("impls", ["naive", "auto"], "NonLocalBlock implementations.")
flags.DEFINE_string("dtype", "float32", "float32, mixed_bfloat16, bfloat16, ...")
flags.DEFINE_integer("batch", 1, "Batch.")
flags.DEFINE_integer("channels", 512, "Block input channels (inner = C/2).")
flags.DEFINE_integer("chunk_size", 1024, "Query block of the chunked path.")
flags.DEFINE_integer("repeats", 3, "Timed steps (the best is reported).")
flags.DEFINE_enum("size", "3136", [str(s) for s in GRIDS], "(a case) the query count.")
flags.DEFINE_string("impl", "auto", "(a case) the implementation.")


def measure() -> dict:
    import keras
    import numpy as np

    from nonlocal_tf import NonLocalBlock

    backend = keras.backend.backend()
    t, h, w = GRIDS[int(FLAGS.size)]
    shape = (FLAGS.batch, t, h, w, FLAGS.channels)
    layer = NonLocalBlock(implementation=FLAGS.impl, chunk_size=FLAGS.chunk_size, dtype=FLAGS.dtype)
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

    base = memory_mark()
    started = time.perf_counter()
    run()  # compile + first step
    first = time.perf_counter() - started
    times = []
    for _ in range(FLAGS.repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return {
        "backend": backend,
        "device": "gpu" if on_gpu else "cpu",
        "dtype": FLAGS.dtype,
        "queries": t * h * w,
        "keys": t * (h // 2) * (w // 2),
        "batch": FLAGS.batch,
        "channels": FLAGS.channels,
        "impl": FLAGS.impl,
        "resolved_impl": layer._resolve_implementation(*_probe(layer, shape)),
        "first_step_s": round(first, 3),
        "step_s": round(min(times), 4),
        "peak_mib": peak_mib(since=base),
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


def cases():
    for size in FLAGS.sizes:
        for impl in FLAGS.impls:
            yield {"size": size, "impl": impl}


COLUMNS = {
    "queries x keys": lambda r: f"{r['queries']:,} x {r['keys']:,}" if "keys" in r else r["size"],
    "impl (resolved)": lambda r: f"{r['impl']} ({r.get('resolved_impl')})",
    "step s": "step_s",
    "peak MiB": "peak_mib",
}

if __name__ == "__main__":
    main(measure, cases, COLUMNS)
