"""Parameter and FLOP counts, with the official code's conventions
(``misc.get_flops_params``): a convolution costs its weight count times its
output positions, a fully connected layer its weight count, a batched matrix
product the product of its distinct dimensions. Counts are multiply-adds."""

from __future__ import annotations

import math

import keras

from nonlocal_tf.layers import NonLocalBlock
from nonlocal_tf.utils import iter_layers


def count_params(model: keras.Model) -> int:
    """Weights of convolutions, fully connected layers, non-local blocks and the
    BN (or frozen affine) gamma/beta; BN moving statistics are not counted."""
    total = 0
    for w in model.weights:
        if "moving_mean" in w.path or "moving_variance" in w.path:
            continue
        total += math.prod(w.shape)
    return total


def count_flops(model: keras.Model) -> int:
    """Multiply-adds of one forward pass of one example. The model's input
    shape must be fully known (build it with a static ``input_shape``)."""
    total = 0
    for layer in iter_layers(model):
        if isinstance(layer, keras.layers.Conv3D | keras.layers.Conv2D | keras.layers.Conv1D):
            out_shape = _static(layer.output.shape, layer.name)
            total += math.prod(out_shape[1:-1]) * math.prod(layer.kernel.shape)
        elif isinstance(layer, keras.layers.Dense):
            in_shape = _static(layer.input.shape, layer.name)
            total += math.prod(in_shape[1:-1]) * math.prod(layer.kernel.shape)
        elif isinstance(layer, NonLocalBlock):
            total += nonlocal_flops(layer, _static(layer.input.shape, layer.name))
    return total


def nonlocal_flops(layer: NonLocalBlock, input_shape) -> int:
    """Multiply-adds of one non-local block on one example of ``input_shape``."""
    grid = tuple(input_shape[1:-1])
    pool = layer._pool
    pooled = tuple(n // p for n, p in zip(grid, pool, strict=True))
    nq, nk = math.prod(grid), math.prod(pooled)
    c, inner = input_shape[-1], layer._inner
    proj_grid = nk if layer.pool_position == "before" else nq
    flops = 0
    if layer.instantiation != "gaussian":
        flops += nq * c * inner + proj_grid * c * inner  # theta, phi
    flops += proj_grid * c * inner  # g
    flops += nq * inner * c  # out
    depth = c if layer.instantiation == "gaussian" else inner
    if layer.instantiation == "concatenation":
        flops += (nq + nk) * inner  # the two halves of w_f
        depth = 1
    groups = layer.num_pairwise_groups(grid)
    flops += (nq * nk // groups) * (depth + inner)  # affinity, then the weighted sum of g
    return flops


def _static(shape, name):
    if any(d is None for d in shape[1:]):
        raise ValueError(
            f"count_flops needs static shapes; layer {name!r} has shape {tuple(shape)}. "
            "Build the model with a fully known input_shape, e.g. (8, 224, 224, 3)."
        )
    return tuple(shape)


__all__ = ["count_flops", "count_params", "nonlocal_flops"]
