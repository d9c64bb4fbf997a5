"""Video files and frame shards through Grain worker processes: the same
clips as `pipeline.video_dataset` and `pipeline.tfrecord_dataset`, without
TensorFlow, decoded on every core.

    records -> shard -> shuffle -> repeat -> load (decode, augment) -> batch
        in ``workers`` processes (``mp_prefetch``, shared memory)
    -> count the skips -> (clips, labels) in the process that trains

A record is a video file (`grain_video_dataset`) or one video of a TFRecord
shard (`grain_shard_dataset`): random access through the shard's index,
shuffled across all shards, reading and decoding only the sampled frames'
JPEGs (`shards.read_frames`).

The tf.data engine decodes in threads of one process, which PyAV's Python
side serialises (two cores of an AMD EPYC gave 1.15x one, `bench/RESULTS.md`); here each
worker process decodes whole clips with FFmpeg's threads off, so decode
capacity grows with the cores. Sampling and augmentation read the same mode
table (`spec.MODES`) as tf.data, and the resize is TensorFlow's arithmetic in
NumPy (`numpy_transforms`). Random draws differ from the tf.data engine's (a
NumPy generator per element instead of stateless TensorFlow seeds).

A bad video is skipped in the worker, which replaces it in the batch with the
next video, so every batch is full; the skip travels with the batch and is
logged and counted in ``dataset.skips`` by the training process.

The result is a `grain.IterDataset` of NumPy ``(clips, labels)`` batches
(``(views, label, index)`` per video in test mode) that `keras.Model.fit`,
`evaluate` and `predict` read on every backend. Its ``get_state()`` is the
position of the iterator last opened on it (Grain's own iterator state, a
JSON-able dict); ``set_state(state)`` makes the next iterator start there,
so that a resumed run reads on from where the interrupted one was (made
with the same arguments and the same ``seed``: ``dataset.seed`` is the
one in effect, drawn when none was given).
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import shutil
import weakref

import grain
import numpy as np
from absl import flags

from nonlocal_tf.data import annotations, numpy_transforms, sampling, shards
from nonlocal_tf.data import spec as spec_module
from nonlocal_tf.data.decode import VideoDecodeError, read_sampled, skip_reason
from nonlocal_tf.data.skips import SkipLog
from nonlocal_tf.data.spec import KINETICS_8X8, ClipSpec, Mode
from nonlocal_tf.data.workers import end_with_this_process

log = logging.getLogger("nonlocal_tf")


def default_workers(shards: bool = False) -> int:
    """Decoding processes: every core this process may use but one (the
    one that feeds the accelerator). Frame ``shards`` on two cores or
    fewer: none, their JPEGs decoded by threads of this process (which
    release the interpreter, unlike PyAV's video decoding; 2 cores of an AMD
    EPYC read 420 clips/s cut on the accelerator with threads, 255 with one
    worker process: ``bench/results/shard_reading_amd_20261207.txt``)."""
    cores = len(os.sched_getaffinity(0))
    if shards and cores <= 2:
        return 0
    return max(cores - 1, 1)


def decode_threads(workers: int) -> int:
    """Decoding threads in each process (``workers`` of them, or this one for
    0): the cores shared out, at least one. With `default_workers` that is one
    each on four cores or more; one worker on two cores gets two threads, the
    training process's core being idle while an accelerator computes."""
    return max(len(os.sched_getaffinity(0)) // max(workers, 1), 1)


@dataclasses.dataclass(frozen=True)
class ArraySpec:
    """Shape and dtype of one part of a batch (what `training.prepare_for_fit` reads)."""

    shape: tuple
    dtype: str


def grain_video_dataset(
    videos: annotations.VideoList,
    mode: str = "train",
    spec: ClipSpec = KINETICS_8X8,
    batch_size: int | None = 8,
    workers: int | None = None,
    repeat: bool = False,
    shuffle: bool | None = None,
    seed: int | None = None,
    strict: bool = False,
    num_shards: int = 1,
    shard_index: int = 0,
    skips: SkipLog | None = None,
    augment_on: str = "host",
):
    """A `grain.IterDataset` of clips decoded from video files.

    Args:
        videos: paths and labels (see `nonlocal_tf.data.annotations`).
        mode: ``"train"``, ``"val"`` or ``"test"``.
        spec: clip length, rate and augmentation sizes.
        batch_size: clips per batch for train/val (None: unbatched); test
            elements are one video each (its views).
        workers: decoding processes (0: decode in threads of this
            process); default `default_workers`.
        repeat: endless, reshuffled each epoch (what ``fit`` with
            ``steps_per_epoch`` reads); else one pass per iteration.
        shuffle: default True for train; a new order every epoch.
        seed: makes the order, sampling and augmentation deterministic (for a
            given ``workers``); None draws one.
        strict: raise on the first bad video instead of skipping it.
        num_shards, shard_index: this process's share of the videos.
        skips: where skipped videos are recorded; also ``dataset.skips``.
        augment_on: ``"host"``: the clips augmented in the workers;
            ``"device"``: the workers only decode, and elements are
            ``((windows, geometry), labels)`` (test: ``((windows, geometry),
            label, index)``, a video's clips as they are) whose clips or
            views `nonlocal_tf.layers.ClipCrops` cuts on the accelerator
            (`nonlocal_tf.layers.cut_views`).
    """
    recipe = spec_module.mode(mode)
    window_of = _window_of(augment_on, recipe, spec)
    videos.check_split(num_shards)
    skips = skips if skips is not None else SkipLog(f"{mode} videos")
    records = list(zip(videos.paths, videos.label_array(), range(len(videos)), strict=True))
    label = (len(videos.class_names),) if videos.multi_label else ()
    ds = _pipeline(
        grain.MapDataset.source(records)[shard_index::num_shards],
        _Load(recipe, spec, strict, window_of),
        recipe,
        _element_spec(recipe, spec, batch_size, label, videos.multi_label, window_of),
        batch_size,
        workers,
        repeat,
        shuffle,
        seed,
        skips,
    )
    ds.class_names = list(videos.class_names)
    return ds


def grain_shard_dataset(
    file_pattern: str | list[str],
    mode: str = "train",
    spec: ClipSpec = KINETICS_8X8,
    num_classes: int | None = None,
    multi_label: bool = False,
    class_names: list[str] | None = None,
    batch_size: int | None = 8,
    workers: int | None = None,
    repeat: bool = False,
    shuffle: bool | None = None,
    seed: int | None = None,
    strict: bool = False,
    num_shards: int = 1,
    shard_index: int = 0,
    skips: SkipLog | None = None,
    augment_on: str = "host",
):
    """A `grain.IterDataset` of clips from TFRecord frame shards (written by
    `zoo.make_tfrecords` or any SequenceExample writer of the same keys),
    read at random through each shard's index (`shards.index_for`: built
    here, one logged line each, for shards that lack a current one).

    The videos of all shards are one list, shuffled as a whole; a clip reads
    and decodes only its sampled frames. Sampling and augmentation are the
    video files' (`spec.MODES`, `sampling.indices`,
    `numpy_transforms.augment`); a video shorter than
    ``spec.fewest_frames`` is skipped, as a video file is. A record that
    cannot be read is a counted skip named ``<shard> record <n>``; a
    truncated shard is a `shards.ShardError` here, before any reading.
    ``index`` (test mode) is the video's position in the sorted shards.
    Multi-label data needs ``num_classes``. Other arguments as
    `grain_video_dataset` (``augment_on`` too); ``num_shards`` and ``shard_index`` split the
    videos (not the files) between processes.
    """
    recipe = spec_module.mode(mode)
    window_of = _window_of(augment_on, recipe, spec)
    if multi_label and not num_classes:
        raise ValueError("multi_label=True needs num_classes.")
    files = sorted(glob.glob(file_pattern) if isinstance(file_pattern, str) else file_pattern)
    if not files:
        raise ValueError(f"No TFRecord files match {file_pattern!r}.")
    counts = [len(shards.index_for(path)) for path in files]
    source = _ShardRecords(files, np.cumsum([0, *counts]))
    if len(source) < num_shards:
        raise ValueError(f"{len(source)} videos cannot be split between {num_shards} readers.")
    skips = skips if skips is not None else SkipLog(f"{mode} records")
    label = (num_classes,) if multi_label else ()
    ds = _pipeline(
        grain.MapDataset.source(source)[shard_index::num_shards],
        _LoadRecord(
            recipe,
            spec,
            strict,
            num_classes if multi_label else None,
            window_of,
        ),
        recipe,
        _element_spec(recipe, spec, batch_size, label, multi_label, window_of),
        batch_size,
        default_workers(shards=True) if workers is None else workers,
        repeat,
        shuffle,
        seed,
        skips,
    )
    ds.class_names = list(class_names) if class_names else None
    return ds


def _pipeline(
    records: grain.MapDataset,
    load,
    recipe: Mode,
    element_spec: tuple,
    batch_size: int | None,
    workers: int | None,
    repeat: bool,
    shuffle: bool | None,
    seed: int | None,
    skips: SkipLog,
):
    """records -> shuffle -> repeat -> ``load`` -> batch in ``workers``
    processes -> count the skips: the `IterDataset` both sources share, with
    its ``skips`` and ``element_spec``."""
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None. Received: batch_size={batch_size}")
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise ValueError(f"workers must be >= 0. Received: workers={workers}")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**31)
    ds = records
    if recipe.shuffle if shuffle is None else shuffle:
        ds = ds.shuffle(seed=seed)
    if repeat:
        ds = ds.repeat(None)  # each epoch's order reshuffled (Grain reseeds per epoch)
    # The cores shared out as decoding threads, a batch ahead. Grain's default (16
    # threads, 500 elements ahead, in each worker) ran 240 decoders on 16 cores and could
    # hold 500 elements per worker (500 30-view test videos are 24 GB), buffers that made
    # a training epoch after a pause look faster than decoding is.
    threads = decode_threads(workers)
    ahead = max(batch_size if batch_size and not recipe.views else 1, threads)
    ds = ds.random_map(load, seed=seed).to_iter_dataset(
        grain.ReadOptions(num_threads=threads, prefetch_buffer_size=ahead)
    )
    ds = _Batches(ds, None if recipe.views else batch_size)
    if workers:
        if not flags.FLAGS.is_parsed():  # Grain reads its absl flags; outside an absl app:
            flags.FLAGS.mark_as_parsed()  # their defaults
        ds = ds.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=workers),
            worker_init_fn=end_with_this_process(),  # even if this one is killed
        )
    ds = ds.map(_CountSkips(skips, recipe.views)).filter(lambda element: element is not None)
    ds = _Resumable(ds)
    ds.skips, ds.element_spec = skips, element_spec
    ds.seed = seed  # the one drawn when none was given: a resumed run needs it too
    if workers:
        _check_shared_memory(_largest_frames(element_spec[0]), workers)
    return ds


# ---------------------------------------------------------------- the steps
@dataclasses.dataclass(frozen=True)
class _Load:
    """Decode and augment one video, in a worker: ``{"frames", "label",
    "index"}``, or ``{"skipped": (path, reason)}`` for a bad one."""

    mode: Mode
    spec: ClipSpec
    strict: bool
    window_of: int | None = None  # the accelerator augments (`numpy_transforms.prepare`)

    def __call__(self, record, rng: np.random.Generator) -> dict:
        path, label, index = record
        try:
            # One process per core: FFmpeg's own threads would only compete.
            frames = read_sampled(path, self.mode, self.spec, rng, threaded=False)
            parts = numpy_transforms.prepare(frames, rng, self.mode, self.spec, self.window_of)
        except Exception as exc:  # a bad video never ends the epoch
            if self.strict:
                raise VideoDecodeError(path, skip_reason(exc)) from exc
            return {"skipped": (path, skip_reason(exc))}
        return {**parts, "label": label, "index": np.int64(index)}


@dataclasses.dataclass(frozen=True)
class _ShardRecords:
    """The videos of all shards as one list (a Grain source): video ``i`` is
    ``(shard path, record number, i)``; ``starts`` are the cumulative record
    counts. Small to pickle for the workers, which map the indexes themselves."""

    files: list[str]
    starts: np.ndarray

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i: int) -> tuple[str, int, int]:
        shard = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.files[shard], int(i - self.starts[shard]), int(i)


@dataclasses.dataclass(frozen=True)
class _LoadRecord:
    """Read, decode and augment one video of a shard, in a worker: the
    sampled frames' JPEGs only (`shards.read_frames`); ``{"frames", "label",
    "index"}``, or ``{"skipped": (name, reason)}`` for a bad one."""

    mode: Mode
    spec: ClipSpec
    strict: bool
    num_classes: int | None  # multi-hot labels of this many classes; None: the first label
    window_of: int | None = None  # the accelerator augments (`numpy_transforms.prepare`)

    def __call__(self, record, rng: np.random.Generator) -> dict:
        path, number, position = record
        name = shards.record_name(path, number)
        try:
            index = shards.open_index(path)
            problem = index.problem[number].decode()
            if problem:
                raise VideoDecodeError(name, problem)
            count = index.frame_count(number)
            if count < self.spec.fewest_frames:
                raise VideoDecodeError(
                    name, f"shorter than a clip ({count} frames < {self.spec.fewest_frames})"
                )
            label = self._label(index.record_labels(number), name)
            chosen = sampling.indices(self.mode, count, self.spec, rng)
            frames = shards.read_frames(path, index, number, chosen)
            parts = numpy_transforms.prepare(frames, rng, self.mode, self.spec, self.window_of)
        except Exception as exc:  # a bad record never ends the epoch
            if self.strict:
                raise VideoDecodeError(name, skip_reason(exc)) from exc
            return {"skipped": (name, skip_reason(exc))}
        return {**parts, "label": label, "index": np.int64(position)}

    def _label(self, labels: np.ndarray, name: str):
        if self.num_classes is None:
            if not len(labels):
                raise VideoDecodeError(name, "no label")
            return np.int32(labels[0])
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise VideoDecodeError(name, f"a label outside 0..{self.num_classes - 1}")
        hot = np.zeros(self.num_classes, np.float32)
        hot[labels] = 1.0
        return hot


class _Batches(grain.IterDataset):
    """``size`` good clips stacked per element (one video per element when
    ``size`` is None), with the skips met on the way: a bad video is replaced
    by the next, so batches stay full (the last of a pass may be short)."""

    def __init__(self, parent: grain.IterDataset, size: int | None):
        super().__init__(parent)
        self._size = size

    def __iter__(self) -> _BatchIterator:
        return _BatchIterator(self._parent.__iter__(), self._size)

    def __str__(self) -> str:
        return f"_Batches(size={self._size})"


class _BatchIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, size: int | None):
        super().__init__(parent)
        self._size = size

    def __next__(self) -> dict:
        good, skipped = [], []
        while len(good) < (self._size or 1):
            try:
                element = next(self._parent)
            except StopIteration:
                break
            if "skipped" in element:
                skipped.append(element["skipped"])
            else:
                good.append(element)
        if not good and not skipped:
            raise StopIteration
        if not good:  # only skips left at the end of a pass
            return {"count": np.int64(0), "skipped": skipped}
        if self._size is None:
            return {**good[0], "count": np.int64(1), "skipped": skipped}
        return {
            **{key: np.stack([e[key] for e in good]) for key in good[0]},
            "count": np.int64(len(good)),
            "skipped": skipped,
        }

    def get_state(self):
        return self._parent.get_state()

    def set_state(self, state):
        self._parent.set_state(state)


@dataclasses.dataclass
class _CountSkips:
    """In the training process: log and count the skips a batch carries;
    the batch as Keras reads it (None for a batch of skips alone)."""

    skips: SkipLog
    views: bool

    def __call__(self, element: dict):
        for path, reason in element["skipped"]:
            self.skips.add(str(path), str(reason))
        if int(element["count"]) == 0:
            return None
        frames = element["frames"]
        if "geometry" in element:  # cut on the accelerator
            frames = frames, element["geometry"]
        if self.views:
            return frames, element["label"], element["index"]
        return frames, element["label"]


class _Resumable(grain.IterDataset):
    """The last step: remembers the iterator last opened on it (whose
    ``get_state`` is where reading got to) and starts the next one from a
    state given to ``set_state`` (Grain's iterator state)."""

    def __init__(self, parent: grain.IterDataset):
        super().__init__(parent)
        self._latest = None
        self._pending = None

    def __iter__(self) -> grain.DatasetIterator:
        iterator = self._parent.__iter__()
        if self._pending is not None:
            try:
                iterator.set_state(self._pending)
                log.warning("Reading the data on from the position given (a backup's).")
            except Exception as exc:  # another worker count, another Grain: not this stream's
                log.warning(
                    "The data position given (a backup's) cannot be restored here: it was saved "
                    "by a stream of another kind, such as another number of worker processes "
                    "(--input_workers) (%s: %s). Reading the data from the beginning.",
                    type(exc).__name__,
                    exc,
                )
                iterator = self._parent.__iter__()
            self._pending = None
        self._latest = weakref.ref(iterator)  # its worker processes end with it
        return iterator

    def get_state(self) -> dict | None:
        """Where the iterator last opened on this dataset is (a JSON-able
        dict), or the state given to `set_state` before one was opened."""
        latest = self._latest() if self._latest is not None else None
        return latest.get_state() if latest is not None else self._pending

    def set_state(self, state: dict) -> None:
        """The next iterator opened on this dataset starts at ``state``."""
        self._pending = state

    def __str__(self) -> str:
        return "_Resumable"


def _largest_frames(frames) -> tuple:
    """The shape of an element's pixels: its clips or views, its windows, or
    for a test video's windows (sized by its frames) its 3 views per clip,
    which they never exceed."""
    if not isinstance(frames, tuple):
        return frames.shape
    windows, where = frames
    if None not in windows.shape:
        return windows.shape
    return (*where.shape[:2], windows.shape[1], where.shape[-1], where.shape[-1], 3)


def _check_shared_memory(shape: tuple, workers: int, folder: str = "/dev/shm") -> None:
    """A warning when ``folder`` cannot hold what the workers pass through it
    (each holds a finished element and one in the making): a container's
    default 64 MB ``/dev/shm`` fails there mid-epoch, deep in Grain."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    needed = 2 * workers * int(np.prod(shape))  # uint8
    if needed > free:
        log.warning(
            "%s has %.0f MB free; %d decoding workers pass about %.0f MB of clips through it. "
            "Give the container more (docker run --shm-size=...) or use fewer --input_workers.",
            folder,
            free / 1e6,
            workers,
            needed / 1e6,
        )


def _window_of(augment_on: str, recipe: Mode, spec: ClipSpec) -> int | None:
    """The side of the windows clips travel in when the accelerator augments
    them (`numpy_transforms.window_side`); None when the host does."""
    if spec_module.augment_on(augment_on) == "host":
        return None
    return numpy_transforms.window_side(recipe, spec)


def _element_spec(
    recipe: Mode,
    spec: ClipSpec,
    batch_size,
    label: tuple,
    multi_label: bool,
    window_of: int | None = None,
):
    label_dtype = "float32" if multi_label else "int32"
    frames = tuple(recipe.shape(spec))
    size = recipe.crop_size(spec)
    if recipe.views:
        views = ArraySpec(frames, "uint8")
        if window_of is not None:  # a video's clips as they are, and their 3 crops each
            clips = (spec.num_test_clips, spec.clip_len, None, None, 3)
            views = ArraySpec(clips, "uint8"), ArraySpec((clips[0], 3, 2, 3, size), "float32")
        return views, ArraySpec(label, label_dtype), ArraySpec((), "int64")
    batch = () if batch_size is None else (batch_size,)
    if window_of is not None:  # (windows, geometry): `numpy_transforms.prepare`
        windows = ArraySpec(batch + (spec.clip_len, window_of, window_of, 3), "uint8")
        clips = windows, ArraySpec(batch + (1, 2, 3, size), "float32")
        return clips, ArraySpec(batch + label, label_dtype)
    return ArraySpec(batch + frames, "uint8"), ArraySpec(batch + label, label_dtype)
