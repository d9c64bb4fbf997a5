"""NonLocalBlock against the paper's equations, on every Keras backend."""

import keras
import numpy as np
import pytest
from keras import ops

from nonlocal_tf import NonLocalBlock
from tests import reference
from tests.helpers import gradients, to_numpy

pytestmark = pytest.mark.all_backends

INSTANTIATIONS = ["embedded_gaussian", "gaussian", "dot_product", "concatenation"]


def randomize(layer, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    for v in layer.weights:
        value = rng.normal(0, scale, v.shape)
        if "variance" in v.path:
            value = np.abs(value) + 0.5
        v.assign(value.astype("float32"))


def weights_of(layer):
    def pair(sub):
        bias = to_numpy(sub.bias) if sub.use_bias else None
        return to_numpy(sub.kernel).astype(np.float64), bias

    w = {"g": pair(layer.g), "out": pair(layer.out)}
    if layer.instantiation != "gaussian":
        w["theta"], w["phi"] = pair(layer.theta), pair(layer.phi)
    if layer.instantiation == "concatenation":
        w["concat"] = to_numpy(layer.concat_project.kernel)[:, 0].astype(np.float64)
    w["bn"] = (
        tuple(
            to_numpy(a).astype(np.float64)
            for a in (layer.bn.gamma, layer.bn.beta, layer.bn.moving_mean, layer.bn.moving_variance)
        )
        if layer.use_bn
        else None
    )
    return w


def as_video(x):
    """Rank 3/4 inputs as (B, T, H, W, C) for the reference."""
    if x.ndim == 3:
        return x[:, :, None, None, :]
    if x.ndim == 4:
        return x[:, None]
    return x


def video_pool(rank, pool):
    return {3: (pool[0], 1, 1), 4: (1, *pool), 5: tuple(pool)}[rank]


CASES = [
    # (input shape, kwargs, pool as the reference sees it)
    ((2, 9, 6), {}, (2,)),
    ((2, 6, 5, 6), {}, (2, 2)),
    ((2, 4, 6, 6, 6), {}, (1, 2, 2)),
    ((1, 4, 5, 4, 6), {"pool_size": (2, 2, 2)}, (2, 2, 2)),
    ((1, 3, 4, 4, 6), {"pool_size": 1}, (1, 1, 1)),
]


@pytest.mark.parametrize("instantiation", INSTANTIATIONS)
@pytest.mark.parametrize("shape,kwargs,pool", CASES)
def test_matches_paper_equations(instantiation, shape, kwargs, pool):
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    layer = NonLocalBlock(instantiation=instantiation, **kwargs)
    layer.build(shape)
    randomize(layer)
    got = to_numpy(layer(x, training=False))
    want = reference.nonlocal_block(
        as_video(x),
        weights_of(layer),
        instantiation=instantiation,
        pool=video_pool(len(shape), pool),
    ).reshape(shape)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("instantiation", INSTANTIATIONS)
@pytest.mark.parametrize(
    "kwargs,ref",
    [
        ({"pairwise": "space"}, {"pairwise": "space", "pool": (1, 2, 2)}),
        ({"pairwise": "time"}, {"pairwise": "time", "pool": (1, 1, 1)}),
        ({"pairwise": "time", "pool_size": (2, 1, 1)}, {"pairwise": "time", "pool": (2, 1, 1)}),
        ({"temporal_group_size": 2}, {"group": 2, "pool": (1, 2, 2)}),
        ({"temporal_group_size": 2, "pool_size": (2, 2, 2)}, {"group": 2, "pool": (2, 2, 2)}),
        ({"pool_position": "after"}, {"pool_position": "after", "pool": (1, 2, 2)}),
        (
            {"use_scale": False, "use_bias": False, "output_use_bias": False, "use_bn": False},
            {"scale": False, "pool": (1, 2, 2)},
        ),
    ],
)
def test_options_match_reference(instantiation, kwargs, ref):
    shape = (2, 4, 4, 6, 8)
    x = np.random.default_rng(2).normal(size=shape).astype("float32")
    layer = NonLocalBlock(instantiation=instantiation, inner_channels=3, **kwargs)
    layer.build(shape)
    randomize(layer, seed=3)
    got = to_numpy(layer(x, training=False))
    want = reference.nonlocal_block(x, weights_of(layer), instantiation=instantiation, **ref)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("use_bn", [True, False])
@pytest.mark.parametrize("instantiation", INSTANTIATIONS)
def test_identity_at_initialisation(instantiation, use_bn):
    x = np.random.default_rng(0).normal(size=(2, 4, 6, 6, 8)).astype("float32")
    layer = NonLocalBlock(instantiation=instantiation, use_bn=use_bn)
    np.testing.assert_array_equal(to_numpy(layer(x, training=True)), x)
    if not use_bn:
        assert not np.any(to_numpy(layer.out.kernel))


EFFICIENT = {
    "embedded_gaussian": ["chunked", "fused"],
    "gaussian": ["chunked", "fused"],
    "dot_product": ["chunked", "reassociated"],
    "concatenation": ["chunked"],
}


@pytest.mark.parametrize("instantiation", INSTANTIATIONS)
def test_implementations_agree_with_naive(instantiation):
    shape = (2, 4, 10, 10, 8)  # 400 queries, chunks of 64 leave a remainder
    x = np.random.default_rng(4).normal(size=shape).astype("float32")
    naive = NonLocalBlock(instantiation=instantiation, implementation="naive")
    naive.build(shape)
    randomize(naive, scale=0.2)
    want = to_numpy(naive(x, training=False))
    grad_want = gradients(naive, x)
    for impl in [*EFFICIENT[instantiation], "auto"]:
        other = NonLocalBlock(instantiation=instantiation, implementation=impl, chunk_size=64)
        other.build(shape)
        other.set_weights(naive.get_weights())
        np.testing.assert_allclose(to_numpy(other(x, training=False)), want, rtol=1e-5, atol=1e-5)
        for g_other, g_naive in zip(gradients(other, x), grad_want, strict=True):
            assert np.all(np.isfinite(g_other))
            np.testing.assert_allclose(g_other, g_naive, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rank_shape", [(None, 6), (None, None, 6), (None, None, None, 6)])
def test_none_dimensions(rank_shape):
    inputs = keras.Input(rank_shape)
    model = keras.Model(inputs, NonLocalBlock(chunk_size=16)(inputs))
    layer = model.layers[-1]
    randomize(layer)
    for spatial in [(8,), (5,), (12,)]:
        shape = (2, *(spatial * (len(rank_shape) - 1)), 6)
        x = np.random.default_rng(0).normal(size=shape).astype("float32")
        got = to_numpy(model(x, training=False))
        layer.implementation = "naive"
        want = to_numpy(model(x, training=False))
        layer.implementation = "auto"
        assert got.shape == shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    shape = (2, 4, 8, 8, 16)
    x = np.random.default_rng(5).normal(size=shape).astype("float32")
    ref_layer = NonLocalBlock()
    ref_layer.build(shape)
    randomize(ref_layer, scale=0.2)
    want = to_numpy(ref_layer(x, training=False))
    layer = NonLocalBlock(dtype=policy)
    layer.build(shape)
    layer.set_weights(ref_layer.get_weights())
    got = layer(ops.cast(x, layer.compute_dtype), training=False)
    assert keras.backend.standardize_dtype(got.dtype) == layer.compute_dtype
    assert layer.bn.gamma.dtype == "float32"
    got = to_numpy(ops.cast(got, "float32"))
    tol = 0.05 if policy == "mixed_bfloat16" else 0.01
    np.testing.assert_allclose(got, want, atol=tol * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"instantiation": "softmax"}, "instantiation"),
        ({"inner_channels": 0}, "inner_channels"),
        ({"inner_channels": -3}, "inner_channels"),
        ({"pool_position": "middle"}, "pool_position"),
        ({"pairwise": "spatial"}, "pairwise"),
        ({"implementation": "flash"}, "implementation"),
        ({"implementation": "reassociated"}, "instantiation"),
        ({"instantiation": "dot_product", "implementation": "fused"}, "instantiation"),
        ({"temporal_group_size": 0}, "temporal_group_size"),
        ({"temporal_group_size": 2, "pairwise": "space"}, "pairwise"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"{name}="):
        NonLocalBlock(**kwargs)


@pytest.mark.parametrize(
    "kwargs,shape,name",
    [
        ({}, (2, 8), "input_shape"),
        ({}, (1, 2, 2, 2, 2, 4), "input_shape"),
        ({"pairwise": "space"}, (2, 8, 8, 4), "input_shape"),
        ({"pool_size": (2, 2)}, (1, 4, 4, 4, 4), "pool_size"),
        ({"pairwise": "space", "pool_size": (2, 2, 2)}, (1, 4, 4, 4, 4), "pool_size"),
        ({"pairwise": "time", "pool_size": (1, 2, 2)}, (1, 4, 4, 4, 4), "pool_size"),
        ({"temporal_group_size": 3}, (1, 4, 4, 4, 4), "temporal_group_size"),
    ],
)
def test_bad_input_shapes(kwargs, shape, name):
    with pytest.raises(ValueError, match=f"{name}="):
        NonLocalBlock(**kwargs).build(shape)


@pytest.mark.parametrize("kwargs", [{}, {"pairwise": "space"}, {"temporal_group_size": 2}])
@pytest.mark.parametrize("instantiation", INSTANTIATIONS)
def test_attention_weights(instantiation, kwargs):
    shape = (1, 4, 4, 4, 6)
    x = np.random.default_rng(6).normal(size=shape).astype("float32")
    layer = NonLocalBlock(instantiation=instantiation, inner_channels=3, **kwargs)
    layer.build(shape)
    randomize(layer)
    full = to_numpy(layer.attention_weights(x))  # (1, 64, 4, 2, 2)
    assert full.shape == (1, 64, 4, 2, 2)
    some = to_numpy(layer.attention_weights(x, [(0, 0, 0), (3, 2, 1)]))
    np.testing.assert_allclose(some[0, 0], full[0, 0], atol=1e-6)
    np.testing.assert_allclose(some[0, 1], full[0, 3 * 16 + 2 * 4 + 1], atol=1e-6)
    # The weights reproduce the block's output: y = W g, through the output projection.
    g = to_numpy(layer.g(ops.max_pool(x, (1, 2, 2), strides=(1, 2, 2))))
    y = np.einsum("qk,kc->qc", full[0].reshape(64, -1), g[0].reshape(-1, g.shape[-1]))
    z = to_numpy(layer.bn(layer.out(y.reshape(1, 4, 4, 4, -1).astype("float32")), training=False))
    np.testing.assert_allclose(x + z, to_numpy(layer(x, training=False)), rtol=1e-4, atol=1e-4)
    if instantiation in ("embedded_gaussian", "gaussian"):
        np.testing.assert_allclose(full.sum(axis=(2, 3, 4)), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="query_positions="):
        layer.attention_weights(x, [(4, 0, 0)])


def test_degenerate_inputs_are_refused():
    with pytest.raises(ValueError, match="floating-point inputs"):
        NonLocalBlock()(np.zeros((1, 4, 4, 4, 8), "int32"))
    with pytest.raises(ValueError, match=r"input axis 3 \(1\) is shorter than the key pooling"):
        NonLocalBlock(name="nl")(np.zeros((1, 4, 4, 1, 8), "float32"))
    with pytest.raises(ValueError, match="multiple of `?temporal_group_size"):
        NonLocalBlock(temporal_group_size=4)(np.zeros((1, 6, 4, 4, 8), "float32"))
