"""ImageNet inflation: 2D ResNet weights into C2D / I3D models (official
``checkpoints.initialize_master_gpu_model_params``): each 2D kernel is repeated
over the temporal kernel size T and divided by T, so a clip of identical frames
gives the 2D features."""

from __future__ import annotations

import keras
import numpy as np

from nonlocal_tf.layers import FrozenAffine, NonLocalBlock

HEAD_LAYERS = ("pred",)


def inflate_kernel(kernel_2d: np.ndarray, temporal_size: int) -> np.ndarray:
    """(kh, kw, in, out) -> (T, kh, kw, in, out), repeated and divided by T."""
    kernel_2d = np.asarray(kernel_2d)
    return np.repeat(kernel_2d[None], temporal_size, axis=0) / temporal_size


def inflate_weights(
    image_model: keras.Model, video_model: keras.Model, strict: bool = True
) -> dict:
    """Copies ``image_model``'s weights into ``video_model`` by layer name.

    Convolutions are inflated; BatchNormalization is copied, or folded into
    the `FrozenAffine` of a frozen-BN video model; non-local blocks present in
    both are copied. ``pred`` is copied only when its shape matches (a new
    head keeps its initialisation, as the official loader skips it).

    Returns:
        ``{"inflated": [...], "copied": [...], "skipped": [...]}`` layer names.

    Raises:
        ValueError: with ``strict``, when a video layer with weights (other than
            the head or a non-local block, which are new layers) has no
            counterpart, or shapes do not match.
    """
    report = {"inflated": [], "copied": [], "skipped": []}
    missing = []
    for layer in video_model.layers:
        if not layer.weights:
            continue
        try:
            source = image_model.get_layer(layer.name)
        except ValueError:
            if layer.name in HEAD_LAYERS or isinstance(layer, NonLocalBlock):
                report["skipped"].append(layer.name)
            else:
                missing.append(layer.name)
            continue
        if isinstance(layer, keras.layers.Conv3D):
            kernel = source.get_weights()[0]
            t = layer.kernel.shape[0]
            _assign(layer, [inflate_kernel(kernel, t)])
            report["inflated"].append(layer.name)
        elif isinstance(layer, FrozenAffine) and isinstance(
            source, keras.layers.BatchNormalization
        ):
            gamma, beta, mean, var = source.get_weights()
            scale = gamma / np.sqrt(var + source.epsilon)
            _assign(layer, [scale, beta - mean * scale])
            report["copied"].append(layer.name)
        elif layer.name in HEAD_LAYERS and [w.shape for w in layer.weights] != [
            w.shape for w in source.weights
        ]:
            report["skipped"].append(layer.name)
        else:
            _assign(layer, source.get_weights())
            report["copied"].append(layer.name)
    if missing and strict:
        raise ValueError(f"These video layers have no 2D counterpart: {missing}")
    report["skipped"].extend(missing)
    return report


def _assign(layer, values):
    expected = [tuple(w.shape) for w in layer.weights]
    got = [tuple(np.shape(v)) for v in values]
    if expected != got:
        raise ValueError(f"Layer {layer.name!r}: expected weight shapes {expected}, got {got}.")
    layer.set_weights(values)


__all__ = ["inflate_kernel", "inflate_weights"]
