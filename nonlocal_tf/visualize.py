"""Figures: where a non-local block attends (the paper's Fig. 1) and training
curves from Keras's TensorBoard or CSV logs. Both are drawn on a bare
matplotlib ``Figure`` (the ``[notebooks]`` extra): no pyplot state, no backend
switch, so notebooks keep theirs and display the returned figure."""

from __future__ import annotations

import collections
import csv
import glob
import os

import keras
import numpy as np

from nonlocal_tf.layers import NonLocalBlock

MATPLOTLIB_MISSING = (
    "nonlocal_tf.visualize draws with matplotlib, which is not installed: "
    "pip install matplotlib (or the package's [notebooks] extra)."
)
# Colours of arrows, boxes and dots, low to high weight: bright on dark frames, outlined in black.
WEIGHT_COLORS = ("#2a6fdb", "#00d8c0", "#ffe000", "#ff3b1f")


def attention_maps(
    model: keras.Model, clip: np.ndarray, block_name: str, queries, pooled_keys: bool = True
) -> np.ndarray:
    """Weights of ``block_name`` for ``queries`` (``(t, y, x)`` on the block's
    grid) over its keys: ``(Q, T', H', W')`` for one clip ``(T, H, W, 3)``.
    ``pooled_keys=False``: over every position of the block's input instead of
    its max-pooled keys (see `attention_figure`)."""
    block, features = _block_inputs(model, np.asarray(clip)[None], block_name)
    return _weights(block, features, [tuple(q) for q in queries], pooled_keys)[0]


def batch_attention_maps(
    model: keras.Model, clips: np.ndarray, block_name: str, pooled_keys: bool = True
) -> np.ndarray:
    """Every query's weights over every key, for clips ``(B, T, H, W, 3)``:
    ``(B, T', H', W', *key_grid)``. For small grids (``B * Nq * Nk`` floats)."""
    block, features = _block_inputs(model, clips, block_name)
    weights = _weights(block, features, None, pooled_keys)  # (B, Nq, *key_grid)
    return weights.reshape(len(clips), *features.shape[1:-1], *weights.shape[2:])


def grid_coverage(mask: np.ndarray, grid) -> np.ndarray:
    """How much of each cell of a block's grid ``(T', H', W')`` a pixel mask
    ``(T, H, W)`` covers, from 0 to 1: the largest fraction over the frames of
    the cell's time step."""
    mask = np.asarray(mask, bool)
    coverage = np.zeros(tuple(grid))
    for t, (t0, t1) in enumerate(spans(mask.shape[0], grid[0])):
        for y, (y0, y1) in enumerate(spans(mask.shape[1], grid[1])):
            for x, (x0, x1) in enumerate(spans(mask.shape[2], grid[2])):
                coverage[t, y, x] = mask[t0:t1, y0:y1, x0:x1].mean(axis=(1, 2)).max()
    return coverage


def spans(size: int, cells: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each of ``cells`` equal cells over ``size`` frames
    or pixels: a block's time step ``t`` covers frames ``spans(T, T')[t]``."""
    return [(i * size // cells, (i + 1) * size // cells) for i in range(cells)]


def _block_inputs(model: keras.Model, clips, block_name: str, batch_size: int = 32):
    block = model.get_layer(block_name)
    if not isinstance(block, NonLocalBlock):
        raise ValueError(f"Layer {block_name!r} is a {type(block).__name__}, not a NonLocalBlock.")
    head = keras.Model(model.input, block.input)
    clips = np.asarray(clips, "float32")
    features = [
        keras.ops.convert_to_numpy(head(clips[i : i + batch_size], training=False))
        for i in range(0, len(clips), batch_size)
    ]
    return block, np.concatenate(features)


def _weights(block: NonLocalBlock, features: np.ndarray, queries, pooled_keys: bool):
    if not pooled_keys:
        block = _unpooled(block)
    weights = block.attention_weights(keras.ops.convert_to_tensor(features), queries)
    return np.asarray(keras.ops.convert_to_numpy(weights))


def _unpooled(block: NonLocalBlock) -> NonLocalBlock:
    """The same block, same weights, with its key max-pool turned off."""
    config = {**block.get_config(), "pool_size": 1, "name": f"{block.name}_unpooled"}
    clone = NonLocalBlock.from_config(config)
    clone.build(tuple(block.input.shape))
    clone.set_weights(block.get_weights())
    return clone


def top_positions(weights: np.ndarray, k: int) -> list[tuple[tuple[int, ...], float]]:
    """The ``k`` highest of one query's weights ``(T', H', W')``, highest first,
    as ``((t, y, x), weight)``."""
    order = np.argsort(weights.ravel(), kind="stable")[::-1][:k]
    return [
        (tuple(int(c) for c in np.unravel_index(i, weights.shape)), float(weights.flat[i]))
        for i in order
    ]


# --------------------------------------------------------- the paper's Fig. 1


def attention_figure(
    model: keras.Model,
    clip: np.ndarray,
    block_name: str,
    queries,
    path: str | None = None,
    top_k: int = 5,
    pooled_keys: bool = False,
    labels=None,
    dpi: int = 110,
):
    """The paper's Fig. 1: where query positions of a non-local block attend.

    One row per query: the block's time steps in order, titled with the frames
    each covers (a step that merges frames shows their pixel maximum, and a
    strip of every frame heads the figure); the query boxed in white; a dot
    per key position, its area and colour the weight; arrows to the query's
    ``top_k`` highest-weighted positions across frames, coloured by weight
    (colour bar at the right, the uniform weight dashed); under each step, the
    weight it gets. The title names the model, the block and the query; the
    text under the figure says how to read it and which keys it shows.

    Args:
        model: a functional video model holding the block.
        clip: one clip ``(T, H, W, 3)``, as the model takes it.
        block_name: a `NonLocalBlock` layer of ``model``.
        queries: one ``(t, y, x)`` on the block's input grid, or a list of them.
        path: where to write the figure as PNG, if given.
        top_k: arrows per query.
        pooled_keys: False (default): the keys are every position of the
            block's input grid, like the queries: the block's own
            ``f(x_i, x_j) / C(x)`` with its key max-pool turned off, so arrows
            point at cells of the block's resolution. True: the max-pooled keys
            the model attends to (cells of 2x2 positions by default).
        labels: a line under each query's coordinates (e.g. "frame 0's square").
        dpi: of the PNG.

    Returns:
        The matplotlib ``Figure``. Its arrows are ``ConnectionPatch`` artists
        labelled ``"query (t, y, x) -> key (t, y, x): weight"``.
    """
    try:
        from matplotlib import colors
        from matplotlib.cm import ScalarMappable
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(MATPLOTLIB_MISSING) from error

    clip = np.asarray(clip)
    queries = [queries] if np.ndim(queries[0]) == 0 else list(queries)
    queries = [tuple(int(c) for c in q) for q in queries]
    labels = [""] * len(queries) if labels is None else list(labels)
    block, features = _block_inputs(model, clip[None], block_name)
    if features.ndim != 5:
        raise ValueError(f"{block_name} is not a video block: its input is {features.shape}.")
    grid = features.shape[1:4]  # the queries' grid (T', H', W')
    weights = _weights(block, features, queries, pooled_keys)[0]  # (Q, Tk, Hk, Wk)
    frames = clip.shape[0]
    strip = frames > grid[0]  # steps merge frames: every frame on top

    cmap = colors.LinearSegmentedColormap.from_list("weights", WEIGHT_COLORS)
    norm = colors.Normalize(0.0, float(weights.max()))
    figure = Figure(
        figsize=(2.4 * grid[0] + 1.8, 1.3 + 1.2 * strip + 2.7 * len(queries)), layout="constrained"
    )
    rows = figure.add_gridspec(
        len(queries) + strip, frames, height_ratios=[0.5] * strip + [1] * len(queries)
    )
    image = _displayable(clip)
    if strip:
        for f in range(frames):
            ax = figure.add_subplot(rows[0, f])
            ax.imshow(image[f], interpolation="nearest")
            ax.set_title(f"frame {f}", fontsize=8)
            _bare(ax)
    query_axes = []
    for r, (query, w, label) in enumerate(zip(queries, weights, labels, strict=True)):
        axes = [figure.add_subplot(rows[r + strip, t0:t1]) for t0, t1 in spans(frames, grid[0])]
        query_axes += axes
        _attention_row(figure, axes, image, grid, query, w, top_k, cmap, norm)
        axes[0].set_ylabel(f"query {query}" + (f"\n{label}" if label else ""), fontsize=10)

    keys = weights[0].size
    bar = figure.colorbar(ScalarMappable(norm, cmap), ax=query_axes, shrink=0.9, pad=0.01)
    bar.set_label("attention weight  $f(x_i, x_j)\\,/\\,\\mathcal{C}(x)$")
    bar.ax.axhline(1 / keys, color="black", ls="--", lw=1.5)
    bar.ax.text(
        -0.3,
        1 / keys,
        f"uniform\n1/{keys}",
        transform=bar.ax.get_yaxis_transform(),
        ha="right",
        va="center",
        fontsize=8,
    )
    shown = f"query {queries[0]} {labels[0]}".strip() if len(queries) == 1 else "each query"
    figure.suptitle(f"{model.name}, block {block_name}: where {shown} attends", fontsize=12)
    figure.supxlabel(_reading(grid, frames, weights.shape[1:], top_k, pooled_keys), fontsize=9)
    if path is not None:
        figure.savefig(path, dpi=dpi)
    return figure


def _reading(grid, frames, key_grid, top_k, pooled_keys) -> str:
    """How to read the figure, under it."""
    size = "x".join(map(str, grid))
    lines = [
        f"The paper's Fig. 1: positions (t, y, x) on the block's {size} grid (lines); "
        f"arrows: each query's {top_k} highest weights; dots: every weight (area and colour)."
    ]
    if frames > grid[0]:
        lines.append(
            f"Each of the block's {grid[0]} time steps covers {frames // grid[0]} frames "
            "(merged by the network's temporal strides): shown as their pixel maximum."
        )
    lines.append(
        f"Keys max-pooled to {'x'.join(map(str, key_grid))}, as the model computes them."
        if pooled_keys
        else "Keys unpooled: the block's own f(x_i, x_j) at every position of its grid "
        "(the model itself averages over max-pooled keys)."
    )
    return "\n".join(lines)


def _attention_row(figure, axes, image, grid, query, weights, top_k, cmap, norm) -> None:
    """One query: its time steps' images with a dot per weight, the query's
    box, and arrows to its ``top_k`` highest weights."""
    from matplotlib.patches import ConnectionPatch
    from matplotlib.patheffects import withStroke

    frames, height, width = image.shape[:3]
    key_grid = weights.shape
    panel = [k * grid[0] // key_grid[0] for k in range(key_grid[0])]  # key step -> axes
    outline = [withStroke(linewidth=4, foreground="black")]
    dot = 0.4 * min(height / grid[1], width / grid[2])  # the largest dot fills 80 % of a cell
    for t, ((t0, t1), ax) in enumerate(zip(spans(frames, grid[0]), axes, strict=True)):
        ax.imshow(image[t0:t1].max(axis=0), interpolation="nearest")
        ax.set_title(f"frame {t0}" if t1 - t0 == 1 else f"frames {t0}-{t1 - 1}", fontsize=10)
        _bare(ax)
        _cell_lines(ax, grid[1:], height, width)
        steps = [k for k in range(key_grid[0]) if panel[k] == t]
        for k in steps:
            _weight_dots(ax, weights[k], height, width, cmap, norm, dot)
        ax.set_xlabel(f"{weights[steps].sum():.2f} of the weight" if steps else "", fontsize=9)
    box, source = _cell(grid[1:], query[1:], height, width)
    axes[query[0]].add_patch(
        _rectangle(box, edgecolor="white", lw=2.5, path_effects=outline, zorder=6)
    )
    for key, weight in reversed(top_positions(weights, top_k)):  # the strongest on top
        box, target = _cell(key_grid[1:], key[1:], height, width)
        color = cmap(norm(weight))
        axes[panel[key[0]]].add_patch(_rectangle(box, edgecolor=color, lw=1.5, zorder=4))
        strength = float(norm(weight))
        if panel[key[0]] == query[0] and target == source:
            continue  # the query attends to itself: its box is the mark
        figure.add_artist(
            ConnectionPatch(
                xyA=source,
                coordsA="data",
                axesA=axes[query[0]],
                xyB=target,
                coordsB="data",
                axesB=axes[panel[key[0]]],
                arrowstyle="-|>",
                mutation_scale=14 + 6 * strength,
                color=color,
                lw=1.0 + 2.5 * strength,
                connectionstyle=f"arc3,rad={_bend(query, source, key, target, panel)}",
                shrinkA=3,
                shrinkB=2,
                zorder=5,
                path_effects=[withStroke(linewidth=2.8 + 2.5 * strength, foreground="black")],
                label=f"query {query} -> key {key}: {weight:.3f}",
            )
        )


def _bend(query, source, key, target, panel) -> float:
    """An arc bulging upwards, less for far targets (it stays within its row)."""
    steps = panel[key[0]] - query[0]
    rightwards = steps > 0 or (steps == 0 and target[0] >= source[0])
    return (-0.3 if rightwards else 0.3) / max(1, abs(steps))


def _weight_dots(ax, weights, height, width, cmap, norm, largest: float) -> None:
    """A dot per key position of one time step, its area and colour the weight
    (radius ``largest`` at the highest weight)."""
    from matplotlib.patches import Circle

    for (y, x), weight in np.ndenumerate(weights):
        _, centre = _cell(weights.shape, (y, x), height, width)
        radius = largest * float(np.sqrt(norm(weight)))
        if radius > 0.2:
            ax.add_patch(
                Circle(
                    centre,
                    radius,
                    facecolor=cmap(norm(weight)),
                    edgecolor="black",
                    lw=0.6,
                    zorder=3,
                )
            )


def _cell(cells, position, height, width):
    """A grid cell's box ``(x0, y0, w, h)`` and centre in pixel coordinates."""
    (y0, y1), (x0, x1) = spans(height, cells[0])[position[0]], spans(width, cells[1])[position[1]]
    return (x0 - 0.5, y0 - 0.5, x1 - x0, y1 - y0), ((x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5)


def _rectangle(box, **kwargs):
    from matplotlib.patches import Rectangle

    x, y, w, h = box
    return Rectangle((x, y), w, h, fill=False, **kwargs)


def _cell_lines(ax, cells, height, width) -> None:
    """The block's grid, thin, over a frame."""
    for y0, _ in spans(height, cells[0])[1:]:
        ax.axhline(y0 - 0.5, color="white", lw=0.5, alpha=0.35)
    for x0, _ in spans(width, cells[1])[1:]:
        ax.axvline(x0 - 0.5, color="white", lw=0.5, alpha=0.35)


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _displayable(clip: np.ndarray) -> np.ndarray:
    """uint8 frames as they are; anything else scaled to [0, 1]."""
    if clip.dtype == np.uint8:
        return clip
    clip = clip.astype(np.float32)
    return (clip - clip.min()) / max(float(clip.max() - clip.min()), 1e-12)


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
                # CSVLogger writes "NA" where a metric has no value (val_* without validation)
                if name != "epoch" and value not in ("", None, "NA", "nan"):
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
                epochs = [s + 1 for s in steps]  # Keras logs epoch 0 for what it prints as 1/N
                ax.plot(epochs, values, style, marker="o", markersize=3, label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=100)
    return figure
