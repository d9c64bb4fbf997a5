"""Video ResNets (C2D / I3D, with or without non-local blocks), exact to the
official Caffe2 architecture (facebookresearch/video-nonlocal-net,
``resnet_video.py`` and ``resnet_video_org.py``).

Layer names are the weights contract: they are the official blob prefixes, so a
checkpoint blob ``res4_3_branch2b_bn_s`` is the ``gamma`` of layer
``res4_3_branch2b_bn`` and ``nonlocal_conv4_3_theta_w`` the ``theta`` kernel of
layer ``nonlocal_conv4_3``. See ``docs`` in the README for the full scheme.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from nonlocal_tf.layers import NonLocalBlock, VideoMaxPooling3D
from nonlocal_tf.layers.nonlocal_block import OFFICIAL_BN_EPSILON
from nonlocal_tf.layers.normalize import Normalize
from nonlocal_tf.models import weights_hook
from nonlocal_tf.models.blocks import bottleneck, conv, norm_factory
from nonlocal_tf.models.functional import LeanFunctional, record

BLOCK_COUNTS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
STAGES = (2, 3, 4, 5)
BOTTLENECK_WIDTHS = (64, 128, 256, 512)  # x4 at each stage's output
# Stem per clip configuration: conv1 temporal stride, pool1 kernel and strides.
STEMS = {
    "resnet_video": (1, (1, 3, 3), (1, 2, 2)),  # official 8x8 and 32x4 models
    "resnet_video_org": (2, (2, 3, 3), (2, 2, 2)),  # official 32x2 and 128x1 models
    "mmaction2": (2, (1, 3, 3), (2, 2, 2)),  # mmaction2 I3D: pool1 padded (0, 1, 1)
}

# Official RGB normalisation: (x - 114.75) / 57.375 on [0, 255] pixels.
PIXEL_MEAN = 114.75
PIXEL_STD = 57.375


def resolve_temporal_kernels(
    kind: str | Sequence[Sequence[int]], depth: int
) -> tuple[tuple[int, ...], ...]:
    """Per-block temporal kernel size of branch2a, stage by stage (``obtain_arc``).

    ``"c2d"``: all 1. ``"i3d"``: a 3x1x1 kernel every other block, as the
    official I3D_{3x1x1}: res2 (3,3,3), res3 (3,1,3,1), res4 (3,1,3,1,...),
    res5 (1,3,1).
    """
    counts = BLOCK_COUNTS[depth]
    if isinstance(kind, str):
        if kind == "c2d":
            return tuple((1,) * n for n in counts)
        if kind == "i3d":
            res2 = (3,) * counts[0]
            res3 = tuple(3 if i % 2 == 0 else 1 for i in range(counts[1]))
            res4 = tuple(3 if i % 2 == 0 else 1 for i in range(counts[2]))
            res5 = tuple(3 if i % 2 == 1 else 1 for i in range(counts[3]))
            return (res2, res3, res4, res5)
        raise ValueError(
            f"`temporal_kernels` must be 'c2d', 'i3d' or per-block sizes. Received: {kind!r}"
        )
    kernels = tuple(tuple(int(k) for k in stage) for stage in kind)
    if tuple(len(s) for s in kernels) != counts or any(
        k < 1 or k % 2 == 0 for s in kernels for k in s
    ):
        raise ValueError(
            f"`temporal_kernels` needs odd sizes for {counts} blocks (depth {depth}). "
            f"Received: temporal_kernels={kind!r}"
        )
    return kernels


def resolve_nonlocal_mask(
    mask: str | Sequence[Sequence[int]], depth: int
) -> tuple[tuple[int, ...], ...]:
    """Where non-local blocks go: per stage, one 0/1 flag per residual block; a
    block is inserted after the flagged residual block (after its ReLU).

    - ``"none"``: no block.
    - ``"nl5"``: the official 5 blocks. R50: after res3_1, res3_3, res4_1,
      res4_3, res4_5. R101: after res3_1, res3_3, res4_6, res4_13, res4_20.
    - ``"nl10"``: the official ``LAYER_MOD=1`` placement. R50: every block of
      res3 and res4 (10). R101: res3_1, res3_3 and every third res4 block from
      res4_2 (9: the released code cannot express the paper's R101 10-block).
    - ``"nl1"``: the paper's 1-block models, right before the last residual
      block of res4 (after res4_4 in R50, res4_21 in R101).
    """
    counts = BLOCK_COUNTS[depth]

    def every(n, mod):  # official rule: idx % layer_mod == layer_mod - 1
        return tuple(int(i % mod == mod - 1) for i in range(n))

    none = tuple((0,) * n for n in counts)
    if isinstance(mask, str):
        if mask == "none":
            return none
        if mask == "nl5":
            res4_mod = 2 if depth == 50 else 7
            return (none[0], every(counts[1], 2), every(counts[2], res4_mod), none[3])
        if mask == "nl10":
            res3_mod, res4_mod = (1, 1) if depth == 50 else (2, 3)
            return (none[0], every(counts[1], res3_mod), every(counts[2], res4_mod), none[3])
        if mask == "nl1":
            res4 = tuple(int(i == counts[2] - 2) for i in range(counts[2]))
            return (none[0], none[1], res4, none[3])
        raise ValueError(
            "`nonlocal_mask` must be 'none', 'nl1', 'nl5', 'nl10' or per-block 0/1 flags. "
            f"Received: nonlocal_mask={mask!r}"
        )
    flags = tuple(tuple(int(bool(f)) for f in stage) for stage in mask)
    if tuple(len(s) for s in flags) != counts:
        raise ValueError(
            f"`nonlocal_mask` needs {counts} flags per stage (depth {depth}). Received: nonlocal_mask={mask!r}"
        )
    return flags


def VideoResNet(
    depth: int = 50,
    temporal_kernels: str | Sequence[Sequence[int]] = "i3d",
    conv1_temporal_kernel: int | None = None,
    stem: str = "resnet_video",
    nonlocal_mask: str | Sequence[Sequence[int]] = "none",
    nonlocal_kwargs: dict | None = None,
    frozen_bn: bool = False,
    nonlocal_group_size: int | None = None,
    include_top: bool = True,
    weights: str | None = None,
    input_shape: tuple | None = None,
    input_tensor=None,
    pooling: str | None = None,
    classes: int = 400,
    classifier_activation: str | None = "softmax",
    dropout_rate: float = 0.5,
    fully_convolutional: bool = False,
    include_preprocessing: bool = False,
    stem_pool_padding: bool | None = None,
    temporal_pool: bool = True,
    pixel_mean: float | Sequence[float] = PIXEL_MEAN,
    pixel_std: float | Sequence[float] = PIXEL_STD,
    bn_epsilon: float = OFFICIAL_BN_EPSILON,
    width_per_group: int = 64,
    conv_implementation: str = "auto",
    name: str = "video_resnet",
) -> keras.Model:
    """Builds a C2D / I3D video ResNet with optional non-local blocks.

    Args:
        depth: 50 or 101.
        temporal_kernels: ``"c2d"``, ``"i3d"`` or per-stage tuples of per-block
            branch2a temporal kernel sizes (see `resolve_temporal_kernels`).
        conv1_temporal_kernel: temporal size of conv1; default 5 for ``"i3d"``
            and 1 otherwise.
        stem: ``"resnet_video"`` (8x8 and 32x4 clips: conv1 temporal stride 1,
            pool1 1x3x3 stride 1x2x2) or ``"resnet_video_org"`` (32x2 and
            128x1 clips: conv1 temporal stride 2, pool1 2x3x3 stride 2x2x2),
            or ``"mmaction2"`` (conv1 temporal stride 2, pool1 1x3x3 stride
            2x2x2, padded).
        nonlocal_mask: ``"none"``, ``"nl1"``, ``"nl5"``, ``"nl10"`` or explicit
            per-block flags (see `resolve_nonlocal_mask`).
        nonlocal_kwargs: options of every `NonLocalBlock` (instantiation,
            pool_position, implementation, ...). In frozen-BN mode the blocks
            default to no BN and a zero-initialised output projection.
        frozen_bn: the official "affine" models: every BN a fixed `FrozenAffine`.
        nonlocal_group_size: frames per temporal group of the res3 non-local
            blocks; default 4 in frozen-BN mode (official ``res_stage_nonlocal_group``)
            and None (whole clip) otherwise.
        include_top: the classifier (``pool5``, ``dropout``, ``pred``).
        weights: None (random init), a catalogue entry
            (`nonlocal_tf.pretrained.CATALOG`), a checkpoint file or URL of a
            supported format, or a Keras ``.weights.h5`` file.
        input_shape: ``(T, H, W, 3)``; any entry may be None. Default
            ``(None, None, None, 3)``.
        input_tensor: optional Keras tensor to use as the input.
        pooling: without the top, None (the res5 map), ``"avg"`` or ``"max"``.
        classes: number of classes of ``pred``.
        classifier_activation: activation of the output (float32).
        dropout_rate: dropout before ``pred`` during training (official 0.5).
        fully_convolutional: the official test head: average pool (T, 7, 7)
            with stride 1, ``pred`` applied at every position, the activation per
            position, then averaged. Works at 256x256 and on full frames.
        include_preprocessing: take RGB in [0, 255] and apply
            ``(x - 114.75) / 57.375`` in the model.
        stem_pool_padding: pad pool1 by (0, 1, 1) as PySlowFast and mmaction2
            do (224 -> 56 instead of the official 55); default True only for
            the ``"mmaction2"`` stem.
        temporal_pool: the official ``pool2`` (max 2x1x1, stride 2) after res2;
            False gives PySlowFast's ``C2D_NOPOOL``.
        pixel_mean, pixel_std: the in-model normalisation (RGB order) with
            ``include_preprocessing``; official 114.75 and 57.375 for every
            channel.
        bn_epsilon: of every BatchNormalization (official 1.0000001e-5;
            PyTorch models 1e-5).
        width_per_group: bottleneck width of res2 (official 64); smaller values
            give tiny models for tests.
        conv_implementation: how the 3D convolutions and max pools compute
            (same weights and outputs): ``"auto"`` (folded into matrix
            products and 2D convolutions on JAX, which XLA runs faster on GPUs;
            plain elsewhere), ``"folded"`` or ``"native"``. See
            `nonlocal_tf.layers.VideoConv3D`.
        name: model name.

    Returns:
        A `keras.Model` (`LeanFunctional`) whose ``info`` records these arguments.
    """
    arguments = dict(locals())
    if depth not in BLOCK_COUNTS:
        raise ValueError(
            f"`depth` must be one of {sorted(BLOCK_COUNTS)}. Received: depth={depth!r}"
        )
    if stem not in STEMS:
        raise ValueError(f"`stem` must be one of {tuple(STEMS)}. Received: stem={stem!r}")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"`pooling` must be None, 'avg' or 'max'. Received: pooling={pooling!r}")
    if include_top and (not isinstance(classes, int) or classes < 1):
        raise ValueError(f"`classes` must be a positive int. Received: classes={classes!r}")
    if fully_convolutional and not include_top:
        raise ValueError("`fully_convolutional` is a head: it needs include_top=True.")
    if not 0 <= dropout_rate < 1:
        raise ValueError(
            f"`dropout_rate` must be in [0, 1). Received: dropout_rate={dropout_rate!r}"
        )
    kernels = resolve_temporal_kernels(temporal_kernels, depth)
    mask = resolve_nonlocal_mask(nonlocal_mask, depth)
    if conv1_temporal_kernel is None:
        conv1_temporal_kernel = 5 if temporal_kernels == "i3d" else 1
    if nonlocal_group_size is None and frozen_bn:
        nonlocal_group_size = 4
    nl_kwargs = {"use_bn": not frozen_bn, **(nonlocal_kwargs or {})}
    input_shape = _check_input_shape(input_shape)

    inputs = input_tensor if input_tensor is not None else keras.Input(input_shape, name="video")
    x = inputs
    if include_preprocessing:
        x = Normalize(pixel_mean, pixel_std, name="preprocess")(x)

    norm = norm_factory(frozen_bn, bn_epsilon)
    if stem_pool_padding is None:
        stem_pool_padding = stem == "mmaction2"
    impl = conv_implementation
    x = _stem(x, stem, conv1_temporal_kernel, width_per_group, norm, stem_pool_padding, impl)
    dim_in = width_per_group
    for stage_idx, stage in enumerate(STAGES):
        width = width_per_group * BOTTLENECK_WIDTHS[stage_idx] // 64
        for block in range(BLOCK_COUNTS[depth][stage_idx]):
            spatial_stride = 2 if (stage > 2 and block == 0) else 1
            prefix = f"res{stage}_{block}"
            kt = kernels[stage_idx][block]
            x = bottleneck(
                x,
                prefix,
                dim_in,
                width,
                spatial_stride,
                norm,
                temporal_kernel=kt,
                implementation=impl,
            )
            dim_in = 4 * width
            if mask[stage_idx][block]:
                group = nonlocal_group_size if stage == 3 else None
                x = NonLocalBlock(
                    temporal_group_size=group, name=f"nonlocal_conv{stage}_{block}", **nl_kwargs
                )(x)
        if stage == 2 and temporal_pool:
            x = VideoMaxPooling3D((2, 1, 1), (2, 1, 1), implementation=impl, name="pool2")(x)

    if include_top:
        x = _head(x, classes, classifier_activation, dropout_rate, fully_convolutional)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling3D(name="pool5")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling3D(name="pool5")(x)

    source = keras.utils.get_source_inputs(inputs) if input_tensor is not None else inputs
    model = LeanFunctional(source, x, name=name)
    record(model, "VideoResNet", arguments)
    if weights is not None:
        weights_hook.load(model, weights)
    return model


def _check_input_shape(input_shape):
    if input_shape is None:
        return (None, None, None, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 4 or input_shape[-1] != 3:
        raise ValueError(
            f"`input_shape` must be (T, H, W, 3), channels last. Received: input_shape={input_shape}"
        )
    return input_shape


def _stem(x, stem, kt, width, norm, pool_padding, implementation):
    temporal_stride, pool_size, pool_strides = STEMS[stem]
    x = conv(
        x,
        width,
        (kt, 7, 7),
        (temporal_stride, 2, 2),
        "conv1",
        padding=(kt // 2, 3, 3),
        implementation=implementation,
    )
    x = norm("res_conv1_bn")(x)
    x = layers.ReLU(name="res_conv1_relu")(x)
    if pool_padding:  # after the ReLU, zero padding is the same as -inf padding
        x = layers.ZeroPadding3D(((0, 0), (1, 1), (1, 1)), name="pool1_pad")(x)
    return VideoMaxPooling3D(
        pool_size, pool_strides, padding="valid", implementation=implementation, name="pool1"
    )(x)


def _head(x, classes, activation, dropout_rate, fully_convolutional):
    pred = layers.Dense(
        classes,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        name="pred",
    )
    if not fully_convolutional:
        x = layers.GlobalAveragePooling3D(name="pool5")(x)
        if dropout_rate:
            x = layers.Dropout(dropout_rate, name="dropout")(x)
        x = pred(x)
        return layers.Activation(activation or "linear", dtype="float32", name="predictions")(x)
    # Official test: pool5 = AvgPool(T, 7, 7) stride 1; pred as a 1x1x1 conv;
    # softmax per position; mean over positions.
    res5 = tuple(x.shape[2:4])
    if any(d is not None and d < 7 for d in res5):
        raise ValueError(
            "The fully-convolutional head pools 7x7 windows of res5, which must be at least "
            f"7x7 and is {res5[0]}x{res5[1]} here: use frames of about 200 pixels or more "
            "(the official test uses 256)."
        )
    x = TemporalMean(name="pool5_time")(x)
    # float32: PyTorch has no bfloat16 3D average pool on CPUs (and the mean is more exact)
    x = layers.AveragePooling3D(
        (1, 7, 7), strides=1, padding="valid", dtype="float32", name="pool5"
    )(x)
    x = pred(x)
    x = layers.Activation(activation or "linear", dtype="float32", name="predictions_map")(x)
    return layers.GlobalAveragePooling3D(dtype="float32", name="predictions")(x)


@keras.saving.register_keras_serializable(package="nonlocal_tf")
class TemporalMean(layers.Layer):
    """Mean over the time axis, keeping it: ``(B, T, H, W, C) -> (B, 1, H, W, C)``.

    The official pool5 kernel spans the clip's whole res5 length; taking the
    mean over T does the same for any clip length."""

    def call(self, inputs):
        return keras.ops.mean(inputs, axis=1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, *input_shape[2:])
