"""One contract for every registered layer, in the manner of keras-hub's
``run_layer_test``: configuration and serialisation round trips, symbolic and
eager calls that agree, mixed_bfloat16 dtypes, one `fit` step, and a `.keras`
save and reload that gives the same outputs."""

from __future__ import annotations

import keras
import numpy as np

from tests.helpers import to_numpy


def run_layer_test(
    layer_cls,
    init_kwargs: dict,
    input_shape: tuple,
    tmp_path,
    input_dtype: str = "float32",
    trains: bool = True,
):
    """Runs the contract on ``layer_cls(**init_kwargs)`` with inputs of
    ``input_shape`` (batch first). ``trains``: the layer has trainable weights
    that one `fit` step must change."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, input_shape) if input_dtype == "uint8" else rng.normal(size=input_shape)
    x = x.astype(input_dtype)

    # Every constructor argument is stored and comes back from get_config.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    for key, value in init_kwargs.items():
        stored = config[key]
        assert stored == value or keras.initializers.get(stored).__class__ is type(
            keras.initializers.get(value)
        ), (key, stored, value)
    assert layer_cls.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is layer_cls and restored.get_config() == config

    # Symbolic and eager calls agree (a dynamic batch symbolically).
    symbolic = layer(keras.Input(input_shape[1:], batch_size=None, dtype=input_dtype))
    eager = layer(x)
    assert tuple(symbolic.shape)[1:] == tuple(eager.shape)[1:]
    assert keras.backend.standardize_dtype(symbolic.dtype) == keras.backend.standardize_dtype(
        eager.dtype
    )

    # mixed_bfloat16: float32 variables, bfloat16 computation.
    mixed = layer_cls(**{**init_kwargs, "dtype": "mixed_bfloat16"})
    out = mixed(x)
    assert all(v.dtype == "float32" for v in mixed.weights), [v.dtype for v in mixed.weights]
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"

    # One fit step inside a model; trainable weights move.
    inputs = keras.Input(input_shape[1:], dtype=input_dtype)
    fitted = layer_cls(**init_kwargs)
    outputs = keras.layers.Flatten()(keras.layers.Activation("linear")(fitted(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(1)(outputs))
    model.compile(keras.optimizers.SGD(0.01), "mse")
    before = [to_numpy(w) for w in fitted.trainable_weights]
    model.fit(x, np.ones((len(x), 1), "float32"), batch_size=len(x), epochs=1, verbose=0)
    after = [to_numpy(w) for w in fitted.trainable_weights]
    assert bool(before) == trains
    assert all(np.all(np.isfinite(a)) for a in after)
    if trains:
        assert any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))

    # Save and reload: same class, config and outputs.
    path = tmp_path / f"{layer_cls.__name__}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        to_numpy(loaded(x, training=False)),
        to_numpy(model(x, training=False)),
        rtol=1e-5,
        atol=1e-5,
    )
    assert any(type(layer) is layer_cls for layer in loaded.layers)
