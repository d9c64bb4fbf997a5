"""Model builders: video ResNets (C2D / I3D / NL) and image ResNets with non-local blocks."""

from nonlocal_tf.models.complexity import count_flops, count_params
from nonlocal_tf.models.inflate import inflate_kernel, inflate_weights
from nonlocal_tf.models.resnet_image import (
    IMAGE_VARIANTS,
    ImageResNet,
    resnet50_image,
    resnet50_nl1_image,
    resnet101_image,
    resnet101_nl1_image,
)
from nonlocal_tf.models.resnet_video import (
    VideoResNet,
    resolve_nonlocal_mask,
    resolve_temporal_kernels,
)
from nonlocal_tf.models.variants import *  # noqa: F401,F403  (the named entry points)
from nonlocal_tf.models.variants import CLIPS, VARIANTS, ClipConfig, create_model

__all__ = [
    "IMAGE_VARIANTS",
    "ImageResNet",
    "count_flops",
    "count_params",
    "inflate_kernel",
    "inflate_weights",
    "resnet50_image",
    "resnet50_nl1_image",
    "resnet101_image",
    "resnet101_nl1_image",
    "CLIPS",
    "VARIANTS",
    "ClipConfig",
    "VideoResNet",
    "create_model",
    "resolve_nonlocal_mask",
    "resolve_temporal_kernels",
    *VARIANTS,
]
