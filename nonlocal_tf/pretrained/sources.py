"""What a model source names, and the records that travel with trained models.

A source is one of (`kind_of`):

- ``"variant"``: a named model of `nonlocal_tf.models` (``i3d_nl5_r50_8x8``,
  ``resnet50_image``), randomly initialised;
- ``"entry"``: a catalogue entry (``i3d_nl5_r50_8x8.k400``);
- ``"preset"``: a preset folder or a ``hf://`` / ``kaggle://`` handle;
- ``"run"``: a folder written by ``zoo.train`` (``run.json``, ``final.keras``,
  ``checkpoints/``);
- ``"keras"``: a ``.keras`` file saved from one of this library's models;
- ``"saved_model"``: a SavedModel folder written by ``zoo.export``;
- ``"checkpoint"``: a weights file or URL (``.pkl``, ``.pyth``, ``.pth``,
  ``.weights.h5``): weights only, no architecture.

The record of a trained model (`nonlocal_tf.pretrained.ModelInfo` as JSON:
builder, arguments, class names, clip settings, recipe, license) is kept in
the model's config (``model.info``, so in every ``.keras`` file), in a run
folder's ``run.json`` and in a SavedModel's ``assets/nonlocal_tf.json``.
"""

from __future__ import annotations

import glob
import json
import os
import re
import zipfile

from nonlocal_tf import models
from nonlocal_tf.pretrained import catalog, presets
from nonlocal_tf.utils import INFO_FILE

RUN_FILE = "run.json"
FINAL_MODEL = "final.keras"
CHECKPOINTS = "checkpoints"
SAVED_MODEL_RECORD = os.path.join("assets", INFO_FILE)
CHECKPOINT_SUFFIXES = (".pkl", ".pyth", ".pth", ".pt", ".h5", ".npz")
KINDS = ("variant", "entry", "preset", "run", "keras", "saved_model", "checkpoint")


class UnknownSourceError(ValueError):
    """A name that is none of the kinds of source."""


def kind_of(source: str) -> str:
    """Which kind of source ``source`` is (see the module's docstring), or an
    `UnknownSourceError` listing what it could be."""
    source = os.fspath(source)
    if source in models.VARIANTS or source in models.IMAGE_ARGUMENTS:
        return "variant"
    if source in catalog.CATALOG:
        return "entry"
    if presets.is_preset(source):
        return "preset"
    if os.path.isdir(source):
        if os.path.exists(os.path.join(source, RUN_FILE)) or os.path.exists(
            os.path.join(source, FINAL_MODEL)
        ):
            return "run"
        if os.path.exists(os.path.join(source, "saved_model.pb")):
            return "saved_model"
        raise UnknownSourceError(
            f"{source} is a folder, but not a preset (no config.json), a training run "
            f"(no {RUN_FILE} or {FINAL_MODEL}) or a SavedModel (no saved_model.pb)."
        )
    if source.endswith(".keras"):
        if not os.path.isfile(source):
            raise UnknownSourceError(f"No such .keras file: {source}")
        return "keras"
    if source.startswith(("http://", "https://", "file://")) or (
        os.path.isfile(source) and source.endswith(CHECKPOINT_SUFFIXES)
    ):
        return "checkpoint"
    raise UnknownSourceError(
        f"Unknown model {source!r}: not a named model, a catalogue entry, a preset, a training "
        "run folder, a .keras file or a SavedModel. Named models: e.g. i3d_nl5_r50_8x8 "
        "(nonlocal_tf.models.VARIANTS); catalogue entries: e.g. "
        f"{', '.join(sorted(catalog.CATALOG)[:3])}, ... (zoo/MODEL_ZOO.md)."
    )


# ------------------------------------------------------------- run folders
def write_run_record(folder: str, record: dict) -> str:
    """Writes ``run.json`` (atomically) in a run folder: what `read_run_record` reads."""
    from nonlocal_tf import files

    path = os.path.join(folder, RUN_FILE)
    files.write_json(path, record)
    return path


def read_run_record(folder: str) -> dict:
    """A run folder's ``run.json`` (``{"model_info": ..., "command": ...}``),
    or ``{}`` for a run written before it existed."""
    path = os.path.join(folder, RUN_FILE)
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}).") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not a JSON object.")
    return record


def run_weights(folder: str) -> str:
    """The weights a run folder holds: ``final.keras`` once training ended,
    else its newest epoch checkpoint (a run still training, or killed)."""
    final = os.path.join(folder, FINAL_MODEL)
    if os.path.exists(final):
        return final
    found = sorted(glob.glob(os.path.join(folder, CHECKPOINTS, "epoch-*.weights.h5")))
    found = [p for p in found if re.search(r"epoch-\d+\.weights\.h5$", p)]
    if not found:
        raise ValueError(
            f"The training run {folder} holds no model yet: no {FINAL_MODEL} and no "
            f"{CHECKPOINTS}/epoch-*.weights.h5 (it ends its first epoch before writing one)."
        )
    return found[-1]


# --------------------------------------------------------- other records
def keras_file_record(path: str) -> dict:
    """The record (``model.info``) inside a ``.keras`` file, read from its
    config without building the model; ``{}`` when it has none."""
    try:
        with zipfile.ZipFile(path) as archive:
            with archive.open("config.json") as f:
                config = json.load(f)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path} is not a readable .keras file ({exc}).") from None
    inner = config.get("config") if isinstance(config, dict) else None
    record = inner.get("nonlocal_tf") if isinstance(inner, dict) else None
    return record if isinstance(record, dict) else {}


def saved_model_record(folder: str) -> dict:
    """The record a SavedModel written by `nonlocal_tf.export` carries as an
    asset; ``{}`` for one written before it did."""
    path = os.path.join(folder, SAVED_MODEL_RECORD)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    return record if isinstance(record, dict) else {}
