"""TensorFlow graphs with unknown clip length and frame size, on both paths
"auto" can pick (`conv_path`): `fit` traces the model with symbolic sizes, and
inputs too small for the model fail with the layers' messages, in the graph."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from nonlocal_tf import NonLocalBlock, models, training

UNKNOWN_CLIP = tf.TensorSpec((None, None, None, None, 3), tf.float32)


def tiny_model():
    return models.c2d_nl5_r50_8x8(
        width_per_group=4, classes=3, include_preprocessing=True, input_shape=(None, None, None, 3)
    )


def dataset(frames: int, size: int, batches: int = 2) -> tf.data.Dataset:
    rng = np.random.default_rng(0)

    def clips():
        for _ in range(batches):
            x = rng.uniform(0, 255, (2, frames, size, size, 3)).astype("float32")
            yield x, rng.integers(0, 3, (2,)).astype("int32")

    return tf.data.Dataset.from_generator(
        clips, output_signature=(UNKNOWN_CLIP, tf.TensorSpec((None,), tf.int32))
    )


def test_fit_and_predict_with_unknown_clip_shape(conv_path):
    model = tiny_model()
    model.compile("sgd", "sparse_categorical_crossentropy", jit_compile=False)
    ds = dataset(8, 40)
    assert ds.element_spec[0].shape.as_list() == [None] * 4 + [3]
    training.prepare_for_fit(model, ds.element_spec)
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    serve = tf.function(lambda x: model(x, training=False), input_signature=[UNKNOWN_CLIP])
    assert serve(tf.zeros((1, 4, 48, 48, 3))).shape == (1, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="pool2: fewer frames than its window"):
        serve(tf.zeros((1, 1, 48, 48, 3)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="pool1: fewer rows than its window"):
        serve(tf.zeros((1, 4, 1, 1, 3)))


def test_nonlocal_block_checks_symbolic_sizes():
    block = NonLocalBlock(temporal_group_size=4)
    inputs = keras.Input((None, 8, 8, 16))
    model = keras.Model(inputs, block(inputs))
    spec = tf.TensorSpec((None, None, 8, 8, 16), tf.float32)
    run = tf.function(lambda x: model(x), input_signature=[spec])
    assert run(tf.ones((1, 8, 8, 8, 16))).shape == (1, 8, 8, 8, 16)
    with pytest.raises(tf.errors.InvalidArgumentError, match="multiple of temporal_group_size=4"):
        run(tf.ones((1, 6, 8, 8, 16)))  # one group of 6 frames, silently, before
    grid = NonLocalBlock(name="nl")
    inputs = keras.Input((None, None, None, 16))
    run = tf.function(lambda x: grid(x), input_signature=[tf.TensorSpec((None,) * 4 + (16,))])
    with pytest.raises(tf.errors.InvalidArgumentError, match="nl: input axis 2 is shorter"):
        run(tf.ones((1, 2, 1, 1, 16)))  # pooled away: no key to attend to
