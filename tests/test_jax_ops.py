"""`nonlocal_tf.layers.jax_ops`. ``batch_norm_training`` against batch norm
written out in float64 NumPy / JAX autodiff: outputs, statistics and
gradients, and well-conditioned statistics for activations far from zero.
``max_pool`` against XLA's own max pool (``lax.reduce_window``): outputs and
gradients, tied maxima included. JAX alone, whatever Keras's backend: run
once, in the TensorFlow pass."""

from __future__ import annotations

import numpy as np
import pytest


def reference(x, gamma, beta, epsilon):
    """Batch norm over every axis but the last, two-pass statistics; its
    gradient is JAX's autodiff."""
    import jax.numpy as jnp

    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    variance = jnp.mean(jnp.square(x - mean), axes)
    return (x - mean) * gamma / jnp.sqrt(variance + epsilon) + beta, mean, variance


@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_batch_norm_training_matches_the_two_pass_formula(offset):
    import jax
    import jax.numpy as jnp

    from nonlocal_tf.layers import jax_ops

    rng = np.random.default_rng(0)
    shape = (2, 3, 4, 5, 6)
    x = rng.normal(offset, 3.0, size=shape).astype("float32")
    gamma = rng.normal(1.0, 0.3, 6).astype("float32")
    beta = rng.normal(0.0, 0.3, 6).astype("float32")
    weights = rng.normal(size=shape).astype("float32")

    y, mean, variance = jax_ops.batch_norm_training(x, gamma, beta, 0.01)
    x64 = x.astype("float64")  # NumPy: float64 (JAX computes float32 unless x64 is on)
    want_mean, want_variance = x64.mean((0, 1, 2, 3)), x64.var((0, 1, 2, 3))
    want_y = (x64 - want_mean) * gamma / np.sqrt(want_variance + 0.01) + beta
    np.testing.assert_allclose(np.asarray(mean), want_mean, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(np.asarray(variance), want_variance, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(y), want_y, atol=2e-4)

    def loss(fn):
        return lambda x, g, b: jnp.sum(fn(x, g, b)[0] * weights)

    ours = jax.grad(loss(lambda x, g, b: jax_ops.batch_norm_training(x, g, b, 0.01)), (0, 1, 2))
    plain = jax.grad(loss(lambda x, g, b: reference(x, g, b, 0.01)), (0, 1, 2))
    for got, want in zip(ours(x, gamma, beta), plain(x, gamma, beta), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-3, atol=2e-4)


def test_bfloat16_activation_keeps_its_dtype_and_float32_statistics():
    import jax
    import jax.numpy as jnp

    from nonlocal_tf.layers import jax_ops

    x = jnp.asarray(np.random.default_rng(1).normal(2.0, 1.0, (4, 3, 3, 8)), jnp.bfloat16)
    y, mean, variance = jax_ops.batch_norm_training(x, None, None, 1e-5)
    assert y.dtype == jnp.bfloat16 and mean.dtype == variance.dtype == jnp.float32
    grad = jax.grad(
        lambda x: jnp.sum(
            jax_ops.batch_norm_training(x, None, None, 1e-5)[0].astype(jnp.float32) ** 2
        )
    )(x)
    assert grad.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y, "float32").mean((0, 1, 2)), 0.0, atol=0.02)


@pytest.mark.parametrize(
    "shape,pool,strides",
    [
        ((2, 5, 17, 15, 3), (1, 3, 3), (1, 2, 2)),  # pool1 of the 8x8 models, odd and even sizes
        ((2, 6, 16, 17, 3), (2, 3, 3), (2, 2, 2)),  # pool1 of the 32x2 models
        ((2, 5, 9, 9, 3), (2, 1, 1), (2, 1, 1)),  # pool2: windows apart, a frame left over
        ((2, 9, 8, 3), (3, 2), (1, 3)),  # 2D, a stride above the window: positions no window reads
        ((2, 11, 3), (4,), (3,)),  # 1D
    ],
)
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool_matches_xla_max_pool(shape, pool, strides, ties):
    import jax
    import jax.numpy as jnp
    from jax import lax

    from nonlocal_tf.layers import jax_ops

    rng = np.random.default_rng(1)
    x = rng.permutation(int(np.prod(shape))).reshape(shape).astype("float32")
    if ties:  # a few values only: most windows hold their maximum more than once
        x = np.floor(x / (x.size / 4))
    window, step = (1, *pool, 1), (1, *strides, 1)

    def xla(x):
        return lax.reduce_window(x, -jnp.inf, lax.max, window, step, "VALID")

    def ours(x):
        return jax_ops.max_pool(x, pool, strides)

    expected = xla(x)
    np.testing.assert_array_equal(jax.jit(ours)(x), expected)
    cotangent = rng.normal(size=expected.shape).astype("float32")
    got = jax.jit(jax.grad(lambda x: jnp.sum(ours(x) * cotangent)))(x)
    want = jax.grad(lambda x: jnp.sum(xla(x) * cotangent))(x)
    # Each output's gradient goes to one input (the first maximum in window
    # order, as XLA's), exactly: sums of at most a few float32 values.
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
