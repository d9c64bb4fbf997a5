"""Keras-format weights (``.weights.h5``, ``.keras``) into the model the user
asked for, once: checked against the architecture they were saved from
(`nonlocal_tf.models.architecture`), the classifier left new when its shape
differs, anything else that differs refused before a weight is read."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping

import keras

from nonlocal_tf import weights
from nonlocal_tf.models import architecture

log = logging.getLogger("nonlocal_tf")


def check_architecture(
    model: keras.Model, function: str, arguments: Mapping, what: str, how: str
) -> None:
    """A `ConversionError` unless weights saved from ``function(**arguments)``
    (``what`` names them in the message, ``how`` says how to build the model
    they fit) mean the same in ``model``. A model that records no arguments
    (built by hand) is not checked here: the loaders' shape checks remain."""
    info = getattr(model, "info", {}) or {}
    if "arguments" not in info:
        return
    if info["builder"] != function:
        raise weights.ConversionError(
            f"{what} holds the weights of an {function}, {model.name} is an {info['builder']}. "
            f"Build it with {how}."
        )
    differ = architecture.differences(arguments, info["arguments"])
    if differ:
        raise weights.ConversionError(
            f"{model.name} differs from the architecture of {what}: {'; '.join(differ[:6])}. "
            f"Build it with {how}."
        )


def head_differs(model: keras.Model, arguments: Mapping) -> bool:
    """Whether ``model``'s classifier differs from that of a model built with
    ``arguments`` (another class count, or one of them has none)."""
    info = getattr(model, "info", {}) or {}
    mine = info.get("arguments")
    if mine is None:
        return False
    has_head = [bool(a.get("include_top", True)) for a in (mine, arguments)]
    if has_head[0] != has_head[1]:
        return True
    return has_head[0] and mine.get("classes") != arguments.get("classes")


def load_keras_weights(
    model: keras.Model, path: str, function: str, arguments: Mapping, what: str, how: str
) -> None:
    """Loads the Keras weights file ``path`` (saved from ``function(**arguments)``)
    into ``model``: checked first (`check_architecture`); a classifier of
    another shape is left as initialised (logged); everything else must load."""
    check_architecture(model, function, arguments, what, how)
    new_head = head_differs(model, arguments)
    try:
        # skip_mismatch only where the head differs, and only after the rest
        # was found equal: Keras then skips the classifier and nothing else
        # (its warnings, which print the classifier's values, are ours to give).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model.load_weights(path, skip_mismatch=new_head)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        message = " ".join(str(exc).split())[:300]
        raise weights.ConversionError(
            f"{what} does not load into {model.name}: {message}"
        ) from None
    if new_head and (getattr(model, "info", {}) or {}).get("arguments", {}).get("include_top"):
        log.warning("%s: new classifier, not loaded from %s.", model.name, what)
