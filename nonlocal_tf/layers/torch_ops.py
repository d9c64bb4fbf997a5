"""PyTorch kernels for channels-last video layers, without layout copies.

Keras's PyTorch backend runs a channels-last 3D convolution as a copy of the
input to channels-first, a second copy to PyTorch's ``channels_last_3d``
memory format, the convolution and a view back; its BatchNormalization is
about eight separate float32 operations, whose intermediates autograd keeps
for the backward pass. But a ``(B, T, H, W, C)`` tensor already *is* a
``(B, C, T, H, W)`` tensor in ``channels_last_3d`` format once its axes are
permuted, which is a view: PyTorch's own ops run on it as it lies (cuDNN's
NDHWC kernels on GPUs) and return tensors whose channels-last view is
contiguous again. Imported only on the PyTorch backend.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _channels_first(x: torch.Tensor) -> torch.Tensor:
    """(B, *S, C) -> (B, C, *S), a view."""
    return x.permute(0, x.ndim - 1, *range(1, x.ndim - 1))


def _channels_last(y: torch.Tensor) -> torch.Tensor:
    """(B, C, *S) -> (B, *S, C), a view."""
    return y.permute(0, *range(2, y.ndim), 1)


# cuDNN's tensor-core 3D kernels for channels-last half-precision inputs want
# channel counts in multiples of 8: C2D's RGB stem (1x7x7) gets its generic
# implicit-GEMM kernel (5.9 of 25 ms in the C2D 30-view test on an H200).
_CHANNEL_MULTIPLE = 8


def pad_channels(x, kernel, multiple: int):
    """``x`` ``(B, T, H, W, C)`` and ``kernel`` ``(kt, kh, kw, C, F)`` with
    zero channels appended up to a multiple of ``multiple``: the convolution
    is unchanged."""
    extra = -x.shape[-1] % multiple
    x = F.pad(x, (0, extra))  # (B, T, H, W, C + extra)
    kernel = F.pad(kernel, (0, 0, 0, extra))  # (kt, kh, kw, C + extra, F)
    return x, kernel


def conv3d(x, kernel, strides, padding):
    """Channels-last 3D convolution with a Keras kernel ``(kt, kh, kw, C, F)``
    and symmetric zero ``padding`` ``(pt, ph, pw)``; no bias.

    On a GPU in half precision, a frame-wise (``kt == 1``) convolution of an
    input whose channel count is not a multiple of 8 gets zero channels, and
    the kernel zero rows, up to the next multiple: the same sums, on cuDNN's
    tensor-core kernels (one H200, bf16: C2D R50 8x8 30-view test 40.0 ->
    42.9 videos/s). I3D's 5x7x7 stem is left as it is: cuDNN pads it itself
    (I3D and I3D-NL5 tests unchanged with the padding, 33.9 / 28.3 videos/s)."""
    if (
        x.is_cuda
        and x.dtype in (torch.float16, torch.bfloat16)
        and kernel.shape[0] == 1
        and x.shape[-1] % _CHANNEL_MULTIPLE
    ):
        x, kernel = pad_channels(x, kernel, _CHANNEL_MULTIPLE)
    weight = kernel.permute(4, 3, 0, 1, 2)  # (F, C, kt, kh, kw), a view
    y = F.conv3d(_channels_first(x), weight, stride=tuple(strides), padding=tuple(padding))
    return _channels_last(y)


class _MaxPool2d(torch.autograd.Function):
    """A 2D max pool whose backward pass finds the argmax again from the
    input: PyTorch's pool keeps int64 indices, 4x the bytes of a bfloat16
    output, from the forward to the backward pass, while the input it keeps
    instead is held anyway (the ReLU before the pool saves its output). One
    H200, bf16, batch 16 at 224: C2D and I3D R50 training peaks 576 MiB
    lower (5327 -> 4751 MiB for C2D), for one more pool in the backward pass
    (C2D 560-563 -> 543-546 clips/s; ``bench/RESULTS.md``)."""

    @staticmethod
    def forward(ctx, x, kernel, stride):
        ctx.save_for_backward(x)
        ctx.kernel, ctx.stride = kernel, stride
        return F.max_pool2d(x, kernel, stride)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        _, indices = F.max_pool2d(x, ctx.kernel, ctx.stride, return_indices=True)
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(
            grad, x, ctx.kernel, ctx.stride, (0, 0), (1, 1), False, indices
        )
        return grad_x, None, None


def _needs_gradient(x) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


def _max_pool2d(x, kernel, stride):
    """``F.max_pool2d`` on ``(N, C, H, W)``; with a gradient, one that keeps
    no indices (`_MaxPool2d`)."""
    if _needs_gradient(x):
        return _MaxPool2d.apply(x, kernel, stride)
    return F.max_pool2d(x, kernel, stride)


def max_pool3d(x, pool_size, strides):
    """Channels-last 3D max pooling, no padding (floor).

    A window along one kind of axis only (frame-wise ``1 x kh x kw``, or
    temporal ``kt x 1 x 1``) is a 2D pool of a reshaped view: PyTorch's
    channels-last 2D kernel, where its 3D kernel (with indices, even for
    inference) is generic: 3.2 of 25 ms in the C2D 30-view test on an H200.
    Same maxima, same window order (so the same gradient routing), and no
    indices kept for the backward pass (`_MaxPool2d`). Without a gradient, a
    temporal pool is a max over unfolded windows."""
    (kt, kh, kw), (st, sh, sw) = pool_size, strides
    b, t, h, w, c = x.shape
    if kt == st == 1:
        frames = x.reshape(b * t, h, w, c)  # (B*T, H, W, C), a view
        y = _channels_last(_max_pool2d(_channels_first(frames), (kh, kw), (sh, sw)))
        return y.reshape(b, t, y.shape[1], y.shape[2], c)
    if kh == kw == sh == sw == 1:
        if not _needs_gradient(x):
            # No gradient to route: a max over unfolded windows, without the int64
            # argmax indices PyTorch's pools write (4x the output's bytes, 930 MiB
            # for I3D's pool2 on 30 views at 256); 3.7x faster on 2 CPU cores.
            return x.unfold(1, kt, st).amax(dim=-1)  # (B, T', H, W, C, kt) -> (B, T', H, W, C)
        columns = x.reshape(b, t, h * w, c)  # (B, T, H*W, C), a view
        y = _channels_last(_max_pool2d(_channels_first(columns), (kt, 1), (st, 1)))
        return y.reshape(b, y.shape[1], h, w, c)
    y = F.max_pool3d(_channels_first(x), tuple(pool_size), tuple(strides))
    return _channels_last(y)


def batch_norm(x, gamma, beta, mean, variance, training: bool, epsilon: float):
    """Batch normalisation over every axis but the last, in one fused kernel
    (float32 statistics, output in the input's dtype).

    Runs on the ``(B*T*H*W, C)`` rows of the channels-last input: PyTorch picks
    its channels-last statistics and elementwise kernels for 2D (and 4D
    channels-last) inputs, its generic strided ones for a 5D view (one H200,
    bf16, forward and backward of a (16, 4, 56, 56, 256) batch: 935.8 ->
    501.1 us, inference 149.8 -> 85.9 us: ``bench/torch_batch_norm.py``).

    Returns ``(y, batch_mean, batch_variance)`` when training (the biased
    variance, as Keras's layer uses for its moving average; both detached),
    else ``(y, None, None)`` normalised with ``mean`` and ``variance``.
    """
    rows = x.reshape(-1, x.shape[-1])  # (N, C), a view of a contiguous input
    if not training:
        y = F.batch_norm(rows, mean, variance, gamma, beta, False, 0.0, epsilon)
        return y.view(x.shape), None, None
    y, batch_mean, inv_std = torch.native_batch_norm(
        rows, gamma, beta, None, None, True, 0.0, epsilon
    )
    batch_variance = torch.reciprocal(torch.square(inv_std.detach())) - epsilon
    return y.view(x.shape), batch_mean.detach(), batch_variance
