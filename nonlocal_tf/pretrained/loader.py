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
from nonlocal_tf.pretrained import catalog
from nonlocal_tf.pretrained.catalog import PACKAGE_ROOT, WeightsEntry

log = logging.getLogger("nonlocal_tf")


def load_model(name: str, **kwargs) -> keras.Model:
    """Builds the architecture of catalogue entry ``name`` and loads its weights.

    ``include_top=False`` or another ``classes`` load everything but the
    classifier. Other keyword arguments go to the builder.
    """
    return catalog.get_entry(name).build(weights=name, **kwargs)


def load_weights(
    model: keras.Model, source: str, strict: bool = True
) -> weights.ConversionReport | None:
    """Loads ``source`` into ``model``: a catalogue name (its weights copied by
    layer name, the classifier only when it fits), or a checkpoint file or URL
    (`nonlocal_tf.weights.load_weights`)."""
    source = os.fspath(source)
    if source in catalog.CATALOG:
        entry = catalog.CATALOG[source]
        log.warning(
            "Loading %s, released under %s. Source: %s", entry.name, entry.license, entry.url
        )
        _copy_by_name(_reference(entry), model, entry)
        return None
    return weights.load_weights(model, source, strict=strict)


weights_hook.register(load_weights)


def source_path(entry: WeightsEntry) -> str:
    """The entry's source checkpoint in the cache (downloaded and verified once),
    or, for ``package://`` entries, the verified file shipped with the project."""
    return _verified_source(entry)[0]


def _verified_source(entry: WeightsEntry) -> tuple[str, str]:
    """``(path, sha256 of the downloaded file)``, hashing it once."""
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


def _reference(entry: WeightsEntry) -> keras.Model:
    """The entry's architecture with its weights. A checkpoint is converted once
    and cached as its official-named blobs (``.npz``, keyed by the source hash,
    independent of Keras's class-based weight-file layout); Keras-format
    entries load directly."""
    reference = entry.build(include_top=True)
    source, digest = _verified_source(entry)
    if entry.format == "keras_weights_h5":
        reference.load_weights(source)
        return reference
    path = os.path.join(weights.cache_dir(), "converted", f"{entry.name}-{digest[:16]}.npz")
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as cached:
            weights.assign_blobs(reference, dict(cached), strict=True)
        return reference
    report = weights.assign_blobs(reference, weights.read_blobs(source, entry.format), strict=True)
    log.info("Converted %s: %s", entry.name, report.summary().replace("\n", "; "))
    with files.atomic_path(path) as tmp:  # ends in .npz: savez keeps the name
        np.savez(tmp, **weights.model_to_blobs(reference))
    return reference


def _copy_by_name(source: keras.Model, target: keras.Model, entry: WeightsEntry) -> None:
    """Copies weights layer by layer; the classifier only when it fits. The
    architectures must agree (same layer configurations) or this raises."""
    source_layers = {layer.name: layer for layer in source.layers if layer.weights}
    target_layers = [layer for layer in target.layers if layer.weights]
    missing = [layer.name for layer in target_layers if layer.name not in source_layers]
    if missing:
        raise weights.ConversionError(
            f"{entry.name} has no weights for layers {missing[:10]} of {target.name}. "
            f"Build the matching architecture with nonlocal_tf.pretrained.load_model({entry.name!r})."
        )
    for layer in target_layers:
        src = source_layers[layer.name]
        if layer.name == "pred":
            if [w.shape for w in layer.weights] != [w.shape for w in src.weights]:
                log.warning(
                    "%s: new classifier with %d classes, not loaded.", target.name, layer.units
                )
                continue
        elif _arch_config(layer) != _arch_config(src):
            raise weights.ConversionError(
                f"Layer {layer.name!r} of {target.name} differs from the architecture of {entry.name}: "
                f"{_arch_config(layer)} vs {_arch_config(src)}. Build it with "
                f"nonlocal_tf.pretrained.load_model({entry.name!r})."
            )
        layer.set_weights(src.get_weights())


def _arch_config(layer) -> dict:
    config = dict(layer.get_config())
    for key in ("name", "trainable", "dtype", "implementation", "chunk_size"):
        config.pop(key, None)
    return config


def _find_member(folder: str, name: str) -> str | None:
    if not os.path.isdir(folder):
        return None
    for root, _, names in os.walk(folder):
        if name in names:
            return os.path.join(root, name)
    return None
