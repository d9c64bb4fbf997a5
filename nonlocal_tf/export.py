"""Export (TensorFlow backend): a SavedModel with documented signatures, and
ONNX and TFLite files for a fixed clip shape.

Signatures of an exported SavedModel video classifier:
- ``serve`` (also ``serving_default``): ``video`` ``[B, T, H, W, 3]`` float32 RGB
  in [0, 255] (any B/T/H/W the architecture accepts) -> ``{"logits", "probs",
  "top_class"}`` (the name of each video's most probable class).
- ``serve_uint8``: the same for uint8 frames, as decoders produce them.
- ``serve_views``: ``views`` ``[B, V, T, H, W, 3]`` float32 -> ``{"probs"}``, the
  probabilities summed over the V views of each video (the official 30-view
  test sums softmax vectors), ``{"mean_probs"}`` averaged, and ``top_class``.

The class names travel with every file: the SavedModel's
``assets/class_names.txt`` (one per line, label order) and
``assets/nonlocal_tf.json`` (the model's ``info``: class names, clip settings,
recipe, license), the ONNX model's ``metadata_props`` and the TFLite model's
metadata (``class_names``, ``nonlocal_tf``; read back with `onnx_metadata` /
`tflite_metadata`). ONNX and TFLite outputs are named ``probs``.

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
import json
import os
import tempfile
from collections.abc import Iterator, Mapping

import keras
import tensorflow as tf

from nonlocal_tf.layers import NonLocalBlock, VideoConv3D, VideoMaxPooling3D
from nonlocal_tf.utils import INFO_FILE, iter_layers

CLASS_NAMES_FILE = "class_names.txt"

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


def class_names_of(model: keras.Model, class_names=None) -> list[str]:
    """``class_names``, else the model's own (``model.info``), else ``class N``."""
    classes = int(model.outputs[0].shape[-1])
    names = class_names or (getattr(model, "info", {}) or {}).get("class_names")
    if names is not None and len(names) != classes:
        raise ValueError(f"{len(names)} class names for a model of {classes} classes.")
    return [str(n) for n in names] if names else [f"class {i}" for i in range(classes)]


def export_saved_model(
    model: keras.Model, path: str, multi_label: bool = False, class_names=None
) -> str:
    """Writes ``model`` as a SavedModel at ``path`` with the signatures above,
    its class names (``class_names``, default the model's) and its ``info``
    as assets.

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
    names = class_names_of(model, class_names)
    name_table = tf.constant(names)

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
        probs = tf.cast(probs, "float32")
        return {"logits": logits, "probs": probs, "top_class": _top(probs)}

    def _top(probs):
        return tf.gather(name_table, tf.argmax(probs, axis=-1))

    def classify_views(views):
        shape = tf.shape(views)
        tf.debugging.assert_positive(shape[1], message="views: a video needs at least one view")
        flat = tf.reshape(views, tf.concat([[shape[0] * shape[1]], shape[2:]], 0))
        probs = classify(flat)["probs"]
        probs = tf.reshape(probs, tf.stack([shape[0], shape[1], -1]))
        summed = tf.reduce_sum(probs, axis=1)
        return {
            "probs": summed,
            "mean_probs": tf.reduce_mean(probs, axis=1),
            "top_class": _top(summed),
        }

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
    _write_assets(path, model, names)
    return path


def _write_assets(path: str, model: keras.Model, names: list[str]) -> None:
    """The class names and the model's record beside the graph (``assets/``,
    which loaders keep and ignore)."""
    assets = os.path.join(path, "assets")
    os.makedirs(assets, exist_ok=True)
    with open(os.path.join(assets, CLASS_NAMES_FILE), "w", encoding="utf-8") as f:
        f.write("".join(f"{n}\n" for n in names))
    record = {**(getattr(model, "info", {}) or {}), "class_names": names}
    with open(os.path.join(assets, INFO_FILE), "w", encoding="utf-8") as f:
        json.dump(record, f)


def _metadata(model: keras.Model, class_names=None) -> dict[str, str]:
    """What ONNX and TFLite files carry beside the graph: ``class_names`` (a
    JSON list) and ``nonlocal_tf`` (the model's record, JSON)."""
    names = class_names_of(model, class_names)
    record = {**(getattr(model, "info", {}) or {}), "class_names": names}
    return {"class_names": json.dumps(names), "nonlocal_tf": json.dumps(record)}


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


def export_onnx(model: keras.Model, path: str, class_names=None) -> str:
    """Writes ``model`` (a static clip shape, batch free) as ONNX through
    Keras's exporter (tf2onnx: ``pip install nonlocal-tf[onnx]``), its output
    named ``probs``, its class names and record in ``metadata_props``."""
    import onnx

    _static_input(model)
    with exportable(model):
        model.export(path, format="onnx", verbose=False)
    graph = onnx.load(path)
    _rename_output(graph, "probs")
    for key, value in _metadata(model, class_names).items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, path)
    return path


def _rename_output(graph, name: str) -> None:
    """Renames the ONNX model's one output (tf2onnx names it after a TensorFlow
    tensor) where it is produced and declared."""
    old = graph.graph.output[0].name
    for node in graph.graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
        node.input[:] = [name if i == old else i for i in node.input]
    graph.graph.output[0].name = name


def onnx_metadata(path: str) -> dict:
    """``metadata_props`` of an ONNX file, JSON values decoded."""
    import onnx

    props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    return {k: _json_or_text(v) for k, v in props.items()}


def tflite_metadata(path: str) -> dict:
    """The named metadata of a TFLite file written by `export_tflite`,
    JSON values decoded (TensorFlow's own entries left out)."""
    from tensorflow.lite.python import schema_py_generated as schema

    with open(path, "rb") as f:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(f.read(), 0))
    out = {}
    for entry in model.metadata or []:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if name in ("class_names", "nonlocal_tf"):
            out[name] = _json_or_text(bytes(model.buffers[entry.buffer].data).decode("utf-8"))
    return out


def _json_or_text(value: str):
    try:
        return json.loads(value)
    except ValueError:
        return value


def _with_tflite_metadata(flat: bytes, metadata: dict[str, str]) -> bytes:
    """``flat`` with ``metadata`` added as named buffers (the TFLite schema's
    ``metadata`` table, where the converter keeps its own)."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(flat, 0))
    for name, value in metadata.items():
        buffer = schema.BufferT()
        buffer.data = list(value.encode("utf-8"))
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = name, len(model.buffers) - 1
        model.metadata = [*(model.metadata or []), entry]
    builder = flatbuffers.Builder(len(flat) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def export_tflite(
    model: keras.Model, path: str, quantization: str = "float32", class_names=None
) -> str:
    """Writes ``model`` as a TFLite flat buffer for one clip of its static
    shape: ``float32``, ``float16`` weights, or ``dynamic_int8`` (weights in
    int8, activations in float, no calibration data). Its signature ``serve``
    outputs ``probs``; its metadata holds the class names and record."""
    return export_tflite_files(model, {quantization: path}, class_names)[quantization]


def export_tflite_files(
    model: keras.Model, paths: Mapping[str, str], class_names=None
) -> dict[str, str]:
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
            lambda video: {"probs": model(video, training=False)},
            input_signature=[tf.TensorSpec((1, *shape), tf.float32, name="video")],
        )
        archive.write_out(folder, verbose=False)
        for quantization, path in paths.items():
            converter = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=["serve"])
            if quantization != "float32":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if quantization == "float16":
                converter.target_spec.supported_types = [tf.float16]
            flat = _with_tflite_metadata(converter.convert(), _metadata(model, class_names))
            with open(path, "wb") as f:
                f.write(flat)
    return dict(paths)
