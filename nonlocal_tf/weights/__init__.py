"""Pretrained weights: the catalogue, checksummed downloads, safe converters.

``load_weights(model, weights)`` takes a catalogue name (``"i3d_nl5_r50_8x8.k400"``),
a local file (Caffe2 ``.pkl``, PySlowFast ``.pyth``, mmaction2 or torchvision
``.pth``, Keras ``.weights.h5``) or a URL. Catalogue weights are downloaded
once, converted once, and cached as official-named blobs (``.npz``) keyed by
the source's hash.
"""

from __future__ import annotations

import logging
import os

import keras
import numpy as np

from nonlocal_tf.weights.catalog import CATALOG, ENTRIES, PACKAGE_ROOT, WeightsEntry, get_entry
from nonlocal_tf.weights.convert import (
    ConversionError,
    ConversionReport,
    assign_blobs,
    inflate_from_blobs,
    model_to_blobs,
)
from nonlocal_tf.weights.download import (
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    cache_dir,
    fetch,
    fetch_verified,
    safe_extract,
    sha256_of,
    verify_file,
)
from nonlocal_tf.weights.safe_pickle import (
    CheckpointError,
    CheckpointFormatError,
    UnsafeCheckpointError,
    load_checkpoint,
)
from nonlocal_tf.weights.sources import read_blobs

log = logging.getLogger("nonlocal_tf")

__all__ = [
    "CATALOG",
    "ENTRIES",
    "CheckpointError",
    "CheckpointFormatError",
    "ChecksumError",
    "ConversionError",
    "ConversionReport",
    "DownloadError",
    "UnsafeArchiveError",
    "UnsafeCheckpointError",
    "WeightsEntry",
    "assign_blobs",
    "cache_dir",
    "fetch",
    "fetch_verified",
    "get_entry",
    "inflate_from_blobs",
    "load_checkpoint",
    "load_weights",
    "model_to_blobs",
    "pretrained",
    "read_blobs",
    "safe_extract",
    "sha256_of",
    "source_path",
]


def pretrained(name: str, **kwargs) -> keras.Model:
    """Builds the architecture of catalogue entry ``name`` and loads its weights.

    ``include_top=False`` or another ``classes`` load everything but the
    classifier. Other keyword arguments go to the builder.
    """
    entry = get_entry(name)
    return entry.build(weights=name, **kwargs)


def load_weights(model: keras.Model, weights: str, strict: bool = True) -> ConversionReport | None:
    """Loads ``weights`` (catalogue name, local path or URL) into ``model``."""
    weights = os.fspath(weights)
    if weights in CATALOG:
        return _load_entry(model, CATALOG[weights])
    if weights.startswith(("http://", "https://", "file://")):
        weights = fetch(weights, subdir="downloads")
    if not os.path.exists(weights):
        raise ValueError(
            f"`weights` must be None, a catalogue name, a file or a URL. Received: weights={weights!r}. "
            f"Catalogue names: {', '.join(sorted(CATALOG))}"
        )
    if weights.endswith(".h5"):
        model.load_weights(weights)
        return None
    report = assign_blobs(model, read_blobs(weights), strict=strict)
    log.info("Loaded %s into %s: %s", weights, model.name, report.summary().replace("\n", "; "))
    return report


def source_path(entry: WeightsEntry) -> str:
    """The entry's source checkpoint in the cache (downloaded and verified once),
    or, for ``package://`` entries, the verified file shipped with the project."""
    return _verified_source(entry)[0]


def _verified_source(entry: WeightsEntry) -> tuple[str, str]:
    """``(path, sha256 of the downloaded file)``, hashing it once."""
    if entry.url.startswith("package://"):
        path = os.path.join(PACKAGE_ROOT, entry.url.removeprefix("package://"))
        if not os.path.exists(path):
            raise DownloadError(f"{entry.name}: {path} is missing from this installation.")
        return path, verify_file(path, entry.url, entry.sha256, None, delete=False)
    path, digest = fetch_verified(
        entry.url, sha256=entry.sha256, sha256_prefix=entry.sha256_prefix, subdir="sources"
    )
    if entry.archive_member is None:
        return path, digest
    target = os.path.join(cache_dir(), "sources", os.path.basename(path) + ".d")
    found = _find_member(target, entry.archive_member)
    if found is None:
        safe_extract(path, target)
        found = _find_member(target, entry.archive_member)
    if found is None:
        raise CheckpointFormatError(f"{path} has no member named {entry.archive_member}.")
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
    path = os.path.join(cache_dir(), "converted", f"{entry.name}-{digest[:16]}.npz")
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as cached:
            assign_blobs(reference, dict(cached), strict=True)
        return reference
    report = assign_blobs(reference, read_blobs(source, entry.format), strict=True)
    log.info("Converted %s: %s", entry.name, report.summary().replace("\n", "; "))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path.removesuffix(".npz") + ".tmp.npz"
    np.savez(tmp, **model_to_blobs(reference))
    os.replace(tmp, path)
    return reference


def _load_entry(model: keras.Model, entry: WeightsEntry) -> None:
    log.warning("Loading %s, released under %s. Source: %s", entry.name, entry.license, entry.url)
    _copy_by_name(_reference(entry), model, entry)


def _copy_by_name(source: keras.Model, target: keras.Model, entry: WeightsEntry) -> None:
    """Copies weights layer by layer; the classifier only when it fits. The
    architectures must agree (same layer configurations) or this raises."""
    source_layers = {layer.name: layer for layer in source.layers if layer.weights}
    target_layers = [layer for layer in target.layers if layer.weights]
    missing = [layer.name for layer in target_layers if layer.name not in source_layers]
    if missing:
        raise ConversionError(
            f"{entry.name} has no weights for layers {missing[:10]} of {target.name}. "
            f"Build the matching architecture with nonlocal_tf.weights.pretrained({entry.name!r})."
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
            raise ConversionError(
                f"Layer {layer.name!r} of {target.name} differs from the architecture of {entry.name}: "
                f"{_arch_config(layer)} vs {_arch_config(src)}. Build it with "
                f"nonlocal_tf.weights.pretrained({entry.name!r})."
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
    for root, _, files in os.walk(folder):
        if name in files:
            return os.path.join(root, name)
    return None
