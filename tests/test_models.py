"""Video and image ResNet builders on each backend: forward passes of four
variants that cover every axis (two clip shapes through one model, the .keras
round trip), the official test head, mixed precision, inflation. The architecture's numbers
(sizes, counts) are in tests/test_model_structure.py."""

import keras
import numpy as np
import pytest

from nonlocal_tf.layers import NonLocalBlock
from nonlocal_tf.models import (
    VARIANTS,
    ImageResNet,
    VideoResNet,
    create_model,
)
from nonlocal_tf.weights import inflate_weights
from tests.helpers import TINY, tiny_frames, to_numpy

pytestmark = pytest.mark.all_backends


def clip(frames, size, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, size=(batch, frames, size, size, 3)).astype("float32")


# Four variants that hold every clip configuration (both stems, frozen BN with res3's
# grouped blocks), both temporal kernels, both depths and every non-local placement (nl10 at
# both depths: 10 blocks, and 9 in R101) at least once. Every one of the 48 is built and
# checked against its record in tests/test_model_structure.py.
COVERING = ["c2d_nl5_r50_8x8", "i3d_r50_32x2", "i3d_nl10_r101_32x4", "c2d_nl10_r50_128x1"]


def test_covering_variants_cover_every_axis():
    chosen = [VARIANTS[name] for name in COVERING]
    for axis in ("arch", "depth", "nonlocal_mask", "clip"):
        assert {getattr(v, axis) for v in chosen} == {getattr(v, axis) for v in VARIANTS.values()}
    assert {v.depth for v in chosen if v.nonlocal_mask == "nl10"} == {50, 101}


@pytest.mark.parametrize("name", COVERING)
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
    # .keras round trip.
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = clip(frames, 40, batch=1)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), rtol=1e-6, atol=1e-6)


# Three variants on TensorFlow, one elsewhere: the head's backend-specific part (the average
# pool, computed in float32 for PyTorch's bfloat16) does not depend on the variant.
HEAD_CASES = ["c2d_nl5_r50_8x8", "i3d_nl5_r50_32x4", "i3d_nl10_r101_32x2"]


@pytest.mark.parametrize(
    "name", HEAD_CASES if keras.backend.backend() == "tensorflow" else HEAD_CASES[1:2]
)
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
