"""Model builders: video ResNets (C2D / I3D / NL) and image ResNets with non-local blocks."""

from nonlocal_tf.models.resnet_video import (
    VideoResNet,
    resolve_nonlocal_mask,
    resolve_temporal_kernels,
)
from nonlocal_tf.models.variants import *  # noqa: F401,F403  (the named entry points)
from nonlocal_tf.models.variants import CLIPS, VARIANTS, ClipConfig, create_model

__all__ = [
    "CLIPS",
    "VARIANTS",
    "ClipConfig",
    "VideoResNet",
    "create_model",
    "resolve_nonlocal_mask",
    "resolve_temporal_kernels",
    *VARIANTS,
]
