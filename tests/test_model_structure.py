"""The architecture as the official code has it, read off the built models:
the variant table, feature-map sizes, layer details, parameter and FLOP counts
(spec section 2.4), argument checks. These are the same numbers on every
backend (the layers and their shapes are Keras's), so they run in the full
TensorFlow pass only; what each backend computes is in tests/test_models.py."""

import keras
import numpy as np
import pytest

from nonlocal_tf import models
from nonlocal_tf.layers import FrozenAffine, NonLocalBlock
from nonlocal_tf.models import (
    CLIPS,
    VARIANTS,
    ImageResNet,
    VideoResNet,
    count_flops,
    count_params,
    create_model,
)
from tests.helpers import TINY, tiny_frames, to_numpy


def test_the_variant_table():
    """48 records from the real axes; each named builder comes from its record."""
    assert len(VARIANTS) == 2 * 2 * 3 * len(CLIPS) == 48
    record = VARIANTS["i3d_nl5_r50_32x4"]
    assert (record.arch, record.depth, record.nonlocal_mask) == ("i3d", 50, "nl5")
    assert record.clip is CLIPS["32x4"] and record.recipe == "official_frozen_bn"
    assert VARIANTS["c2d_r101_8x8"].recipe == "official"
    for name, variant in VARIANTS.items():
        builder = getattr(models, name)
        assert builder.__name__ == name and variant.description in builder.__doc__
        assert name in models.__all__
    with pytest.raises(ValueError, match="Unknown model 'i3d_nl7_r50_8x8'"):
        create_model("i3d_nl7_r50_8x8")


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_is_built_as_its_record_says(name):
    """All 48, built for a small static clip (every layer's output shape is
    inferred on the way): the non-local blocks, frozen BN and res3's temporal
    groups follow the clip configuration. The forward passes are in
    tests/test_models.py (four variants that cover every axis, every backend)."""
    variant = VARIANTS[name]
    config = variant.clip
    frames = tiny_frames(name)
    model = create_model(name, input_shape=(frames, 64, 64, 3), **TINY)
    assert tuple(model.outputs[0].shape) == (None, 5)
    assert model.get_layer("res5_2_relu").output.shape[1] == frames // (
        2 if config.stem == "resnet_video" else 8
    )
    nl_blocks = [layer for layer in model.layers if isinstance(layer, NonLocalBlock)]
    expected_nl = {"nl5": 5, "nl10": 10 if variant.depth == 50 else 9}.get(variant.nonlocal_mask, 0)
    assert len(nl_blocks) == expected_nl
    assert any(isinstance(layer, FrozenAffine) for layer in model.layers) == config.frozen_bn
    for block in nl_blocks:
        assert block.use_bn == (not config.frozen_bn)
        in_res3 = block.name.startswith("nonlocal_conv3")
        assert block.temporal_group_size == (4 if config.frozen_bn and in_res3 else None)


@pytest.mark.parametrize(
    "size,stem_pool_padding,sizes",
    [
        (
            224,
            False,
            {"conv1": 112, "pool1": 55, "res3_3_relu": 28, "res4_5_relu": 14, "res5_2_relu": 7},
        ),
        (
            256,
            False,
            {"conv1": 128, "pool1": 63, "res3_3_relu": 32, "res4_5_relu": 16, "res5_2_relu": 8},
        ),
        (
            224,
            True,
            {"conv1": 112, "pool1": 56, "res3_3_relu": 28, "res4_5_relu": 14, "res5_2_relu": 7},
        ),
    ],
)
def test_spatial_sizes(size, stem_pool_padding, sizes):
    model = VideoResNet(
        input_shape=(8, size, size, 3), stem_pool_padding=stem_pool_padding, width_per_group=4
    )
    for layer, expected in sizes.items():
        assert model.get_layer(layer).output.shape[2:4] == (expected, expected), layer


@pytest.mark.parametrize(
    "stem,frames,temporal",
    [
        ("resnet_video", 8, {"conv1": 8, "pool1": 8, "pool2": 4, "res5_2_relu": 4}),
        ("resnet_video", 32, {"conv1": 32, "pool1": 32, "pool2": 16, "res5_2_relu": 16}),
        ("resnet_video_org", 32, {"conv1": 16, "pool1": 8, "pool2": 4, "res5_2_relu": 4}),
        ("resnet_video_org", 128, {"conv1": 64, "pool1": 32, "pool2": 16, "res5_2_relu": 16}),
    ],
)
def test_temporal_sizes(stem, frames, temporal):
    model = VideoResNet(stem=stem, input_shape=(frames, 64, 64, 3), width_per_group=4)
    for layer, expected in temporal.items():
        assert model.get_layer(layer).output.shape[1] == expected, layer


def test_layer_details():
    model = VideoResNet(
        depth=50, temporal_kernels="i3d", nonlocal_mask="nl5", input_shape=(8, 224, 224, 3)
    )
    assert model.get_layer("conv1").kernel.shape == (5, 7, 7, 3, 64)
    assert model.get_layer("conv1").strides == (1, 2, 2)
    assert model.get_layer("conv1_pad").padding == ((2, 2), (3, 3), (3, 3))
    assert model.get_layer("res3_0_branch2b").strides == (1, 2, 2)  # spatial stride on the 3x3
    assert model.get_layer("res3_0_branch2a").strides == (1, 1, 1)
    assert model.get_layer("res3_0_branch2a").kernel.shape[0] == 3
    assert model.get_layer("res3_1_branch2a").kernel.shape[0] == 1
    assert model.get_layer("res5_1_branch2a").kernel.shape[0] == 3
    assert model.get_layer("pool2").pool_size == (2, 1, 1)
    assert model.get_layer("pool1").pool_size == (1, 3, 3)
    projections = sorted(layer.name for layer in model.layers if layer.name.endswith("_branch1"))
    assert projections == ["res2_0_branch1", "res3_0_branch1", "res4_0_branch1", "res5_0_branch1"]
    names = {layer.name for layer in model.layers}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv3D):  # symmetric: 'same' at stride 1, else explicit
            same = layer.strides == (1, 1, 1) and max(layer.kernel.shape[:3]) > 1
            assert not layer.use_bias and layer.padding == ("same" if same else "valid")
            if not same and max(layer.kernel.shape[:3]) > 1:
                assert layer.name + "_pad" in names
        if isinstance(layer, keras.layers.BatchNormalization):
            assert layer.epsilon == pytest.approx(1.0000001e-5) and layer.momentum == 0.9
            zero = layer.name.endswith("branch2c_bn")
            assert np.all(to_numpy(layer.gamma) == (0.0 if zero else 1.0))
    nl = sorted(layer.name for layer in model.layers if isinstance(layer, NonLocalBlock))
    assert nl == [f"nonlocal_conv{n}" for n in ("3_1", "3_3", "4_1", "4_3", "4_5")]
    r101 = VideoResNet(
        depth=101, nonlocal_mask="nl5", input_shape=(8, 64, 64, 3), width_per_group=4
    )
    nl = sorted(layer.name for layer in r101.layers if isinstance(layer, NonLocalBlock))
    assert nl == [f"nonlocal_conv{n}" for n in ("3_1", "3_3", "4_13", "4_20", "4_6")]
    nl1 = VideoResNet(nonlocal_mask="nl1", input_shape=(8, 64, 64, 3), width_per_group=4)
    assert [layer.name for layer in nl1.layers if isinstance(layer, NonLocalBlock)] == [
        "nonlocal_conv4_4"
    ]


PARAMS = {  # official counts (spec section 2.4), BN gamma/beta included
    "c2d_r50_8x8": 24.33e6,
    "i3d_r50_8x8": 28.04e6,
    "i3d_nl5_r50_8x8": 35.40e6,
    "c2d_nl5_r50_32x2": 31.69e6,
    "c2d_r101_32x2": 43.32e6,
    "i3d_r101_32x2": 51.75e6,
    "c2d_nl5_r101_32x2": 50.68e6,
}
FLOPS = {  # GMACs per clip at 224 (spec section 2.4)
    "c2d_r50_8x8": 19.29,
    "i3d_nl5_r50_8x8": 36.24,
    "i3d_r50_32x2": 32.83,
    "c2d_r101_32x2": 35.08,
    "i3d_nl5_r50_32x4": 150.6,
    "i3d_nl5_r50_128x1": 169.5,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts(name):
    model = create_model(name)
    assert round(count_params(model) / 1e6, 2) == pytest.approx(PARAMS[name] / 1e6, abs=0.006)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FLOPS))
def test_flop_counts(name):
    frames = VARIANTS[name].clip.frames
    model = create_model(name, input_shape=(frames, 224, 224, 3))
    assert count_flops(model) / 1e9 == pytest.approx(FLOPS[name], rel=0.02)


def test_flops_need_static_shapes():
    with pytest.raises(ValueError, match="static shapes"):
        count_flops(create_model("c2d_r50_8x8", **TINY))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"depth": 34}, "depth=34"),
        ({"stem": "resnet"}, "stem='resnet'"),
        ({"nonlocal_mask": "nl7"}, "nonlocal_mask='nl7'"),
        ({"nonlocal_mask": ((0,), (0,), (0,), (0,))}, "nonlocal_mask="),
        ({"temporal_kernels": "r3d"}, "r3d"),
        ({"temporal_kernels": ((2, 1, 1), (1,) * 4, (1,) * 6, (1,) * 3)}, "temporal_kernels="),
        ({"pooling": "sum"}, "pooling='sum'"),
        ({"classes": 0}, "classes=0"),
        ({"input_shape": (8, 224, 224)}, "input_shape="),
        ({"input_shape": (3, 8, 224, 224)}, "input_shape="),
        ({"dropout_rate": 1.5}, "dropout_rate=1.5"),
        ({"include_top": False, "fully_convolutional": True}, "include_top"),
        (
            {"fully_convolutional": True, "input_shape": (8, 128, 128, 3)},
            "res5, which must be at least 7x7",
        ),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VideoResNet(**{"width_per_group": 4, **kwargs})


def test_frozen_bn_group_size_checked():
    with pytest.raises(ValueError, match="temporal_group_size"):
        create_model("i3d_nl5_r50_32x4", input_shape=(12, 64, 64, 3), **TINY)  # res3 T=6


def test_image_resnet_counts():
    assert count_params(ImageResNet(depth=50)) == 25_557_032  # torchvision resnet50's count
