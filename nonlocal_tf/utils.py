"""Small helpers shared across the library."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import keras

# The file a model's record (``model.info``) is written to beside it: a
# SavedModel's asset, read back by `nonlocal_tf.pretrained.sources`.
INFO_FILE = "nonlocal_tf.json"


@contextlib.contextmanager
def passes_of_unknown_length() -> Iterator[None]:
    """Keras's "Your input ran out of data" warning off: a pass over data
    whose length is unknown until it is read (videos are skipped as they
    fail to decode: validation, evaluation) ends where the data does, which
    Keras reports as if steps had been asked for that the data lacks."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        yield


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


def to_json(value):
    """``value`` as JSON data: tuples and mappings (``MappingProxyType``) become
    lists and dicts with string keys."""
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


def from_json(value):
    """JSON lists back to the tuples the builders document (inverse of `to_json`)."""
    if isinstance(value, list):
        return tuple(from_json(v) for v in value)
    if isinstance(value, dict):
        return {k: from_json(v) for k, v in value.items()}
    return value
