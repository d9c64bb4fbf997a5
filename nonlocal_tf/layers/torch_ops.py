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


def max_pool3d(x, pool_size, strides):
    """Channels-last 3D max pooling, no padding (floor).

    A window along one kind of axis only (frame-wise ``1 x kh x kw``, or
    temporal ``kt x 1 x 1``) is a 2D pool of a reshaped view: PyTorch's
    channels-last 2D kernel, where its 3D kernel (with indices, even for
    inference) is generic: 3.2 of 25 ms in the C2D 30-view test on an H200.
    Same maxima, same window order (so the same gradient routing). Without a
    gradient, a temporal pool is a max over unfolded windows."""
    (kt, kh, kw), (st, sh, sw) = pool_size, strides
    b, t, h, w, c = x.shape
    if kt == st == 1:
        frames = x.reshape(b * t, h, w, c)  # (B*T, H, W, C), a view
        y = _channels_last(F.max_pool2d(_channels_first(frames), (kh, kw), (sh, sw)))
        return y.reshape(b, t, y.shape[1], y.shape[2], c)
    if kh == kw == sh == sw == 1:
        if not (torch.is_grad_enabled() and x.requires_grad):
            # No gradient to route: a max over unfolded windows, without the int64
            # argmax indices PyTorch's pools write (4x the output's bytes, 930 MiB
            # for I3D's pool2 on 30 views at 256); 3.7x faster on 2 CPU cores.
            return x.unfold(1, kt, st).amax(dim=-1)  # (B, T', H, W, C, kt) -> (B, T', H, W, C)
        columns = x.reshape(b, t, h * w, c)  # (B, T, H*W, C), a view
        y = _channels_last(F.max_pool2d(_channels_first(columns), (kt, 1), (st, 1)))
        return y.reshape(b, y.shape[1], h, w, c)
    y = F.max_pool3d(_channels_first(x), tuple(pool_size), tuple(strides))
    return _channels_last(y)


def batch_norm(x, gamma, beta, mean, variance, training: bool, epsilon: float):
    """Batch normalisation over every axis but the last, in one fused kernel
    (float32 statistics, output in the input's dtype).

    Returns ``(y, batch_mean, batch_variance)`` when training (the biased
    variance, as Keras's layer uses for its moving average; both detached),
    else ``(y, None, None)`` normalised with ``mean`` and ``variance``.
    """
    xc = _channels_first(x)
    if not training:
        y = F.batch_norm(xc, mean, variance, gamma, beta, False, 0.0, epsilon)
        return _channels_last(y), None, None
    y, batch_mean, inv_std = torch.native_batch_norm(
        xc, gamma, beta, None, None, True, 0.0, epsilon
    )
    batch_variance = torch.reciprocal(torch.square(inv_std.detach())) - epsilon
    return _channels_last(y), batch_mean.detach(), batch_variance
