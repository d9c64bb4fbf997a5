"""NonLocalBlock inside compiled graphs: fit on every backend, tf.function with
dynamic shapes and XLA on TensorFlow."""

import keras
import numpy as np
import pytest

from nonlocal_tf import NonLocalBlock
from tests.helpers import to_numpy


def small_classifier(policy="float32", chunk_size=1024):
    inputs = keras.Input((None, None, None, 3))
    x = keras.layers.Conv3D(8, 3, padding="same", dtype=policy)(inputs)
    x = NonLocalBlock(chunk_size=chunk_size, dtype=policy)(x)
    x = keras.layers.GlobalAveragePooling3D(dtype=policy)(x)
    outputs = keras.layers.Dense(3, dtype="float32")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.all_backends
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_fit_steps_finite(policy):
    model = small_classifier(policy, chunk_size=32)
    jit = keras.backend.backend() != "torch"  # torch.compile is not what this checks
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    x = np.random.default_rng(0).normal(size=(4, 4, 8, 8, 3)).astype("float32")
    y = np.array([0, 1, 2, 1])
    history = model.fit(x, y, epochs=2, batch_size=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for w in model.weights:
        assert np.all(np.isfinite(to_numpy(w)))


def test_tf_function_dynamic_shapes_and_xla():
    import tensorflow as tf

    layer = NonLocalBlock(chunk_size=16)
    layer.build((None, None, None, None, 8))
    rng = np.random.default_rng(0)
    for v in layer.weights:
        v.assign(rng.normal(0, 0.3, v.shape).astype("float32"))
    spec = tf.TensorSpec((None, None, None, None, 8), tf.float32)
    dynamic = tf.function(lambda x: layer(x, training=False), input_signature=[spec])
    xla = tf.function(lambda x: layer(x, training=False), jit_compile=True)
    for shape in [(1, 2, 6, 6, 8), (2, 4, 10, 6, 8)]:
        x = rng.normal(size=shape).astype("float32")
        layer.implementation = "naive"
        want = layer(x, training=False).numpy()
        layer.implementation = "auto"
        np.testing.assert_allclose(dynamic(x).numpy(), want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(xla(x).numpy(), want, rtol=1e-5, atol=1e-5)


def test_static_grid_with_dynamic_batch_stays_naive():
    """A dynamic batch must not hide a static query count: small blocks keep the
    loop-free naive path in TF graphs (SavedModel, ONNX)."""
    import tensorflow as tf

    layer = NonLocalBlock()
    layer.build((None, 4, 8, 8, 16))
    spec = tf.TensorSpec((None, 4, 8, 8, 16), tf.float32)
    graph = tf.function(lambda x: layer(x, training=False)).get_concrete_function(spec).graph
    assert not {op.type for op in graph.get_operations()} & {"While", "StatelessWhile"}
