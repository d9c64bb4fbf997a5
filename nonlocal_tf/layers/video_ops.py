"""3D convolution and max pooling with the Keras layers' weights, configs and
outputs, computed in forms that XLA runs fast on GPUs.

Profiling a training step of I3D R50 on an H100 (JAX backend, bfloat16,
``bench/profile_step.py``) showed XLA lays out every 3D convolution as
NCDHW: cuDNN then transposes each operand to NDHWC and back (8 ms of a 38 ms
step), the 5x7x7 stem on 3 channels alone took 7 ms, and the backward pass of
the max pools (XLA's select-and-scatter) 4.5 ms. The same functions written as

- ``(1, 1, 1)`` convolutions: one matrix product;
- ``(kt, 1, 1)`` convolutions (the I3D temporal kernels): a 2D ``(kt, 1)``
  convolution of each clip as one ``frames x positions`` image, which XLA
  keeps NHWC. A matrix product with the ``kt`` kernel slices side by side
  and a sum of time-shifted slices of its result, the form before, took
  1.1x (res4) to 4.8x (res2's first block) as long forward and backward on
  an H200 (the pads and sums of its gradient; ``bench/video_ops_forms.py``);
- ``(kt, kh, kw)`` convolutions (the stem, the 1x3x3): the ``kt`` frames of
  each window stacked on the channels (padded to a multiple of 8), then a 2D
  convolution over ``batch x time`` images, also NHWC;
- max pooling: the maximum of the window's strided slices, whose gradient is
  elementwise. On JAX the gradient is hand-written
  (`nonlocal_tf.layers.jax_ops.max_pool`): autodiff's kernel for ``pool1``'s
  overlapping windows compared every slice again for every input position;

run as matrix products, NHWC convolutions and fused elementwise kernels. The
results equal the plain layers' up to float rounding (tested on all backends).
Where a window holds its maximum more than once, the plain layers give the
gradient to the first in window order, and so does `jax_ops.max_pool`; the
other folded pools follow their backend's gradient of an elementwise maximum,
which may split it between the tied values.

``"native"`` is the backend's own 3D convolution and max pool, as Keras's
layers call them, except on PyTorch, where the layers call PyTorch's ops on a
channels-last view of the input (`nonlocal_tf.layers.torch_ops`) and skip the
two layout copies Keras's PyTorch backend makes around every call.
``implementation="auto"`` picks what was measured fastest on the backend and
device (`nonlocal_tf.runtime.conv_implementation`); ``"folded"`` and
``"native"`` force one or the other.
"""

from __future__ import annotations

import itertools

import keras
from keras import layers, ops

from nonlocal_tf.layers import checks

IMPLEMENTATIONS = ("auto", "folded", "native")


class _Implementation:
    """The ``implementation`` argument the two layers add to their Keras parent."""

    def __init__(self, *args, implementation: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"`implementation` must be one of {IMPLEMENTATIONS}. "
                f"Received: implementation={implementation!r}"
            )
        self.implementation = implementation

    def get_config(self):
        return {**super().get_config(), "implementation": self.implementation}


def _folded(implementation: str) -> bool:
    if implementation == "auto":
        from nonlocal_tf import runtime

        implementation = runtime.conv_implementation()
    return implementation == "folded"


def _on_torch() -> bool:
    return keras.backend.backend() == "torch"


def _symmetric_padding(padding: str, kernel_size, strides):
    """``(pt, ph, pw)`` equal to Keras's ``padding`` here, or None where
    'same' pads asymmetrically (an even kernel or a stride above 1)."""
    if padding == "valid":
        return (0, 0, 0)
    if all(s == 1 for s in strides) and all(k % 2 == 1 for k in kernel_size):
        return tuple(k // 2 for k in kernel_size)
    return None


def _window_offset(offset: int, count, stride: int) -> slice:
    """The positions of an axis that the window offset ``offset`` reads in
    ``count`` 'valid' windows ``stride`` apart."""
    return slice(offset, offset + (count - 1) * stride + 1, stride)


_AXES = ("frames", "rows", "columns")


def _out_size(size, kernel: int, stride: int):
    """Output length of a 'valid' window over ``size`` (static or symbolic)."""
    return (size - kernel) // stride + 1


def _guard_windows(x, window, padding: str, layer: str):
    """``x`` once its frames, height and width cover the window ('valid') or
    are not empty ('same'): the folded forms would otherwise slice nothing,
    and some native kernels crash. At once for static sizes, in the graph for
    symbolic ones (`nonlocal_tf.layers.checks`)."""
    shape = ops.shape(x)
    need = tuple(window) if padding == "valid" else (1, 1, 1)
    conditions = []
    for axis, (size, minimum) in enumerate(zip(shape[1:4], need, strict=True)):
        given = f" (the input has {size})" if checks.is_static(size) else ""
        message = (
            f"{layer}: fewer {_AXES[axis]} than its window of {minimum}{given}: "
            "the clip is too short or its frames too small for this model."
        )
        conditions.append(checks.at_least(size, minimum, message))
    return checks.guard(x, *conditions)


@keras.saving.register_keras_serializable(package="nonlocal_tf")
class VideoConv3D(_Implementation, layers.Conv3D):
    """`keras.layers.Conv3D` (channels last, no dilation or groups) that, when
    folded, runs ``(kt, 1, 1)`` kernels as a matrix product (``kt == 1``) or a
    2D convolution over frames and positions, and other kernels as a 2D
    convolution over frames stacked on the channels.

    Args:
        implementation: ``"auto"`` (the fastest measured here, see
            `nonlocal_tf.runtime.conv_implementation`), ``"folded"`` or
            ``"native"``.
        **kwargs: those of `keras.layers.Conv3D`. The folded form supports
            ``(kt, 1, 1)`` kernels with any padding and strides, other kernels
            with ``padding="valid"`` or with ``"same"``, odd sizes and stride
            1; other settings run the plain convolution.
    """

    def convolution_op(self, inputs, kernel):
        kt, kh, kw = self.kernel_size
        supported = (
            self.data_format == "channels_last"
            and self.groups == 1
            and tuple(self.dilation_rate) == (1, 1, 1)
        )
        if not supported:
            return super().convolution_op(inputs, kernel)
        inputs = _guard_windows(inputs, self.kernel_size, self.padding, self.name)
        if not _folded(self.implementation):
            padding = _symmetric_padding(self.padding, self.kernel_size, self.strides)
            if _on_torch() and padding is not None:
                from nonlocal_tf.layers import torch_ops

                kernel = ops.convert_to_tensor(kernel)
                return torch_ops.conv3d(inputs, kernel, self.strides, padding)
            return super().convolution_op(inputs, kernel)
        if kh == kw == 1:
            return _pointwise_in_space(inputs, kernel, self.strides, self.padding)
        padding = _symmetric_padding(self.padding, self.kernel_size, self.strides)
        if padding is None:
            return super().convolution_op(inputs, kernel)
        return _frames_on_channels(inputs, kernel, self.strides, padding)


def _pointwise_in_space(x, kernel, strides, padding):
    """Convolution with a ``(kt, 1, 1)`` kernel: a matrix product when
    ``kt == 1``, else a 2D ``(kt, 1)`` convolution of ``(frames, positions)``
    images, one per clip. Spatial strides subsample first (the window is one
    position wide); the time axis keeps ``padding`` and its stride."""
    kt, _, _, channels, filters = kernel.shape
    st, sh, sw = strides
    if (sh, sw) != (1, 1):
        x = x[:, :, ::sh, ::sw]
    if kt == 1:
        return ops.matmul(x[:, ::st] if st > 1 else x, kernel[0, 0, 0])
    shape = ops.shape(x)
    images = ops.reshape(x, (shape[0], shape[1], shape[2] * shape[3], channels))
    y = ops.conv(images, kernel[:, 0], strides=(st, 1), padding=padding)
    return ops.reshape(y, (shape[0], ops.shape(y)[1], shape[2], shape[3], filters))


def _frames_on_channels(x, kernel, strides, padding):
    """Convolution as a 2D one: each output frame's ``kt`` input frames side
    by side on the channels (zero-padded to a multiple of 8), the kernel
    reshaped to ``(kh, kw, kt * C, F)`` to match. ``padding``: ``(0, 0, 0)``
    ('valid') or ``(kt // 2, kh // 2, kw // 2)`` with stride 1 ('same'): the
    frames are padded, the 2D convolution pads itself."""
    kt, kh, kw, channels, filters = kernel.shape
    st, sh, sw = strides
    same = any(padding)
    if padding[0]:
        x = ops.pad(x, [[0, 0], [padding[0], padding[0]], [0, 0], [0, 0], [0, 0]])
    shape = ops.shape(x)
    frames = _out_size(shape[1], kt, st)
    if kt == 1:
        stacked = x if st == 1 else x[:, ::st]
    else:
        stacked = ops.concatenate([x[:, _window_offset(k, frames, st)] for k in range(kt)], axis=-1)
    weights = ops.reshape(ops.transpose(kernel, (1, 2, 0, 3, 4)), (kh, kw, kt * channels, filters))
    depth = kt * channels
    if depth % 8:
        extra = 8 - depth % 8
        stacked = ops.pad(stacked, [[0, 0], [0, 0], [0, 0], [0, 0], [0, extra]])
        weights = _zeros_after(weights, 2, extra)  # not ops.pad: see _zeros_after
        depth += extra
    images = ops.reshape(stacked, (-1, shape[2], shape[3], depth))
    if (sh, sw) == (2, 2) and not same and depth <= 16 and min(kh, kw) > 1:
        y = _stride2_as_stride1(images, weights)
    else:
        y = ops.conv(images, weights, strides=(sh, sw), padding="same" if same else "valid")
    out_shape = ops.shape(y)
    return ops.reshape(y, (shape[0], frames, out_shape[1], out_shape[2], filters))


def _stride2_as_stride1(images, weights):
    """A 'valid' stride-2 2D convolution of an input with few channels (conv1:
    3 colours, or 5 frames x 3 stacked), computed as a stride-1 one on 2 x 2
    blocks of pixels moved onto the channels ("space to depth"): the kernel,
    zero-padded to even sizes, becomes ``(kh/2, kw/2, 4C, F)``. Same output;
    the GPU's convolution kernels are much faster on 4x the channels at a
    quarter of the pixels than on 8-16 channels at stride 2."""
    kh, kw, depth, filters = weights.shape
    _, height, width, _ = ops.shape(images)
    out_h, out_w = (height - kh) // 2 + 1, (width - kw) // 2 + 1
    if kh % 2:
        weights = _zeros_after(weights, 0, 1)
    if kw % 2:
        weights = _zeros_after(weights, 1, 1)
    ph, pw = kh + kh % 2, kw + kw % 2  # the kernel's even sizes
    # Rows and columns the even kernel reads: at most one beyond the input
    # (zero-weighted). Padded by what a static size needs, and by the most it
    # can need where the size is symbolic (no Python test on a traced size),
    # then cropped to exactly what is read.
    need_h, need_w = 2 * (out_h - 1) + ph, 2 * (out_w - 1) + pw
    pad_h = max(0, need_h - height) if isinstance(height, int) else kh % 2
    pad_w = max(0, need_w - width) if isinstance(width, int) else kw % 2
    if pad_h or pad_w:
        images = ops.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
    images = images[:, :need_h, :need_w]
    blocks = ops.reshape(images, (-1, need_h // 2, 2, need_w // 2, 2, depth))
    blocks = ops.reshape(
        ops.transpose(blocks, (0, 1, 3, 2, 4, 5)), (-1, need_h // 2, need_w // 2, 4 * depth)
    )
    kernel = ops.reshape(weights, (ph // 2, 2, pw // 2, 2, depth, filters))
    kernel = ops.reshape(
        ops.transpose(kernel, (0, 2, 1, 3, 4, 5)), (ph // 2, pw // 2, 4 * depth, filters)
    )
    return ops.conv(blocks, kernel, strides=1, padding="valid")


def _zeros_after(x, axis: int, count: int):
    """``x`` (static shape) with ``count`` zeros appended on ``axis``. A
    concatenation, not ``ops.pad``: TensorFlow's oneDNN graph rewrite aborts the
    process on a Conv2D whose filter is a Pad ("Could not find input edge 1 for
    Conv2D", TF 2.21 on CPUs where oneDNN is on)."""
    shape = list(x.shape)
    shape[axis] = count
    return ops.concatenate([x, ops.zeros(shape, x.dtype)], axis=axis)


@keras.saving.register_keras_serializable(package="nonlocal_tf")
class VideoMaxPooling3D(_Implementation, layers.MaxPooling3D):
    """`keras.layers.MaxPooling3D` (channels last, ``padding="valid"``) that,
    when folded, takes the maximum of the window's strided slices
    (`max_of_slices`), whose gradient is elementwise (XLA's select-and-scatter
    is slow on GPUs).

    Args:
        implementation: ``"auto"`` (as `VideoConv3D`'s), ``"folded"`` or
            ``"native"``.
        **kwargs: those of `keras.layers.MaxPooling3D`.
    """

    def call(self, inputs):
        if not (self.padding == "valid" and self.data_format == "channels_last"):
            return super().call(inputs)
        sizes = tuple(self.pool_size)
        strides = tuple(self.strides)
        inputs = _guard_windows(inputs, sizes, "valid", self.name)
        if not _folded(self.implementation):
            if _on_torch():
                from nonlocal_tf.layers import torch_ops

                return torch_ops.max_pool3d(inputs, sizes, strides)
            return _in_dtype(super().call, inputs)
        return max_of_slices(inputs, sizes, strides)


def _in_dtype(pool, x):
    """``pool(x)`` computed in the dtype the backend's kernel exists for here
    (`nonlocal_tf.runtime.native_pool_dtype`), returned in ``x``'s dtype."""
    from nonlocal_tf import runtime

    dtype = runtime.native_pool_dtype(x.dtype)
    if dtype == keras.backend.standardize_dtype(x.dtype):
        return pool(x)
    return ops.cast(pool(ops.cast(x, dtype)), x.dtype)


def max_of_slices(x, pool_size, strides):
    """'valid' max pooling of a channels-last ``x`` (batch first, one to three
    axes between batch and channels): the elementwise maximum of the window's
    strided slices. Runs in every dtype on every backend (TensorFlow has no
    float16 MaxPool3D kernel on CPU), exports as plain slices (a reduction
    exports to TFLite as a conditional its CPU delegate refuses), and its
    gradient is elementwise. On JAX, `nonlocal_tf.layers.jax_ops.max_pool`:
    the same maxima, with a hand-written gradient."""
    if keras.backend.backend() == "jax":
        from nonlocal_tf.layers import jax_ops

        return jax_ops.max_pool(x, pool_size, strides)
    return _slice_maxima(x, pool_size, strides)


def _slice_maxima(x, pool_size, strides):
    """`max_of_slices` in Keras operations (its gradient: autodiff's)."""
    grid = ops.shape(x)[1:-1]
    counts = [_out_size(n, k, s) for n, k, s in zip(grid, pool_size, strides, strict=True)]
    out = None
    for offsets in itertools.product(*(range(k) for k in pool_size)):
        index = [_window_offset(o, c, s) for o, c, s in zip(offsets, counts, strides, strict=True)]
        window = x[(slice(None), *index)]
        out = window if out is None else ops.maximum(out, window)
    return out
