"""Pretrained models: one front door from any source to a model and what it is
(`create_model`, `model_info`), the catalogue of released checkpoints, the
flow that loads weights into a model once (`load_weights`; ``weights=`` on
every builder) and presets in keras-hub's format (`save_to_preset`,
`from_preset`). Above `nonlocal_tf.models` and `nonlocal_tf.weights`, which it
uses. `class_names` gives the datasets' class names in each source's label
order."""

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
from nonlocal_tf.pretrained.resolver import ModelInfo, create_model, model_info
from nonlocal_tf.pretrained.sources import UnknownSourceError, kind_of

__all__ = [
    "CATALOG",
    "DEMO",
    "ENTRIES",
    "LABEL_SETS",
    "ModelInfo",
    "PresetError",
    "UnknownSourceError",
    "WeightsEntry",
    "class_names",
    "converted",
    "create_model",
    "find_entry",
    "from_preset",
    "get_entry",
    "is_preset",
    "kind_of",
    "load_model",
    "load_weights",
    "model_info",
    "preset_entry",
    "preset_metadata",
    "save_to_preset",
    "source_path",
    "verified_source",
]
