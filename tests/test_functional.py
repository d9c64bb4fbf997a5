"""`models.LeanFunctional`: Keras's functional model, with each intermediate
output let go after its last consumer (an eager 30-view batch on the PyTorch
backend held every activation of the network at once)."""

from __future__ import annotations

import weakref

import keras
import numpy as np
import pytest

from nonlocal_tf import models

pytestmark = pytest.mark.all_backends


class Log:
    """Outputs seen (weak references) and, at each call, which were alive."""

    def __init__(self):
        self.refs, self.alive = {}, []


class Recorder(keras.layers.Layer):
    """Adds one; records, when called, which earlier outputs are still alive."""

    def __init__(self, log: Log, **kwargs):
        super().__init__(**kwargs)
        self.log = log

    def call(self, *xs):
        y = keras.ops.add(sum(xs[1:], xs[0]), 1.0)
        self.log.alive.append({n for n, ref in self.log.refs.items() if ref() is not None})
        self.log.refs[self.name] = weakref.ref(y)
        return y


def graph(log):
    """a -> b -> c -> d -> e, with b read again by e and c a second output."""
    inputs = keras.Input((4,))
    a = Recorder(log, name="a")(inputs)
    b = Recorder(log, name="b")(a)
    c = Recorder(log, name="c")(b)
    d = Recorder(log, name="d")(c)
    e = Recorder(log, name="e")(d, b)
    return inputs, [c, e]


def test_merged_inputs_freed_after_the_merge():
    """A residual sum's inputs are let go once the sum is made (Keras's
    PyTorch tree functions hold a layer's list of inputs in a reference cycle,
    which kept both alive until Python's next cyclic collection)."""
    log = Log()
    inputs = keras.Input((4,))
    a = Recorder(log, name="a")(inputs)
    c = Recorder(log, name="c")(a)
    d = Recorder(log, name="d")(a)
    total = keras.layers.Add(name="sum")([c, d])
    f = Recorder(log, name="f")(total)
    model = models.LeanFunctional(inputs, f)
    log.refs.clear()
    log.alive.clear()
    out = model(np.zeros((2, 4), "float32"))
    assert log.alive[-1] == set()  # when f runs: c and d are gone
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), 5.0)


@pytest.mark.parametrize("cls", [models.LeanFunctional, keras.Model])
def test_intermediate_outputs_freed_after_their_last_consumer(cls):
    log = Log()
    model = cls(*graph(log))
    log.refs.clear()
    log.alive.clear()
    c, e = model(np.zeros((2, 4), "float32"))
    # Alive when each of b, c, d, e runs: its inputs, b until e has read it,
    # and c (an output); Keras's own model keeps everything it computed.
    kept = [{"a"}, {"b"}, {"b", "c"}, {"b", "c", "d"}]
    if cls is keras.Model:
        kept = [{"a"}, {"a", "b"}, {"a", "b", "c"}, {"a", "b", "c", "d"}]
    assert log.alive[1:] == kept
    # a: 1 + 1; b: 3; c: 4 (output); d: 5; e: 5 + 3 + 1 = 9
    np.testing.assert_allclose(keras.ops.convert_to_numpy(c), 3.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(e), 7.0)


def test_same_outputs_as_keras_functional_and_saved_as_itself(tmp_path):
    model = models.VideoResNet(
        temporal_kernels="i3d",
        nonlocal_mask="nl5",
        width_per_group=4,
        classes=5,
        dropout_rate=0.0,
        input_shape=(4, 32, 32, 3),
    )
    assert isinstance(model, models.LeanFunctional)
    plain = keras.Model(model.input, model.output)
    x = np.random.default_rng(0).uniform(0, 255, (2, 4, 32, 32, 3)).astype("float32")
    for training in (False, True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(model(x, training=training)),
            keras.ops.convert_to_numpy(plain(x, training=training)),
        )
    features = models.feature_extractor(model)
    assert isinstance(features, models.LeanFunctional)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is models.LeanFunctional
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(x, training=False)),
        keras.ops.convert_to_numpy(model(x, training=False)),
    )


@pytest.mark.parametrize(
    "declared", [(8, 32, 32, 3), (None, None, None, 3)], ids=["fixed", "any_size"]
)
def test_inputs_of_the_wrong_shape_are_one_line_errors(declared):
    """An image batch, channels-first clips, or clips contradicting a fixed
    input shape: one line naming the expected layout and what came, from a
    call, `predict` and `predict_on_batch`, before anything runs (issue 37
    row 12; before: "as_list() is not defined on an unknown TensorShape", a
    207-line graph error, and on JAX a model whose variables were unusable
    after the failed `predict`)."""
    model = models.VideoResNet(
        temporal_kernels="c2d", width_per_group=4, classes=3, input_shape=declared
    )
    layout = r"takes inputs of shape \(batch, frames, height, width, 3\)"
    bad = {
        "images": (np.zeros((2, 32, 32, 3), "float32"), r"\(2, 32, 32, 3\) \(an image batch"),
        "channels first": (
            np.zeros((2, 3, 8, 32, 32), "float32"),
            r"\(2, 3, 8, 32, 32\) \(channels first",
        ),
    }
    if declared[0] is not None:
        bad["other size"] = (np.zeros((2, 2, 64, 64, 3), "float32"), r"\(2, 2, 64, 64, 3\)$")
    for x, received in bad.values():
        for run in (model, model.predict_on_batch, lambda x: model.predict(x, verbose=0)):
            with pytest.raises(ValueError, match=f"{layout}.*Received: shape={received}") as raised:
                run(x)
            assert "\n" not in str(raised.value)
    clips = np.zeros((2, 8, 32, 32, 3), "float32")
    assert model.predict(clips, verbose=0).shape == (2, 3)  # the model still works
    symbolic = model(keras.Input((8, None, None, 3)))  # open sizes are no contradiction
    assert tuple(symbolic.shape) == (None, 3)
