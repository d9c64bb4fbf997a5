"""What a ``--data`` argument names, read by the engine that fits it.

A source is a folder per class, a Kinetics CSV (or, multi-label, a Charades
CSV) of videos under ``video_dir``, or a TFRecord glob (``*.tfrecord*``).
Video files are read by tf.data (`pipeline`) or Grain processes
(`grain_pipeline`), as ``engine`` says (``"auto"``: `runtime.input_engine`);
TFRecords by tf.data.
"""

from __future__ import annotations

import os

from nonlocal_tf import runtime
from nonlocal_tf.data import annotations
from nonlocal_tf.data.skips import SkipLog
from nonlocal_tf.data.spec import ClipSpec

ENGINES = ("auto", "tf_data", "grain")


def dataset_from_source(
    source: str,
    mode: str,
    spec: ClipSpec,
    video_dir: str | None = None,
    multi_label: bool = False,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    engine: str = "auto",
    repeat: bool = False,
    workers: int | None = None,
    data_service: str | None = None,
    **kwargs,
):
    """The dataset of ``source`` and its video list (None for TFRecords).

    ``repeat``: endless (what ``fit`` with ``steps_per_epoch`` reads), each
    epoch reshuffled. ``workers``: Grain's decoding processes.
    ``data_service``: a tf.data service's ``grpc://host:port``, whose workers
    read TFRecords (`service`). Other keyword
    arguments (``batch_size``, ``seed``, ``num_shards``, ...) go to the
    engine's dataset function. Either engine's dataset carries ``skips`` (video
    files) and ``class_names``, and iterates as `numpy_batches` says.
    """
    if ".tfrecord" in source:
        if resolve_engine(engine, tfrecords=True) == "grain":
            raise ValueError(f"{source}: TFRecord shards are read by tf.data (engine='tf_data').")
        from nonlocal_tf.data import pipeline

        ds = pipeline.tfrecord_dataset(
            source,
            mode,
            spec,
            num_classes=num_classes,
            multi_label=multi_label,
            data_service=data_service,
            **kwargs,
        )
        return (ds.repeat() if repeat else ds), None
    if data_service:
        raise ValueError(
            f"{source}: a tf.data service serves TFRecord shards; video files are decoded in "
            "Python (PyAV), which its workers cannot run. Convert them with zoo.make_tfrecords."
        )
    # Rows and files the annotations drop are counted with the videos that fail.
    skips = kwargs.pop("skips", None) or SkipLog(f"{mode} videos")
    kwargs["skips"] = skips
    videos = read_videos(source, video_dir, multi_label, class_names, skips)
    return video_list_dataset(videos, mode, spec, engine, repeat, workers, **kwargs), videos


def video_list_dataset(
    videos: annotations.VideoList,
    mode: str,
    spec: ClipSpec,
    engine: str = "auto",
    repeat: bool = False,
    workers: int | None = None,
    **kwargs,
):
    """The dataset of a video list, by the engine ``engine`` names (see
    `dataset_from_source`)."""
    if resolve_engine(engine) == "grain":
        from nonlocal_tf.data import grain_pipeline

        return grain_pipeline.grain_video_dataset(
            videos, mode, spec, repeat=repeat, workers=workers, **kwargs
        )
    from nonlocal_tf.data import pipeline

    ds = pipeline.video_dataset(videos, mode, spec, **kwargs)
    if repeat:  # the repeated dataset keeps what the pipeline hangs on it
        ds, attributes = ds.repeat(), (ds.skips, ds.class_names)
        ds.skips, ds.class_names = attributes
    return ds


def resolve_engine(engine: str, tfrecords: bool = False) -> str:
    """``engine`` checked, and ``"auto"`` replaced by what reads the source:
    tf.data for TFRecords, else `runtime.input_engine`."""
    if engine not in ENGINES:
        raise ValueError(f"`engine` must be one of {ENGINES}. Received: engine={engine!r}")
    if engine != "auto":
        return engine
    return "tf_data" if tfrecords else runtime.input_engine()


def read_videos(
    source: str,
    video_dir: str | None,
    multi_label: bool = False,
    class_names: list[str] | None = None,
    skips: SkipLog | None = None,
) -> annotations.VideoList:
    """The video list of a folder per class or an annotation file; the rows
    and files it leaves out go to ``skips``."""
    if not os.path.exists(source):
        raise ValueError(
            f"No such data: {source!r} (a folder per class, a Kinetics or Charades CSV, or a "
            "TFRecord glob)."
        )
    if os.path.isdir(source):
        return annotations.read_directory(source, class_names, skips=skips)
    if not video_dir:
        raise ValueError(f"{source} is an annotation file: it needs the folder of its videos.")
    if multi_label:
        return annotations.read_charades(source, video_dir, skips=skips)
    return annotations.read_kinetics(source, video_dir, class_names, skips=skips)


def numpy_batches(dataset):
    """An iterator of NumPy elements of either engine's dataset."""
    if hasattr(dataset, "as_numpy_iterator"):  # tf.data
        return dataset.as_numpy_iterator()
    return iter(dataset)
