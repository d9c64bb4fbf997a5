"""Model builders: video ResNets (C2D / I3D / NL) and image ResNets with non-local blocks."""

from nonlocal_tf.models import architecture
from nonlocal_tf.models.complexity import count_flops, count_params
from nonlocal_tf.models.features import feature_extractor
from nonlocal_tf.models.functional import LeanFunctional
from nonlocal_tf.models.resnet_image import (
    IMAGE_ARGUMENTS,
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
from nonlocal_tf.models.variants import *  # noqa: F401,F403  (the named builders)
from nonlocal_tf.models.variants import CLIPS, VARIANTS, ClipConfig, Variant, create_model

__all__ = [
    "CLIPS",
    "IMAGE_ARGUMENTS",
    "IMAGE_VARIANTS",
    "VARIANTS",
    "ClipConfig",
    "ImageResNet",
    "LeanFunctional",
    "Variant",
    "VideoResNet",
    "architecture",
    "count_flops",
    "count_params",
    "create_model",
    "feature_extractor",
    "resnet50_image",
    "resnet50_nl1_image",
    "resnet101_image",
    "resnet101_nl1_image",
    "resolve_nonlocal_mask",
    "resolve_temporal_kernels",
    *VARIANTS,
]
