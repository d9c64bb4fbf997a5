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


def _axis(in_size: int, out_size: int, positions: np.ndarray) -> np.ndarray:
    """Source neighbours and weight of output ``positions`` along one axis
    (TensorFlow's ``compute_interpolation_weights`` with the half-pixel
    scaler): ``(3, len(positions))`` float32, lower and upper source index
    and the upper one's weight."""
    scale = np.float32(in_size) / np.float32(out_size)
    x = (positions.astype(np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(x)
    lower = np.maximum(floor, 0)
    upper = np.minimum(np.ceil(x), in_size - 1)
    return np.stack([lower, upper, x - floor]).astype(np.float32)


def geometry(
    frame: tuple[int, int], size: tuple[int, int], rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """Where a view reads a frame of ``frame`` (height, width) resized to
    ``size`` (bilinear), keeping output ``rows`` x ``cols``: ``(2, 3, N)``
    float32, rows then columns, each lower index, upper index, weight
    (`_axis`). Reversed ``cols`` flip the view. What `sample` computes on the
    host and `nonlocal_tf.layers.ClipCrops` on the accelerator."""
    return np.stack([_axis(frame[0], size[0], rows), _axis(frame[1], size[1], cols)])


def sample(frames: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``frames`` ``(T, H, W, 3)`` uint8 at a view's `geometry` ``where``:
    ``(T, rows, cols, 3)`` uint8, interpolated along x then y in float32,
    rounded half to even and saturated, as TensorFlow's resize and cast."""
    return _sample(frames, where[0], where[1])


def _sample(frames: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    count, height, width = frames.shape[:3]
    (y0, y1, wy), (x0, x1, wx) = rows, cols
    y0, y1, x0, x1 = (v.astype(np.intp) for v in (y0, y1, x0, x1))
    if not wy.any() and not wx.any():  # whole pixels (the identity resize)
        return frames[:, y0][:, :, x0]
    needed, inverse = np.unique(np.concatenate([y0, y1]), return_inverse=True)
    top_of, bottom_of = inverse[: len(y0)], inverse[len(y0) :]
    # Rows as (W * 3) values: a column's 3 channels share its weight.
    channel = np.arange(3)
    left_of, right_of = (x0[:, None] * 3 + channel).ravel(), (x1[:, None] * 3 + channel).ravel()
    wx, wy = np.repeat(wx, 3), wy[:, None]
    out = np.empty((count, len(y0), len(x0) * 3), np.uint8)
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
    return out.reshape(count, len(y0), len(x0), 3)


def resize_region(
    frames: np.ndarray, size: tuple[int, int], rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """``frames`` ``(T, H, W, 3)`` uint8 resized to ``size`` (bilinear), only
    at output ``rows`` x ``cols``: ``(T, len(rows), len(cols), 3)`` uint8."""
    height, width = frames.shape[1:3]
    return _sample(frames, _axis(height, size[0], rows), _axis(width, size[1], cols))


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
    return sample(frames, clip_geometry(frames.shape[1:3], rng, mode, spec)[0])


def clip_geometry(
    frame: tuple[int, int], rng: np.random.Generator | None, mode: Mode, spec: ClipSpec
) -> np.ndarray:
    """A clip's views of frames of size ``frame``: `geometry` ``(V, 2, 3, S)``.
    Train and val: one view, its random steps drawn from ``rng`` (train:
    short side, top, left, flip, in that order); test: the 3 crops along the
    long side (`augment`'s)."""
    low, high = mode.short_side(spec)
    size = mode.crop_size(spec)
    if mode.views:
        h, w = resized_size(*frame, low)
        wide, whole = w >= h, np.arange(size)
        views = []
        for o in three_crop_offsets(w if wide else h, size):
            along = np.arange(o, o + size)
            rows, cols = (whole, along) if wide else (along, whole)
            views.append(geometry(frame, (h, w), rows, cols))
        return np.stack(views)
    if mode.crop == "center":
        h, w = resized_size(*frame, low)
        top, left = (h - size) // 2, (w - size) // 2
        flip = False
    else:
        short = int(rng.integers(low, high + 1)) if high > low else low
        h, w = resized_size(*frame, short)
        top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        flip = mode.flip and rng.random() < 0.5
    cols = np.arange(left, left + size)
    cols = cols[::-1] if flip else cols  # the whole clip mirrored
    return geometry(frame, (h, w), np.arange(top, top + size), cols)[None]


def window_side(mode: Mode, spec: ClipSpec) -> int:
    """The side of the square `window` a clip of ``mode`` travels in when
    the accelerator augments it: room for the crop of frames stored with a
    short side up to 1.25 times the smallest scale (320 for 256), the
    interpolation's neighbours included. A test video's window is as large
    as its frames; this is then the largest short side sent unresized."""
    return -(-mode.crop_size(spec) * 5 // 4) + 2


WINDOW_STEP = 32  # a test window's sides are multiples of this: few shapes to compile


def window(
    frames: np.ndarray, where: np.ndarray, side: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """What the host sends when the accelerator cuts a clip's views: the
    region of ``frames`` ``(T, H, W, 3)`` that the views ``where`` (`geometry`
    ``(V, 2, 3, S)``) read, uncropped and unresized, at the top left of a
    ``side x side`` uint8 window (zeros elsewhere, never read), and ``where``
    relative to the window. ``side`` None: the window is the region, each
    side rounded up to `WINDOW_STEP` (a test video, one element of its own).
    A region larger than ``side`` (frames stored far above the train scale)
    is resized here instead: the window then holds the view itself, read as
    whole pixels (one view only)."""
    count = frames.shape[0]
    top, bottom = int(where[:, 0, 0].min()), int(where[:, 0, 1].max()) + 1
    left, right = int(where[:, 1, 0].min()), int(where[:, 1, 1].max()) + 1
    if side is None:
        shape = tuple(-(-n // WINDOW_STEP) * WINDOW_STEP for n in (bottom - top, right - left))
    else:
        shape = (side, side)
    out = np.zeros((count, *shape, 3), np.uint8)
    if bottom - top > shape[0] or right - left > shape[1]:
        if len(where) != 1:
            raise ValueError(f"{len(where)} views of a region larger than the window ({side}).")
        view = sample(frames, where[0])
        out[:, : view.shape[1], : view.shape[2]] = view
        whole = np.arange(view.shape[1])
        return out, geometry(view.shape[1:3], view.shape[1:3], whole, whole)[None]
    out[:, : bottom - top, : right - left] = frames[:, top:bottom, left:right]
    shifted = where.copy()
    shifted[:, 0, :2] -= top
    shifted[:, 1, :2] -= left
    return out, shifted


def prepare(
    frames: np.ndarray,
    rng: np.random.Generator | None,
    mode: Mode,
    spec: ClipSpec,
    window_of: int | None = None,
) -> dict:
    """What the host makes of a clip's (or test video's) decoded frames:
    ``{"frames": views}`` augmented here (`augment`), or, with a window side
    ``window_of`` (`window_side`), ``{"frames": windows, "geometry": where}``
    for `nonlocal_tf.layers.ClipCrops` to cut on the accelerator: a clip's
    window ``(T, side, side, 3)`` and its view ``(1, 2, 3, S)``, or a test
    video's K clips ``(K, T, H', W', 3)`` (its frames, sides rounded up to
    `WINDOW_STEP`; resized here first where the short side exceeds
    ``window_of``) and their 3 crops each ``(K, 3, 2, 3, S)``."""
    if window_of is None:
        return {"frames": augment(frames, rng, mode, spec)}
    if not mode.views:
        where = clip_geometry(frames.shape[1:3], rng, mode, spec)
        frames, where = window(frames, where, window_of)
        return {"frames": frames, "geometry": where}
    clips = frames.shape[0]
    flat = frames.reshape(-1, *frames.shape[2:])
    if min(flat.shape[1:3]) > window_of:
        flat = resize_short_side(flat, mode.short_side(spec)[0])
    windows, where = window(flat, clip_geometry(flat.shape[1:3], rng, mode, spec), None)
    return {
        "frames": windows.reshape(clips, -1, *windows.shape[1:]),
        "geometry": np.repeat(where[None], clips, axis=0),
    }
