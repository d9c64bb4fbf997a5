"""What a model is built from: a builder of this package (a named variant, a
named image model, or `VideoResNet` / `ImageResNet` themselves) and its
arguments, completed to every parameter without building anything
(`arguments`), built (`build`), and compared (`differences`).

The builders record the same completed arguments on the model they return
(``model.info``), so that weights can be checked against the model they go
into without a second model: weights fit a model whose arguments differ only
in its head or in how it runs (`RUNTIME`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from types import MappingProxyType

import keras

from nonlocal_tf.models.functional import UNRECORDED
from nonlocal_tf.models.resnet_image import IMAGE_ARGUMENTS, ImageResNet
from nonlocal_tf.models.resnet_video import (
    VideoResNet,
    resolve_nonlocal_mask,
    resolve_temporal_kernels,
)
from nonlocal_tf.models.variants import VARIANTS
from nonlocal_tf.utils import to_json

FUNCTIONS = MappingProxyType({"VideoResNet": VideoResNet, "ImageResNet": ImageResNet})

# Arguments that shape the head or say how the model runs, not what the weights
# of its trunk mean: weights saved under one value load under another (the
# classifier only when its shape still fits).
RUNTIME = frozenset(
    {
        "classes",
        "include_top",
        "pooling",
        "classifier_activation",
        "dropout_rate",
        "fully_convolutional",
        "return_features",
        "input_shape",
        "include_preprocessing",
        "pixel_mean",
        "pixel_std",
        "conv_implementation",
        "name",
    }
)
NONLOCAL_RUNTIME = ("implementation", "chunk_size")  # `NonLocalBlock` options of the same kind


def builder_names() -> list[str]:
    """Every name `arguments` and `build` accept."""
    return sorted({*VARIANTS, *IMAGE_ARGUMENTS, *FUNCTIONS})


def arguments(builder: str, **kwargs) -> tuple[str, dict]:
    """``(function, arguments)``: the function (``"VideoResNet"`` or
    ``"ImageResNet"``) that ``builder`` calls and every one of its parameters,
    the builder's own values and ``kwargs`` over the defaults."""
    if builder in VARIANTS:
        function, fixed = "VideoResNet", VARIANTS[builder].arguments
    elif builder in IMAGE_ARGUMENTS:
        function, fixed = "ImageResNet", IMAGE_ARGUMENTS[builder]
    elif builder in FUNCTIONS:
        function, fixed = builder, {}
    else:
        raise ValueError(
            f"Unknown builder {builder!r}. Known: named variants (nonlocal_tf.models.VARIANTS), "
            f"named image models ({', '.join(IMAGE_ARGUMENTS)}), {', '.join(FUNCTIONS)}."
        )
    parameters = inspect.signature(FUNCTIONS[function]).parameters
    unknown = sorted(set(kwargs) - set(parameters))
    if unknown:
        raise ValueError(f"{function} (builder {builder!r}) takes no argument(s) {unknown}.")
    full = {name: p.default for name, p in parameters.items() if name not in UNRECORDED}
    return function, {**full, **fixed, **{k: v for k, v in kwargs.items() if k not in UNRECORDED}}


def build(builder: str, **kwargs) -> keras.Model:
    """The model ``builder`` names, built with ``kwargs`` (``weights=`` too)."""
    function, full = arguments(builder, **kwargs)
    extra = {k: kwargs[k] for k in UNRECORDED if k in kwargs}
    return FUNCTIONS[function](**full, **extra)


def differences(a: Mapping, b: Mapping) -> list[str]:
    """The arguments of two architectures (`arguments`' second value, or a
    model's ``info["arguments"]``) that differ in what the weights mean, each
    as ``name: a_value != b_value``; empty when weights of one fit the other."""
    a, b = _canonical(a), _canonical(b)
    return [
        f"{key}: {a.get(key)!r} != {b.get(key)!r}"
        for key in sorted(set(a) | set(b))
        if key not in RUNTIME and a.get(key) != b.get(key)
    ]


def _canonical(arguments: Mapping) -> dict:
    """Arguments with shorthands and defaults that depend on others spelled
    out (``"nl5"`` -> its mask, conv1's kernel, pool1's padding, ...), as JSON."""
    args = dict(arguments)
    depth = args.get("depth", 50)
    kinds = args.get("temporal_kernels")
    if kinds is not None:  # a video model
        if args.get("conv1_temporal_kernel") is None:
            args["conv1_temporal_kernel"] = 5 if kinds == "i3d" else 1
        args["temporal_kernels"] = resolve_temporal_kernels(kinds, depth)
        if args.get("stem_pool_padding") is None:
            args["stem_pool_padding"] = args.get("stem") == "mmaction2"
        if args.get("nonlocal_group_size") is None and args.get("frozen_bn"):
            args["nonlocal_group_size"] = 4
    if "nonlocal_mask" in args:
        args["nonlocal_mask"] = resolve_nonlocal_mask(args["nonlocal_mask"], depth)
    nonlocal_kwargs = dict(args.get("nonlocal_kwargs") or {})
    for key in NONLOCAL_RUNTIME:
        nonlocal_kwargs.pop(key, None)
    args["nonlocal_kwargs"] = nonlocal_kwargs
    return to_json(args)
