"""The contracts every registered layer passes: the project's own, in the
manner of keras-hub's ``run_layer_test`` (configuration and serialisation
round trips, symbolic and eager calls that agree, mixed_bfloat16 dtypes, one
`fit` step, a `.keras` save and reload that gives the same outputs);
keras-hub's own ``run_layer_test`` and ``run_precision_test``; and every dtype
policy a user can set, on every backend (`run_policy_test`)."""

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


POLICIES = ("float32", "float16", "bfloat16", "mixed_float16", "mixed_bfloat16")
# How far a policy's output may be from float32's, relative to its largest value.
_TOLERANCE = {"float32": 1e-6, "float16": 1e-2, "bfloat16": 6e-2}


def run_keras_hub_layer_test(layer_cls, init_kwargs: dict, x, output_shape, weights) -> None:
    """keras-hub's ``TestCase.run_layer_test``: serialisation, build, symbolic
    and eager calls, a compiled `fit` step and ``run_precision_test``
    (mixed_float16, mixed_bfloat16, bfloat16; keras-hub skips it on PyTorch
    without a GPU, where `run_policy_test` covers it). ``weights``: the
    layer's counts of trainable and non-trainable weights."""
    from keras_hub.src.tests.test_case import TestCase

    TestCase().run_layer_test(
        cls=layer_cls,
        init_kwargs=dict(init_kwargs),
        input_data=keras.ops.convert_to_tensor(x),  # as keras-hub's tests give it
        expected_output_shape=tuple(output_shape),
        expected_num_trainable_weights=weights[0],
        expected_num_non_trainable_weights=weights[1],
        expected_num_non_trainable_variables=weights[1],
    )


def run_policy_test(layer_cls, init_kwargs: dict, x, policy: str) -> None:
    """``layer_cls(**init_kwargs, dtype=policy)`` called on ``x``: outputs (eager
    and symbolic) in the policy's compute dtype, weights in its variable
    dtype, every sub-layer on the policy (keras-hub's checks), and the output
    that of a float32 layer with the same weights, to the precision of the
    compute dtype."""
    policy = keras.dtype_policies.get(policy)
    layer = layer_cls(**{**init_kwargs, "dtype": policy})
    out = layer(x)
    spec = layer.compute_output_spec(keras.KerasTensor(x.shape, str(x.dtype)))
    for tensor in (out, spec):
        assert keras.backend.standardize_dtype(tensor.dtype) == policy.compute_dtype, tensor.dtype
    for weight in layer.weights:
        assert keras.backend.standardize_dtype(weight.dtype) == policy.variable_dtype, weight.path
    for sub in layer._flatten_layers():
        if not isinstance(sub, keras.layers.Softmax | keras.layers.InputLayer):
            assert (sub.compute_dtype, sub.variable_dtype) == (
                policy.compute_dtype,
                policy.variable_dtype,
            ), sub.name
    reference = layer_cls(**{**init_kwargs, "dtype": "float32"})
    reference(x)
    reference.set_weights([to_numpy(w).astype("float32") for w in layer.weights])
    want = to_numpy(reference(x))
    got = to_numpy(keras.ops.cast(out, "float32"))
    assert np.all(np.isfinite(got)), policy.name
    tol = _TOLERANCE[policy.compute_dtype] * max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=0, atol=tol, err_msg=policy.name)
