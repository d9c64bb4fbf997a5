"""Copying trained weights from one model into another of the same
architecture by layer name: the classifier only when it fits (another
``classes`` gets a new head), anything else that differs refused."""

from __future__ import annotations

import logging

import keras

from nonlocal_tf import weights

log = logging.getLogger("nonlocal_tf")

# Settings that change how a layer runs, not what it computes.
_RUNTIME_SETTINGS = ("name", "trainable", "dtype", "implementation", "chunk_size")


def copy_by_name(source: keras.Model, target: keras.Model, what: str, how: str) -> None:
    """Copies ``source``'s weights into ``target`` layer by layer. ``what``
    names the weights in errors (a catalogue entry, a preset); ``how`` says how
    to build the architecture that fits them."""
    source_layers = {layer.name: layer for layer in source.layers if layer.weights}
    target_layers = [layer for layer in target.layers if layer.weights]
    missing = [layer.name for layer in target_layers if layer.name not in source_layers]
    if missing:
        raise weights.ConversionError(
            f"{what} has no weights for layers {missing[:10]} of {target.name}. "
            f"Build the matching architecture with {how}."
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
                f"Layer {layer.name!r} of {target.name} differs from the architecture of {what}: "
                f"{_arch_config(layer)} vs {_arch_config(src)}. Build it with {how}."
            )
        layer.set_weights(src.get_weights())


def _arch_config(layer) -> dict:
    config = dict(layer.get_config())
    for key in _RUNTIME_SETTINGS:
        config.pop(key, None)
    return config
