"""Which frames a clip takes (official ``customized_video_input_op``).

Pure functions on frame counts, in NumPy (for the video-file path) and in
TensorFlow (for the TFRecord path, inside the graph). Indices wrap modulo the
video length, so short videos loop as in the official code.
"""

from __future__ import annotations

import numpy as np

from nonlocal_tf.data.spec import ClipSpec, Mode


def train_indices(
    num_frames: int, clip_len: int, rate: int, rng: np.random.Generator
) -> np.ndarray:
    """``clip_len`` frames every ``rate`` from a start uniform in
    ``[0, N - clip_len * rate]`` (0 when the video is shorter), modulo N."""
    _check(num_frames, clip_len, rate)
    span = num_frames - clip_len * rate
    start = int(rng.integers(0, span + 1)) if span > 0 else 0
    return (start + np.arange(clip_len) * rate) % num_frames


def test_starts(num_frames: int, num_clips: int = 10) -> np.ndarray:
    """Official test clip starts: ``int(k * N / num_clips) mod N``, k = 0..num_clips-1."""
    if num_frames < 1:
        raise ValueError(f"A video needs at least one frame. Received: num_frames={num_frames}")
    return np.array([int(k * num_frames / num_clips) % num_frames for k in range(num_clips)])


def test_indices(num_frames: int, clip_len: int, rate: int, num_clips: int = 10) -> np.ndarray:
    """``(num_clips, clip_len)`` frame indices of the official multi-clip test."""
    _check(num_frames, clip_len, rate)
    starts = test_starts(num_frames, num_clips)
    return (starts[:, None] + np.arange(clip_len)[None] * rate) % num_frames


def center_indices(num_frames: int, clip_len: int, rate: int) -> np.ndarray:
    """One clip centred in time (the 1-clip validation mode)."""
    _check(num_frames, clip_len, rate)
    start = max((num_frames - clip_len * rate) // 2, 0)
    return (start + np.arange(clip_len) * rate) % num_frames


def indices(
    mode: Mode, num_frames: int, spec: ClipSpec, rng: np.random.Generator | None = None
) -> np.ndarray:
    """The frames ``mode`` samples (`spec.MODES`): ``(clip_len,)``, or
    ``(num_test_clips, clip_len)`` for the multi-clip test; ``rng`` draws the
    random start (train). A test of one clip takes the centred clip (the
    official formula's only clip would start at frame 0)."""
    if mode.sampling == "random":
        return train_indices(num_frames, spec.clip_len, spec.rate, rng)
    if mode.sampling == "center" or spec.num_test_clips == 1:
        centred = center_indices(num_frames, spec.clip_len, spec.rate)
        return centred if mode.sampling == "center" else centred[None]
    return test_indices(num_frames, spec.clip_len, spec.rate, spec.num_test_clips)


def _check(num_frames, clip_len, rate):
    if num_frames < 1:
        raise ValueError(f"A video needs at least one frame. Received: num_frames={num_frames}")
    if clip_len < 1 or rate < 1:
        raise ValueError(
            f"clip_len and rate must be >= 1. Received: clip_len={clip_len}, rate={rate}"
        )


def tf_indices(mode: Mode, num_frames, spec: ClipSpec, seed):
    """`indices` in the graph; ``seed`` is a stateless seed (2 int64)."""
    if mode.sampling == "random":
        return tf_train_indices(num_frames, spec.clip_len, spec.rate, seed)
    if mode.sampling == "center" or spec.num_test_clips == 1:
        centred = tf_center_indices(num_frames, spec.clip_len, spec.rate)
        return centred if mode.sampling == "center" else centred[None]
    return tf_test_indices(num_frames, spec.clip_len, spec.rate, spec.num_test_clips)


def tf_train_indices(num_frames, clip_len: int, rate: int, seed):
    """`train_indices` in the graph; ``seed`` is a stateless seed (2 int64)."""
    import tensorflow as tf

    num_frames = tf.cast(num_frames, tf.int64)
    span = num_frames - clip_len * rate
    start = tf.where(
        span > 0,
        tf.random.stateless_uniform(
            [], seed, minval=0, maxval=tf.maximum(span, 0) + 1, dtype=tf.int64
        ),
        tf.constant(0, tf.int64),
    )
    return (start + tf.range(clip_len, dtype=tf.int64) * rate) % num_frames


def tf_test_indices(num_frames, clip_len: int, rate: int, num_clips: int = 10):
    import tensorflow as tf

    num_frames = tf.cast(num_frames, tf.int64)
    k = tf.range(num_clips, dtype=tf.int64)
    starts = (k * num_frames // num_clips) % num_frames  # int(k * N / 10) for integer N
    return (starts[:, None] + tf.range(clip_len, dtype=tf.int64)[None] * rate) % num_frames


def tf_center_indices(num_frames, clip_len: int, rate: int):
    import tensorflow as tf

    num_frames = tf.cast(num_frames, tf.int64)
    start = tf.maximum((num_frames - clip_len * rate) // 2, 0)
    return (start + tf.range(clip_len, dtype=tf.int64) * rate) % num_frames
