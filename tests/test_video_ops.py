"""VideoConv3D and VideoMaxPooling3D: the folded forms (matrix products, 2D
convolutions over frames on channels, max of strided slices) and the native
ones (on PyTorch: PyTorch's ops on channels-last views) compute the plain Keras
layers' function, forward and backward, and so do whole models."""

import keras
import numpy as np
import pytest

from nonlocal_tf import runtime
from nonlocal_tf.layers import VideoConv3D, VideoMaxPooling3D, video_ops
from nonlocal_tf.models import VideoResNet
from tests.helpers import gradients, to_numpy

pytestmark = pytest.mark.all_backends

CONVS = [
    # kernel, strides, padding, channels in, filters
    ((5, 7, 7), (1, 2, 2), "valid", 3, 16),  # I3D stem
    ((1, 7, 7), (1, 2, 2), "valid", 3, 16),  # C2D stem
    ((5, 7, 7), (2, 2, 2), "valid", 3, 8),  # 32x2 stem
    ((3, 1, 1), (1, 1, 1), "same", 16, 8),  # I3D temporal kernel
    ((5, 1, 1), (1, 1, 1), "same", 12, 8),
    ((3, 1, 1), (1, 1, 1), "valid", 16, 8),
    ((3, 1, 1), (2, 1, 1), "same", 16, 8),  # strided in time: 'same' pads 0 before, 1 after
    ((2, 1, 1), (1, 1, 1), "same", 16, 8),  # an even kernel: 'same' pads 0 before, 1 after
    ((3, 1, 1), (2, 2, 2), "valid", 16, 8),
    ((1, 1, 1), (1, 2, 2), "valid", 16, 32),  # projection shortcut
    ((1, 1, 1), (1, 1, 1), "valid", 16, 8),
    ((1, 3, 3), (1, 2, 2), "valid", 8, 8),
    ((1, 3, 3), (1, 1, 1), "valid", 8, 8),
    ((3, 3, 3), (1, 1, 1), "valid", 5, 4),
    ((4, 1, 1), (1, 1, 1), "same", 8, 8),  # 'same' pads 1 before, 2 after
    ((3, 3, 3), (1, 1, 1), "same", 5, 4),
    ((1, 4, 4), (1, 2, 2), "valid", 3, 8),  # stride 2 as stride 1 on 2x2 blocks, even kernel
    ((2, 5, 3), (1, 2, 2), "valid", 4, 8),
]
POOLS = [((1, 3, 3), (1, 2, 2)), ((2, 1, 1), (2, 1, 1)), ((2, 3, 3), (2, 2, 2))]


def grads(layer, x):
    """Input and weight gradients of the layer alone (wrapped: `gradients`
    passes ``training``, which convolutions do not take)."""
    return gradients(keras.Sequential([keras.Input(x.shape[1:]), layer]), x)


def pair(cls, *args, **kwargs):
    return cls(*args, implementation="native", **kwargs), cls(
        *args, implementation="folded", **kwargs
    )


@pytest.mark.parametrize("kernel,strides,padding,channels,filters", CONVS)
def test_folded_convolution_equals_conv3d(kernel, strides, padding, channels, filters):
    x = np.random.default_rng(1).normal(size=(2, 9, 17, 15, channels)).astype("float32")
    native, folded = pair(
        VideoConv3D, filters, kernel, strides=strides, padding=padding, use_bias=True
    )
    native.build(x.shape)
    folded.build(x.shape)
    folded.set_weights([w + 0.1 for w in native.get_weights()])  # a non-zero bias too
    native.set_weights(folded.get_weights())
    expected = to_numpy(native(x))
    got = to_numpy(folded(x))
    assert got.shape == expected.shape == tuple(native.compute_output_shape(x.shape))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    for g, e in zip(grads(folded, x), grads(native, x), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel,strides,padding,channels,filters", CONVS)
def test_native_convolution_equals_keras_conv3d(kernel, strides, padding, channels, filters):
    # On PyTorch the native path is PyTorch's conv3d on channels-last views.
    x = np.random.default_rng(1).normal(size=(2, 9, 17, 15, channels)).astype("float32")
    args = (filters, kernel)
    kwargs = dict(strides=strides, padding=padding, use_bias=True)
    ours = VideoConv3D(*args, implementation="native", **kwargs)
    plain = keras.layers.Conv3D(*args, **kwargs)
    ours.build(x.shape)
    plain.build(x.shape)
    plain.set_weights([w + 0.1 for w in ours.get_weights()])
    ours.set_weights(plain.get_weights())
    np.testing.assert_allclose(to_numpy(ours(x)), to_numpy(plain(x)), rtol=1e-5, atol=1e-5)
    for g, e in zip(grads(ours, x), grads(plain, x), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


def _distinct_values():
    # Distinct values: no tied maxima, so the gradients must agree exactly.
    x = np.random.default_rng(2).permutation(2 * 9 * 17 * 15 * 4).astype("float32")
    return x.reshape(2, 9, 17, 15, 4) / 1000.0


@pytest.mark.parametrize("pool,strides", POOLS)
def test_folded_max_pooling_equals_max_pooling3d(pool, strides):
    x = _distinct_values()
    native, folded = pair(VideoMaxPooling3D, pool, strides)
    expected = to_numpy(native(x))
    np.testing.assert_array_equal(to_numpy(folded(x)), expected)
    assert expected.shape == tuple(native.compute_output_shape(x.shape))
    np.testing.assert_allclose(grads(folded, x)[0], grads(native, x)[0], atol=1e-6)


@pytest.mark.parametrize("pool,strides", POOLS)
def test_native_max_pooling_equals_keras_max_pooling3d(pool, strides):
    x = _distinct_values()
    ours = VideoMaxPooling3D(pool, strides, implementation="native")
    plain = keras.layers.MaxPooling3D(pool, strides)
    np.testing.assert_array_equal(to_numpy(ours(x)), to_numpy(plain(x)))
    np.testing.assert_allclose(grads(ours, x)[0], grads(plain, x)[0], atol=1e-6)


def test_bad_implementation_is_refused():  # serialisation: tests/test_layer_contract.py
    with pytest.raises(ValueError, match="implementation"):
        VideoConv3D(4, 3, implementation="fast")


@pytest.mark.parametrize("stem,frames", [("resnet_video", 8), ("resnet_video_org", 16)])
def test_folded_model_equals_native_model(stem, frames):
    kwargs = dict(
        depth=50,
        temporal_kernels="i3d",
        nonlocal_mask="nl5",
        stem=stem,
        input_shape=(frames, 64, 64, 3),
        width_per_group=4,
        classes=7,
        classifier_activation=None,
        dropout_rate=0.0,
    )
    native = VideoResNet(conv_implementation="native", **kwargs)
    folded = VideoResNet(conv_implementation="folded", **kwargs)
    rng = np.random.default_rng(3)
    folded.set_weights([w + rng.normal(0, 0.01, w.shape) for w in native.get_weights()])
    native.set_weights(folded.get_weights())
    x = rng.uniform(-1, 1, size=(2, frames, 64, 64, 3)).astype("float32")
    for training in (False, True):
        got = to_numpy(folded(x, training=training))
        expected = to_numpy(native(x, training=training))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    layers = {type(layer).__name__ for layer in folded.layers}
    assert "Conv3D" not in layers and "MaxPooling3D" not in layers


def test_auto_follows_the_measured_table(monkeypatch):
    assert video_ops._folded("folded") and not video_ops._folded("native")
    backend = keras.backend.backend()
    expected = {"jax": "folded", "torch": "native"}
    if backend == "tensorflow":  # depends on the CPU: check both answers
        monkeypatch.setattr(runtime, "accelerator", lambda: "cpu")
        for onednn, choice in ((True, "native"), (False, "folded")):
            monkeypatch.setattr(runtime, "onednn_enabled", lambda onednn=onednn: onednn)
            assert runtime.conv_implementation() == choice
            assert video_ops._folded("auto") == (choice == "folded")
        monkeypatch.setattr(runtime, "accelerator", lambda: "gpu")
        expected["tensorflow"] = "native"
    assert runtime.conv_implementation() == expected[backend]
    assert video_ops._folded("auto") == (expected[backend] == "folded")


def test_temporal_convolutions_pad_themselves():
    model = VideoResNet(input_shape=(8, 64, 64, 3), width_per_group=4, classes=3)
    conv = model.get_layer("res2_0_branch2a")
    assert conv.implementation == "auto" and conv.padding == "same"
    assert conv.kernel.shape[:3] == (3, 1, 1)
    assert "res2_0_branch2a_pad" not in [layer.name for layer in model.layers]
    assert tuple(model(keras.ops.ones((1, 8, 64, 64, 3))).shape) == (1, 3)


@pytest.mark.parametrize("implementation", ["folded", "native"])
def test_too_short_input_is_a_clear_error(implementation):
    pool = VideoMaxPooling3D((2, 1, 1), (2, 1, 1), implementation=implementation, name="pool2")
    with pytest.raises(
        ValueError, match=r"pool2: fewer frames than its window of 2 \(the input has 1\)"
    ):
        pool(np.zeros((1, 1, 4, 4, 3), "float32"))
    conv = VideoConv3D(4, (3, 1, 1), implementation=implementation, name="c")
    keras_check = "output size would be zero or negative"  # Keras's, first on some backends
    with pytest.raises(ValueError, match=f"c: fewer frames than its window of 3|{keras_check}"):
        conv(np.zeros((1, 2, 4, 4, 3), "float32"))
    conv = VideoConv3D(4, (1, 3, 3), padding="same", implementation=implementation, name="s")
    with pytest.raises(ValueError, match=f"s: fewer columns than its window of 1|{keras_check}"):
        conv(np.zeros((1, 2, 4, 0, 3), "float32"))
