"""Backend-neutral helpers for the tests."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from nonlocal_tf.models import VARIANTS

TINY = {"width_per_group": 4, "classes": 5}  # the narrowest models the tests build


def tiny_frames(name: str) -> int:
    """Shortest clip of variant ``name`` whose res3 still holds a whole
    temporal group of 4 frames."""
    return 8 if VARIANTS[name].clip.stem == "resnet_video" else 32


def to_numpy(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def gradients(layer, x: np.ndarray, seed: int = 0, training: bool = False) -> list[np.ndarray]:
    """Gradients of ``sum(layer(x, training) * c)`` (fixed random ``c``) with
    respect to the input and every trainable weight, in the order [input, *weights]."""
    out_shape = tuple(layer(x, training=False).shape)
    cot = np.random.default_rng(seed).normal(size=out_shape).astype("float32")
    backend = keras.backend.backend()
    weights = layer.trainable_weights
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = tf.reduce_sum(layer(xt, training=training) * cot)
        grads = tape.gradient(loss, [xt, *weights])
    elif backend == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss_fn(xin, tv):
            out, _ = layer.stateless_call(tv, non_trainable, xin, training=training)
            return (out * cot).sum()

        gx, gw = jax.grad(loss_fn, argnums=(0, 1))(x, trainable)
        grads = [gx, *gw]
    else:
        import torch

        xt = torch.tensor(x, requires_grad=True)
        loss = (layer(xt, training=training) * torch.tensor(cot)).sum()
        grads = torch.autograd.grad(loss, [xt, *[w.value for w in weights]])
    return [to_numpy(g) for g in grads]
