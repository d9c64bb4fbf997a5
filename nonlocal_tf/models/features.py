"""Pooled features of any named layer of a model, for retrieval, clustering or
a classifier of one's own."""

from __future__ import annotations

import keras

from nonlocal_tf.models.functional import LeanFunctional


def feature_extractor(model: keras.Model, layer: str | None = None) -> keras.Model:
    """A model from ``model``'s input to the output of ``layer``, averaged over
    its time and space positions: ``(B, channels)``.

    ``layer`` defaults to the last residual block's output, pooled (``pool5``'s
    input in a video ResNet: 2048 features for R50/R101). A layer whose output
    is already a vector is returned as it is.
    """
    name = layer or _last_residual(model)
    try:
        output = model.get_layer(name).output
    except ValueError:
        names = [layer.name for layer in model.layers]
        raise ValueError(
            f"{model.name} has no layer {name!r}. Received: layer={layer!r}; layers end with "
            f"{names[-8:]}"
        ) from None
    pools = {
        3: keras.layers.GlobalAveragePooling1D,
        4: keras.layers.GlobalAveragePooling2D,
        5: keras.layers.GlobalAveragePooling3D,
    }
    rank = len(output.shape)
    if rank in pools:
        output = pools[rank](dtype="float32", name=f"{name}_pooled")(output)
    return LeanFunctional(model.inputs, output, name=f"{model.name}_features")


def _last_residual(model: keras.Model) -> str:
    blocks = [layer.name for layer in model.layers if layer.name.startswith("res5_")]
    relus = [name for name in blocks if name.endswith("_relu") and "branch" not in name]
    if not relus:
        raise ValueError(f"{model.name} has no res5 block: name the layer (`layer=`).")
    return relus[-1]
