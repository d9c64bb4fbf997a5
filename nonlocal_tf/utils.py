"""Small helpers shared across the library."""

from __future__ import annotations

from collections.abc import Iterator

import keras


def iter_layers(model: keras.Model, into_layers: bool = False) -> Iterator[keras.layers.Layer]:
    """Every layer of ``model``, nested models flattened. With ``into_layers``
    also the sub-layers of composite layers (a `NonLocalBlock`'s BN, say)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer, into_layers)
            continue
        yield layer
        if into_layers:
            stack = list(getattr(layer, "_layers", []))
            while stack:
                sub = stack.pop(0)
                yield sub
                stack.extend(getattr(sub, "_layers", []))
