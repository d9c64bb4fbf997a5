"""Where a non-local block looks: the paper's Fig. 1 as a PNG, without plotting
libraries (NumPy drawing, PNG written by TensorFlow or zlib)."""

from __future__ import annotations

import struct
import zlib

import keras
import numpy as np

from nonlocal_tf.layers import NonLocalBlock


def attention_maps(model: keras.Model, clip: np.ndarray, block_name: str, queries) -> np.ndarray:
    """Weights of ``block_name`` for ``queries`` (``(t, y, x)`` on the block's
    grid) over its key grid: ``(Q, T', H', W')`` for one clip ``(T, H, W, 3)``."""
    block = model.get_layer(block_name)
    if not isinstance(block, NonLocalBlock):
        raise ValueError(f"Layer {block_name!r} is a {type(block).__name__}, not a NonLocalBlock.")
    features = keras.Model(model.input, block.input)(clip[None].astype("float32"), training=False)
    weights = block.attention_weights(features, queries)
    return np.asarray(keras.ops.convert_to_numpy(weights))[0]


def attention_figure(
    model: keras.Model,
    clip: np.ndarray,
    block_name: str,
    query: tuple[int, int, int],
    path: str,
    top_k: int = 5,
    scale: int = 4,
) -> np.ndarray:
    """Draws the clip's frames side by side, the attention of ``query`` as a red
    heat overlay, the query as a green box and its ``top_k`` most attended key
    positions as yellow boxes; writes a PNG at ``path`` and returns the image.
    """
    weights = attention_maps(model, clip, block_name, [query])[0]  # (T', H', W')
    frames, height, width = clip.shape[:3]
    tk, hk, wk = weights.shape
    block = model.get_layer(block_name)
    tq, hq, wq = block.input.shape[1:4] if all(block.input.shape[1:4]) else (frames, height, width)
    image = np.repeat(
        np.repeat(clip.astype(np.float32), scale, axis=1), scale, axis=2
    )  # (T, H*s, W*s, 3)
    heat = weights / max(float(weights.max()), 1e-12)
    for t in range(frames):
        kt = min(t * tk // frames, tk - 1)
        cell = np.kron(heat[kt], np.ones((height * scale // hk + 1, width * scale // wk + 1)))
        cell = cell[: height * scale, : width * scale]
        image[t] = (
            image[t] * (1 - 0.6 * cell[..., None]) + np.array([255.0, 0, 0]) * 0.6 * cell[..., None]
        )
    flat = np.argsort(weights.ravel())[::-1][:top_k]
    for index in flat:
        kt, ky, kx = np.unravel_index(index, weights.shape)
        for t in range(frames):
            if min(t * tk // frames, tk - 1) == kt:
                _box(image[t], ky, kx, hk, wk, scale, height, width, (255, 230, 0))
    t_img = min(query[0] * frames // tq, frames - 1)
    _box(image[t_img], query[1], query[2], hq, wq, scale, height, width, (0, 255, 0))
    gap = np.full((height * scale, 4, 3), 255.0)
    strip = np.concatenate([np.concatenate([f, gap], axis=1) for f in image], axis=1)
    out = np.clip(strip, 0, 255).astype(np.uint8)
    write_png(path, out)
    return out


def _box(frame, y, x, grid_h, grid_w, scale, height, width, color):
    y0, y1 = y * height * scale // grid_h, (y + 1) * height * scale // grid_h - 1
    x0, x1 = x * width * scale // grid_w, (x + 1) * width * scale // grid_w - 1
    frame[y0, x0 : x1 + 1] = frame[y1, x0 : x1 + 1] = color
    frame[y0 : y1 + 1, x0] = frame[y0 : y1 + 1, x1] = color


def write_png(path: str, image: np.ndarray) -> None:
    """Writes a uint8 RGB ``(H, W, 3)`` image as PNG (plain zlib, no dependency)."""
    height, width = image.shape[:2]
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b"")
        )
