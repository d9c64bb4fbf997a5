"""JAX kernels with hand-written gradients for channels-last video layers.
Imported only on the JAX backend.

`max_pool`: the folded max pools of `nonlocal_tf.layers.video_ops` and the
non-local blocks' subsampling (see its docstring).

`batch_norm_training`: batch normalisation while training. Keras's
layer on JAX casts the activation to float32, takes the mean and then the
variance in a second pass (``jnp.var``), and leaves the backward pass to
autodiff of those steps. Here the statistics are one pass over the
activation (sums of the activation and of its square, both shifted by the
activation's first position so that the float32 sums do not cancel), the
output one more, and the backward pass two: one for the sums of the incoming gradient and of its
product with the normalised activation, one for the input's gradient; only
the activation (in its own dtype) and two per-channel vectors are kept
between the passes.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
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


def max_pool(x, pool_size, strides):
    """'valid' max pooling over the axes between the first (batch) and the
    last (channels) of ``x``, with a hand-written gradient.

    The maximum is taken over the window's strided slices, and the forward
    pass also keeps, at the output's size, which slice held it (the first in
    window order among equal ones, the one XLA's own max pool's gradient
    picks). The backward pass builds the input's gradient one stride phase
    at a time: the input positions ``s * q + r`` of an axis are reached only
    by the window offsets ``r + s * j``, from the windows ``q - j``, so each
    phase is a sum of shifted selections of the incoming gradient, and the
    phases are interleaved by a reshape. Autodiff of the slice maxima instead
    pads every slice's share back with interior padding and compares every
    slice again inside that kernel.
    """
    return _max_pool(x, tuple(pool_size), tuple(strides), tuple(x.shape))


def _counts(shape, sizes, strides):
    return [(n - k) // s + 1 for n, k, s in zip(shape[1:-1], sizes, strides, strict=True)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, sizes, strides, shape):
    return _max_pool_forward(x, sizes, strides, shape)[0]


def _max_pool_forward(x, sizes, strides, shape):
    counts = _counts(shape, sizes, strides)
    window_size = math.prod(sizes)
    index_dtype = jnp.int8 if window_size <= 127 else jnp.int32
    out = which = None
    for index, offsets in enumerate(itertools.product(*(range(k) for k in sizes))):
        start = (0, *offsets, 0)
        limit = (
            shape[0],
            *(o + (c - 1) * s + 1 for o, c, s in zip(offsets, counts, strides, strict=True)),
            shape[-1],
        )
        window = lax.slice(x, start, limit, (1, *strides, 1))
        if out is None:
            out, which = window, jnp.zeros(window.shape, index_dtype)
        else:
            which = jnp.where(window > out, jnp.asarray(index, index_dtype), which)
            out = jnp.maximum(out, window)
    return out, which


def _max_pool_backward(sizes, strides, shape, which, g):
    grid = shape[1:-1]
    counts = _counts(shape, sizes, strides)
    phase_size = [-(-n // s) for n, s in zip(grid, strides, strict=True)]  # ceil(n / s)
    zero = jnp.zeros((), g.dtype)

    def phase(residues):
        """Gradient at the input positions ``s * q + r`` (per axis), ``q < phase_size``."""
        shifts = [range(-(-(k - r) // s)) for r, k, s in zip(residues, sizes, strides, strict=True)]
        total = jnp.zeros((g.shape[0], *phase_size, g.shape[-1]), g.dtype)
        for js in itertools.product(*shifts):  # window offset r + s * j, from window q - j
            offsets = [r + s * j for r, j, s in zip(residues, js, strides, strict=True)]
            index = int(np.ravel_multi_index(offsets, sizes))
            share = jnp.where(which == index, g, zero)
            padding = [
                (j, size - c - j, 0) for j, size, c in zip(js, phase_size, counts, strict=True)
            ]
            total = total + lax.pad(share, zero, [(0, 0, 0), *padding, (0, 0, 0)])
        return total

    def interleave(axis, residues):
        """The phases of ``axes[axis:]`` for ``residues`` of the axes before, interleaved."""
        if axis == len(grid):
            return phase(residues)
        parts = [interleave(axis + 1, (*residues, r)) for r in range(strides[axis])]
        if len(parts) == 1:
            return parts[0]
        merged = list(parts[0].shape)
        merged[axis + 1] *= strides[axis]
        return jnp.stack(parts, axis=axis + 2).reshape(merged)

    grad = interleave(0, ())  # each axis ceil(n / s) * s long: cut to n
    return (lax.slice(grad, (0,) * len(shape), shape),)


_max_pool.defvjp(_max_pool_forward, _max_pool_backward)
