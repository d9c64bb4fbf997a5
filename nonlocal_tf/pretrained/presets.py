"""Presets: converted weights in keras-hub's on-disk format, so that a model
outlives its publisher moving the original checkpoint.

A preset is a folder (local, or a ``hf://`` / ``kaggle://`` handle fetched
through keras-hub's own preset loader, with its cache and its auth) of:

- ``config.json``: keras-hub's layout (``module``, ``class_name``,
  ``registered_name``, ``config``). Its ``registered_name`` is that of
  `nonlocal_tf.pretrained.hub_models.NonLocalBackbone`, a keras-hub
  ``Backbone``, so that ``keras_hub.models.Backbone.from_preset(folder)``
  loads it too; its ``config`` names a builder of this library (a named
  variant, an image variant, ``VideoResNet`` or ``ImageResNet``) and its
  arguments. It is read as data: the builder must be one of the table's,
  every argument one of its parameters, of a JSON type, and of a sane size.
  Nothing in a preset is deserialised into objects, imported or unpickled.
- ``model.weights.h5``: `keras.Model.save_weights` of the built model.
- ``metadata.json``: keras-hub's fields (Keras and keras-hub versions,
  parameter count, date) and this library's: the catalogue entry, the class
  names, the source checkpoint's url and sha256, the conversion report and
  the weights file's sha256, which loading checks first.

A preset is untrusted input: its files are opened only as regular files
inside its folder (no link out of it, no FIFO or device), JSON files are
read up to a size, and the weights file's declared array shapes are checked
against the architecture before any array is read.

``save_to_preset(model, folder, builder=..., arguments=...)`` writes one,
``from_preset(handle)`` builds the model back, once, with its weights. A
preset is uploaded with keras-hub's ``keras_hub.upload_preset("hf://user/name", folder)``.
"""

from __future__ import annotations

import collections
import dataclasses
import inspect
import json
import os
import stat
import time
from collections.abc import Mapping
from types import MappingProxyType

import keras

from nonlocal_tf import files, weights
from nonlocal_tf.models import architecture
from nonlocal_tf.pretrained import transfer
from nonlocal_tf.pretrained.catalog import WeightsEntry
from nonlocal_tf.utils import from_json, to_json

CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "model.weights.h5"
REMOTE_SCHEMES = ("hf", "kaggle", "gs", "modelscope")  # keras-hub's get_file knows these
PRESET_FORMAT = 1
# What keras-hub's loader resolves (`hub_models.NonLocalBackbone`).
REGISTERED_NAME = "nonlocal_tf>NonLocalBackbone"
# Builder arguments a preset may not set: they load weights or take objects.
_REFUSED = ("weights", "input_tensor")
# Bounds on what a preset's config may ask to allocate: far above any real
# model, far below what would exhaust a machine (one classifier of 10^9
# classes is 8 TB of weights at width 2048).
_LIMITS = {"classes": 100_000, "width_per_group": 1024, "input_size": 8192}
_JSON_BYTES = 4 * 2**20  # config.json and metadata.json are a few kB
_JSON_DEPTH = 16


class PresetError(ValueError):
    """A preset that cannot be loaded: missing, malformed, or not data."""


class PresetFileMissing(PresetError):
    """A preset lacks a file."""


def is_preset(source: str) -> bool:
    """Whether ``source`` names a preset: a remote handle or a folder with a config."""
    source = os.fspath(source)
    if source.split("://", 1)[0] in REMOTE_SCHEMES and "://" in source:
        return True
    return os.path.isdir(source) and os.path.lexists(os.path.join(source, CONFIG_FILE))


# ----------------------------------------------------------------- writing
def save_to_preset(
    model: keras.Model,
    folder: str,
    builder: str | None = None,
    arguments: dict | None = None,
    entry: WeightsEntry | None = None,
    class_names: list[str] | tuple[str, ...] | None = None,
    source: dict | None = None,
    conversion: str | None = None,
) -> str:
    """Writes ``model`` as a preset in ``folder``: a model that
    ``builder(**arguments)`` builds (a name of
    `nonlocal_tf.models.architecture`; by default those of the catalogue
    ``entry`` it came from, or those the model records), with its
    ``class_names`` (default: the model's, or the entry's when they fit), its
    ``source`` (``{"url", "sha256"}``) and the ``conversion`` report, where
    known. Each file is written atomically, ``config.json`` last; returns
    ``folder``.

    Example: a model fine-tuned by ``zoo.train`` is
    ``save_to_preset(model, "my_preset")``.
    """
    info = getattr(model, "info", {}) or {}
    if builder is None and entry is not None:
        builder = entry.builder
        arguments = entry.arguments() if arguments is None else arguments
    elif builder is None and "arguments" in info:
        builder, arguments = info["builder"], info["arguments"]
    elif builder is None:
        raise ValueError(
            "save_to_preset needs a `builder`, a catalogue `entry`, or a model "
            "made by this library's builders."
        )
    config = {
        "module": "nonlocal_tf.pretrained.hub_models",
        "class_name": "NonLocalBackbone",
        "registered_name": REGISTERED_NAME,
        "config": {"builder": builder, "arguments": to_json(dict(arguments or {}))},
        "nonlocal_tf_preset": PRESET_FORMAT,
    }
    _validate(config, folder)  # what loading will accept ...
    _check_builds(model, folder, builder, config["config"]["arguments"])  # ... and build
    os.makedirs(folder, exist_ok=True)
    weights_path = os.path.join(folder, WEIGHTS_FILE)
    with files.atomic_path(weights_path) as tmp:
        model.save_weights(tmp)
    classes = int(model.outputs[0].shape[-1]) if model.outputs else None
    names = list(class_names) if class_names else info.get("class_names")
    if names is None and entry is not None and entry.class_names:
        names = list(entry.class_names)
    if names is not None and len(names) != classes:
        names = None  # the entry's names do not fit a new head
    metadata = {
        "keras_version": keras.version(),
        "keras_hub_version": _installed("keras-hub"),
        "parameter_count": model.count_params(),
        "date_saved": time.strftime("%Y-%m-%d@%H:%M:%S"),
        "tasks": [],
        "nonlocal_tf": {
            "preset_format": PRESET_FORMAT,
            "version": _installed("nonlocal-tf"),
            "entry": _entry_record(entry) if entry is not None else None,
            "class_names": names,
            "source": source,
            "conversion": conversion,
            "weights_sha256": weights.sha256_of(weights_path),
        },
    }
    files.write_json(os.path.join(folder, METADATA_FILE), metadata)
    files.write_json(os.path.join(folder, CONFIG_FILE), config)  # last: it makes the preset
    return folder


def _check_builds(model: keras.Model, folder: str, builder: str, arguments: dict) -> None:
    """A `PresetError` unless ``builder(**arguments)`` is ``model``'s architecture."""
    function, full = architecture.arguments(builder, **from_json(arguments))
    info = getattr(model, "info", {}) or {}
    if "arguments" in info:  # the model records what built it: compare, build nothing
        same = info["builder"] == function and not architecture.differences(full, info["arguments"])
        same = same and not transfer.head_differs(model, full)
    else:
        built = _build(folder, builder, from_json(arguments))
        same = [tuple(w.shape) for w in built.weights] == [tuple(w.shape) for w in model.weights]
    if not same:
        raise PresetError(
            f"Preset {folder}: {builder}(**arguments) does not build {model.name}'s architecture."
        )


# ----------------------------------------------------------------- loading
def from_preset(handle: str, **kwargs) -> keras.Model:
    """The model of preset ``handle`` (a folder, ``hf://org/name`` or
    ``kaggle://org/model/keras/variant[/version]``) with its weights, built
    once. Keyword arguments override the builder's (``classes=10``: a new
    classifier, everything else loaded; ``fully_convolutional``,
    ``input_shape``, ``conv_implementation``, ...)."""
    handle = os.fspath(handle)
    builder, arguments = preset_config(handle)
    _check_sizes(handle, kwargs)
    model = _build(handle, builder, {**arguments, **kwargs})
    load_preset_weights(model, handle)
    return model


def load_preset_weights(model: keras.Model, handle: str) -> None:
    """Loads the weights of preset ``handle`` into ``model``, checked first:
    the file's hash against the metadata, the architecture against the
    config (a classifier of another size is left new), the file's declared
    array shapes against the model's."""
    builder, arguments = preset_config(handle)
    function, full = architecture.arguments(builder, **arguments)
    metadata = preset_metadata(handle)
    path = _fetch(handle, WEIGHTS_FILE)
    expected = _ours(handle, metadata).get("weights_sha256")
    if not isinstance(expected, str):
        raise PresetError(
            f"Preset {handle}: {METADATA_FILE} has no weights_sha256, so {WEIGHTS_FILE} cannot "
            "be checked. Write presets with nonlocal_tf.pretrained.save_to_preset."
        )
    digest = weights.sha256_of(path)
    if digest != expected:
        raise PresetError(
            f"Preset {handle}: {WEIGHTS_FILE} has sha256 {digest}, its metadata says "
            f"{expected}: the file is truncated or altered."
        )
    what, how = f"preset {handle}", f"from_preset({handle!r})"
    try:
        transfer.check_architecture(model, function, full, what, how)
        _check_declared_shapes(path, model, transfer.head_differs(model, full))
        transfer.load_keras_weights(model, path, function, full, what, how)
    except weights.ConversionError as exc:
        if "differs from the architecture" in str(exc) or "holds the weights" in str(exc):
            raise
        message = " ".join(str(exc).split())[:300]
        raise PresetError(
            f"Preset {handle}: {WEIGHTS_FILE} does not load into the model its config "
            f"describes ({builder}): {message}"
        ) from None


def _check_declared_shapes(path: str, model: keras.Model, new_head: bool) -> None:
    """The arrays the weights file declares (read from its headers, no data)
    must be the model's weights, the classifier aside where it is new: a file
    declaring other or larger arrays is refused before Keras reads one."""
    import h5py

    declared = []
    try:
        with h5py.File(path, "r") as f:
            f.visititems(
                lambda _, item: (
                    declared.append(tuple(item.shape)) if isinstance(item, h5py.Dataset) else None
                )
            )
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise weights.ConversionError(f"it is not a readable HDF5 file ({exc})") from None
    wanted = collections.Counter(tuple(w.shape) for w in model.weights)
    found = collections.Counter(declared)
    if new_head:  # the classifiers' arrays differ (or one is absent): compare the rest
        wanted.subtract(tuple(w.shape) for w in _head_weights(model))
        extra, missing = found - wanted, +wanted - found
        if missing or sum(extra.values()) > 2 or any(len(s) > 2 for s in extra):
            raise weights.ConversionError(
                f"it holds {len(declared)} arrays that are not the model's weights and a classifier"
            )
        return
    if found != wanted:
        raise weights.ConversionError(
            f"it holds {len(declared)} arrays, the model has {len(model.weights)} weights"
            + ("" if len(declared) != len(model.weights) else " of other shapes")
        )


def _head_weights(model: keras.Model) -> list:
    try:
        return list(model.get_layer("pred").weights)
    except ValueError:
        return []


def preset_config(handle: str) -> tuple[str, dict]:
    """``(builder, arguments)`` of preset ``handle``, validated as data."""
    config = _read_json(handle, CONFIG_FILE)
    _validate(config, handle)
    inner = config["config"]
    return inner["builder"], from_json(inner["arguments"])


def preset_metadata(handle: str) -> dict:
    """``metadata.json`` of preset ``handle`` (empty if the preset has none)."""
    try:
        metadata = _read_json(handle, METADATA_FILE)
    except PresetFileMissing:
        return {}
    if not isinstance(metadata, dict):
        raise PresetError(f"Preset {handle}: {METADATA_FILE} is not a JSON object.")
    return metadata


def _ours(handle: str, metadata: dict) -> dict:
    ours = metadata.get("nonlocal_tf") or {}
    if not isinstance(ours, dict):
        raise PresetError(f"Preset {handle}: {METADATA_FILE}'s 'nonlocal_tf' is not an object.")
    return ours


def preset_entry(handle: str) -> WeightsEntry:
    """A catalogue entry for preset ``handle``: the one it was made from (its
    metadata), now pointing at the preset (``url``, ``format="keras_preset"``),
    so that what reads an entry reads a preset the same way. A preset made
    without an entry gets one from its config."""
    builder, arguments = preset_config(handle)
    ours = _ours(handle, preset_metadata(handle))
    record = ours.get("entry") or {}
    if not isinstance(record, dict):
        raise PresetError(f"Preset {handle}: its metadata's entry is not an object.")
    fields = {}
    for field in dataclasses.fields(WeightsEntry):
        if field.name in record:
            fields[field.name] = _typed(handle, field.name, record[field.name])
    for key in ("metrics", "builder_kwargs"):
        fields[key] = MappingProxyType(dict(fields.get(key) or {}))
    names = ours.get("class_names")
    if names is not None:
        fields["class_names"] = _typed(handle, "class_names", names)
    classes = arguments.pop("classes", fields.get("num_classes", 400))
    fields |= {
        "name": handle,
        "builder": builder,
        "url": handle,
        "format": "keras_preset",
        "num_classes": classes,
        "builder_kwargs": MappingProxyType(arguments),
        "sha256": ours.get("weights_sha256"),
        "archive_member": None,
        "label_set": None,
    }
    if fields.get("class_names") is not None and len(fields["class_names"]) != classes:
        fields["class_names"] = None  # names of another head: not these outputs'
    try:
        return WeightsEntry(**fields)
    except (TypeError, ValueError) as exc:
        raise PresetError(f"Preset {handle}: its metadata's entry is malformed ({exc}).") from None


# What each entry field read from a preset's metadata must be.
_FIELD_TYPES = {
    "metrics": dict,
    "builder_kwargs": dict,
    "class_names": list,
    "mean": list,
    "std": list,
    "frames": int,
    "rate": int,
    "crop": int,
    "num_classes": int,
    "size_mb": (int, float),
}


def _typed(handle: str, name: str, value):
    """A metadata field, type-checked, as the entry holds it."""
    wanted = _FIELD_TYPES.get(name, str)
    if value is None:
        return None
    if not isinstance(value, wanted) or isinstance(value, bool):
        raise PresetError(
            f"Preset {handle}: metadata field {name!r} has the wrong type. Received: {value!r:.80}"
        )
    if name == "metrics" and not all(
        isinstance(k, str) and isinstance(v, int | float) for k, v in value.items()
    ):
        raise PresetError(f"Preset {handle}: metadata metrics must map names to numbers.")
    if name in ("class_names", "mean", "std"):
        item = str if name == "class_names" else (int, float)
        if not all(isinstance(v, item) for v in value):
            raise PresetError(f"Preset {handle}: metadata field {name!r} has items of wrong type.")
        return tuple(value)
    return from_json(value) if isinstance(value, dict) else value


def _build(handle: str, builder: str, arguments: dict) -> keras.Model:
    try:
        return architecture.build(builder, **arguments)
    except (ValueError, TypeError, KeyError) as exc:
        message = " ".join(str(exc).split())[:300]
        raise PresetError(f"Preset {handle}: its config does not build: {message}") from None


def _validate(config, handle: str) -> None:
    """Refuses a config that is not one of this library's presets, as data:
    a known builder and arguments among its parameters, of JSON types and
    sane sizes."""
    where = f"Preset {handle}: {CONFIG_FILE}"
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise PresetError(f"{where} is not a keras-hub preset config (no 'config' object).")
    if config.get("nonlocal_tf_preset") != PRESET_FORMAT:
        raise PresetError(
            f"{where} is not a nonlocal_tf preset (format {PRESET_FORMAT}); "
            f"Received: registered_name={config.get('registered_name')!r:.80}"
        )
    inner = config["config"]
    builder, arguments = inner.get("builder"), inner.get("arguments")
    if not isinstance(builder, str) or builder not in architecture.builder_names():
        raise PresetError(f"{where} names an unknown builder. Received: builder={builder!r:.80}")
    if not isinstance(arguments, dict):
        raise PresetError(f"{where}: 'arguments' must be an object. Received: {arguments!r:.80}")
    allowed = _parameters(builder)
    unknown = sorted(set(arguments) - allowed)
    if unknown:
        raise PresetError(f"{where}: {builder} takes no argument(s) {unknown[:10]}.")
    refused = sorted(set(arguments) & set(_REFUSED))
    if refused:
        raise PresetError(f"{where}: a preset may not set {refused}.")
    for key, value in arguments.items():
        if not _is_data(value):
            raise PresetError(
                f"{where}: argument {key!r} is not plain data (numbers, strings, lists). "
                f"Received: {value!r:.80}"
            )
    _check_sizes(handle, arguments)


def _check_sizes(handle: str, arguments: Mapping) -> None:
    """Numbers that size the model, within `_LIMITS`, before anything is built."""
    for key in ("classes", "width_per_group"):
        value = arguments.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _LIMITS[key]
        ):
            raise PresetError(
                f"Preset {handle}: {key} must be an integer in [1, {_LIMITS[key]}]. "
                f"Received: {key}={value!r:.40}"
            )
    shape = arguments.get("input_shape")
    if shape is not None:
        sizes = shape if isinstance(shape, list | tuple) else [shape]
        for size in sizes:
            if size is not None and (
                not isinstance(size, int)
                or isinstance(size, bool)
                or not 1 <= size <= _LIMITS["input_size"]
            ):
                raise PresetError(
                    f"Preset {handle}: input_shape entries must be None or integers in "
                    f"[1, {_LIMITS['input_size']}]. Received: input_shape={shape!r:.60}"
                )


def _parameters(builder: str) -> set[str]:
    function, _ = architecture.arguments(builder)
    return set(inspect.signature(architecture.FUNCTIONS[function]).parameters)


def _is_data(value, depth: int = 0) -> bool:
    if depth > _JSON_DEPTH:
        return False
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list):
        return all(_is_data(v, depth + 1) for v in value)
    if isinstance(value, dict):  # e.g. nonlocal_kwargs: options of a layer, never objects
        return "class_name" not in value and all(
            isinstance(k, str) and _is_data(v, depth + 1) for k, v in value.items()
        )
    return False


def _fetch(handle: str, name: str) -> str:
    """A local path of file ``name`` of preset ``handle``: a regular file
    inside a local preset's folder, or the copy downloaded and cached by
    keras-hub (``huggingface_hub``, ``kagglehub``) for a remote handle."""
    scheme = handle.split("://", 1)[0] if "://" in handle else None
    if scheme is None:
        if not os.path.isdir(handle):
            raise PresetError(
                f"No preset {handle!r}: a preset is a folder or a "
                f"{' / '.join(s + '://' for s in REMOTE_SCHEMES)} handle."
            )
        return _inside(handle, name)
    if scheme not in REMOTE_SCHEMES:
        raise PresetError(
            f"Unknown preset scheme {scheme!r} in {handle!r}; known: {REMOTE_SCHEMES}."
        )
    try:
        from keras_hub.src.utils.preset_utils import get_file
    except ImportError:
        raise PresetError(
            f"Loading {handle} needs keras-hub: pip install 'nonlocal-tf[presets]'."
        ) from None
    try:
        return get_file(handle, name)
    except FileNotFoundError:
        raise PresetFileMissing(f"Preset {handle} has no {name}.") from None
    except Exception as exc:  # noqa: BLE001  (the hubs' clients raise their own HTTP errors)
        message = " ".join(str(exc).split())[:300]
        raise PresetError(f"Preset {handle}: {name} could not be fetched: {message}") from None


def _inside(folder: str, name: str) -> str:
    """``folder/name`` if it is a regular file whose real path lies inside the
    folder: a link out of it, a FIFO or a device is refused (reading one
    would leak another file, block forever, or never end)."""
    path = os.path.join(folder, name)
    if not os.path.lexists(path):
        raise PresetFileMissing(f"Preset {folder} has no {name}.")
    real, root = os.path.realpath(path), os.path.realpath(folder)
    if os.path.commonpath([real, root]) != root:
        raise PresetError(
            f"Preset {folder}: {name} is a link to {real}, outside the preset's folder; "
            "refused (copy the file into the folder)."
        )
    try:
        mode = os.stat(real).st_mode
    except OSError as exc:
        raise PresetError(f"Preset {folder}: {name} cannot be read ({exc.strerror}).") from None
    if not stat.S_ISREG(mode):
        raise PresetError(f"Preset {folder}: {name} is not a regular file; refused.")
    return real


def _read_json(handle: str, name: str):
    path = _fetch(handle, name)
    try:
        with open(path, "rb") as f:
            data = f.read(_JSON_BYTES + 1)
        if len(data) > _JSON_BYTES:
            raise PresetError(f"Preset {handle}: {name} is larger than {_JSON_BYTES} bytes.")
        return json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        if isinstance(exc, PresetError):
            raise
        message = f"{exc}"[:200] if not isinstance(exc, RecursionError) else "nested too deep"
        raise PresetError(f"Preset {handle}: {name} is not valid JSON ({message}).") from None


def _entry_record(entry: WeightsEntry) -> dict:
    return {f.name: to_json(getattr(entry, f.name)) for f in dataclasses.fields(entry)}


def _installed(package: str) -> str | None:
    """The installed version of ``package``, or None (a preset needs no keras-hub)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
