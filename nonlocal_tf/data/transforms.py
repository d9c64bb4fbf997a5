"""Spatial preprocessing of clips, in TensorFlow (official ``customized_video_io``).

Clips are ``(T, H, W, 3)``; outputs stay RGB uint8, as the official pipeline
(OpenCV on uint8 frames) keeps them: a quarter of the bytes of float32 from
the decoder to the accelerator. The normalisation belongs to the model (its
``include_preprocessing``).
"""

from __future__ import annotations

import tensorflow as tf

from nonlocal_tf.data.spec import ClipSpec, Mode


def resize_short_side(clip, size):
    """Bilinear resize so that the short side is ``size`` (aspect kept), rounded
    back to uint8."""
    shape = tf.shape(clip)
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    size = tf.cast(size, tf.float32)
    scale = size / tf.minimum(h, w)
    new_h = tf.cast(tf.round(h * scale), tf.int32)
    new_w = tf.cast(tf.round(w * scale), tf.int32)
    resized = tf.image.resize(
        tf.cast(clip, tf.float32), tf.stack([new_h, new_w]), method="bilinear"
    )
    return tf.saturate_cast(tf.round(resized), tf.uint8)


def random_short_side(clip, min_size: int, max_size: int, seed):
    """Short side resized to an integer uniform in ``[min_size, max_size]``."""
    size = tf.random.stateless_uniform(
        [], seed, minval=min_size, maxval=max_size + 1, dtype=tf.int32
    )
    return resize_short_side(clip, size)


def random_crop(clip, size: int, seed):
    """A uniformly placed ``size x size`` crop, the same for every frame."""
    shape = tf.shape(clip)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    top = tf.random.stateless_uniform(
        [], seeds[0], minval=0, maxval=shape[1] - size + 1, dtype=tf.int32
    )
    left = tf.random.stateless_uniform(
        [], seeds[1], minval=0, maxval=shape[2] - size + 1, dtype=tf.int32
    )
    return clip[:, top : top + size, left : left + size]


def random_flip(clip, seed):
    """Horizontal flip of the whole clip with probability 0.5."""
    flip = tf.random.stateless_uniform([], seed) < 0.5
    return tf.cond(flip, lambda: tf.reverse(clip, axis=[2]), lambda: clip)


def center_crop(clip, size: int):
    shape = tf.shape(clip)
    top = (shape[1] - size) // 2
    left = (shape[2] - size) // 2
    return clip[:, top : top + size, left : left + size]


def three_crops(clip, size: int):
    """The official 3 test crops of ``size x size`` along the long side: offsets
    0, (L - size) / 2 and 2 * ((L - size) / 2). Returns ``(3, T, size, size, 3)``."""
    shape = tf.shape(clip)
    h, w = shape[1], shape[2]

    def along(length):
        half = (length - size) // 2
        return tf.stack([0, half, 2 * half])

    def wide():
        return tf.stack([clip[:, :size, o : o + size] for o in tf.unstack(along(w), num=3)])

    def tall():
        return tf.stack([clip[:, o : o + size, :size] for o in tf.unstack(along(h), num=3)])

    return tf.cond(w >= h, wide, tall)


def test_transform(clip, short_side: int = 256, crop: int = 256):
    return three_crops(resize_short_side(clip, short_side), crop)


def augment(frames, seed, mode: Mode, spec: ClipSpec):
    """One mode's spatial steps (`spec.MODES`): a clip ``(T, H, W, 3)`` ->
    ``(T, S, S, 3)``, or a test video's clips ``(K, T, H, W, 3)`` -> its views
    ``(3K, T, S, S, 3)`` (view ``3k + c`` is clip k, crop c). ``seed``: a
    stateless seed for the random steps."""
    low, high = mode.short_side(spec)
    size = mode.crop_size(spec)
    if mode.views:
        views = tf.map_fn(
            lambda clip: test_transform(clip, low, size),
            frames,
            fn_output_signature=tf.TensorSpec([3, None, size, size, 3], tf.uint8),
        )  # (K, 3, T, S, S, 3)
        shape = tf.shape(views)
        return tf.reshape(views, tf.concat([[shape[0] * 3], shape[2:]], 0))
    seeds = tf.random.experimental.stateless_split(seed, 3)
    clip = random_short_side(frames, low, high, seeds[0])  # fixed when low == high
    clip = random_crop(clip, size, seeds[1]) if mode.crop == "random" else center_crop(clip, size)
    return random_flip(clip, seeds[2]) if mode.flip else clip
