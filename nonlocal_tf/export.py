"""Export (TensorFlow backend): a SavedModel with documented signatures, and
ONNX and TFLite files for a fixed clip shape.

Signatures of an exported SavedModel video classifier:
- ``serve`` (also ``serving_default``): ``video`` ``[B, T, H, W, 3]`` float32 RGB
  in [0, 255] (any B/T/H/W the architecture accepts) -> ``{"logits", "probs"}``.
- ``serve_uint8``: the same for uint8 frames, as decoders produce them.
- ``serve_views``: ``views`` ``[B, V, T, H, W, 3]`` float32 -> ``{"probs"}``, the
  probabilities summed over the V views of each video (the official 30-view
  test sums softmax vectors), and ``{"mean_probs"}`` averaged.

The model must take RGB in [0, 255] (built with ``include_preprocessing=True``)
and end with its ``predictions`` layer; the logits are read from ``pred``.

`export_onnx` and `export_tflite` take a model built for one clip shape (a
static ``input_shape``) and write it with every non-local block on a path of
plain tensor operations (`exportable`: the materialised pairwise matrix, or
the reassociated dot product), since the chunked path's loop has no ONNX or
TFLite operation; TFLite also gets the folded 3D convolutions and pools (2D
convolutions and slice maxima), as it has no 3D max pool. Same weights, same
outputs.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping

import keras
import tensorflow as tf

from nonlocal_tf.layers import NonLocalBlock, VideoConv3D, VideoMaxPooling3D
from nonlocal_tf.utils import iter_layers

QUANTIZATIONS = ("float32", "float16", "dynamic_int8")


def _logits_model(model: keras.Model) -> keras.Model:
    try:
        pred = model.get_layer("pred")
    except ValueError as exc:
        raise ValueError(
            f"{model.name} has no 'pred' layer: export needs a classifier (include_top=True)."
        ) from exc
    outputs = pred.output
    if "predictions_map" in [layer.name for layer in model.layers]:  # fully-convolutional head
        outputs = keras.layers.GlobalAveragePooling3D(dtype="float32", name="logits_mean")(outputs)
    return keras.Model(model.inputs, [keras.ops.cast(outputs, "float32"), model.output])


def export_saved_model(model: keras.Model, path: str, multi_label: bool = False) -> str:
    """Writes ``model`` as a SavedModel at ``path`` with the signatures above.

    ``multi_label`` documents that ``probs`` are per-class sigmoids (Charades);
    the model's own output activation is what is exported either way.
    """
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "SavedModel export needs the TensorFlow backend (KERAS_BACKEND=tensorflow)."
        )
    if len(model.inputs) != 1 or model.inputs[0].shape[-1] != 3 or len(model.inputs[0].shape) != 5:
        raise ValueError(
            f"Expected a video model with one (B, T, H, W, 3) input; got {model.inputs}."
        )
    both = _logits_model(model)
    spec = [None] + list(model.inputs[0].shape[1:])

    video_spec = tf.TensorSpec(spec, tf.float32, name="video")

    # Inputs of another rank, channel count or dtype are refused by the
    # signatures; clips too short or frames too small for the model's windows
    # by the layers' own checks (`nonlocal_tf.layers.checks`); the rest here,
    # so that no input ends as NaN scores without an error. One function: the
    # model is traced once and stored once, and every signature calls it.
    @tf.function(input_signature=[video_spec], autograph=False)
    def classify(video):
        shape = tf.shape(video)
        checks = [
            tf.debugging.assert_positive(shape[1:4], message="video: no frame, or empty frames"),
            tf.debugging.assert_all_finite(video, "video: NaN or infinite pixel values"),
        ]
        with tf.control_dependencies(checks):
            video = tf.identity(video)
        logits, probs = both(video, training=False)
        tf.debugging.assert_all_finite(
            logits, "the scores overflowed: the video must be RGB in [0, 255]"
        )
        return {"logits": logits, "probs": tf.cast(probs, "float32")}

    def classify_views(views):
        shape = tf.shape(views)
        tf.debugging.assert_positive(shape[1], message="views: a video needs at least one view")
        flat = tf.reshape(views, tf.concat([[shape[0] * shape[1]], shape[2:]], 0))
        probs = classify(flat)["probs"]
        probs = tf.reshape(probs, tf.stack([shape[0], shape[1], -1]))
        return {"probs": tf.reduce_sum(probs, axis=1), "mean_probs": tf.reduce_mean(probs, axis=1)}

    archive = keras.export.ExportArchive()
    archive.track(both)
    archive.add_endpoint("serve", lambda video: classify(video), input_signature=[video_spec])
    archive.add_endpoint(
        "serve_uint8",
        lambda video: classify(tf.cast(video, tf.float32)),
        input_signature=[tf.TensorSpec(spec, tf.uint8, name="video")],
    )
    archive.add_endpoint(
        "serve_views",
        classify_views,
        input_signature=[tf.TensorSpec([None, None, *spec[1:]], tf.float32, name="views")],
    )
    archive.write_out(path, verbose=False)
    return path


@contextlib.contextmanager
def exportable(model: keras.Model, folded: bool = False) -> Iterator[keras.Model]:
    """``model`` with loop-free non-local blocks (and, with ``folded``, folded
    3D convolutions and pools) while the block runs; restored afterwards."""
    changed = []
    for layer in iter_layers(model, into_layers=True):
        if isinstance(layer, NonLocalBlock):
            path = "reassociated" if layer.instantiation == "dot_product" else "naive"
        elif folded and isinstance(layer, VideoConv3D | VideoMaxPooling3D):
            path = "folded"
        else:
            continue
        changed.append((layer, layer.implementation))
        layer.implementation = path
    try:
        yield model
    finally:
        for layer, implementation in changed:
            layer.implementation = implementation


def _static_input(model: keras.Model) -> tuple[int, ...]:
    shape = tuple(model.inputs[0].shape[1:])
    if len(model.inputs) != 1 or None in shape:
        raise ValueError(
            "ONNX and TFLite export need a model built for one clip shape (input_shape=(T, H, W, 3)). "
            f"Received: input shape {shape}"
        )
    return shape


def export_onnx(model: keras.Model, path: str) -> str:
    """Writes ``model`` (a static clip shape, batch free) as ONNX through
    Keras's exporter (tf2onnx: ``pip install nonlocal-tf[onnx]``)."""
    _static_input(model)
    with exportable(model):
        model.export(path, format="onnx", verbose=False)
    return path


def export_tflite(model: keras.Model, path: str, quantization: str = "float32") -> str:
    """Writes ``model`` as a TFLite flat buffer for one clip of its static
    shape: ``float32``, ``float16`` weights, or ``dynamic_int8`` (weights in
    int8, activations in float, no calibration data)."""
    return export_tflite_files(model, {quantization: path})[quantization]


def export_tflite_files(model: keras.Model, paths: Mapping[str, str]) -> dict[str, str]:
    """Writes one TFLite file per quantization (``{quantization: path}``, see
    `export_tflite`) from one traced graph of ``model``."""
    bad = sorted(set(paths) - set(QUANTIZATIONS))
    if bad or not paths:
        raise ValueError(
            f"`quantization` must be one of {QUANTIZATIONS}. Received: {', '.join(bad) or 'none'}"
        )
    shape = _static_input(model)
    with exportable(model, folded=True), tempfile.TemporaryDirectory() as folder:
        archive = keras.export.ExportArchive()  # the variables tracked, as in a SavedModel
        archive.track(model)
        archive.add_endpoint(
            "serve",
            lambda video: model(video, training=False),
            input_signature=[tf.TensorSpec((1, *shape), tf.float32, name="video")],
        )
        archive.write_out(folder, verbose=False)
        for quantization, path in paths.items():
            converter = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=["serve"])
            if quantization != "float32":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if quantization == "float16":
                converter.target_spec.supported_types = [tf.float16]
            flat = converter.convert()
            with open(path, "wb") as f:
                f.write(flat)
    return dict(paths)
