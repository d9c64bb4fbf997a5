"""JAX kernels for channels-last video layers. Imported only on the JAX backend.

Batch normalisation while training, with a hand-written gradient. Keras's
layer on JAX casts the activation to float32, takes the mean and then the
variance in a second pass (``jnp.var``), and leaves the backward pass to
autodiff of those steps. Here the statistics are one pass over the
activation (sums of the activation and of its square, both shifted by the
activation's first position so that the float32 sums do not cancel), the output one more, and the
backward pass two: one for the sums of the incoming gradient and of its
product with the normalised activation, one for the input's gradient; only
the activation (in its own dtype) and two per-channel vectors are kept
between the passes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax


def batch_norm_training(x, gamma, beta, epsilon: float):
    """Normalises ``x`` over every axis but the last with its own statistics.

    ``gamma`` / ``beta``: per-channel scale and offset (``None``: 1 / 0).
    Returns ``(y, mean, variance)``: ``y`` in ``x``'s dtype, the float32
    batch mean and biased variance without a gradient (what Keras's layer
    feeds its moving averages)."""
    channels = x.shape[-1]
    gamma = jnp.ones((channels,), jnp.float32) if gamma is None else gamma.astype(jnp.float32)
    beta = jnp.zeros((channels,), jnp.float32) if beta is None else beta.astype(jnp.float32)
    # A value of each channel from the batch itself, so that the one-pass sums
    # are of deviations of the order of the standard deviation, not of the mean.
    shift = lax.stop_gradient(x.reshape(-1, channels)[0].astype(jnp.float32))
    y, mean, variance = _normalise(x, gamma, beta, shift, epsilon)
    return y, lax.stop_gradient(mean), lax.stop_gradient(variance)


def _axes(x):
    return tuple(range(x.ndim - 1))


def _statistics(x, shift):
    """Batch mean and biased variance in one pass (float32)."""
    count = x.size // x.shape[-1]
    d = x.astype(jnp.float32) - shift
    first = jnp.sum(d, _axes(x)) / count
    second = jnp.sum(d * d, _axes(x)) / count
    return shift + first, jnp.maximum(second - first * first, 0.0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _normalise(x, gamma, beta, shift, epsilon):
    return _forward(x, gamma, beta, shift, epsilon)[0]


def _forward(x, gamma, beta, shift, epsilon):
    mean, variance = _statistics(x, shift)
    inv = lax.rsqrt(variance + epsilon)
    scale = gamma * inv
    y = (x.astype(jnp.float32) * scale + (beta - mean * scale)).astype(x.dtype)
    return (y, mean, variance), (x, mean, inv, gamma)


def _backward(epsilon, residuals, cotangents):
    """Gradients of ``y`` only: the statistics leave `batch_norm_training`
    without a gradient, so their cotangents are zero."""
    del epsilon
    x, mean, inv, gamma = residuals
    dy = cotangents[0].astype(jnp.float32)
    count = x.size // x.shape[-1]
    x_hat = (x.astype(jnp.float32) - mean) * inv
    sum_dy = jnp.sum(dy, _axes(x))
    sum_dy_x_hat = jnp.sum(dy * x_hat, _axes(x))
    dx = (gamma * inv / count) * (count * dy - sum_dy - x_hat * sum_dy_x_hat)
    return dx.astype(x.dtype), sum_dy_x_hat, sum_dy, jnp.zeros_like(mean)  # shift: none


_normalise.defvjp(_forward, _backward)
