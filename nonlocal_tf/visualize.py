"""Figures: where a non-local block looks (the paper's Fig. 1, NumPy drawing
written as PNG with zlib, no plotting library) and training curves from
Keras's TensorBoard or CSV logs (matplotlib)."""

from __future__ import annotations

import collections
import csv
import glob
import os
import struct
import zlib

import keras
import numpy as np

from nonlocal_tf.layers import NonLocalBlock


def attention_maps(model: keras.Model, clip: np.ndarray, block_name: str, queries) -> np.ndarray:
    """Weights of ``block_name`` for ``queries`` (``(t, y, x)`` on the block's
    grid) over its key grid: ``(Q, T', H', W')`` for one clip ``(T, H, W, 3)``."""
    block, features = _block_input(model, clip, block_name)
    return _weights(block, features, queries)


def _weights(block, features, queries) -> np.ndarray:
    weights = block.attention_weights(features, queries)
    return np.asarray(keras.ops.convert_to_numpy(weights))[0]


def _block_input(model: keras.Model, clip: np.ndarray, block_name: str):
    block = model.get_layer(block_name)
    if not isinstance(block, NonLocalBlock):
        raise ValueError(f"Layer {block_name!r} is a {type(block).__name__}, not a NonLocalBlock.")
    features = keras.Model(model.input, block.input)(clip[None].astype("float32"), training=False)
    return block, features


def attention_figure(
    model: keras.Model,
    clip: np.ndarray,
    block_name: str,
    query,
    path: str,
    top_k: int = 5,
    scale: int = 4,
) -> np.ndarray:
    """Draws, for each query, the clip's frames side by side with the query's
    attention as a red heat overlay, the query as a green box and its ``top_k``
    most attended key positions as yellow boxes: one row per query. ``query``
    is one ``(t, y, x)`` on the block's grid or a list of them. Writes a PNG
    at ``path`` and returns the image ``(rows * H * scale + gaps, W', 3)``.
    """
    queries = [tuple(query)] if np.ndim(query) == 1 else [tuple(q) for q in query]
    block, features = _block_input(model, clip, block_name)
    weights = _weights(block, features, queries)  # (Q, T', H', W')
    grid = tuple(features.shape[1:4])  # the queries' grid
    rows = [
        _attention_row(clip, grid, q, w, top_k, scale)
        for q, w in zip(queries, weights, strict=True)
    ]
    gap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    out = np.concatenate([part for row in rows for part in (row, gap)][:-1], axis=0)
    write_png(path, out)
    return out


def _attention_row(clip, grid, query, weights, top_k, scale) -> np.ndarray:
    frames, height, width = clip.shape[:3]
    tk, hk, wk = weights.shape
    tq, hq, wq = grid
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
    return np.clip(strip, 0, 255).astype(np.uint8)


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


# ------------------------------------------------------------- training curves


def read_training_log(path: str) -> dict[str, list[tuple[int, float]]]:
    """Scalars of a Keras training log as ``{name: [(epoch or step, value)]}``.

    ``path``: a `keras.callbacks.CSVLogger` file (one row per epoch), or a
    `keras.callbacks.TensorBoard` log directory (its ``train/`` and
    ``validation/`` event files; validation scalars get Keras's ``val_``
    prefix, ``epoch_`` prefixes are dropped: ``epoch_loss`` -> ``loss``).
    """
    if os.path.isfile(path):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or "epoch" not in rows[0]:
            raise ValueError(f"{path} is not a CSVLogger file (no 'epoch' column).")
        series = collections.defaultdict(list)
        for row in rows:
            for name, value in row.items():
                if name != "epoch" and value not in ("", None):
                    series[name].append((int(row["epoch"]), float(value)))
        return dict(series)
    files = glob.glob(os.path.join(path, "**", "events.out.tfevents.*"), recursive=True)
    if not files:
        raise ValueError(f"No CSV file or TensorBoard event files at {path!r}.")
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    series = collections.defaultdict(dict)
    for folder in sorted({os.path.dirname(f) for f in files}):
        prefix = "val_" if os.path.basename(folder) in ("validation", "val", "eval") else ""
        acc = event_accumulator.EventAccumulator(
            folder, size_guidance={event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0}
        )
        acc.Reload()
        tags = acc.Tags()
        for tag in tags.get("tensors", []):
            for event in acc.Tensors(tag):
                value = tensor_util.make_ndarray(event.tensor_proto)
                if value.size == 1 and value.dtype.kind in "fiu":  # not the model config text
                    series[prefix + tag.removeprefix("epoch_")][event.step] = float(value)
        for tag in tags.get("scalars", []):
            for event in acc.Scalars(tag):
                series[prefix + tag.removeprefix("epoch_")][event.step] = float(event.value)
    return {name: sorted(points.items()) for name, points in series.items() if points}


def plot_training_curves(log, path: str | None = None, metrics=None):
    """One panel per metric (training and ``val_`` curves together) from a log
    path (see `read_training_log`), its result, or a ``History``. Saves a PNG
    at ``path`` when given; returns the matplotlib figure."""
    # A bare Figure: no pyplot state, no backend switch (notebooks keep theirs
    # and display the returned figure).
    from matplotlib.figure import Figure

    if isinstance(log, keras.callbacks.History):
        log = {k: list(enumerate(v)) for k, v in log.history.items()}
    elif isinstance(log, str | os.PathLike):
        log = read_training_log(os.fspath(log))
    names = metrics or sorted(
        {n.removeprefix("val_") for n in log if n not in ("learning_rate", "lr")}
    )
    missing = [n for n in names if n not in log and f"val_{n}" not in log]
    if missing or not names:
        raise ValueError(f"No series {missing or names} in the log; it has {sorted(log)}.")
    figure = Figure(figsize=(4.5 * len(names), 3.5))
    axes = figure.subplots(1, len(names), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for key, label, style in ((name, "train", "-"), (f"val_{name}", "validation", "--")):
            if key in log:
                steps, values = zip(*log[key], strict=True)
                ax.plot(steps, values, style, marker="o", markersize=3, label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=100)
    return figure
