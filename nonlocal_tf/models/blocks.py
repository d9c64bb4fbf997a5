"""Building blocks shared by the video and image ResNets: explicit symmetric
padding, bias-free convolutions, BN (or frozen affine) and the bottleneck."""

from __future__ import annotations

import functools

import keras
from keras import layers

from nonlocal_tf.layers import BatchNormalization, FrozenAffine, VideoConv3D
from nonlocal_tf.layers.nonlocal_block import OFFICIAL_BN_EPSILON

_PAD = {2: layers.ZeroPadding2D, 3: layers.ZeroPadding3D}


def norm_factory(frozen_bn: bool, epsilon: float = OFFICIAL_BN_EPSILON):
    """Returns ``norm(name, zero_gamma=False)``: the official BN (eps
    1.0000001e-5, momentum 0.9) or, for frozen-BN models, a `FrozenAffine`."""

    def norm(name: str, zero_gamma: bool = False):
        init = "zeros" if zero_gamma else "ones"
        if frozen_bn:
            return FrozenAffine(gamma_initializer=init, name=name)
        return BatchNormalization(
            axis=-1, epsilon=epsilon, momentum=0.9, gamma_initializer=init, name=name
        )

    return norm


def conv(x, filters, kernel, strides, name, padding=None, implementation="auto"):
    """Symmetric zero padding and a convolution; no bias; MSRA init (normal,
    fan_out). The rank (2D or 3D) follows ``len(kernel)``. With stride 1 and
    odd kernels padded by ``k // 2`` the padding is Keras's 'same', which the
    layer does itself (no padded copy in memory); otherwise an explicit
    ``ZeroPadding`` layer and a 'valid' convolution (Keras's 'same' pads
    asymmetrically for stride 2). 3D convolutions are `VideoConv3D` with this
    ``implementation``."""
    rank = len(kernel)
    padding = tuple(padding or (0,) * rank)
    strides = (strides,) * rank if isinstance(strides, int) else tuple(strides)
    init = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")
    mode = "valid"
    if (
        any(padding)
        and all(s == 1 for s in strides)
        and all(k % 2 == 1 and p == k // 2 for k, p in zip(kernel, padding, strict=True))
    ):
        mode = "same"
    elif any(padding):
        x = _PAD[rank](tuple((p, p) for p in padding), name=f"{name}_pad")(x)
    if rank == 2:
        layer = layers.Conv2D
    else:
        layer = functools.partial(VideoConv3D, implementation=implementation)
    return layer(
        filters,
        kernel,
        strides=strides,
        padding=mode,
        use_bias=False,
        kernel_initializer=init,
        name=name,
    )(x)


def bottleneck(x, prefix, dim_in, width, stride, norm, temporal_kernel=None, implementation="auto"):
    """``res{S}_{i}``: 1x1 conv (temporal kernel ``kt x 1 x 1`` on video) ->
    3x3 conv with the spatial stride -> 1x1 conv, each with BN (the last one's
    gamma starts at 0); a projection shortcut (``branch1``) when the shape
    changes; add; ReLU. 2D when ``temporal_kernel`` is None; ``implementation``
    of the 3D convolutions (`VideoConv3D`)."""
    video = temporal_kernel is not None
    dim_out = 4 * width

    def k(spatial, t=1):
        return (t, *spatial) if video else spatial

    shortcut = x
    if dim_in != dim_out or stride != 1:
        shortcut = conv(
            x,
            dim_out,
            k((1, 1)),
            k((stride, stride)),
            f"{prefix}_branch1",
            implementation=implementation,
        )
        shortcut = norm(f"{prefix}_branch1_bn")(shortcut)
    kt = temporal_kernel or 1
    y = conv(
        x,
        width,
        k((1, 1), kt),
        1,
        f"{prefix}_branch2a",
        padding=k((0, 0), kt // 2),
        implementation=implementation,
    )
    y = norm(f"{prefix}_branch2a_bn")(y)
    y = layers.ReLU(name=f"{prefix}_branch2a_relu")(y)
    y = conv(
        y,
        width,
        k((3, 3)),
        k((stride, stride)),
        f"{prefix}_branch2b",
        padding=k((1, 1), 0),
        implementation=implementation,
    )
    y = norm(f"{prefix}_branch2b_bn")(y)
    y = layers.ReLU(name=f"{prefix}_branch2b_relu")(y)
    y = conv(y, dim_out, k((1, 1)), 1, f"{prefix}_branch2c", implementation=implementation)
    y = norm(f"{prefix}_branch2c_bn", zero_gamma=True)(y)
    y = layers.Add(name=f"{prefix}_sum")([y, shortcut])
    return layers.ReLU(name=f"{prefix}_relu")(y)
