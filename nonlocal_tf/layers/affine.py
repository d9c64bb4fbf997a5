"""Frozen BatchNormalization: a fixed per-channel affine map."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="nonlocal_tf")
class FrozenAffine(keras.layers.Layer):
    """``y = gamma * x + beta`` per channel, not trained.

    The official long-clip models (32x4, 128x1) replace every BatchNormalization
    by this map (Caffe2 ``AffineNd``), with the statistics folded in:
    ``gamma = s / sqrt(var + eps)``, ``beta = b - mean * gamma``. The weights are
    named ``gamma`` and ``beta`` like a BN's so checkpoints map the same way.

    Args:
        gamma_initializer, beta_initializer: initial values (ones, zeros).
        trainable: False by default; the official ``AffineNdGradient`` only
            passes gradients to the input.
    """

    def __init__(
        self, gamma_initializer="ones", beta_initializer="zeros", trainable=False, **kwargs
    ):
        super().__init__(trainable=trainable, **kwargs)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.beta_initializer = keras.initializers.get(beta_initializer)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"The channel axis must be known. Received: input_shape={input_shape}")
        self.gamma = self.add_weight(
            name="gamma", shape=(channels,), initializer=self.gamma_initializer
        )
        self.beta = self.add_weight(
            name="beta", shape=(channels,), initializer=self.beta_initializer
        )

    def call(self, inputs):
        gamma = ops.cast(self.gamma, inputs.dtype)
        beta = ops.cast(self.beta, inputs.dtype)
        return inputs * gamma + beta

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "gamma_initializer": keras.initializers.serialize(self.gamma_initializer),
                "beta_initializer": keras.initializers.serialize(self.beta_initializer),
            }
        )
        return config
