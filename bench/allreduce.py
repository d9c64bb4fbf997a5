"""The gradient all-reduce alone (JAX): the time to sum a model's gradients
over N GPUs, for the projection of data-parallel training to more GPUs.

Sums one buffer of the model's parameter bytes (float32, and bfloat16 for a
half-size reduction) across the first N GPUs (a sum over a sharded axis, which XLA compiles to an all-reduce), back to
back; reports ms per all-reduce and the bus bandwidth NCCL's tests would
print (``bytes * 2 (N - 1) / N / time``), so that the time on more GPUs can be
projected as ``bytes * 2 (N - 1) / N / bus bandwidth``.

    KERAS_BACKEND=jax python bench/allreduce.py --gpus=2 --variant=i3d_nl5_r50_8x8
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_integer("gpus", 2, "Devices to reduce over.")
flags.DEFINE_string("variant", "i3d_nl5_r50_8x8", "Whose parameter count sets the size.")
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Element types of the reduction.")
flags.DEFINE_integer("chunks", 1, "Split the buffer into this many all-reduces.")
flags.DEFINE_integer("steps", 50, "Timed all-reduces.")


def parameter_count(variant: str) -> int:
    from nonlocal_tf import models

    model = models.create_model(variant, input_shape=(8, 224, 224, 3), classes=400)
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def time_all_reduce(count: int, dtype: str, devices, chunks: int, steps: int) -> float:
    """Seconds per sum of ``count`` elements over ``devices``: each device
    holds one row of ``(N, count)``, the sum is wanted on every device (what
    XLA's data-parallel step does with the gradients)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    n = len(devices)
    mesh = Mesh(np.array(devices), ("d",))
    rows, everywhere = NamedSharding(mesh, PartitionSpec("d")), NamedSharding(mesh, PartitionSpec())
    per = -(-count // chunks)
    parts = [jax.device_put(np.ones((n, per), dtype=jnp.dtype(dtype)), rows) for _ in range(chunks)]
    reduce = jax.jit(lambda *xs: [x.sum(axis=0) for x in xs], out_shardings=everywhere)
    for _ in range(3):
        out = reduce(*parts)
    jax.block_until_ready(out)
    started = time.perf_counter()
    for _ in range(steps):
        out = reduce(*parts)
    jax.block_until_ready(out)
    assert float(out[0][0]) == n
    return (time.perf_counter() - started) / steps


def main(argv) -> None:
    del argv
    import jax

    devices = jax.devices()[: FLAGS.gpus]
    if len(devices) < FLAGS.gpus:
        raise SystemExit(f"{FLAGS.gpus} devices asked for, {len(devices)} found")
    count = parameter_count(FLAGS.variant)
    n = len(devices)
    for dtype in FLAGS.dtypes:
        seconds = time_all_reduce(count, dtype, devices, FLAGS.chunks, FLAGS.steps)
        size = count * (4 if dtype == "float32" else 2)
        row = {
            "variant": FLAGS.variant,
            "parameters": count,
            "dtype": dtype,
            "mb": round(size / 1e6, 1),
            "devices": n,
            "device_kind": devices[0].device_kind,
            "chunks": FLAGS.chunks,
            "ms": round(1000 * seconds, 3),
            "bus_gb_per_s": round(size * 2 * (n - 1) / n / seconds / 1e9, 1),
        }
        print("RESULT " + json.dumps(row), flush=True)


if __name__ == "__main__":
    app.run(main)
