"""Cutting a clip's views on the accelerator: the train and val resize, crop
and flip, from the frames' uncropped pixels and where each output pixel reads.

The host then only decodes: it sends each clip's frames (the region its
views read, in a fixed window) and their geometry
(`nonlocal_tf.data.numpy_transforms.geometry`), and this layer interpolates,
inside the compiled step, with the host's arithmetic (TensorFlow's bilinear
resize: along x then y, float32, rounded half to even).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="nonlocal_tf")
class ClipCrops(keras.layers.Layer):
    """Views of clips from their frames and geometry (bilinear, TensorFlow's
    half-pixel arithmetic): a resize, crop and flip in one gather.

    The layer holds no weights and computes in float32 whatever the dtype
    policy (the geometry's indices must stay exact).

    Call args:
        inputs: ``(windows, geometry)``: ``windows`` ``(B, T, H, W, C)``
            uint8 frames; ``geometry`` ``(B, V, 2, 3, S)`` float32, per view
            its rows then columns, each lower and upper source index into the
            window and the upper one's weight (`numpy_transforms.window`
            makes both).

    Returns:
        ``(B * V, T, S, S, C)`` uint8 views, view ``v`` of clip ``b`` at
        ``b * V + v``.

    Example:
    >>> views = ClipCrops()((windows, geometry))  # (16, 8, 282, 282, 3) -> (16, 8, 224, 224, 3)
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        windows, where = _checked(inputs)
        where = ops.cast(where, "float32")
        b, t, h, w, c = ops.shape(windows)
        v, s = ops.shape(where)[1], ops.shape(where)[-1]
        # Both steps gather whole rows of a 2-D table with one flat index per
        # output row (a plain gather on every backend; take_along_axis would
        # broadcast its indices to the output's size).
        # Along x first, as TensorFlow: columns of each clip's window.
        table = ops.transpose(ops.cast(windows, "float32"), (0, 3, 1, 2, 4))  # (B, W, T, H, C)
        table = ops.reshape(table, (-1, t * h * c))  # (B * W, T * H * C)
        clip = ops.reshape(ops.arange(b, dtype="int32"), (-1, 1, 1))  # (B, 1, 1)
        across = _lerp(table, where[:, :, 1], clip * w)  # (B * V * S, T * H * C)
        across = ops.reshape(across, (b, v, s, t, h, c))
        # Then y: rows of each view.
        table = ops.transpose(across, (0, 1, 4, 2, 3, 5))  # (B, V, H, S, T, C)
        table = ops.reshape(table, (-1, s * t * c))  # (B * V * H, S * T * C)
        view = ops.reshape(ops.arange(b * v, dtype="int32"), (b, v, 1))  # (B, V, 1)
        views = _lerp(table, where[:, :, 0], view * h)  # (B * V * S, S * T * C)
        views = ops.reshape(views, (b * v, s, s, t, c))
        views = ops.transpose(views, (0, 3, 1, 2, 4))  # (B * V, T, S, S, C)
        return ops.cast(ops.clip(ops.round(views), 0, 255), "uint8")

    def compute_output_shape(self, input_shape):
        windows, where = _checked_shapes(*input_shape)
        batch = None if windows[0] is None or where[1] is None else windows[0] * where[1]
        return (batch, windows[1], where[-1], where[-1], windows[-1])

    def compute_output_spec(self, inputs):
        windows, where = inputs
        shape = self.compute_output_shape((windows.shape, where.shape))
        return keras.KerasTensor(shape, dtype="uint8")


def cut_views(batches: Iterable) -> Iterator:
    """Batches ``((windows, geometry), labels)`` (a dataset made with
    ``augment_on="device"``, after `nonlocal_tf.prefetch.to_device`) as
    ``(clips, labels)``: the clips cut by `ClipCrops` on the device the
    windows are on, compiled on JAX (a program of its own, queued ahead of
    the step that reads its output; the device does both in turn). A test
    video's ``((windows, geometry), label, index)`` gives its views. What
    `fit` reads (also ``nonlocal_tf.training.cut_views``)::

        model.fit(training.cut_views(prefetch.to_device(iter(train))), ...)
    """
    layer = ClipCrops()
    cut = layer  # JAX: compiled once per window shape
    if keras.backend.backend() == "jax":
        import jax

        cut = jax.jit(layer)
    for batch in batches:
        try:
            (windows, where), *rest = batch
            if len(windows.shape) != 5 or len(where.shape) != 5:
                raise ValueError
        except (AttributeError, TypeError, ValueError):
            raise ValueError(
                "cut_views reads batches ((windows, geometry), labels) of a dataset made with "
                "augment_on='device' and a batch size (test mode: one video's windows). "
                f"Received: {_described(batch)}"
            ) from None
        yield (cut((windows, where)), *rest)


def _described(batch) -> str:
    if isinstance(batch, (tuple, list)):
        return f"a {type(batch).__name__} of " + ", ".join(_described(part) for part in batch)
    shape = getattr(batch, "shape", None)
    return f"shape {tuple(shape)}" if shape is not None else type(batch).__name__


def _checked(inputs):
    try:
        windows, where = inputs
    except (TypeError, ValueError):
        raise ValueError(
            "ClipCrops takes (windows, geometry). Received: "
            f"{type(inputs).__name__} {getattr(inputs, 'shape', '')}"
        ) from None
    _checked_shapes(tuple(windows.shape), tuple(where.shape))
    return windows, where


def _checked_shapes(windows: tuple, where: tuple) -> tuple[tuple, tuple]:
    """The shapes, or a ValueError naming what is off."""
    batches = windows[:1] + where[:1]
    if (
        len(windows) != 5
        or len(where) != 5
        or tuple(where[2:4]) != (2, 3)
        or (None not in batches and len(set(batches)) > 1)
    ):
        raise ValueError(
            "ClipCrops takes windows (B, T, H, W, C) and geometry (B, V, 2, 3, S) "
            "(`numpy_transforms.window`). Received: windows.shape="
            f"{windows}, geometry.shape={where}"
        )
    return windows, where


def _lerp(table, axis_where, offset):
    """Rows ``lower + (upper - lower) * weight`` of ``table``: ``axis_where``
    ``(B, V, 3, S)`` lower, upper, weight; ``offset`` ``(B, V or 1, 1)`` the
    first row of each clip's (or view's) block. ``(B * V * S, columns)``."""
    lower = ops.reshape(ops.cast(axis_where[:, :, 0], "int32") + offset, (-1,))
    upper = ops.reshape(ops.cast(axis_where[:, :, 1], "int32") + offset, (-1,))
    weight = ops.reshape(axis_where[:, :, 2], (-1, 1))
    low = ops.take(table, lower, axis=0)
    return low + (ops.take(table, upper, axis=0) - low) * weight
