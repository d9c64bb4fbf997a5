"""Pretrained weights: the catalogue of released checkpoints and the flow that
loads them into models (`load_model`, `load_weights`; ``weights=`` on every
builder). Above `nonlocal_tf.models` and `nonlocal_tf.weights`, which it uses."""

from nonlocal_tf.pretrained.catalog import CATALOG, DEMO, ENTRIES, WeightsEntry, get_entry
from nonlocal_tf.pretrained.loader import load_model, load_weights, source_path

__all__ = [
    "CATALOG",
    "DEMO",
    "ENTRIES",
    "WeightsEntry",
    "get_entry",
    "load_model",
    "load_weights",
    "source_path",
]
