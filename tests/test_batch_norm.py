"""nonlocal_tf.layers.BatchNormalization: Keras's layer, with a fused PyTorch
path on channels-last inputs; same outputs, gradients, moving statistics and
weight files as `keras.layers.BatchNormalization` on every backend."""

import keras
import numpy as np
import pytest

from nonlocal_tf.layers import BatchNormalization
from tests.helpers import gradients, to_numpy

pytestmark = pytest.mark.all_backends


def pair(shape, **kwargs):
    ours, plain = BatchNormalization(**kwargs), keras.layers.BatchNormalization(**kwargs)
    ours.build(shape)
    plain.build(shape)
    rng = np.random.default_rng(4)
    values = [
        rng.normal(1.0, 0.3, shape[-1]),  # gamma
        rng.normal(0.0, 0.3, shape[-1]),  # beta
        rng.normal(0.5, 0.2, shape[-1]),  # moving mean
        rng.uniform(0.5, 2.0, shape[-1]),  # moving variance
    ]
    for layer in (ours, plain):
        layer.set_weights([v.astype("float32") for v in values])
    return ours, plain


@pytest.mark.parametrize("shape", [(3, 4, 5, 6, 8), (4, 7, 5, 8)])
def test_same_function_statistics_and_gradients_as_keras(shape):
    x = np.random.default_rng(5).normal(2.0, 3.0, size=shape).astype("float32")
    ours, plain = pair(shape, momentum=0.9, epsilon=0.01)
    initial_mean = to_numpy(ours.moving_mean)
    for training in (False, True):
        got, expected = to_numpy(ours(x, training=training)), to_numpy(plain(x, training=training))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # One training call updated the moving averages the same way (biased variance).
    for a, b in zip(ours.non_trainable_weights, plain.non_trainable_weights, strict=True):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-5, atol=1e-6)
    mean = 0.1 * x.reshape(-1, shape[-1]).mean(0) + 0.9 * initial_mean
    np.testing.assert_allclose(to_numpy(ours.moving_mean), mean, rtol=1e-5, atol=1e-5)
    for training in (False, True):
        for g, e in zip(
            gradients(ours, x, training=training),
            gradients(plain, x, training=training),
            strict=True,
        ):
            np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-4)


def test_mixed_bfloat16_is_close_to_float32():
    shape = (2, 4, 6, 6, 16)
    x = np.random.default_rng(6).normal(size=shape).astype("float32")
    ours32, _ = pair(shape)
    expected = to_numpy(ours32(x, training=True))
    keras.config.set_dtype_policy("mixed_bfloat16")
    ours16, _ = pair(shape)
    y = ours16(x, training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    assert ours16.moving_mean.dtype == "float32"
    np.testing.assert_allclose(to_numpy(keras.ops.cast(y, "float32")), expected, atol=0.05)


def test_frozen_layer_uses_moving_statistics():
    shape = (2, 3, 4, 4, 8)
    x = np.random.default_rng(7).normal(size=shape).astype("float32")
    ours, plain = pair(shape)
    ours.trainable = plain.trainable = False
    before = to_numpy(ours.moving_mean)
    np.testing.assert_allclose(
        to_numpy(ours(x, training=True)), to_numpy(plain(x, training=False)), atol=1e-5
    )
    np.testing.assert_array_equal(to_numpy(ours.moving_mean), before)


def test_weight_files_interchange_with_keras_layers(tmp_path):
    def model(norm):
        inputs = keras.Input((4, 4, 4, 3))
        return keras.Model(inputs, norm(name="bn")(keras.layers.Dense(5)(inputs)))

    ours, plain = model(BatchNormalization), model(keras.layers.BatchNormalization)
    ours.set_weights([w + 0.5 for w in ours.get_weights()])
    ours.save_weights(tmp_path / "ours.weights.h5")
    plain.load_weights(tmp_path / "ours.weights.h5")
    for a, b in zip(ours.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    restored = keras.layers.deserialize(keras.layers.serialize(ours.get_layer("bn")))
    assert type(restored) is BatchNormalization
