"""Reading a checkpoint of any supported format into official-named blobs, and
loading a checkpoint file or URL into a model."""

from __future__ import annotations

import logging
import os

import keras
import numpy as np

from nonlocal_tf.weights import names
from nonlocal_tf.weights.convert import ConversionReport, assign_blobs, inflate_from_blobs
from nonlocal_tf.weights.download import fetch
from nonlocal_tf.weights.safe_pickle import CheckpointFormatError, load_checkpoint

log = logging.getLogger("nonlocal_tf")


def load_weights(model: keras.Model, source: str, strict: bool = True) -> ConversionReport | None:
    """Loads a checkpoint file or URL into ``model``: Caffe2 ``.pkl``, PySlowFast
    ``.pyth``, mmaction2 or torchvision ``.pth`` (converted by name, strictly
    unless ``strict=False``; an image checkpoint into a video model is
    inflated), or a Keras ``.weights.h5``. Catalogue names:
    `nonlocal_tf.pretrained.load_weights`."""
    source = os.fspath(source)
    if source.startswith(("http://", "https://", "file://")):
        source = fetch(source, subdir="downloads")
    if not os.path.isfile(source):
        raise ValueError(
            "`weights` must be a checkpoint file, a URL or a catalogue name "
            f"(nonlocal_tf.pretrained.CATALOG). Received: weights={source!r}"
        )
    if source.endswith(".h5"):
        model.load_weights(source)
        return None
    blobs = read_blobs(source)
    conv1 = blobs.get("conv1_w")
    if conv1 is not None and np.ndim(conv1) == 4 and len(model.inputs[0].shape) == 5:
        report = inflate_from_blobs(model, blobs)  # an image checkpoint into a video model
    else:
        report = assign_blobs(model, blobs, strict=strict)
    log.info("Loaded %s into %s: %s", source, model.name, report.summary().replace("\n", "; "))
    return report


def read_blobs(path: str, fmt: str | None = None) -> dict[str, np.ndarray]:
    """Blobs of the checkpoint at ``path`` under the official Caffe2 names.

    ``fmt`` is one of ``caffe2_pkl``, ``pyslowfast_pyth``, ``mmaction2_pth``,
    ``torchvision_pth``; by default it is recognised from the content. Keys a
    format's table does not know are kept under their own names, so that the
    strict assignment reports them.
    """
    obj = load_checkpoint(path)
    fmt = fmt or detect_format(obj, path)
    if fmt not in _STATES:
        raise ValueError(f"`fmt` must be one of {sorted(_STATES)}. Received: fmt={fmt!r}")
    state, rename = _STATES[fmt]
    try:
        state = state(obj)
    except (KeyError, TypeError, AttributeError) as exc:
        raise CheckpointFormatError(f"{path} is not a {fmt} checkpoint (no {exc}).") from None
    if not isinstance(state, dict):
        raise CheckpointFormatError(f"{path}: the {fmt} weights are not a dict of tensors.")
    blobs, unknown = names.rename_state_dict(state, rename)
    for key in unknown:
        blobs[str(key)] = state[key]
    # numbers and arrays only: metadata (strings, placeholders of other frameworks) is dropped
    return {k: v for k, v in blobs.items() if isinstance(v, np.ndarray | np.number | int | float)}


def _caffe2_blobs(obj):
    return obj["blobs"] if "blobs" in obj else obj


_STATES = {
    "caffe2_pkl": (_caffe2_blobs, lambda key: str(key)),
    "pyslowfast_pyth": (lambda o: o["model_state"], names.from_pyslowfast),
    "mmaction2_pth": (lambda o: o.get("state_dict", o), names.from_mmaction2),
    "torchvision_pth": (lambda o: o.get("state_dict", o), names.from_torchvision),
}


def detect_format(obj, path: str) -> str:
    if not isinstance(obj, dict):
        raise CheckpointFormatError(
            f"{path}: expected a dict checkpoint, got {type(obj).__name__}."
        )
    if "blobs" in obj or "conv1_w" in obj:
        return "caffe2_pkl"
    if "model_state" in obj:
        return "pyslowfast_pyth"
    state = obj.get("state_dict", obj)
    keys = [k for k in state if isinstance(k, str)]
    if any(k.startswith(("backbone.", "module.backbone.")) for k in keys):
        return "mmaction2_pth"
    if "conv1.weight" in keys:
        return "torchvision_pth"
    raise CheckpointFormatError(
        f"{path}: not a recognised checkpoint (Caffe2 blobs, PySlowFast model_state, mmaction2 "
        f"state_dict or torchvision ResNet). First keys: {keys[:5]}"
    )
