"""Video data: annotations, sampling, PyAV decoding, TFRecords and tf.data pipelines.

This package imports TensorFlow (tf.data); the models and layers do not.
"""

from nonlocal_tf.data.annotations import (
    VideoList,
    parse_charades_actions,
    read_charades,
    read_directory,
    read_kinetics,
)
from nonlocal_tf.data.decode import VideoDecodeError, probe, read_frames
from nonlocal_tf.data.pipeline import (
    CHARADES_32X4,
    KINETICS_8X8,
    KINETICS_32X2,
    ClipSpec,
    dataset_from_source,
    tfrecord_dataset,
    video_dataset,
    video_dataset_from_directory,
)
from nonlocal_tf.data.skips import SkipLog, SkipReport

__all__ = [
    "CHARADES_32X4",
    "KINETICS_8X8",
    "KINETICS_32X2",
    "ClipSpec",
    "SkipLog",
    "SkipReport",
    "VideoDecodeError",
    "VideoList",
    "dataset_from_source",
    "parse_charades_actions",
    "probe",
    "read_charades",
    "read_directory",
    "read_frames",
    "read_kinetics",
    "tfrecord_dataset",
    "video_dataset",
    "video_dataset_from_directory",
]
