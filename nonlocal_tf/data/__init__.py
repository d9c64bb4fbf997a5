"""Video data: annotations, sampling, PyAV decoding, frame shards (TFRecords
of JPEG frames, written and indexed without TensorFlow: `shards`), and two
input engines, tf.data (`pipeline`) and Grain processes (`grain_pipeline`,
no TensorFlow), each reading video files and shards.

Importing the package imports neither TensorFlow nor Grain: the names of
each engine are loaded on first use, so the package works where only one of
them is installed.
"""

import importlib

from nonlocal_tf.data.annotations import (
    VideoList,
    parse_charades_actions,
    read_charades,
    read_directory,
    read_kinetics,
)
from nonlocal_tf.data.decode import VideoDecodeError, probe, read_frames
from nonlocal_tf.data.skips import SkipLog, SkipReport
from nonlocal_tf.data.sources import (
    ENGINES,
    VideoDataset,
    dataset_from_source,
    video_list_dataset,
)
from nonlocal_tf.data.spec import CHARADES_32X4, KINETICS_8X8, KINETICS_32X2, MODES, ClipSpec

_LAZY = {
    "tfrecord_dataset": "nonlocal_tf.data.pipeline",
    "video_dataset": "nonlocal_tf.data.pipeline",
    "video_dataset_from_directory": "nonlocal_tf.data.pipeline",
    "grain_video_dataset": "nonlocal_tf.data.grain_pipeline",
    "grain_shard_dataset": "nonlocal_tf.data.grain_pipeline",
    "ShardError": "nonlocal_tf.data.shards",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nonlocal_tf.data' has no attribute {name!r}")


__all__ = [
    "CHARADES_32X4",
    "ENGINES",
    "KINETICS_8X8",
    "KINETICS_32X2",
    "MODES",
    "ClipSpec",
    "ShardError",
    "SkipLog",
    "SkipReport",
    "VideoDataset",
    "VideoDecodeError",
    "VideoList",
    "dataset_from_source",
    "grain_shard_dataset",
    "grain_video_dataset",
    "parse_charades_actions",
    "probe",
    "read_charades",
    "read_directory",
    "read_frames",
    "read_kinetics",
    "tfrecord_dataset",
    "video_dataset",
    "video_dataset_from_directory",
    "video_list_dataset",
]
