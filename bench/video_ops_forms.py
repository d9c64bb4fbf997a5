"""JAX: the forms of the I3D temporal convolutions and max pools, forward and
backward, on the shapes of I3D R50 8x8 at batch 16 and 224.

- ``(3, 1, 1)`` convolutions: ``folded`` is what `VideoConv3D` runs now (a
  2D ``(3, 1)`` convolution over frames and positions,
  ``video_ops._pointwise_in_space``); ``matmul_shift`` the form before it (one
  matrix product with the three kernel slices side by side, then a sum of
  three time-shifted slices of its result); ``xla_3d`` XLA's own 3D
  convolution (NDHWC operands).
- max pools: ``xla`` is XLA's own (``lax.reduce_window``, select-and-scatter
  backward); ``slices`` autodiff of the maximum of the window's strided
  slices (``video_ops._slice_maxima``: the folded pools on TensorFlow and
  PyTorch, and on JAX before);
  ``jax_ops`` the hand-written gradient the folded pools take on JAX
  (`nonlocal_tf.layers.jax_ops.max_pool`).

Each case: milliseconds per jitted call of the gradient of a sum of squares
(bfloat16 activations; the pools' input goes through a per-channel scale and
a ReLU first, as ``pool1``'s does), and the difference of the input's
gradient from the first form's: convolutions, relative L2 (bfloat16
rounding); pools, the largest, which is 0 where each output's gradient goes
to the same input as XLA's (autodiff of the slices splits it between tied
bfloat16 values instead).

    KERAS_BACKEND=jax python bench/video_ops_forms.py
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 30, "Timed calls.")
flags.DEFINE_integer("batch", 16, "Clips.")

CONVOLUTIONS = [  # name, (T, H, W, C in), filters
    ("res2_0", (8, 55, 55, 64), 64),
    ("res2", (8, 55, 55, 256), 64),
    ("res3", (4, 28, 28, 512), 128),
    ("res4", (4, 14, 14, 1024), 256),
    ("res5", (4, 7, 7, 2048), 512),
]
POOLS = [  # name, (T, H, W, C), window, strides
    ("pool1", (8, 112, 112, 64), (1, 3, 3), (1, 2, 2)),
    ("pool2", (8, 55, 55, 256), (2, 1, 1), (2, 1, 1)),
    ("nonlocal_res3", (4, 28, 28, 512), (1, 2, 2), (1, 2, 2)),
]


def milliseconds(jax, fn, *args) -> float:
    for _ in range(2):
        jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        out = fn(*args)
    jax.block_until_ready(out)
    return round((time.perf_counter() - start) / FLAGS.steps * 1e3, 3)


def convolution_forms(jnp, lax):
    from nonlocal_tf.layers import video_ops

    def folded(x, w):
        return video_ops._pointwise_in_space(x, w[:, None, None], (1, 1, 1), "same")

    def matmul_shift(x, w):
        kt, channels, filters = w.shape
        x = jnp.pad(x, [(0, 0), (kt // 2, kt // 2), (0, 0), (0, 0), (0, 0)])
        z = x @ jnp.transpose(w, (1, 0, 2)).reshape(channels, kt * filters)
        frames = z.shape[1] - kt + 1
        return sum(z[:, k : k + frames, ..., k * filters : (k + 1) * filters] for k in range(kt))

    def xla_3d(x, w):
        kt = w.shape[0]
        return lax.conv_general_dilated(
            x,
            w[:, None, None],
            (1, 1, 1),
            [(kt // 2, kt // 2), (0, 0), (0, 0)],
            dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
        )

    return {"folded": folded, "matmul_shift": matmul_shift, "xla_3d": xla_3d}


def pool_forms(jnp, lax):
    from nonlocal_tf.layers import jax_ops, video_ops

    def xla(x, window, strides):
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1), "VALID")

    return {"xla": xla, "slices": video_ops._slice_maxima, "jax_ops": jax_ops.max_pool}


def main(argv) -> None:
    del argv
    import jax
    import jax.numpy as jnp
    from jax import lax

    rows = {}
    key = jax.random.PRNGKey(0)
    for name, shape, filters in CONVOLUTIONS:
        x = jax.random.normal(key, (FLAGS.batch, *shape), jnp.bfloat16)
        w = jax.random.normal(key, (3, shape[-1], filters), jnp.float32) * 0.05
        first = None
        for form, conv in convolution_forms(jnp, lax).items():

            def loss(x, w, conv=conv):
                return jnp.sum(conv(x, w.astype(jnp.bfloat16)).astype(jnp.float32) ** 2)

            grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
            dx = grad(x, w)[0].astype(jnp.float32)
            first = dx if first is None else first
            difference = float(jnp.linalg.norm(dx - first) / jnp.linalg.norm(first))
            rows[f"conv {name} {form}"] = (milliseconds(jax, grad, x, w), difference)
    for name, shape, window, strides in POOLS:
        x = jax.random.normal(key, (FLAGS.batch, *shape), jnp.bfloat16)
        scale = jax.random.normal(key, (shape[-1],), jnp.float32)
        first = None
        for form, pool in pool_forms(jnp, lax).items():

            def loss(x, scale, pool=pool, window=window, strides=strides):
                h = jnp.maximum((x.astype(jnp.float32) * scale + 0.1).astype(jnp.bfloat16), 0)
                return jnp.sum(pool(h, window, strides).astype(jnp.float32) ** 2)

            grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
            dx = grad(x, scale)[0].astype(jnp.float32)
            first = dx if first is None else first
            difference = float(jnp.max(jnp.abs(dx - first)))
            rows[f"pool {name} {form}"] = (milliseconds(jax, grad, x, scale), difference)
    print("| case | ms forward + backward | difference from the first form |")
    print("|---|---|---|")
    for case, (ms, difference) in rows.items():
        print(f"| {case} | {ms} | {difference:.2g} |")
    print("RESULT " + json.dumps({"device": str(jax.devices()[0]), **rows}))


if __name__ == "__main__":
    app.run(main)
