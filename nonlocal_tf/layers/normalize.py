"""In-model pixel normalisation."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="nonlocal_tf")
class Normalize(keras.layers.Layer):
    """``(x - mean) / std`` on RGB pixels in [0, 255], per channel or for all.

    Accepts uint8 or float input (cast to the compute dtype first), so exported
    models can take decoded frames as they are.

    Args:
        mean: a float or one per channel (RGB). Official: 114.75.
        std: a float or one per channel. Official: 57.375.
    """

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float], **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(m) for m in mean] if isinstance(mean, Sequence) else float(mean)
        self.std = [float(s) for s in std] if isinstance(std, Sequence) else float(std)
        if any(s <= 0 for s in (self.std if isinstance(self.std, list) else [self.std])):
            raise ValueError(f"`std` must be positive. Received: std={std}")

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        mean = ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
        std = ops.convert_to_tensor(self.std, dtype=self.compute_dtype)
        return (x - mean) / std

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"mean": self.mean, "std": self.std})
        return config
