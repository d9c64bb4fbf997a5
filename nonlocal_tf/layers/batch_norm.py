"""BatchNormalization with a fused, copy-free PyTorch path."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="nonlocal_tf")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` (same arguments, weights, config and
    function) that, on the PyTorch backend, normalises channels-last inputs
    with PyTorch's own fused kernel on a channels-first view
    (`nonlocal_tf.layers.torch_ops.batch_norm`) instead of Keras's separate
    float32 operations: one read and one write of the activation, and only the
    input kept for the backward pass. Statistics are float32 either way; the
    moving averages are updated as Keras does (biased batch variance).

    Other backends, and settings the fused kernel does not cover (a mask,
    renorm, synchronized, a channel axis other than the last), run Keras's
    layer unchanged.

    The class has Keras's name on purpose: Keras names the groups of a
    ``.weights.h5`` file after layer classes, so files written with either
    class load into models built with the other.
    """

    def call(self, inputs, training=None, mask=None):
        if not self._fused_torch(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        from nonlocal_tf.layers import torch_ops

        gamma = ops.convert_to_tensor(self.gamma) if self.scale else None
        beta = ops.convert_to_tensor(self.beta) if self.center else None
        update = bool(training) and self.trainable
        y, mean, variance = torch_ops.batch_norm(
            inputs,
            gamma,
            beta,
            ops.convert_to_tensor(self.moving_mean),
            ops.convert_to_tensor(self.moving_variance),
            update,
            self.epsilon,
        )
        if update:
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
            self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
        return ops.cast(y, self.compute_dtype)

    def _fused_torch(self, inputs, mask) -> bool:
        rank = len(inputs.shape)
        return (
            keras.backend.backend() == "torch"
            and mask is None
            and not self.renorm
            and not self.synchronized
            and rank >= 3
            and self.axis in (-1, rank - 1)
        )
