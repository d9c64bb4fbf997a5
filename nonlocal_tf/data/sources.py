"""What a ``--data`` argument names, read by the engine that fits it, as one
kind of object whatever the engine (`VideoDataset`).

A source is a folder per class, a Kinetics CSV (or, multi-label, a Charades
CSV) of videos under ``video_dir``, or a TFRecord glob (``*.tfrecord*``).
Both are read by tf.data (`pipeline`) or Grain processes (`grain_pipeline`;
TFRecords through the index beside each shard, `shards`), as ``engine`` says
(``"auto"``: `runtime.input_engine`); TFRecords served by a tf.data service
by tf.data.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

from nonlocal_tf import runtime
from nonlocal_tf.data import annotations
from nonlocal_tf.data import spec as spec_module
from nonlocal_tf.data.skips import SkipLog
from nonlocal_tf.data.spec import ClipSpec

ENGINES = ("auto", "tf_data", "grain")


@dataclasses.dataclass
class VideoDataset:
    """The data of one source in one mode, from either engine: what it reads
    (``videos``, None for TFRecords), how (``engine``, ``mode``, ``spec``,
    ``batch_size``, ``seed``, this process's ``shard_index`` of
    ``num_shards``), what it skipped (``skips``, counted as elements are
    read) and the class names in label order.

    Iterating gives NumPy elements: ``(clips, labels)`` batches, or one
    video's ``(views, label, index)`` in test mode. ``data`` is the engine's
    own dataset (a ``tf.data.Dataset`` or a ``grain.IterDataset``), which
    `keras.Model.fit` / ``predict`` read directly; ``element_spec`` its
    shapes and dtypes.
    """

    data: object
    engine: str
    mode: str
    spec: ClipSpec
    batch_size: int | None
    skips: SkipLog
    class_names: list[str] | None
    videos: annotations.VideoList | None = None
    seed: int | None = None
    num_shards: int = 1
    shard_index: int = 0
    augment_on: str = "host"  # "device": ((windows, geometry), labels) for `layers.ClipCrops`

    @property
    def element_spec(self):
        return self.data.element_spec

    @property
    def step_spec(self):
        """The shapes and dtypes a training step reads of each element:
        ``element_spec``, or with ``augment_on="device"`` the clips
        `nonlocal_tf.training.cut_views` cuts from its windows."""
        if self.augment_on == "host":
            return self.element_spec
        from nonlocal_tf.data.grain_pipeline import ArraySpec

        (windows, _), labels, *rest = self.element_spec
        recipe = spec_module.mode(self.mode)
        batch = () if recipe.views else windows.shape[: len(windows.shape) - 4]
        return (ArraySpec((*batch, *recipe.shape(self.spec)), "uint8"), labels, *rest)

    def __iter__(self) -> Iterator:
        """NumPy elements; a loop left early ends the engine's reading (Grain's
        worker processes stop with the iterator)."""
        elements = self.data.as_numpy_iterator() if self.engine == "tf_data" else iter(self.data)
        try:
            yield from elements
        finally:
            close = getattr(elements, "close", None)  # Grain's iterators own processes
            if close is not None:
                close()

    def __len__(self) -> int:
        """Videos this process reads in one pass (TFRecords: unknown, an error)."""
        if self.videos is None:
            raise TypeError("A TFRecord dataset does not know its number of videos.")
        return len(range(self.shard_index, len(self.videos), self.num_shards))


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
    """The `VideoDataset` of ``source``.

    ``repeat``: endless (what ``fit`` with ``steps_per_epoch`` reads), each
    epoch reshuffled. ``workers``: Grain's decoding processes.
    ``data_service``: a tf.data service's ``grpc://host:port``, whose workers
    read TFRecords (`service`). Other keyword arguments (``batch_size``,
    ``seed``, ``num_shards``, ``shard_index``, ...) go to the engine's dataset
    function. ``class_names``: the label order of a folder per class or a
    Kinetics CSV (default: sorted names); TFRecords carry label numbers only.
    ``augment_on="device"``: the Grain engine's workers only decode
    (`grain_pipeline.grain_video_dataset`).
    """
    if ".tfrecord" in source:
        device = kwargs.get("augment_on", "host") == "device"
        chosen = "tf_data" if data_service and engine == "auto" else resolve_engine(engine, device)
        if data_service and chosen == "grain":
            raise ValueError(
                f"{source}: a tf.data service runs tf.data pipelines; engine='grain' reads the "
                "shards in this host's processes. Leave one of them out."
            )
        if chosen == "grain":
            from nonlocal_tf.data import grain_pipeline

            kwargs.setdefault("batch_size", 8)
            kwargs["skips"] = kwargs.get("skips") or SkipLog(f"{mode} records")
            ds = grain_pipeline.grain_shard_dataset(
                source,
                mode,
                spec,
                num_classes=num_classes,
                multi_label=multi_label,
                class_names=class_names,
                repeat=repeat,
                workers=workers,
                **kwargs,
            )
            return VideoDataset(
                ds,
                "grain",
                mode,
                spec,
                kwargs["batch_size"],
                kwargs["skips"],
                ds.class_names,
                seed=kwargs.get("seed"),
                num_shards=kwargs.get("num_shards", 1),
                shard_index=kwargs.get("shard_index", 0),
                augment_on=kwargs.get("augment_on", "host"),
            )
        from nonlocal_tf.data import pipeline

        _host_augments(kwargs)
        ds = pipeline.tfrecord_dataset(
            source,
            mode,
            spec,
            num_classes=num_classes,
            multi_label=multi_label,
            data_service=data_service,
            **kwargs,
        )
        return VideoDataset(
            ds.repeat() if repeat else ds,
            "tf_data",
            mode,
            spec,
            kwargs.get("batch_size", 8),
            SkipLog(f"{mode} records"),  # tf.data skips bad records itself (logged)
            list(class_names) if class_names else None,
            seed=kwargs.get("seed"),
            num_shards=1 if data_service else kwargs.get("num_shards", 1),
            shard_index=0 if data_service else kwargs.get("shard_index", 0),
        )
    if data_service:
        raise ValueError(
            f"{source}: a tf.data service serves TFRecord shards; video files are decoded in "
            "Python (PyAV), which its workers cannot run. Convert them with zoo.make_tfrecords."
        )
    # Rows and files the annotations drop are counted with the videos that fail.
    skips = kwargs.pop("skips", None) or SkipLog(f"{mode} videos")
    kwargs["skips"] = skips
    videos = read_videos(source, video_dir, multi_label, class_names, skips)
    return video_list_dataset(videos, mode, spec, engine, repeat, workers, **kwargs)


def video_list_dataset(
    videos: annotations.VideoList,
    mode: str,
    spec: ClipSpec,
    engine: str = "auto",
    repeat: bool = False,
    workers: int | None = None,
    **kwargs,
):
    """The `VideoDataset` of a video list, by the engine ``engine`` names (see
    `dataset_from_source`)."""
    kwargs.setdefault("batch_size", 8)
    kwargs["skips"] = kwargs.get("skips") or SkipLog(f"{mode} videos")
    chosen = resolve_engine(engine, kwargs.get("augment_on", "host") == "device")
    if chosen == "grain":
        from nonlocal_tf.data import grain_pipeline

        ds = grain_pipeline.grain_video_dataset(
            videos, mode, spec, repeat=repeat, workers=workers, **kwargs
        )
    else:
        from nonlocal_tf.data import pipeline

        _host_augments(kwargs)
        ds = pipeline.video_dataset(videos, mode, spec, **kwargs)
        ds = ds.repeat() if repeat else ds
    return VideoDataset(
        ds,
        chosen,
        mode,
        spec,
        kwargs["batch_size"],
        kwargs["skips"],
        list(videos.class_names),
        videos,
        kwargs.get("seed"),
        kwargs.get("num_shards", 1),
        kwargs.get("shard_index", 0),
        kwargs.get("augment_on", "host"),
    )


def _host_augments(kwargs: dict) -> None:
    """The tf.data engine augments on the host: ``augment_on`` taken out of
    ``kwargs``, an error if it asks for the accelerator."""
    if spec_module.augment_on(kwargs.pop("augment_on", "host")) == "device":
        raise ValueError(
            "augment_on='device' is the Grain engine's (engine='grain'); the tf.data engine "
            "augments on the host."
        )


def resolve_engine(engine: str, augment_on_device: bool = False) -> str:
    """``engine`` checked, and ``"auto"`` replaced by `runtime.input_engine`
    (by Grain, the engine that can, for clips the accelerator augments)."""
    if engine not in ENGINES:
        raise ValueError(f"`engine` must be one of {ENGINES}. Received: engine={engine!r}")
    if engine != "auto":
        return engine
    return "grain" if augment_on_device else runtime.input_engine()


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
