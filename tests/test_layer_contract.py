"""Every registered layer passes the same contracts: the project's
(`tests.checks.run_layer_test`), keras-hub's own ``run_layer_test`` (with its
``run_precision_test``), and every dtype policy a user can set
(`tests.checks.run_policy_test`), on each backend and, on TensorFlow, both
paths "auto" can take (``conv_path``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nonlocal_tf.layers import (
    BatchNormalization,
    FrozenAffine,
    NonLocalBlock,
    VideoConv3D,
    VideoMaxPooling3D,
)
from nonlocal_tf.layers.normalize import Normalize
from nonlocal_tf.models.resnet_video import TemporalMean
from tests.checks import POLICIES, run_keras_hub_layer_test, run_layer_test, run_policy_test

pytestmark = pytest.mark.all_backends


@dataclasses.dataclass(frozen=True)
class Case:
    cls: type
    kwargs: dict
    input_shape: tuple
    output_shape: tuple
    weights: tuple[int, int]  # trainable, non-trainable
    input_dtype: str = "float32"

    def inputs(self) -> np.ndarray:
        rng = np.random.default_rng(0)
        if self.input_dtype == "uint8":
            return rng.uniform(0, 255, self.input_shape).astype("uint8")
        return rng.normal(size=self.input_shape).astype(self.input_dtype)


VIDEO = (2, 4, 6, 6, 8)
TEMPORAL_CONV = {"filters": 4, "kernel_size": (3, 1, 1), "padding": "same"}
STRIDED_CONV = {"filters": 4, "kernel_size": (1, 3, 3), "strides": (1, 2, 2)}
SPACE_POOL = {"pool_size": (1, 3, 3), "strides": (1, 2, 2)}
TIME_POOL = {"pool_size": (2, 1, 1), "strides": (2, 1, 1)}
CASES = {
    "nonlocal": Case(NonLocalBlock, {}, VIDEO, VIDEO, (10, 2)),
    "nonlocal_options": Case(
        NonLocalBlock,
        {
            "instantiation": "dot_product",
            "inner_channels": 3,
            "pool_size": (1, 1, 2),
            "temporal_group_size": 2,
            "output_use_bias": False,
            "chunk_size": 7,
        },
        VIDEO,
        VIDEO,
        (9, 2),
    ),
    "nonlocal_sequence": Case(
        NonLocalBlock, {"instantiation": "gaussian"}, (2, 12, 8), (2, 12, 8), (6, 2)
    ),
    "nonlocal_image": Case(
        NonLocalBlock,
        {"instantiation": "concatenation", "use_bn": False},
        (2, 6, 6, 8),
        (2, 6, 6, 8),
        (9, 0),
    ),
    "conv_folded": Case(
        VideoConv3D, {**TEMPORAL_CONV, "implementation": "folded"}, VIDEO, (2, 4, 6, 6, 4), (2, 0)
    ),
    "conv_strided_native": Case(
        VideoConv3D, {**STRIDED_CONV, "implementation": "native"}, VIDEO, (2, 4, 2, 2, 4), (2, 0)
    ),
    "pool_folded": Case(
        VideoMaxPooling3D,
        {**SPACE_POOL, "implementation": "folded"},
        VIDEO,
        (2, 4, 2, 2, 8),
        (0, 0),
    ),
    "pool_native": Case(
        VideoMaxPooling3D, {**TIME_POOL, "implementation": "native"}, VIDEO, (2, 2, 6, 6, 8), (0, 0)
    ),
    "batch_norm": Case(BatchNormalization, {"epsilon": 1.0000001e-5}, VIDEO, VIDEO, (2, 2)),
    "frozen_affine": Case(FrozenAffine, {"gamma_initializer": "ones"}, VIDEO, VIDEO, (0, 2)),
    "normalize": Case(
        Normalize,
        {"mean": 114.75, "std": [57.0, 57.375, 58.0]},
        (2, 4, 6, 6, 3),
        (2, 4, 6, 6, 3),
        (0, 0),
        input_dtype="uint8",
    ),
    "temporal_mean": Case(TemporalMean, {}, VIDEO, (2, 1, 6, 6, 8), (0, 0)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_contract(case, tmp_path):
    c = CASES[case]
    run_layer_test(
        c.cls, c.kwargs, c.input_shape, tmp_path, input_dtype=c.input_dtype, trains=c.weights[0] > 0
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_keras_hub_layer_contract(case, conv_path):
    c = CASES[case]
    run_keras_hub_layer_test(c.cls, c.kwargs, c.inputs(), c.output_shape, c.weights)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_dtype_policy(case, policy, conv_path):
    c = CASES[case]
    run_policy_test(c.cls, c.kwargs, c.inputs(), policy)
