"""Video and image ResNet builders: every named variant, exactness to the
official architecture, parameter and FLOP counts, inflation."""

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
from nonlocal_tf.weights import inflate_weights
from tests.helpers import to_numpy

pytestmark = pytest.mark.all_backends

TINY = {"width_per_group": 4, "classes": 5}


def tiny_frames(name: str) -> int:
    """Shortest clip whose res3 still holds a whole temporal group of 4 frames."""
    return 8 if VARIANTS[name].clip.stem == "resnet_video" else 32


def clip(frames, size, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, size=(batch, frames, size, size, 3)).astype("float32")


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


def one_per_architecture() -> list[str]:
    """12 of the 48 variants: each (arch, depth, non-local mask) once, the clip
    configurations in turn (each 3 times)."""
    clips = list(CLIPS)
    keys = sorted({(v.arch, v.depth, v.nonlocal_mask) for v in VARIANTS.values()})
    return [
        next(
            name
            for name, v in VARIANTS.items()
            if (v.arch, v.depth, v.nonlocal_mask) == key and v.clip is CLIPS[clips[i % len(clips)]]
        )
        for i, key in enumerate(keys)
    ]


# Every variant on TensorFlow (the full pass of `make test`); one per architecture on the
# other backends, whose passes repeat the backend-neutral tests.
VARIANT_CASES = (
    sorted(VARIANTS) if keras.backend.backend() == "tensorflow" else one_per_architecture()
)


@pytest.mark.parametrize("name", VARIANT_CASES)
def test_variant(name, tmp_path):
    frames = tiny_frames(name)
    model = create_model(
        name, input_shape=(None, None, None, 3), include_preprocessing=True, **TINY
    )
    # Train head, None T/H/W: two clip shapes through one model.
    for t, size in [(frames, 64), (2 * frames, 48)]:
        out = to_numpy(model(clip(t, size), training=False))
        assert out.shape == (2, 5)
        np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)
    # Structure follows the clip configuration.
    variant = VARIANTS[name]
    config = variant.clip
    nl_blocks = [layer for layer in model.layers if isinstance(layer, NonLocalBlock)]
    expected_nl = {"nl5": 5, "nl10": 10 if variant.depth == 50 else 9}.get(variant.nonlocal_mask, 0)
    assert len(nl_blocks) == expected_nl
    assert any(isinstance(layer, FrozenAffine) for layer in model.layers) == config.frozen_bn
    for block in nl_blocks:
        assert block.use_bn == (not config.frozen_bn)
        in_res3 = block.name.startswith("nonlocal_conv3")
        assert block.temporal_group_size == (4 if config.frozen_bn and in_res3 else None)
    # .keras round trip.
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = clip(frames, 40, batch=1)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["c2d_nl5_r50_8x8", "i3d_nl5_r50_32x4", "i3d_nl10_r101_32x2"])
def test_fully_convolutional_head(name):
    frames = tiny_frames(name)
    model = create_model(
        name, fully_convolutional=True, input_shape=(frames, None, None, 3), **TINY
    )
    for size in (256, 288):  # 2x2 and 3x3 positions at res5
        x = clip(frames, size, batch=1)
        probs = to_numpy(model(x, training=False))
        assert probs.shape == (1, 5)
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
        # Official test head, in NumPy from res5: AvgPool (T, 7, 7) stride 1,
        # pred at each position, softmax per position, mean.
        res5 = keras.Model(model.input, model.get_layer("res5_2_relu").output)
        feat = to_numpy(res5(x, training=False))[0].mean(axis=0)  # (H, W, C)
        h, w = feat.shape[:2]
        pooled = np.array(
            [
                [feat[i : i + 7, j : j + 7].mean(axis=(0, 1)) for j in range(w - 6)]
                for i in range(h - 6)
            ]
        )
        kernel, bias = (to_numpy(v) for v in model.get_layer("pred").weights)
        logits = pooled @ kernel + bias
        e = np.exp(logits - logits.max(-1, keepdims=True))
        want = (e / e.sum(-1, keepdims=True)).mean(axis=(0, 1))
        np.testing.assert_allclose(probs[0], want, rtol=1e-4, atol=1e-6)


# mixed_float16 where it was broken: TensorFlow's CPU MaxPool3D (native path) has no float16
# kernel. On JAX and PyTorch every layer's float16 is covered by tests/test_layer_contract.py.
MIXED = ["mixed_bfloat16"] + (["mixed_float16"] if keras.backend.backend() == "tensorflow" else [])


@pytest.mark.parametrize("policy", MIXED)
def test_mixed_precision_variant(policy, conv_path):
    keras.config.set_dtype_policy(policy)
    model = create_model("i3d_nl5_r50_8x8", **TINY)
    out = model(clip(8, 64), training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert np.all(np.isfinite(to_numpy(out)))
    assert model.get_layer("res3_0_branch2a").compute_dtype == policy.removeprefix("mixed_")
    # the official test head (PyTorch has no bfloat16 3D average pool on a CPU)
    model = create_model("c2d_r50_8x8", fully_convolutional=True, **TINY)
    probs = to_numpy(model(clip(8, 224, batch=1), training=False))
    assert probs.shape == (1, 5)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-3)


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


def test_image_models():
    model = ImageResNet(
        depth=50, nonlocal_mask="nl1", input_shape=(64, 64, 3), width_per_group=4, classes=7
    )
    assert to_numpy(model(np.zeros((2, 64, 64, 3), "float32"))).shape == (2, 7)
    assert [layer.name for layer in model.layers if isinstance(layer, NonLocalBlock)] == [
        "nonlocal_conv4_4"
    ]
    features = ImageResNet(
        depth=101, nonlocal_mask="nl1", include_top=False, return_features=True, width_per_group=4
    )
    out = features(np.zeros((1, 96, 128, 3), "float32"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (1, 24, 32, 16),
        "res3": (1, 12, 16, 32),
        "res4": (1, 6, 8, 64),
        "res5": (1, 3, 4, 128),
    }
    assert count_params(ImageResNet(depth=50)) == 25_557_032  # torchvision resnet50's count
    with pytest.raises(ValueError, match="include_top=False"):
        ImageResNet(return_features=True)


def randomize_bn(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, c),
                    rng.normal(0, 0.1, c),
                    rng.normal(0, 0.1, c),
                    rng.uniform(0.5, 1.5, c),
                ]
            )


@pytest.mark.parametrize(
    "temporal,frozen_bn,mask",
    [("c2d", False, "nl5"), ("c2d", True, "nl5"), ("i3d", False, "none"), ("i3d", True, "none")],
)
def test_inflation_identical_frames(temporal, frozen_bn, mask):
    # (With I3D kernels, temporal padding changes the border frames, and a
    # non-local block mixes those into every frame: no exact invariant there.)
    image = ImageResNet(
        depth=50,
        nonlocal_mask=mask,
        stem_pool_padding=False,
        width_per_group=4,
        classes=5,
        include_top=False,
        nonlocal_kwargs={"use_bn": not frozen_bn},
    )
    randomize_bn(image)
    for layer in image.layers:  # non-identity non-local blocks, so they matter
        if isinstance(layer, NonLocalBlock):
            rng = np.random.default_rng(1)
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.0, w.shape)
                    if "variance" in w.path
                    else rng.normal(0, 0.2, w.shape)
                    for w in layer.weights
                ]
            )
    video = VideoResNet(
        depth=50,
        temporal_kernels=temporal,
        nonlocal_mask=mask,
        frozen_bn=frozen_bn,
        nonlocal_group_size=None,
        include_top=False,
        width_per_group=4,
        input_shape=(32, 64, 64, 3),
    )
    report = inflate_weights(image, video)
    assert "conv1" in report.inflated and report.ok
    frame = np.random.default_rng(2).uniform(-1, 1, (1, 64, 64, 3)).astype("float32")
    clip_ = np.repeat(frame[:, None], 32, axis=1)
    for layer in ("res2_2_relu", "res3_3_relu", "res4_5_relu"):
        want = to_numpy(
            keras.Model(image.input, image.get_layer(layer).output)(frame, training=False)
        )[0]
        got = to_numpy(
            keras.Model(video.input, video.get_layer(layer).output)(clip_, training=False)
        )[0]
        middle = got.shape[0] // 2  # away from the temporal borders
        np.testing.assert_allclose(got[middle], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
