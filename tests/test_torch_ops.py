"""The PyTorch kernels of the channels-last video layers
(`nonlocal_tf.layers.torch_ops`) against PyTorch's plain ops, on CPU: the
shortcuts the GPU takes (padded stem channels, 2D pools) compute the same
outputs and gradients. PyTorch alone, whatever Keras's backend: run once, in
the TensorFlow pass."""

from __future__ import annotations

import numpy as np
import pytest


def test_padded_stem_channels_give_the_same_convolution():
    """The stem's RGB input padded to 8 channels (what the GPU path does in
    half precision) convolves to the same output, and the kernel's gradient
    keeps its shape and values."""
    import torch

    from nonlocal_tf.layers import torch_ops

    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(2, 3, 10, 10, 3)), dtype=torch.float64)
    kernel = torch.tensor(rng.normal(size=(1, 7, 7, 3, 5)), requires_grad=True)
    plain = torch_ops.conv3d(x, kernel, (1, 2, 2), (0, 3, 3))
    (plain_grad,) = torch.autograd.grad(plain.square().sum(), kernel)
    px, pk = torch_ops.pad_channels(x, kernel, 8)
    assert px.shape[-1] == pk.shape[3] == 8
    padded = torch_ops.conv3d(px, pk, (1, 2, 2), (0, 3, 3))
    (padded_grad,) = torch.autograd.grad(padded.square().sum(), kernel)
    np.testing.assert_allclose(padded.detach().numpy(), plain.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(padded_grad.numpy(), plain_grad.numpy(), rtol=1e-10)


@pytest.mark.parametrize(
    "pool_size, strides",
    [
        ((1, 3, 3), (1, 2, 2)),
        ((3, 1, 1), (2, 1, 1)),
        ((2, 1, 1), (2, 1, 1)),
        ((2, 3, 3), (1, 2, 2)),
    ],
)
def test_max_pool_as_2d_matches_3d(pool_size, strides):
    """Frame-wise and temporal pools, run as 2D pools of a reshaped view: the
    maxima and the gradient of PyTorch's 3D pool (ties included)."""
    import torch
    import torch.nn.functional as F

    from nonlocal_tf.layers import torch_ops

    rng = np.random.default_rng(0)
    values = rng.integers(0, 5, size=(2, 7, 9, 8, 4)).astype("float64")  # many ties
    x = torch.tensor(values, requires_grad=True)
    got = torch_ops.max_pool3d(x, pool_size, strides)
    x3 = torch.tensor(values, requires_grad=True)
    want = F.max_pool3d(x3.permute(0, 4, 1, 2, 3), pool_size, strides).permute(0, 2, 3, 4, 1)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got.detach().numpy(), want.detach().numpy())
    weights = torch.tensor(rng.normal(size=tuple(want.shape)))
    (got_grad,) = torch.autograd.grad((got * weights).sum(), x)
    (want_grad,) = torch.autograd.grad((want * weights).sum(), x3)
    np.testing.assert_allclose(got_grad.numpy(), want_grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("pool_size, strides", [((3, 1, 1), (2, 1, 1)), ((2, 1, 1), (1, 1, 1))])
def test_temporal_pool_without_gradient_matches_3d(pool_size, strides):
    """Without a gradient, a temporal pool is a max over unfolded windows
    (no argmax indices): PyTorch's 3D pool's maxima, odd lengths floored."""
    import torch
    import torch.nn.functional as F

    from nonlocal_tf.layers import torch_ops

    x = torch.tensor(np.random.default_rng(0).normal(size=(2, 7, 5, 4, 3)))
    with torch.no_grad():
        got = torch_ops.max_pool3d(x, pool_size, strides)
        want = F.max_pool3d(x.permute(0, 4, 1, 2, 3), pool_size, strides).permute(0, 2, 3, 4, 1)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got.numpy(), want.numpy())
