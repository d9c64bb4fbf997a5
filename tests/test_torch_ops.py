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


@pytest.mark.parametrize("contiguous", [True, False])
def test_batch_norm_rows_match_channels_first_batch_norm(contiguous):
    """Batch norm on the ``(N, C)`` rows of a channels-last input gives
    PyTorch's channels-first batch norm: output, batch statistics, and the
    gradients of input, scale and offset; also for an input that is not a
    contiguous channels-last tensor (a permuted view)."""
    import torch
    import torch.nn.functional as F

    from nonlocal_tf.layers import torch_ops

    rng = np.random.default_rng(3)
    shape = (2, 3, 4, 5, 6)
    data = torch.tensor(rng.normal(2.0, 3.0, size=shape))
    if not contiguous:
        data = data.permute(0, 2, 1, 3, 4).contiguous().permute(0, 2, 1, 3, 4)
        assert not data.is_contiguous()
    gamma = torch.tensor(rng.normal(1.0, 0.3, 6), requires_grad=True)
    beta = torch.tensor(rng.normal(0.0, 0.3, 6), requires_grad=True)
    mean, variance = torch.tensor(rng.normal(size=6)), torch.tensor(rng.uniform(0.5, 2.0, 6))
    weights = torch.tensor(rng.normal(size=shape))

    def run(fn):
        x = data.clone().requires_grad_() if contiguous else data.detach().requires_grad_()
        y, stats = fn(x)
        grads = torch.autograd.grad((y * weights).sum(), (x, gamma, beta))
        return [t.detach().numpy() for t in (y, *stats, *grads)]

    def ours(training):
        def fn(x):
            y, m, v = torch_ops.batch_norm(x, gamma, beta, mean, variance, training, 0.01)
            return y, ((m, v) if training else ())

        return fn

    def reference(training):
        def fn(x):
            xc = x.permute(0, 4, 1, 2, 3).contiguous()
            m, v = mean.clone(), variance.clone()
            y = F.batch_norm(xc, m, v, gamma, beta, training, 1.0, 0.01).permute(0, 2, 3, 4, 1)
            n = x.numel() // x.shape[-1]
            return y, ((m, v * (n - 1) / n) if training else ())  # biased variance

        return fn

    for training in (False, True):
        for got, expected in zip(run(ours(training)), run(reference(training)), strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("pool_size, strides", [((1, 3, 3), (1, 2, 2)), ((3, 1, 1), (2, 1, 1))])
def test_pools_keep_no_indices_for_the_backward_pass(pool_size, strides):
    """With a gradient, the 2D-route pools save only their input for the
    backward pass, not PyTorch's int64 argmax indices."""
    import torch

    from nonlocal_tf.layers import torch_ops

    x = torch.randn(2, 6, 9, 8, 4, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = torch_ops.max_pool3d(x, pool_size, strides)
    assert saved and all(t.dtype == torch.float32 for t in saved), [t.dtype for t in saved]
    y.sum().backward()
    assert x.grad is not None and x.grad.sum().item() == pytest.approx(y.numel())
