"""The spatial steps of `transforms` in NumPy, for engines without TensorFlow
(`grain_pipeline`, `inference`): same sizes, offsets and arithmetic.

The bilinear resize is TensorFlow's (``tf.image.resize``, half-pixel centres,
no antialiasing, float32 weights, interpolated along x then y, rounded half to
even and saturated to uint8), computed only at the pixels a crop keeps: a 224
crop of a frame resized to 320 costs the 224 x 224 output pixels, not the
whole resized frame. Outputs equal TensorFlow's except where float32 rounding
lands on .5 differently (then by one level; ``tests/test_grain_pipeline.py``).
"""

from __future__ import annotations

import numpy as np

from nonlocal_tf.data.spec import ClipSpec, Mode


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the short side ``short_side``, aspect kept, as
    `transforms.resize_short_side` rounds it (float32, half to even)."""
    scale = np.float32(short_side) / np.float32(min(height, width))
    new_h = int(np.round(np.float32(height) * scale))
    new_w = int(np.round(np.float32(width) * scale))
    return new_h, new_w


def _axis(in_size: int, out_size: int, positions: np.ndarray):
    """Source neighbours and weight of output ``positions`` along one axis
    (TensorFlow's ``compute_interpolation_weights`` with the half-pixel scaler)."""
    scale = np.float32(in_size) / np.float32(out_size)
    x = (positions.astype(np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(x)
    lower = np.maximum(floor, 0).astype(np.intp)
    upper = np.minimum(np.ceil(x), in_size - 1).astype(np.intp)
    return lower, upper, (x - floor).astype(np.float32)


def resize_region(
    frames: np.ndarray, size: tuple[int, int], rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """``frames`` ``(T, H, W, 3)`` uint8 resized to ``size`` (bilinear), only
    at output ``rows`` x ``cols``: ``(T, len(rows), len(cols), 3)`` uint8."""
    count, height, width = frames.shape[:3]
    if size == (height, width):  # the identity: every weight is 0
        return frames[:, rows][:, :, cols]
    y0, y1, wy = _axis(height, size[0], rows)
    x0, x1, wx = _axis(width, size[1], cols)
    needed, inverse = np.unique(np.concatenate([y0, y1]), return_inverse=True)
    top_of, bottom_of = inverse[: len(rows)], inverse[len(rows) :]
    # Rows as (W * 3) values: a column's 3 channels share its weight.
    channel = np.arange(3)
    left_of, right_of = (x0[:, None] * 3 + channel).ravel(), (x1[:, None] * 3 + channel).ravel()
    wx, wy = np.repeat(wx, 3), wy[:, None]
    out = np.empty((count, len(rows), len(cols) * 3), np.uint8)
    flat = frames.reshape(count, height, width * 3)
    for t in range(count):  # a frame at a time: the float32 temporaries stay in cache (4x faster)
        src = flat[t, needed]  # (R, W * 3): the source rows some output row reads
        across = src[:, left_of].astype(np.float32)  # along x first, as TensorFlow
        right = src[:, right_of].astype(np.float32)
        right -= across
        right *= wx
        across += right  # left + (right - left) * wx
        top, bottom = across[top_of], across[bottom_of]
        bottom -= top
        bottom *= wy
        top += bottom  # top + (bottom - top) * wy
        np.round(top, out=top)  # half to even, as tf.round
        np.clip(top, 0, 255, out=out[t], casting="unsafe")
    return out.reshape(count, len(rows), len(cols), 3)


def resize_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
    h, w = resized_size(*frames.shape[1:3], short_side)
    return resize_region(frames, (h, w), np.arange(h), np.arange(w))


def center_view(frames: np.ndarray, short_side: int, crop: int) -> np.ndarray:
    """``(T, H, W, 3)`` -> ``(T, crop, crop, 3)``: the short side resized to
    ``short_side``, the centre crop (`transforms.augment`'s val mode)."""
    h, w = resized_size(*frames.shape[1:3], short_side)
    top, left = (h - crop) // 2, (w - crop) // 2
    rows, cols = np.arange(top, top + crop), np.arange(left, left + crop)
    return np.ascontiguousarray(resize_region(frames, (h, w), rows, cols))


def three_crop_offsets(length: int, size: int) -> list[int]:
    """The official 3 test crops along the long side: 0, (L - S) / 2, 2 ((L - S) / 2)."""
    half = (length - size) // 2
    return [0, half, 2 * half]


def augment(frames: np.ndarray, rng: np.random.Generator | None, mode: Mode, spec: ClipSpec):
    """One mode's spatial steps (`spec.MODES`): a clip ``(T, H, W, 3)`` ->
    ``(T, S, S, 3)``, or a test video's clips ``(K, T, H, W, 3)`` -> its views
    ``(3K, T, S, S, 3)`` (view ``3k + c`` is clip k, crop c). ``rng`` draws the
    random steps (train)."""
    low, high = mode.short_side(spec)
    size = mode.crop_size(spec)
    if mode.views:
        clips, length = frames.shape[:2]
        flat = frames.reshape(clips * length, *frames.shape[2:])
        h, w = resized_size(*flat.shape[1:3], low)
        if (h, w) != flat.shape[1:3]:
            flat = resize_region(flat, (h, w), np.arange(h), np.arange(w))
        flat = flat.reshape(clips, length, h, w, 3)
        wide = w >= h
        views = np.empty((clips, 3, length, size, size, 3), np.uint8)  # clip-major
        for c, o in enumerate(three_crop_offsets(w if wide else h, size)):
            views[:, c] = (
                flat[:, :, :size, o : o + size] if wide else flat[:, :, o : o + size, :size]
            )
        return views.reshape(clips * 3, length, size, size, 3)
    if mode.crop == "center":
        return center_view(frames, low, size)
    short = int(rng.integers(low, high + 1)) if high > low else low
    h, w = resized_size(*frames.shape[1:3], short)
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    cols = np.arange(left, left + size)
    if mode.flip and rng.random() < 0.5:
        cols = cols[::-1]  # the whole clip mirrored
    return np.ascontiguousarray(resize_region(frames, (h, w), np.arange(top, top + size), cols))
