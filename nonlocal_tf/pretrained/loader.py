"""The load flow of pretrained weights: resolve a name, fetch and verify its
source, convert it once (cached as official-named blobs keyed by the source's
hash), copy it into the model by layer name.

Importing this module registers `load_weights` as what the builders'
``weights=`` argument calls (`nonlocal_tf.models.weights_hook`).
"""

from __future__ import annotations

import logging
import os

import keras
import numpy as np

from nonlocal_tf import files, weights
from nonlocal_tf.models import weights_hook
from nonlocal_tf.pretrained import catalog, presets, transfer
from nonlocal_tf.pretrained.catalog import PACKAGE_ROOT, WeightsEntry

log = logging.getLogger("nonlocal_tf")


def find_entry(name: str) -> WeightsEntry | None:
    """The catalogue entry ``name``, the entry of preset ``name`` (a folder or
    a ``hf://`` / ``kaggle://`` handle; `presets.preset_entry`), or None."""
    if name in catalog.CATALOG:
        return catalog.CATALOG[name]
    return presets.preset_entry(name) if presets.is_preset(name) else None


def load_model(name: str, **kwargs) -> keras.Model:
    """Builds the architecture of catalogue entry or preset ``name`` and loads
    its weights.

    ``include_top=False`` or another ``classes`` load everything but the
    classifier. Other keyword arguments go to the builder.
    """
    entry = find_entry(name)
    if entry is None:
        catalog.get_entry(name)  # raises, listing the entries
    return entry.build(weights=name, **kwargs)


def load_weights(
    model: keras.Model, source: str, strict: bool = True
) -> weights.ConversionReport | None:
    """Loads ``source`` into ``model``: a catalogue name or a preset (a folder,
    ``hf://`` or ``kaggle://`` handle; `nonlocal_tf.pretrained.presets`), their
    weights copied by layer name, the classifier only when it fits; or a
    checkpoint file or URL (`nonlocal_tf.weights.load_weights`)."""
    source = os.fspath(source)
    if source in catalog.CATALOG:
        entry = catalog.CATALOG[source]
        log.warning(
            "Loading %s, released under %s. Source: %s", entry.name, entry.license, entry.url
        )
        how = f"nonlocal_tf.pretrained.load_model({entry.name!r})"
        transfer.copy_by_name(converted(entry)[0], model, entry.name, how)
        return None
    if presets.is_preset(source):
        presets.load_preset_weights(model, source)
        return None
    return weights.load_weights(model, source, strict=strict)


weights_hook.register(load_weights)


def source_path(entry: WeightsEntry) -> str:
    """The entry's source checkpoint in the cache (downloaded and verified once),
    or, for ``package://`` entries, the verified file shipped with the project."""
    return verified_source(entry)[0]


def verified_source(entry: WeightsEntry) -> tuple[str, str]:
    """``(path, sha256 of the downloaded file)`` of the entry's source (for a
    file inside an archive, the archive's hash), hashing it once."""
    if entry.url.startswith("package://"):
        path = os.path.join(PACKAGE_ROOT, entry.url.removeprefix("package://"))
        if not os.path.exists(path):
            raise weights.DownloadError(f"{entry.name}: {path} is missing from this installation.")
        return path, weights.verify_file(path, entry.url, entry.sha256, None, delete=False)
    path, digest = weights.fetch_verified(
        entry.url, sha256=entry.sha256, sha256_prefix=entry.sha256_prefix, subdir="sources"
    )
    if entry.archive_member is None:
        return path, digest
    target = os.path.join(weights.cache_dir(), "sources", os.path.basename(path) + ".d")
    found = _find_member(target, entry.archive_member)
    if found is None:
        weights.safe_extract(path, target)
        found = _find_member(target, entry.archive_member)
    if found is None:
        raise weights.CheckpointFormatError(f"{path} has no member named {entry.archive_member}.")
    return found, digest  # the archive's hash keys its members (entry names differ)


def converted(
    entry: WeightsEntry, cached: bool = True
) -> tuple[keras.Model, str, weights.ConversionReport | None]:
    """The entry's architecture with its weights, the sha256 of its source and
    the conversion's report. A checkpoint is converted once and cached as its
    official-named blobs (``.npz``, keyed by the source hash, independent of
    Keras's class-based weight-file layout); ``cached=False`` converts again
    (the report is None for a cached conversion and for Keras-format entries,
    which load directly)."""
    reference = entry.build(include_top=True)
    source, digest = verified_source(entry)
    if entry.format == "keras_weights_h5":
        reference.load_weights(source)
        return reference, digest, None
    path = os.path.join(weights.cache_dir(), "converted", f"{entry.name}-{digest[:16]}.npz")
    if cached and os.path.exists(path):
        with np.load(path, allow_pickle=False) as blobs:
            weights.assign_blobs(reference, dict(blobs), strict=True)
        return reference, digest, None
    report = weights.assign_blobs(reference, weights.read_blobs(source, entry.format), strict=True)
    log.info("Converted %s: %s", entry.name, report.summary().replace("\n", "; "))
    with files.atomic_path(path) as tmp:  # ends in .npz: savez keeps the name
        np.savez(tmp, **weights.model_to_blobs(reference))
    return reference, digest, report


def _find_member(folder: str, name: str) -> str | None:
    if not os.path.isdir(folder):
        return None
    for root, _, names in os.walk(folder):
        if name in names:
            return os.path.join(root, name)
    return None
