"""Presets: converted weights in keras-hub's on-disk format, so that a model
outlives its publisher moving the original checkpoint.

A preset is a folder (local, or a ``hf://`` / ``kaggle://`` handle fetched
through keras-hub's own preset loader, with its cache and its auth) of:

- ``config.json``: keras-hub's layout (``module``, ``class_name``,
  ``registered_name``, ``config``), whose ``config`` names a builder of this
  library (a named variant, an image variant or ``VideoResNet``) and its
  arguments. It is read as data: the builder must be one of the table's and
  every argument one of its parameters, of a JSON type. Nothing in a preset is
  deserialised into objects, imported or unpickled.
- ``model.weights.h5``: `keras.Model.save_weights` of the built model.
- ``metadata.json``: keras-hub's fields (Keras and keras-hub versions,
  parameter count, date) and this library's: the catalogue entry, the class
  names, the source checkpoint's url and sha256, the conversion report and
  the weights file's sha256, which loading checks first.

``save_to_preset(model, folder, builder=..., arguments=...)`` writes one,
``from_preset(handle)`` builds the model back. A preset is uploaded with
keras-hub's ``keras_hub.upload_preset("hf://user/name", folder)``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import time
from types import MappingProxyType

import keras

from nonlocal_tf import files, models, weights
from nonlocal_tf.pretrained import transfer
from nonlocal_tf.pretrained.catalog import BUILDERS, WeightsEntry

CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "model.weights.h5"
REMOTE_SCHEMES = ("hf", "kaggle", "gs", "modelscope")  # keras-hub's get_file knows these
PRESET_FORMAT = 1
# Builder arguments a preset may not set: they load weights or take objects.
_REFUSED = ("weights", "input_tensor")


class PresetError(ValueError):
    """A preset that cannot be loaded: missing, malformed, or not data."""


class PresetFileMissing(PresetError):
    """A preset lacks a file."""


def is_preset(source: str) -> bool:
    """Whether ``source`` names a preset: a remote handle or a folder with a config."""
    source = os.fspath(source)
    if source.split("://", 1)[0] in REMOTE_SCHEMES and "://" in source:
        return True
    return os.path.isdir(source) and os.path.exists(os.path.join(source, CONFIG_FILE))


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
    ``builder(**arguments)`` builds (a key of
    `nonlocal_tf.pretrained.catalog.BUILDERS`; by default those of the
    catalogue ``entry`` it came from), with its ``class_names``, its
    ``source`` (``{"url", "sha256"}``) and the ``conversion`` report, where
    known. Each file is written atomically, ``config.json`` last; returns
    ``folder``.

    Example: a model fine-tuned by ``zoo.train --model=i3d_nl5_r50_8x8
    --classes=10`` is ``save_to_preset(model, "my_preset",
    "i3d_nl5_r50_8x8", {"classes": 10, "include_preprocessing": True})``.
    """
    if builder is None:
        if entry is None:
            raise ValueError("save_to_preset needs a `builder` or a catalogue `entry`.")
        builder = entry.builder
        arguments = entry.arguments() if arguments is None else arguments
    config = {
        "module": "nonlocal_tf.models",
        "class_name": builder,
        "registered_name": f"nonlocal_tf>{builder}",
        "config": {"builder": builder, "arguments": _jsonable(dict(arguments or {}))},
        "nonlocal_tf_preset": PRESET_FORMAT,
    }
    _validate(config, folder)  # what loading will accept ...
    built = _build(folder, builder, config["config"]["arguments"])
    if [tuple(w.shape) for w in built.weights] != [tuple(w.shape) for w in model.weights]:
        raise PresetError(  # ... and what it will build
            f"Preset {folder}: {builder}(**arguments) does not build {model.name}'s architecture "
            f"({len(built.weights)} weights against {len(model.weights)}, or other shapes)."
        )
    del built
    os.makedirs(folder, exist_ok=True)
    weights_path = os.path.join(folder, WEIGHTS_FILE)
    with files.atomic_path(weights_path) as tmp:
        model.save_weights(tmp)
    names = list(class_names) if class_names else None
    if names is None and entry is not None and entry.class_names:
        names = list(entry.class_names)
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


# ----------------------------------------------------------------- loading
def from_preset(handle: str, **kwargs) -> keras.Model:
    """The model of preset ``handle`` (a folder, ``hf://org/name`` or
    ``kaggle://org/model/keras/variant[/version]``) with its weights. Keyword
    arguments override the builder's (``classes=10``: a new classifier,
    everything else loaded; ``conv_implementation``, ``input_shape``, ...)."""
    handle = os.fspath(handle)
    builder, arguments = preset_config(handle)
    metadata = preset_metadata(handle)
    path = _fetch(handle, WEIGHTS_FILE)
    expected = (metadata.get("nonlocal_tf") or {}).get("weights_sha256")
    digest = weights.sha256_of(path) if expected is not None else None
    if digest != expected:
        raise PresetError(
            f"Preset {handle}: {WEIGHTS_FILE} has sha256 {digest}, its metadata says "
            f"{expected}: the file is truncated or altered."
        )
    model = _build(handle, builder, arguments)
    try:
        # Keras skips arrays of layers the model lacks (a config without the
        # non-local blocks loads "fine"): the counts must agree first.
        stored = _array_count(path)
        if stored != len(model.weights):
            raise ValueError(
                f"it holds {stored} arrays, the model has {len(model.weights)} weights"
            )
        model.load_weights(path)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        message = " ".join(str(exc).split())[:300]
        raise PresetError(
            f"Preset {handle}: {WEIGHTS_FILE} does not load into the model its config "
            f"describes ({builder}): {message}"
        ) from None
    if not kwargs:
        return model
    target = _build(handle, builder, {**arguments, **kwargs})
    transfer.copy_by_name(model, target, f"preset {handle}", "from_preset(handle) alone")
    return target


def _array_count(path: str) -> int:
    """Arrays in a Keras ``.weights.h5`` file."""
    import h5py

    arrays = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda _, item: arrays.append(1) if isinstance(item, h5py.Dataset) else None)
    return len(arrays)


def load_preset_weights(model: keras.Model, handle: str) -> None:
    """Copies the weights of preset ``handle`` into ``model`` by layer name (a
    classifier of another size is left new; another architecture is refused)."""
    transfer.copy_by_name(
        from_preset(handle), model, f"preset {handle}", f"from_preset({handle!r})"
    )


def preset_config(handle: str) -> tuple[str, dict]:
    """``(builder, arguments)`` of preset ``handle``, validated as data."""
    config = _read_json(handle, CONFIG_FILE)
    _validate(config, handle)
    inner = config["config"]
    return inner["builder"], _tuples(inner["arguments"])


def preset_metadata(handle: str) -> dict:
    """``metadata.json`` of preset ``handle`` (empty if the preset has none)."""
    try:
        return _read_json(handle, METADATA_FILE)
    except PresetFileMissing:
        return {}


def preset_entry(handle: str) -> WeightsEntry:
    """A catalogue entry for preset ``handle``: the one it was made from (its
    metadata), now pointing at the preset (``url``, ``format="keras_preset"``),
    so that what reads an entry (the zoo commands' ``--model``) reads a preset
    the same way. A preset made without an entry gets one from its config."""
    builder, arguments = preset_config(handle)
    ours = preset_metadata(handle).get("nonlocal_tf") or {}
    record = dict(ours.get("entry") or {})
    arguments = dict(arguments)
    known = {f.name for f in dataclasses.fields(WeightsEntry)}
    fields = {k: _tuples(v) for k, v in record.items() if k in known}
    for key in ("metrics", "builder_kwargs"):
        fields[key] = MappingProxyType(dict(fields.get(key) or {}))
    if ours.get("class_names"):
        fields["class_names"] = tuple(ours["class_names"])
    fields |= {
        "name": handle,
        "builder": builder,
        "url": handle,
        "format": "keras_preset",
        "num_classes": arguments.pop("classes", fields.get("num_classes", 400)),
        "builder_kwargs": MappingProxyType(arguments),
        "sha256": ours.get("weights_sha256"),
        "archive_member": None,
    }
    try:
        return WeightsEntry(**fields)
    except (TypeError, ValueError) as exc:
        raise PresetError(f"Preset {handle}: its metadata's entry is malformed ({exc}).") from None


def _build(handle: str, builder: str, arguments: dict) -> keras.Model:
    try:
        return BUILDERS[builder](**arguments)
    except (ValueError, TypeError, KeyError) as exc:
        message = " ".join(str(exc).split())[:300]
        raise PresetError(f"Preset {handle}: its config does not build: {message}") from None


def _validate(config, handle: str) -> None:
    """Refuses a config that is not one of this library's presets, as data:
    a known builder and arguments among its parameters, of JSON types."""
    where = f"Preset {handle}: {CONFIG_FILE}"
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise PresetError(f"{where} is not a keras-hub preset config (no 'config' object).")
    if config.get("nonlocal_tf_preset") != PRESET_FORMAT:
        raise PresetError(
            f"{where} is not a nonlocal_tf preset (format {PRESET_FORMAT}); "
            f"Received: registered_name={config.get('registered_name')!r}"
        )
    inner = config["config"]
    builder, arguments = inner.get("builder"), inner.get("arguments")
    if builder not in BUILDERS:
        raise PresetError(f"{where} names an unknown builder. Received: builder={builder!r}")
    if not isinstance(arguments, dict):
        raise PresetError(f"{where}: 'arguments' must be an object. Received: {arguments!r}")
    allowed = _parameters(builder)
    unknown = sorted(set(arguments) - allowed)
    if unknown:
        raise PresetError(f"{where}: {builder} takes no argument(s) {unknown}.")
    refused = sorted(set(arguments) & set(_REFUSED))
    if refused:
        raise PresetError(f"{where}: a preset may not set {refused}.")
    for key, value in arguments.items():
        if not _is_data(value):
            raise PresetError(
                f"{where}: argument {key!r} is not plain data (numbers, strings, lists). "
                f"Received: {value!r}"
            )


def _parameters(builder: str) -> set[str]:
    function = BUILDERS[builder]
    if builder in models.VARIANTS:  # a variant passes its keyword arguments to VideoResNet
        function = models.VideoResNet
    elif builder in models.IMAGE_VARIANTS:
        function = models.ImageResNet
    return set(inspect.signature(function).parameters)


def _is_data(value) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list):
        return all(_is_data(v) for v in value)
    if isinstance(value, dict):  # e.g. nonlocal_kwargs: options of a layer, never objects
        return "class_name" not in value and all(
            isinstance(k, str) and _is_data(v) for k, v in value.items()
        )
    return False


def _fetch(handle: str, name: str) -> str:
    """A local path of file ``name`` of preset ``handle``, downloaded and cached
    by keras-hub (``huggingface_hub``, ``kagglehub``) for a remote handle."""
    scheme = handle.split("://", 1)[0] if "://" in handle else None
    if scheme is None:
        if not os.path.isdir(handle):
            raise PresetError(
                f"No preset {handle!r}: a preset is a folder or a "
                f"{' / '.join(s + '://' for s in REMOTE_SCHEMES)} handle."
            )
        path = os.path.join(handle, name)
        if not os.path.exists(path):
            raise PresetFileMissing(f"Preset {handle} has no {name}.")
        return path
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


def _read_json(handle: str, name: str):
    path = _fetch(handle, name)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PresetError(f"Preset {handle}: {name} is not valid JSON ({exc}).") from None


def _jsonable(value):
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _tuples(value):
    """JSON lists back to the tuples the builders document."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _entry_record(entry: WeightsEntry) -> dict:
    return {f.name: _jsonable(getattr(entry, f.name)) for f in dataclasses.fields(entry)}


def _installed(package: str) -> str | None:
    """The installed version of ``package``, or None (a preset needs no keras-hub)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
