"""ImageNet inflation: 2D ResNet weights into C2D / I3D models (official
``checkpoints.initialize_master_gpu_model_params``): each 2D kernel is repeated
over the temporal kernel size T and divided by T, so a clip of identical frames
gives the 2D features. One mechanism serves Keras image models and ImageNet
checkpoints: the 2D weights become official-named blobs, inflated on assignment.
"""

from __future__ import annotations

import keras

from nonlocal_tf.weights.convert import (
    ConversionReport,
    inflate_from_blobs,
    inflate_kernel,
    model_to_blobs,
)


def inflate_weights(image_model: keras.Model, video_model: keras.Model) -> ConversionReport:
    """Copies ``image_model``'s weights into ``video_model`` by layer name.

    Convolutions are inflated; BatchNormalization is copied, or folded into
    the `FrozenAffine` of a frozen-BN video model; non-local blocks present in
    both are copied, new ones keep their initialisation; ``pred`` is copied
    only when its shape matches (a new head, as the official loader skips it).

    Raises:
        ConversionError: when a video layer other than a non-local block has no
            2D counterpart, or shapes do not match.
    """
    return inflate_from_blobs(video_model, model_to_blobs(image_model))


__all__ = ["inflate_kernel", "inflate_weights"]
