"""The stage between the batches placed on the accelerator and the step, for
clips the accelerator augments (``augment_on="device"``): their views cut
where the windows now are (`nonlocal_tf.layers.ClipCrops`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import keras

from nonlocal_tf.layers import ClipCrops


def cut_views(batches: Iterable) -> Iterator:
    """Batches ``((windows, geometry), labels)`` (a dataset made with
    ``augment_on="device"``, after `nonlocal_tf.prefetch.to_device`) as ``(clips, labels)``: the
    clips cut by `nonlocal_tf.layers.ClipCrops` on the device the windows are
    on, compiled on JAX (a program of its own, queued ahead of the train step
    that reads its output; the device does both in turn). What `fit` reads::

        model.fit(training.cut_views(prefetch.to_device(iter(train))), ...)
    """
    layer = ClipCrops()
    cut = layer
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
                f"augment_on='device' and a batch size. Received: {_described(batch)}"
            ) from None
        yield (cut((windows, where)), *rest)


def _described(batch) -> str:
    if isinstance(batch, (tuple, list)):
        return f"a {type(batch).__name__} of " + ", ".join(_described(part) for part in batch)
    shape = getattr(batch, "shape", None)
    return f"shape {tuple(shape)}" if shape is not None else type(batch).__name__
