"""Training callbacks specific to the official recipe."""

from __future__ import annotations

import logging

import keras

from nonlocal_tf.utils import iter_layers

log = logging.getLogger("nonlocal_tf")


def recompute_bn_statistics(model: keras.Model, batches, num_batches: int) -> int:
    """Official "precise BN" (``bn_helper.py``): replaces every BN's moving mean
    and variance by their averages over ``num_batches`` training batches (the
    population statistics), leaving all other weights untouched. Returns the
    number of batches used."""
    layers = [
        layer
        for layer in iter_layers(model, into_layers=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    if not layers or num_batches <= 0:
        return 0
    momenta = [layer.momentum for layer in layers]
    used = 0
    try:
        for i, batch in enumerate(batches, start=1):
            if i > num_batches:
                break
            x = batch[0] if isinstance(batch, tuple | list) else batch
            for layer in layers:  # cumulative average: moving_i = mean of batch stats 1..i
                layer.momentum = 1.0 - 1.0 / i
            model(x, training=True)
            used = i
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    return used


class PreciseBatchNorm(keras.callbacks.Callback):
    """Recomputes BN statistics over ``num_batches`` batches of ``dataset`` at
    the end of every epoch, before validation metrics and checkpoints use them."""

    def __init__(self, dataset, num_batches: int = 200):
        super().__init__()
        self.dataset, self.num_batches = dataset, num_batches

    def on_epoch_end(self, epoch, logs=None):
        used = recompute_bn_statistics(self.model, iter(self.dataset), self.num_batches)
        log.info("precise BN: statistics recomputed over %d batches", used)
