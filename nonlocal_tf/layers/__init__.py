"""Keras layers of nonlocal-tf."""

from nonlocal_tf.layers.affine import FrozenAffine
from nonlocal_tf.layers.batch_norm import BatchNormalization
from nonlocal_tf.layers.clip_crops import ClipCrops, cut_views
from nonlocal_tf.layers.nonlocal_block import NonLocalBlock
from nonlocal_tf.layers.video_ops import VideoConv3D, VideoMaxPooling3D

__all__ = [
    "BatchNormalization",
    "ClipCrops",
    "FrozenAffine",
    "NonLocalBlock",
    "VideoConv3D",
    "VideoMaxPooling3D",
    "cut_views",
]
