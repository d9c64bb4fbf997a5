"""Assigning official-named blobs to a Keras model, strictly.

Blob name -> (layer, weight) follows the layer naming scheme of the builders:
``<conv>_w``; ``<bn>_{s,b,rm,riv}``; ``<nonlocal>_{theta,phi,g,out}_{w,b}`` and
``<nonlocal>_bn_*``; ``pred_{w,b}``. Layouts go from Caffe2/PyTorch NC(T)HW
(``(O, I, kT, kH, kW)``) to Keras channels-last (``(kT, kH, kW, I, O)``).
"""

from __future__ import annotations

import dataclasses
import logging

import keras
import numpy as np

from nonlocal_tf.layers import FrozenAffine, NonLocalBlock
from nonlocal_tf.utils import iter_layers

log = logging.getLogger("nonlocal_tf")

NON_PARAM_BLOBS = ("lr", "model_iter")
HEAD_BLOBS = ("pred_w", "pred_b")
FOLD_EPSILON = 1e-5  # official modify_caffe2_ftvideo.py folds BN with 1e-5


class ConversionError(ValueError):
    """The checkpoint does not fit the model (missing, extra or misshapen blobs)."""


@dataclasses.dataclass
class ConversionReport:
    assigned: list[str] = dataclasses.field(default_factory=list)
    unused_blobs: list[str] = dataclasses.field(default_factory=list)
    missing_blobs: list[str] = dataclasses.field(default_factory=list)
    shape_mismatches: list[tuple[str, tuple, tuple]] = dataclasses.field(default_factory=list)
    skipped_head: list[str] = dataclasses.field(default_factory=list)
    inflated: list[str] = dataclasses.field(default_factory=list)
    folded: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unused_blobs or self.missing_blobs or self.shape_mismatches)

    def summary(self) -> str:
        lines = [f"{len(self.assigned)} blobs assigned"]
        if self.inflated:
            lines.append(f"{len(self.inflated)} 2D kernels inflated to 3D")
        if self.folded:
            lines.append(f"{len(self.folded)} BatchNorms folded into frozen affines")
        if self.skipped_head:
            lines.append(f"head not loaded (new classifier): {', '.join(self.skipped_head)}")
        if self.missing_blobs:
            lines.append(
                f"{len(self.missing_blobs)} blobs missing: {', '.join(self.missing_blobs[:20])}"
            )
        if self.unused_blobs:
            lines.append(
                f"{len(self.unused_blobs)} blobs unmatched: {', '.join(self.unused_blobs[:20])}"
            )
        for name, want, got in self.shape_mismatches[:20]:
            lines.append(f"shape mismatch {name}: model expects {want}, checkpoint has {got}")
        return "\n".join(lines)


def clean_blobs(blobs: dict) -> dict[str, np.ndarray]:
    """Drops what is not a parameter (``*_momentum``, ``lr``, ``model_iter``)."""
    out = {}
    for name, value in blobs.items():
        if name in NON_PARAM_BLOBS or name.endswith("_momentum"):
            continue
        out[name] = np.asarray(value)
    return out


def assign_blobs(model: keras.Model, blobs: dict, strict: bool = True) -> ConversionReport:
    """Assigns ``blobs`` (official names, NC(T)HW layouts) to ``model``.

    The classifier is skipped, and reported, when the model has none
    (``include_top=False``) or a different number of classes. With ``strict``
    a blob left over, a weight without a blob or a shape mismatch raises
    `ConversionError` naming them; nothing is assigned in that case.
    """
    blobs = clean_blobs(blobs)
    report = ConversionReport()
    plan: list[tuple[keras.Variable, np.ndarray, str]] = []
    used: set[str] = set()

    def take(name, variable, transform=lambda a: a):
        if name not in blobs:
            report.missing_blobs.append(name)
            return
        used.add(name)
        value = transform(blobs[name])
        if tuple(value.shape) != tuple(variable.shape):
            report.shape_mismatches.append(
                (name, tuple(variable.shape), tuple(np.shape(blobs[name])))
            )
            return
        plan.append((variable, value, name))

    for layer in (layer for layer in iter_layers(model) if layer.weights):
        name = layer.name
        if isinstance(layer, keras.layers.Conv3D | keras.layers.Conv2D):
            blob = blobs.get(f"{name}_w")
            if isinstance(layer, keras.layers.Conv3D) and blob is not None and blob.ndim == 4:
                report.inflated.append(name)
                take(
                    f"{name}_w",
                    layer.kernel,
                    lambda a, t=layer.kernel.shape[0]: inflate_kernel(a, t),
                )
            else:
                take(f"{name}_w", layer.kernel, _conv_kernel)
        elif isinstance(layer, keras.layers.BatchNormalization):
            _take_bn(take, name, layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance)
        elif isinstance(layer, FrozenAffine):
            if f"{name}_rm" in blobs and f"{name}_riv" in blobs:
                report.folded.append(name)
                s, b, rm, riv = (blobs[f"{name}_{k}"] for k in ("s", "b", "rm", "riv"))
                scale = s / np.sqrt(riv + FOLD_EPSILON)
                blobs = {**blobs, f"{name}_s": scale, f"{name}_b": b - rm * scale}
                used.update({f"{name}_rm", f"{name}_riv"})
            take(f"{name}_s", layer.gamma)
            take(f"{name}_b", layer.beta)
        elif isinstance(layer, NonLocalBlock):
            _take_nonlocal(take, layer)
        elif isinstance(layer, keras.layers.Dense) and name == "pred":
            shape = (np.shape(blobs["pred_w"])[0],) if "pred_w" in blobs else None
            if shape is not None and shape[0] != layer.kernel.shape[-1]:
                report.skipped_head.extend(n for n in HEAD_BLOBS if n in blobs)
                used.update(HEAD_BLOBS)
                continue
            take("pred_w", layer.kernel, lambda a: np.reshape(a, (a.shape[0], -1)).T)
            take("pred_b", layer.bias)
        else:
            raise ConversionError(
                f"No checkpoint mapping for layer {name!r} ({type(layer).__name__})."
            )

    leftover = sorted(set(blobs) - used)
    head_left = [n for n in leftover if n in HEAD_BLOBS]
    report.skipped_head.extend(head_left)  # include_top=False: the head is not needed
    report.unused_blobs = [n for n in leftover if n not in HEAD_BLOBS]
    if strict and not report.ok:
        raise ConversionError("The checkpoint does not match the model:\n" + report.summary())
    for variable, value, name in plan:
        variable.assign(value.astype(variable.dtype))
        report.assigned.append(name)
    return report


def _take_bn(take, name, gamma, beta, mean, var):
    take(f"{name}_s", gamma)
    take(f"{name}_b", beta)
    take(f"{name}_rm", mean)
    take(f"{name}_riv", var)


def _take_nonlocal(take, layer: NonLocalBlock):
    prefix = layer.name
    subs = ["g", "out"] if layer.instantiation == "gaussian" else ["theta", "phi", "g", "out"]
    for sub in subs:
        dense = getattr(layer, sub)
        take(f"{prefix}_{sub}_w", dense.kernel, _pointwise_kernel)
        if dense.use_bias:
            take(f"{prefix}_{sub}_b", dense.bias)
    if layer.instantiation == "concatenation":
        take(f"{prefix}_concat_project_w", layer.concat_project.kernel, _pointwise_kernel)
    if layer.use_bn:
        bn = layer.bn
        _take_bn(take, f"{prefix}_bn", bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)


def _conv_kernel(a: np.ndarray) -> np.ndarray:
    """(O, I, *k) -> (*k, I, O)."""
    return np.transpose(a, (*range(2, a.ndim), 1, 0))


def _pointwise_kernel(a: np.ndarray) -> np.ndarray:
    """(O, I, 1, 1[, 1]) -> Dense kernel (I, O)."""
    return np.reshape(a, (a.shape[0], a.shape[1])).T


def inflate_kernel(a: np.ndarray, temporal: int) -> np.ndarray:
    """Official ImageNet inflation of a Caffe2 2D kernel: (O, I, kH, kW) ->
    Keras (T, kH, kW, I, O), repeated over T and divided by T, so a clip of
    identical frames gives the 2D response."""
    kernel = _conv_kernel(a)
    return np.repeat(kernel[None], temporal, axis=0) / temporal


def inflate_from_blobs(model: keras.Model, blobs: dict) -> ConversionReport:
    """ImageNet initialisation of a video model from 2D blobs: kernels inflated,
    BN copied (folded into frozen affines), the head loaded only if it fits;
    non-local blocks are new layers and keep their initialisation. Anything
    else missing, left over or misshapen raises `ConversionError`."""
    report = assign_blobs(model, blobs, strict=False)
    unexpected = [n for n in report.missing_blobs if not n.startswith("nonlocal_")]
    if unexpected or report.unused_blobs or report.shape_mismatches:
        raise ConversionError("The ImageNet weights do not fit the model:\n" + report.summary())
    return report


def inflate_weights(image_model: keras.Model, video_model: keras.Model) -> ConversionReport:
    """ImageNet inflation (official ``checkpoints.initialize_master_gpu_model_params``):
    copies ``image_model``'s weights into ``video_model`` by layer name, each 2D
    kernel repeated over the temporal kernel size T and divided by T, so a clip
    of identical frames gives the 2D features. BatchNormalization is copied, or
    folded into the `FrozenAffine` of a frozen-BN video model; non-local blocks
    present in both are copied, new ones keep their initialisation; ``pred``
    is copied only when its shape matches (a new head, as the official loader
    skips it). The same blob-level mechanism as ImageNet checkpoints.

    Raises:
        ConversionError: when a video layer other than a non-local block has no
            2D counterpart, or shapes do not match.
    """
    return inflate_from_blobs(video_model, model_to_blobs(image_model))


def model_to_blobs(model: keras.Model) -> dict[str, np.ndarray]:
    """The model's weights as official-named blobs in Caffe2 layouts: the
    inverse of `assign_blobs` (Keras (*k, I, O) kernels -> (O, I, *k))."""
    blobs: dict[str, np.ndarray] = {}

    def put(name, variable, transform=lambda a: a):
        blobs[name] = transform(np.asarray(keras.ops.convert_to_numpy(variable)))

    def bn(prefix, layer):
        for suffix, variable in zip(("s", "b", "rm", "riv"), _bn_variables(layer), strict=False):
            put(f"{prefix}_{suffix}", variable)

    for layer in (layer for layer in iter_layers(model) if layer.weights):
        name = layer.name
        if isinstance(layer, keras.layers.Conv3D | keras.layers.Conv2D):
            put(
                f"{name}_w",
                layer.kernel,
                lambda a: np.transpose(a, (a.ndim - 1, a.ndim - 2, *range(a.ndim - 2))),
            )
        elif isinstance(layer, keras.layers.BatchNormalization | FrozenAffine):
            bn(name, layer)
        elif isinstance(layer, NonLocalBlock):
            subs = (
                ["g", "out"] if layer.instantiation == "gaussian" else ["theta", "phi", "g", "out"]
            )
            if layer.instantiation == "concatenation":
                subs.append("concat_project")
            for sub in subs:
                dense = getattr(layer, sub)
                put(f"{name}_{sub}_w", dense.kernel, np.transpose)
                if dense.use_bias:
                    put(f"{name}_{sub}_b", dense.bias)
            if layer.use_bn:
                bn(f"{name}_bn", layer.bn)
        elif isinstance(layer, keras.layers.Dense) and name == "pred":
            put("pred_w", layer.kernel, np.transpose)
            put("pred_b", layer.bias)
        else:
            raise ConversionError(
                f"No checkpoint mapping for layer {name!r} ({type(layer).__name__})."
            )
    return blobs


def _bn_variables(layer):
    if isinstance(layer, FrozenAffine):
        return [layer.gamma, layer.beta]
    return [layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance]
