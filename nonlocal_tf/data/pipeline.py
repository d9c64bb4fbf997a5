"""tf.data pipelines: parse -> sample -> decode -> preprocess -> batch.

Two sources with one behaviour:
- `video_dataset`: video files decoded by PyAV in parallel, only the sampled
  frames; a bad file is skipped, logged and counted in ``dataset.skips``.
- `tfrecord_dataset`: SequenceExample shards (one JPEG per frame), sampling in
  the graph before decoding.

Modes (`spec.MODES`): ``"train"`` (random start, random short side, random
crop, flip), ``"val"`` (one centred clip, centre crop) and ``"test"`` (the
official 10 clips x 3 crops, one element per video holding its 30 views).
Elements are ``(clip, label)`` for train/val, ``(views, label, video_index)``
for test; clips are uint8 RGB (the model normalises), labels int32 class indices or
float32 multi-hot vectors for multi-label data (Charades).
"""

from __future__ import annotations

import logging
import os

import numpy as np
import tensorflow as tf

from nonlocal_tf.data import annotations, sampling, service, transforms
from nonlocal_tf.data.decode import VideoDecodeError, read_sampled, skip_reason
from nonlocal_tf.data.skips import SkipLog
from nonlocal_tf.data.spec import KINETICS_8X8, ClipSpec, Mode
from nonlocal_tf.data.spec import mode as mode_of
from nonlocal_tf.data.tfrecord import decode_jpegs, parse_example

log = logging.getLogger("nonlocal_tf")
AUTOTUNE = tf.data.AUTOTUNE


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
    recipe = mode_of(mode)
    videos.check_split(num_shards)
    skips = skips if skips is not None else SkipLog(f"{mode} videos")
    labels = videos.label_array()
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
    data_service: str | None = None,
) -> tf.data.Dataset:
    """A dataset of clips from SequenceExample shards (see `tfrecord.py`).

    Sampling happens on the JPEG strings, so only the frames of the clip are
    decoded. Multi-label data needs ``num_classes`` (multi-hot labels). A record
    that cannot be parsed or decoded raises with ``strict``, otherwise it is
    skipped with a logged warning (tf.data's ``ignore_errors``).
    ``data_service``: ``grpc://host:port`` of a tf.data service dispatcher
    whose workers then read, decode and batch the files (`service`); the
    service splits the files between its workers instead of ``num_shards``.
    """
    recipe = mode_of(mode)
    if multi_label and not num_classes:
        raise ValueError("multi_label=True needs num_classes.")
    files = tf.io.gfile.glob(file_pattern) if isinstance(file_pattern, str) else list(file_pattern)
    if not files:
        raise ValueError(f"No TFRecord files match {file_pattern!r}.")
    if data_service and num_shards > 1:
        raise ValueError(
            "With a tf.data service the dispatcher splits the files between its workers: "
            f"num_shards must be 1. Received: num_shards={num_shards}"
        )
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
        idx = sampling.tf_indices(recipe, n, spec, element_seed)
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
    ds = _augment_and_batch(
        ds, recipe, spec, batch_size, prefetch, num_parallel_calls, deterministic
    )
    return service.distribute(ds, data_service) if data_service else ds


# ---------------------------------------------------------------- the steps
def _shuffles(recipe: Mode, shuffle: bool | None) -> bool:
    return recipe.shuffle if shuffle is None else shuffle


def _order(ds, size: int, recipe: Mode, shuffle, seed, num_shards: int, shard_index: int):
    """This worker's shard, shuffled each epoch when training (or asked to)."""
    if num_shards > 1:
        ds = ds.shard(num_shards, shard_index)
    if _shuffles(recipe, shuffle):
        ds = ds.shuffle(size, seed=seed, reshuffle_each_iteration=True)
    return ds


def _seeds(seed: int | None) -> tf.data.Dataset:
    """One stateless seed pair per element; deterministic given ``seed``,
    different in each epoch."""
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)


def _decoder(recipe: Mode, spec: ClipSpec, skips: SkipLog, strict: bool):
    empty = np.zeros((1,) * (4 if recipe.views else 3) + (3,), np.uint8)

    def decode(path: bytes, seed: np.int64):
        path = os.fsdecode(path)
        try:
            rng = np.random.default_rng(int(seed) & 0x7FFFFFFF)
            return read_sampled(path, recipe, spec, rng), np.bool_(True)
        except Exception as exc:  # a bad video never ends the epoch
            if strict:
                raise VideoDecodeError(path, skip_reason(exc)) from exc
            skips.add(path, skip_reason(exc))
            return empty, np.bool_(False)

    return decode


def _augment_and_batch(
    ds, recipe: Mode, spec, batch_size, prefetch, num_parallel_calls, deterministic
):
    def augment(frames, label, index, element_seed, ok):
        views = transforms.augment(frames, element_seed, recipe, spec)
        views.set_shape(recipe.shape(spec))  # static: one trace of the model, no symbolic sizes
        return (views, label, index) if recipe.views else (views, label)

    ds = ds.map(augment, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    if not recipe.views and batch_size:
        ds = ds.batch(batch_size, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE) if prefetch else ds
