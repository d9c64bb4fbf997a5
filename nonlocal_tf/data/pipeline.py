"""tf.data pipelines: parse -> sample -> decode -> preprocess -> batch.

Two sources with one behaviour:
- `video_dataset`: video files decoded by PyAV in parallel, only the sampled
  frames; a bad file is skipped, logged and counted in ``dataset.skips``.
- `tfrecord_dataset`: SequenceExample shards (one JPEG per frame), sampling in
  the graph before decoding.

Modes: ``"train"`` (random start, random short side, random crop, flip),
``"val"`` (one centred clip, centre crop) and ``"test"`` (the official 10
clips x 3 crops, one element per video holding its 30 views).
Elements are ``(clip, label)`` for train/val, ``(views, label, video_index)``
for test; clips are uint8 RGB (the model normalises), labels int32 class indices or
float32 multi-hot vectors for multi-label data (Charades).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from nonlocal_tf.data import annotations, sampling, transforms
from nonlocal_tf.data.decode import VideoDecodeError, read_frames
from nonlocal_tf.data.skips import SkipLog
from nonlocal_tf.data.tfrecord import decode_jpegs, parse_example

log = logging.getLogger("nonlocal_tf")
AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """Sampling and augmentation of one dataset recipe."""

    clip_len: int = 8
    rate: int = 8
    train_scale: tuple[int, int] = (256, 320)  # random short side
    crop: int = 224
    val_short_side: int = 256
    test_short_side: int = 256
    test_crop: int = 256
    num_test_clips: int = 10
    min_frames: int | None = None  # fewer decodable frames: skipped; default clip_len

    @classmethod
    def at_size(cls, clip_len: int, rate: int, size: int, **kwargs) -> ClipSpec:
        """Every short side and crop ``size``, no scale jitter: clips at a
        model's own input size (`zoo.predict`, small generated videos)."""
        sizes = {"val_short_side": size, "test_short_side": size, "test_crop": size}
        return cls(clip_len, rate, (size, size), size, **sizes, **kwargs)

    def __post_init__(self):
        if self.clip_len < 1 or self.rate < 1 or self.num_test_clips < 1:
            raise ValueError(f"clip_len, rate and num_test_clips must be >= 1. Received: {self}")
        low, high = self.train_scale
        if not self.crop <= low <= high:
            raise ValueError(f"Need crop <= train_scale[0] <= train_scale[1]. Received: {self}")
        if self.crop > self.val_short_side or self.test_crop > self.test_short_side:
            raise ValueError(
                f"A crop cannot exceed the short side it is taken from. Received: {self}"
            )


KINETICS_8X8 = ClipSpec(clip_len=8, rate=8)
KINETICS_32X2 = ClipSpec(clip_len=32, rate=2)
# Charades (paper section 5.2): the 224 jitter window rescaled to a 288 crop; test at 320.
CHARADES_32X4 = ClipSpec(
    clip_len=32,
    rate=4,
    train_scale=(329, 411),
    crop=288,
    val_short_side=320,
    test_short_side=320,
    test_crop=320,
)


@dataclasses.dataclass(frozen=True)
class _Mode:
    """What one mode samples and how it augments: the only place the modes differ."""

    shuffle: bool  # the default of ``shuffle``
    views: bool  # one element per video holding all its views (test), else one clip
    host_indices: Callable  # (num_frames, spec, seed) -> frame indices, NumPy
    graph_indices: Callable  # (num_frames, spec, seed) -> frame indices, in the graph
    augment: Callable  # (frames, seed, spec) -> uint8 clip(s)

    def clips(self, spec: ClipSpec) -> int:
        return spec.num_test_clips if self.views else 1

    def shape(self, spec: ClipSpec) -> list[int]:
        """Static shape of an element's frames: a clip, or a video's views."""
        if self.views:
            return [3 * spec.num_test_clips, spec.clip_len, spec.test_crop, spec.test_crop, 3]
        return [spec.clip_len, spec.crop, spec.crop, 3]


def _test_views(frames, seed, spec: ClipSpec):
    """(clips, T, H, W, 3) -> (clips * 3, T, S, S, 3), clip-major: view 3k + c
    is clip k, crop c."""
    views = tf.map_fn(
        lambda clip: transforms.test_transform(clip, spec.test_short_side, spec.test_crop),
        frames,
        fn_output_signature=tf.TensorSpec([3, None, spec.test_crop, spec.test_crop, 3], tf.uint8),
    )  # (clips, 3, T, S, S, 3)
    shape = tf.shape(views)
    return tf.reshape(views, tf.concat([[shape[0] * 3], shape[2:]], 0))


_MODES = {
    "train": _Mode(
        shuffle=True,
        views=False,
        host_indices=lambda n, spec, seed: sampling.train_indices(
            n, spec.clip_len, spec.rate, np.random.default_rng(seed)
        ),
        graph_indices=lambda n, spec, seed: sampling.tf_train_indices(
            n, spec.clip_len, spec.rate, seed
        ),
        augment=lambda frames, seed, spec: transforms.train_transform(
            frames, seed, spec.train_scale, spec.crop
        ),
    ),
    "val": _Mode(
        shuffle=False,
        views=False,
        host_indices=lambda n, spec, _: sampling.center_indices(n, spec.clip_len, spec.rate),
        graph_indices=lambda n, spec, _: sampling.tf_center_indices(n, spec.clip_len, spec.rate),
        augment=lambda frames, _, spec: transforms.val_transform(
            frames, spec.val_short_side, spec.crop
        ),
    ),
    "test": _Mode(
        shuffle=False,
        views=True,
        host_indices=lambda n, spec, _: sampling.test_indices(
            n, spec.clip_len, spec.rate, spec.num_test_clips
        ),
        graph_indices=lambda n, spec, _: sampling.tf_test_indices(
            n, spec.clip_len, spec.rate, spec.num_test_clips
        ),
        augment=_test_views,
    ),
}
MODES = tuple(_MODES)


def video_dataset(
    videos: annotations.VideoList,
    mode: str = "train",
    spec: ClipSpec = KINETICS_8X8,
    batch_size: int | None = 8,
    shuffle: bool | None = None,
    seed: int | None = None,
    strict: bool = False,
    num_shards: int = 1,
    shard_index: int = 0,
    num_parallel_calls=AUTOTUNE,
    cache: bool = False,
    prefetch: bool = True,
    skips: SkipLog | None = None,
) -> tf.data.Dataset:
    """A dataset of clips decoded from video files.

    Args:
        videos: paths and labels (see `nonlocal_tf.data.annotations`).
        mode: ``"train"``, ``"val"`` or ``"test"``.
        spec: clip length, rate and augmentation sizes.
        batch_size: clips per batch for train/val (None: unbatched); test
            elements are one video each (its 30 views).
        shuffle: default True for train.
        seed: makes shuffling, sampling and augmentation deterministic (and
            element order with it).
        strict: raise on the first bad video instead of skipping it.
        num_shards, shard_index: this worker's share of the videos.
        cache: cache decoded, unaugmented clips in memory (val/test).
        skips: where skipped videos are recorded; also ``dataset.skips``.
    """
    recipe = _mode(mode)
    if len(videos) == 0:
        raise ValueError("No videos to read: the list is empty.")
    if num_shards > len(videos):
        raise ValueError(f"{len(videos)} videos cannot be split between {num_shards} readers.")
    skips = skips if skips is not None else SkipLog(f"{mode} videos")
    labels = _label_array(videos)
    # Paths as the file system's bytes: names that are not UTF-8 stay readable.
    paths = np.array([os.fsencode(p) for p in videos.paths], dtype=object)
    ds = tf.data.Dataset.from_tensor_slices((paths, labels, np.arange(len(videos), dtype=np.int64)))
    ds = _order(ds, len(videos), recipe, shuffle, seed, num_shards, shard_index)
    ds = tf.data.Dataset.zip(ds, _seeds(seed))
    decode = _decoder(recipe, spec, skips, strict)
    deterministic = seed is not None or None

    def load(element, element_seed):
        path, label, index = element
        frames, ok = tf.numpy_function(
            decode, [path, element_seed[0]], [tf.uint8, tf.bool], stateful=False
        )
        frames.set_shape([None] * (4 if recipe.views else 3) + [3])
        ok.set_shape([])
        return frames, label, index, element_seed, ok

    ds = ds.map(load, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    ds = ds.filter(lambda frames, label, index, s, ok: ok)
    if cache:
        ds = ds.cache()
    ds = _augment_and_batch(
        ds, recipe, spec, batch_size, prefetch, num_parallel_calls, deterministic
    )
    ds.skips = skips
    ds.class_names = list(videos.class_names)
    return ds


def video_dataset_from_directory(
    directory: str, mode: str = "train", spec: ClipSpec = KINETICS_8X8, **kwargs
):
    """`video_dataset` over ``directory/<class>/<video>`` (like
    `keras.utils.image_dataset_from_directory`); ``dataset.class_names`` holds
    the class names in label order."""
    skips = kwargs.pop("skips", None) or SkipLog(f"{mode} videos")
    videos = annotations.read_directory(directory, kwargs.pop("class_names", None), skips=skips)
    return video_dataset(videos, mode=mode, spec=spec, skips=skips, **kwargs)


def tfrecord_dataset(
    file_pattern: str | list[str],
    mode: str = "train",
    spec: ClipSpec = KINETICS_8X8,
    num_classes: int | None = None,
    multi_label: bool = False,
    batch_size: int | None = 8,
    shuffle: bool | None = None,
    seed: int | None = None,
    strict: bool = False,
    num_shards: int = 1,
    shard_index: int = 0,
    num_parallel_calls=AUTOTUNE,
    cycle_length: int = 4,
    prefetch: bool = True,
) -> tf.data.Dataset:
    """A dataset of clips from SequenceExample shards (see `tfrecord.py`).

    Sampling happens on the JPEG strings, so only the frames of the clip are
    decoded. Multi-label data needs ``num_classes`` (multi-hot labels). A record
    that cannot be parsed or decoded raises with ``strict``, otherwise it is
    skipped with a logged warning (tf.data's ``ignore_errors``).
    """
    recipe = _mode(mode)
    if multi_label and not num_classes:
        raise ValueError("multi_label=True needs num_classes.")
    files = tf.io.gfile.glob(file_pattern) if isinstance(file_pattern, str) else list(file_pattern)
    if not files:
        raise ValueError(f"No TFRecord files match {file_pattern!r}.")
    if num_shards > len(files):  # the files are what is split between readers
        raise ValueError(
            f"{len(files)} TFRecord files for {num_shards} readers: write at least one shard per "
            "process (zoo.make_tfrecords --num_shards)."
        )
    deterministic = seed is not None or None
    ds = tf.data.Dataset.from_tensor_slices(sorted(files))
    ds = _order(ds, len(files), recipe, shuffle, seed, num_shards, shard_index)
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=cycle_length,
        num_parallel_calls=num_parallel_calls,
        deterministic=deterministic,
    )
    if _shuffles(recipe, shuffle):  # records within shards too
        ds = ds.shuffle(256, seed=seed, reshuffle_each_iteration=True)
    ds = tf.data.Dataset.zip(ds.enumerate(), _seeds(seed))

    def load(element, element_seed):
        index, serialized = element
        example = parse_example(serialized)
        jpegs = example["frames"]
        n = tf.shape(jpegs, out_type=tf.int64)[0]
        tf.debugging.assert_positive(n, message="a record without frames")
        idx = recipe.graph_indices(n, spec, element_seed)
        count = spec.clip_len * recipe.clips(spec)
        frames = decode_jpegs(tf.reshape(tf.gather(jpegs, idx), [-1]), count)
        shape = tf.concat([tf.shape(idx, out_type=tf.int32), tf.shape(frames)[1:]], 0)
        frames = tf.reshape(frames, shape)
        labels = tf.cast(example["labels"], tf.int32)
        if multi_label:
            label = tf.reduce_max(tf.one_hot(labels, num_classes, dtype=tf.float32), axis=0)
        else:
            label = labels[0]
        return frames, label, index, element_seed, tf.constant(True)

    ds = ds.map(load, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    if not strict:
        ds = ds.ignore_errors(log_warning=True)
    return _augment_and_batch(
        ds, recipe, spec, batch_size, prefetch, num_parallel_calls, deterministic
    )


def dataset_from_source(
    source: str,
    mode: str,
    spec: ClipSpec,
    video_dir: str | None = None,
    multi_label: bool = False,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    **kwargs,
) -> tuple[tf.data.Dataset, annotations.VideoList | None]:
    """The dataset of ``source``: a folder per class, a Kinetics CSV (or, with
    ``multi_label``, a Charades CSV) of videos under ``video_dir``, or a TFRecord
    glob (``*.tfrecord*``); also the video list (None for TFRecords). Other
    keyword arguments go to `video_dataset` / `tfrecord_dataset`."""
    if ".tfrecord" in source:
        ds = tfrecord_dataset(
            source, mode, spec, num_classes=num_classes, multi_label=multi_label, **kwargs
        )
        return ds, None
    if not os.path.exists(source):
        raise ValueError(
            f"No such data: {source!r} (a folder per class, a Kinetics or Charades CSV, or a "
            "TFRecord glob)."
        )
    if os.path.isdir(source):
        videos = annotations.read_directory(source, class_names)
    elif not video_dir:
        raise ValueError(f"{source} is an annotation file: it needs the folder of its videos.")
    elif multi_label:
        videos = annotations.read_charades(source, video_dir)
    else:
        videos = annotations.read_kinetics(source, video_dir, class_names)
    return video_dataset(videos, mode, spec, **kwargs), videos


# ---------------------------------------------------------------- the steps
def _mode(mode: str) -> _Mode:
    if mode not in _MODES:
        raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
    return _MODES[mode]


def _shuffles(recipe: _Mode, shuffle: bool | None) -> bool:
    return recipe.shuffle if shuffle is None else shuffle


def _order(ds, size: int, recipe: _Mode, shuffle, seed, num_shards: int, shard_index: int):
    """This worker's shard, shuffled each epoch when training (or asked to)."""
    if num_shards > 1:
        ds = ds.shard(num_shards, shard_index)
    if _shuffles(recipe, shuffle):
        ds = ds.shuffle(size, seed=seed, reshuffle_each_iteration=True)
    return ds


def _label_array(videos: annotations.VideoList) -> np.ndarray:
    if videos.multi_label:
        labels = np.zeros((len(videos), len(videos.class_names)), np.float32)
        for i, classes in enumerate(videos.labels):
            labels[i, classes] = 1.0
        return labels
    return np.array([classes[0] for classes in videos.labels], np.int32)


def _seeds(seed: int | None) -> tf.data.Dataset:
    """One stateless seed pair per element; deterministic given ``seed``,
    different in each epoch."""
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)


def _decoder(recipe: _Mode, spec: ClipSpec, skips: SkipLog, strict: bool):
    min_frames = spec.min_frames if spec.min_frames is not None else spec.clip_len
    empty = np.zeros((1,) * (4 if recipe.views else 3) + (3,), np.uint8)

    def choose(num_frames: int, seed: int):
        if num_frames < min_frames:
            raise VideoDecodeError("", f"shorter than a clip ({num_frames} frames < {min_frames})")
        return recipe.host_indices(num_frames, spec, seed)

    def decode(path: bytes, seed: np.int64):
        path = os.fsdecode(path)
        try:
            frames = read_frames(path, lambda n: choose(n, int(seed) & 0x7FFFFFFF))
            return frames, np.bool_(True)
        except Exception as exc:  # a bad video never ends the epoch
            reason = (
                exc.reason
                if isinstance(exc, VideoDecodeError)
                else f"decoder error ({type(exc).__name__}: {exc})"
            )
            if strict:
                raise VideoDecodeError(path, reason) from exc
            skips.add(path, reason)
            return empty, np.bool_(False)

    return decode


def _augment_and_batch(
    ds, recipe: _Mode, spec, batch_size, prefetch, num_parallel_calls, deterministic
):
    def augment(frames, label, index, element_seed, ok):
        views = recipe.augment(frames, element_seed, spec)
        views.set_shape(recipe.shape(spec))  # static: one trace of the model, no symbolic sizes
        return (views, label, index) if recipe.views else (views, label)

    ds = ds.map(augment, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    if not recipe.views and batch_size:
        ds = ds.batch(batch_size, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE) if prefetch else ds
