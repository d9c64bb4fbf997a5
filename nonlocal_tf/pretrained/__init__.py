"""Pretrained weights: the catalogue of released checkpoints, the flow that
loads them into models (`load_model`, `load_weights`; ``weights=`` on every
builder) and presets of converted weights in keras-hub's format
(`save_to_preset`, `from_preset`). Above `nonlocal_tf.models` and
`nonlocal_tf.weights`, which it uses. `class_names` gives the datasets' class
names in each source's label order."""

from nonlocal_tf.pretrained.catalog import CATALOG, DEMO, ENTRIES, WeightsEntry, get_entry
from nonlocal_tf.pretrained.labels import LABEL_SETS, class_names
from nonlocal_tf.pretrained.loader import (
    converted,
    find_entry,
    load_model,
    load_weights,
    source_path,
    verified_source,
)
from nonlocal_tf.pretrained.presets import (
    PresetError,
    from_preset,
    is_preset,
    preset_entry,
    preset_metadata,
    save_to_preset,
)

__all__ = [
    "CATALOG",
    "DEMO",
    "ENTRIES",
    "LABEL_SETS",
    "PresetError",
    "WeightsEntry",
    "class_names",
    "converted",
    "find_entry",
    "from_preset",
    "get_entry",
    "is_preset",
    "load_model",
    "load_weights",
    "preset_entry",
    "preset_metadata",
    "save_to_preset",
    "source_path",
    "verified_source",
]
