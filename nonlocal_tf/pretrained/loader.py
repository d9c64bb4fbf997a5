"""The load flow of pretrained weights, into the model the user asked for,
once: resolve a source (`sources.kind_of`), fetch and verify its file,
convert it once (cached as official-named blobs keyed by the source's hash)
and assign it to the model by layer name, checked against the architecture
the weights come from. No second model is built.

ImageNet entries loaded into a video model are inflated (official
initialisation: each 2D kernel repeated over time and divided by its length).

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
from nonlocal_tf.pretrained import catalog, presets, sources, transfer
from nonlocal_tf.pretrained.catalog import PACKAGE_ROOT, WeightsEntry
from nonlocal_tf.utils import from_json

log = logging.getLogger("nonlocal_tf")


def find_entry(name: str) -> WeightsEntry | None:
    """The catalogue entry ``name``, the entry of preset ``name`` (a folder or
    a ``hf://`` / ``kaggle://`` handle; `presets.preset_entry`), or None."""
    if name in catalog.CATALOG:
        return catalog.CATALOG[name]
    return presets.preset_entry(name) if presets.is_preset(name) else None


def load_model(name: str, **kwargs) -> keras.Model:
    """Builds the architecture of catalogue entry or preset ``name`` and loads
    its weights (`nonlocal_tf.create_model` takes every kind of source).

    ``include_top=False`` or another ``classes`` load everything but the
    classifier. Other keyword arguments go to the builder.
    """
    entry = find_entry(name)
    if entry is None:
        catalog.get_entry(name)  # raises, listing the entries
    if entry.format == "keras_preset":
        return presets.from_preset(name, **kwargs)
    return entry.build(weights=name, **kwargs)


def load_weights(
    model: keras.Model, source: str, strict: bool = True
) -> weights.ConversionReport | None:
    """Loads ``source`` into ``model``: a catalogue entry (converted once,
    assigned by layer name; an ImageNet entry into a video model is
    inflated), a preset, a training run folder or a ``.keras`` file (checked
    against the architecture they were saved from; another classifier size
    leaves the head new), or a checkpoint file or URL
    (`nonlocal_tf.weights.load_weights`). Returns the conversion report where
    there is one."""
    source = os.fspath(source)
    kind = sources.kind_of(source)
    if kind == "entry":
        return load_entry(model, catalog.CATALOG[source])
    if kind == "preset":
        presets.load_preset_weights(model, source)
        return None
    if kind in ("run", "keras"):
        load_trained(model, source)
        return None
    if kind == "checkpoint":
        return weights.load_weights(model, source, strict=strict)
    raise ValueError(
        f"{source} is a {kind.replace('_', ' ')}, which holds no weights to load into a model: "
        "give a catalogue entry, a preset, a run folder, a .keras file or a checkpoint."
    )


weights_hook.register(load_weights)


def load_trained(model: keras.Model, source: str) -> None:
    """The weights of a ``zoo.train`` run folder (``final.keras``, or its
    newest epoch checkpoint) or of a ``.keras`` file, into ``model``."""
    path = sources.run_weights(source) if os.path.isdir(source) else source
    record = trained_record(source)
    if "arguments" not in record:
        raise ValueError(
            f"{source} does not record the architecture it was saved from (a model saved "
            "before nonlocal_tf 0.2, or not by this library): load it with "
            "keras.saving.load_model."
        )
    transfer.load_keras_weights(
        model,
        path,
        record["builder"],
        from_json(record["arguments"]),
        source,
        f"nonlocal_tf.create_model({source!r})",
    )


def trained_record(source: str) -> dict:
    """The model record of a run folder (``run.json``'s, else its
    ``final.keras``'s) or of a ``.keras`` file; ``{}`` if none."""
    if os.path.isdir(source):
        record = sources.read_run_record(source).get("model_info")
        if record:
            return record
        final = os.path.join(source, sources.FINAL_MODEL)
        return sources.keras_file_record(final) if os.path.exists(final) else {}
    return sources.keras_file_record(source)


def load_entry(
    model: keras.Model, entry: WeightsEntry, cached: bool = True
) -> weights.ConversionReport | None:
    """``entry``'s weights into ``model``: its source fetched and verified,
    converted once (``cached=False``: again) and assigned by layer name,
    strictly; an ImageNet entry into a video model inflated. Returns the
    conversion's report (None for Keras-format entries)."""
    _license_notice(entry)
    how = f"nonlocal_tf.create_model({entry.name!r})"
    function, arguments = entry.architecture()
    if entry.format == "keras_weights_h5":
        path, _ = verified_source(entry)
        transfer.load_keras_weights(model, path, function, arguments, entry.name, how)
        return None
    if entry.format == "keras_preset":
        presets.load_preset_weights(model, entry.url)
        return None
    blobs, _ = converted_blobs(entry, cached)
    if _inflates(model, entry):
        report = weights.inflate_from_blobs(model, blobs)
        log.info("Inflated %s into %s: %s", entry.name, model.name, report.summary())
        return report
    transfer.check_architecture(model, function, arguments, entry.name, how)
    return weights.assign_blobs(model, blobs, strict=True)


_NOTIFIED: set[str] = set()


def _license_notice(entry: WeightsEntry) -> None:
    """The license of weights that restrict their use (non-commercial), once
    per process as a warning; other licenses at INFO level."""
    restricted = "non-commercial" in entry.license.lower() or "-NC" in entry.license
    level = logging.WARNING if restricted and entry.name not in _NOTIFIED else logging.INFO
    _NOTIFIED.add(entry.name)
    log.log(
        level, "Loading %s, released under %s. Source: %s", entry.name, entry.license, entry.url
    )


def _inflates(model: keras.Model, entry: WeightsEntry) -> bool:
    """An image (ImageNet) entry going into a video model."""
    video = len(model.inputs[0].shape) == 5
    return entry.dataset == "ImageNet-1k" and video


def converted(
    entry: WeightsEntry, cached: bool = True
) -> tuple[keras.Model, str, weights.ConversionReport | None]:
    """The entry's architecture with its weights, the sha256 of its source and
    the conversion's report (None for a cached conversion and for Keras-format
    entries): one model, built and loaded once."""
    model = entry.build(include_top=True)
    report = load_entry(model, entry, cached=cached)
    return model, verified_source(entry)[1], report


def converted_blobs(entry: WeightsEntry, cached: bool = True) -> tuple[dict, str]:
    """The entry's weights as official-named blobs and its source's sha256.
    A checkpoint is converted once and cached as ``.npz`` (keyed by the source
    hash, independent of Keras's weight-file layout); ``cached=False``
    converts again."""
    source, digest = verified_source(entry)
    path = os.path.join(weights.cache_dir(), "converted", f"{entry.name}-{digest[:16]}.npz")
    if cached and os.path.exists(path):
        with np.load(path, allow_pickle=False) as stored:
            return dict(stored), digest
    blobs = weights.clean_blobs(weights.read_blobs(source, entry.format))
    log.info("Converted %s: %d blobs", entry.name, len(blobs))
    with files.atomic_path(path) as tmp:  # ends in .npz: savez keeps the name
        np.savez(tmp, **blobs)
    return blobs, digest


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


def _find_member(folder: str, name: str) -> str | None:
    if not os.path.isdir(folder):
        return None
    for root, _, names in os.walk(folder):
        if name in names:
            return os.path.join(root, name)
    return None
