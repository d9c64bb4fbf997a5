"""Every registered layer passes the same contract (`tests.checks.run_layer_test`)."""

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
from tests.checks import run_layer_test

pytestmark = pytest.mark.all_backends

VIDEO = (2, 4, 6, 6, 8)
CASES = {
    "nonlocal": (NonLocalBlock, {}, VIDEO, "float32", True),
    "nonlocal_options": (
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
        "float32",
        True,
    ),
    "nonlocal_sequence": (
        NonLocalBlock,
        {"instantiation": "gaussian"},
        (2, 12, 8),
        "float32",
        True,
    ),
    "nonlocal_image": (
        NonLocalBlock,
        {"instantiation": "concatenation", "use_bn": False},
        (2, 6, 6, 8),
        "float32",
        True,
    ),
    "conv_folded": (
        VideoConv3D,
        {"filters": 4, "kernel_size": (3, 1, 1), "padding": "same", "implementation": "folded"},
        VIDEO,
        "float32",
        True,
    ),
    "conv_strided_native": (
        VideoConv3D,
        {"filters": 4, "kernel_size": (1, 3, 3), "strides": (1, 2, 2), "implementation": "native"},
        VIDEO,
        "float32",
        True,
    ),
    "pool_folded": (
        VideoMaxPooling3D,
        {"pool_size": (1, 3, 3), "strides": (1, 2, 2), "implementation": "folded"},
        VIDEO,
        "float32",
        False,
    ),
    "pool_native": (
        VideoMaxPooling3D,
        {"pool_size": (2, 1, 1), "strides": (2, 1, 1), "implementation": "native"},
        VIDEO,
        "float32",
        False,
    ),
    "batch_norm": (BatchNormalization, {"epsilon": 1.0000001e-5}, VIDEO, "float32", True),
    "frozen_affine": (FrozenAffine, {"gamma_initializer": "ones"}, VIDEO, "float32", False),
    "normalize": (
        Normalize,
        {"mean": 114.75, "std": [57.0, 57.375, 58.0]},
        (2, 4, 6, 6, 3),
        "uint8",
        False,
    ),
    "temporal_mean": (TemporalMean, {}, VIDEO, "float32", False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_contract(case, tmp_path):
    layer_cls, kwargs, shape, dtype, trains = CASES[case]
    run_layer_test(layer_cls, kwargs, shape, tmp_path, input_dtype=dtype, trains=trains)
