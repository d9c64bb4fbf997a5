"""2D ResNet-50/101 with non-local blocks for images (the paper's COCO backbone:
one block right before the last residual block of res4), returning class scores
or the res2..res5 feature maps. Layer names follow the same official scheme as
the video models, so ImageNet weights inflate into C2D / I3D by name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import MappingProxyType

import keras
from keras import layers

from nonlocal_tf.layers import NonLocalBlock
from nonlocal_tf.layers.normalize import Normalize
from nonlocal_tf.models import weights_hook
from nonlocal_tf.models.blocks import bottleneck, conv, norm_factory
from nonlocal_tf.models.functional import LeanFunctional, record
from nonlocal_tf.models.resnet_video import (
    BLOCK_COUNTS,
    BOTTLENECK_WIDTHS,
    PIXEL_MEAN,
    PIXEL_STD,
    STAGES,
    resolve_nonlocal_mask,
)


def ImageResNet(
    depth: int = 50,
    nonlocal_mask: str | Sequence[Sequence[int]] = "none",
    nonlocal_kwargs: dict | None = None,
    include_top: bool = True,
    weights: str | None = None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    return_features: bool = False,
    frozen_bn: bool = False,
    stem_pool_padding: bool = True,
    include_preprocessing: bool = False,
    width_per_group: int = 64,
    name: str = "image_resnet",
) -> keras.Model:
    """Builds a 2D ResNet (stride on the 3x3 convolution) with optional
    non-local blocks (`NonLocalBlock` on images: 2x2 subsampling).

    Args:
        depth: 50 or 101.
        nonlocal_mask: ``"none"``, ``"nl1"`` (the paper's COCO placement),
            ``"nl5"``, ``"nl10"`` or per-block flags, as for `VideoResNet`.
        nonlocal_kwargs: options of every `NonLocalBlock`.
        include_top: global average pooling and the ``pred`` classifier.
        weights: None, a catalogue entry, a checkpoint file or URL, or a
            Keras ``.weights.h5`` file (as `VideoResNet`'s).
        input_shape: ``(H, W, 3)``; default ``(None, None, 3)``.
        pooling: without the top, None, ``"avg"`` or ``"max"``.
        classes: classifier size.
        classifier_activation: output activation (float32).
        return_features: return a dict of the stage outputs ``res2`` ... ``res5``
            (for detection and segmentation) instead of class scores.
        frozen_bn: `FrozenAffine` instead of BatchNormalization.
        stem_pool_padding: pad pool1 by 1 (torchvision/Detectron convention:
            224 -> 56); False reproduces the video models' unpadded pool1 (55).
        include_preprocessing: RGB in [0, 255], ``(x - 114.75) / 57.375``.
        width_per_group: res2 bottleneck width (64).
        name: model name.
    """
    arguments = dict(locals())
    if depth not in BLOCK_COUNTS:
        raise ValueError(
            f"`depth` must be one of {sorted(BLOCK_COUNTS)}. Received: depth={depth!r}"
        )
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"`pooling` must be None, 'avg' or 'max'. Received: pooling={pooling!r}")
    if return_features and include_top:
        raise ValueError("`return_features=True` returns feature maps: it needs include_top=False.")
    mask = resolve_nonlocal_mask(nonlocal_mask, depth)
    input_shape = tuple(input_shape) if input_shape is not None else (None, None, 3)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"`input_shape` must be (H, W, 3). Received: input_shape={input_shape}")
    nl_kwargs = {"use_bn": not frozen_bn, **(nonlocal_kwargs or {})}

    inputs = keras.Input(input_shape, name="image")
    x = inputs
    if include_preprocessing:
        x = Normalize(PIXEL_MEAN, PIXEL_STD, name="preprocess")(x)
    norm = norm_factory(frozen_bn)
    x = conv(x, width_per_group, (7, 7), (2, 2), "conv1", padding=(3, 3))
    x = norm("res_conv1_bn")(x)
    x = layers.ReLU(name="res_conv1_relu")(x)
    if stem_pool_padding:
        x = layers.ZeroPadding2D(1, name="pool1_pad")(x)  # after ReLU: same as -inf padding
    x = layers.MaxPooling2D(3, strides=2, padding="valid", name="pool1")(x)

    features = {}
    dim_in = width_per_group
    for stage_idx, stage in enumerate(STAGES):
        width = width_per_group * BOTTLENECK_WIDTHS[stage_idx] // 64
        for block in range(BLOCK_COUNTS[depth][stage_idx]):
            stride = 2 if (stage > 2 and block == 0) else 1
            x = bottleneck(x, f"res{stage}_{block}", dim_in, width, stride, norm)
            dim_in = 4 * width
            if mask[stage_idx][block]:
                x = NonLocalBlock(name=f"nonlocal_conv{stage}_{block}", **nl_kwargs)(x)
        features[f"res{stage}"] = x

    if return_features:
        outputs = features
    elif include_top:
        x = layers.GlobalAveragePooling2D(name="pool5")(x)
        x = layers.Dense(
            classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01), name="pred"
        )(x)
        outputs = layers.Activation(
            classifier_activation or "linear", dtype="float32", name="predictions"
        )(x)
    elif pooling == "avg":
        outputs = layers.GlobalAveragePooling2D(name="pool5")(x)
    elif pooling == "max":
        outputs = layers.GlobalMaxPooling2D(name="pool5")(x)
    else:
        outputs = x
    model = LeanFunctional(inputs, outputs, name=name)
    record(model, "ImageResNet", arguments)
    if weights is not None:
        weights_hook.load(model, weights)
    return model


# The named image models as one table: ImageResNet's arguments of each (the
# builder functions below come from it).
IMAGE_ARGUMENTS = MappingProxyType(
    {
        "resnet50_image": MappingProxyType({"depth": 50, "name": "resnet50"}),
        "resnet101_image": MappingProxyType({"depth": 101, "name": "resnet101"}),
        "resnet50_nl1_image": MappingProxyType(
            {"depth": 50, "nonlocal_mask": "nl1", "name": "resnet50_nl1"}
        ),
        "resnet101_nl1_image": MappingProxyType(
            {"depth": 101, "nonlocal_mask": "nl1", "name": "resnet101_nl1"}
        ),
    }
)
_DESCRIPTIONS = {
    "resnet50_image": "ImageNet ResNet-50, no non-local block.",
    "resnet101_image": "ImageNet ResNet-101, no non-local block.",
    "resnet50_nl1_image": "ResNet-50 with the paper's COCO non-local block (after res4_4).",
    "resnet101_nl1_image": "ResNet-101 with the paper's COCO non-local block (after res4_21).",
}


def _image_builder(name: str) -> Callable[..., keras.Model]:
    def build(**kwargs) -> keras.Model:
        return ImageResNet(**{**IMAGE_ARGUMENTS[name], **kwargs})

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"{_DESCRIPTIONS[name]}\n\nKeyword arguments go to `ImageResNet`."
    return build


IMAGE_VARIANTS = MappingProxyType({name: _image_builder(name) for name in IMAGE_ARGUMENTS})
resnet50_image = IMAGE_VARIANTS["resnet50_image"]
resnet101_image = IMAGE_VARIANTS["resnet101_image"]
resnet50_nl1_image = IMAGE_VARIANTS["resnet50_nl1_image"]
resnet101_nl1_image = IMAGE_VARIANTS["resnet101_nl1_image"]
