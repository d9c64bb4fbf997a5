"""One front door: any model source, by any name, to a model and what it is.

``create_model(source)`` builds the model a source names, with its weights,
once; ``model_info(source)`` says what it is without building it: its
architecture, the clips it takes in each mode, the recipe that trains it on
from here, its class names, license and dataset. Sources (`sources.kind_of`):
a named model, a catalogue entry, a preset (folder, ``hf://``, ``kaggle://``),
a ``zoo.train`` run folder, a ``.keras`` file, and, for `model_info`, a
SavedModel written by ``zoo.export``.

    import nonlocal_tf

    model = nonlocal_tf.create_model("i3d_nl5_r50_8x8.k400")  # Kinetics weights, 400 names
    model = nonlocal_tf.create_model("i3d_nl5_r50_8x8.k400", classes=10)  # a new head
    model = nonlocal_tf.create_model("i3d_r50_8x8", weights="imagenet")  # ImageNet, inflated
    info = nonlocal_tf.model_info("runs/my_run")  # info.class_names, info.spec, info.recipe
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from types import MappingProxyType

import keras

from nonlocal_tf import models
from nonlocal_tf.data.spec import CHARADES_32X4, ClipSpec
from nonlocal_tf.data.spec import mode as spec_mode
from nonlocal_tf.models import architecture
from nonlocal_tf.pretrained import catalog, loader, sources
from nonlocal_tf.pretrained.catalog import OFFICIAL_MEAN, OFFICIAL_STD, WeightsEntry
from nonlocal_tf.utils import from_json, to_json

DEFAULT = "default"  # `create_model`'s weights: the source's own


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What a model source is (`model_info`).

    ``builder`` / ``arguments``: the architecture (`VideoResNet` or
    `ImageResNet` and every argument, ``classes`` included). ``weights``: what
    `create_model` loads unless told otherwise (None: initialised at random).
    ``spec``: the clips it takes (`nonlocal_tf.data.ClipSpec`: frames, rate,
    training short sides and crop, validation and test sizes); ``mean`` /
    ``std``: the RGB normalisation its weights were trained with (applied in
    the model with ``include_preprocessing=True``). ``recipe``: the training
    recipe (`nonlocal_tf.training.RECIPES`) that trains it on from these
    weights: the architecture's official recipe from scratch or ImageNet,
    ``finetune`` from trained weights. ``class_names``: in label order, where
    known.
    """

    source: str
    kind: str
    builder: str
    arguments: Mapping
    weights: str | None
    spec: ClipSpec
    mean: tuple[float, ...] = OFFICIAL_MEAN
    std: tuple[float, ...] = OFFICIAL_STD
    recipe: str = "official"
    class_names: tuple[str, ...] | None = None
    license: str | None = None
    dataset: str | None = None
    metrics: Mapping = dataclasses.field(default_factory=lambda: MappingProxyType({}))

    @property
    def num_classes(self) -> int | None:
        """The classifier's size (None without one)."""
        if not self.arguments.get("include_top", True):
            return None
        return int(self.arguments["classes"])

    @property
    def frames(self) -> int:
        return self.spec.clip_len

    @property
    def rate(self) -> int:
        return self.spec.rate

    def replace(self, **changes) -> ModelInfo:
        return dataclasses.replace(self, **changes)

    def settings(self, mode: str) -> dict:
        """What one mode (``train``, ``val``, ``test``) feeds the model: frames,
        sampling rate, the short side frames are resized to (a range in
        training), the crop, views per video, the normalisation."""
        m = spec_mode(mode)
        return {
            "frames": self.spec.clip_len,
            "rate": self.spec.rate,
            "short_side": m.short_side(self.spec),
            "crop": m.crop_size(self.spec),
            "views": 3 * m.clips(self.spec) if m.views else 1,
            "mean": self.mean,
            "std": self.std,
        }

    def to_json(self) -> dict:
        """JSON data (what ``model.info``, ``run.json`` and SavedModels keep)."""
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        record["spec"] = dataclasses.asdict(self.spec)
        return to_json(record)

    @classmethod
    def from_json(cls, record: Mapping, source: str | None = None, kind: str | None = None):
        """The `ModelInfo` of a record written by `to_json` (``source`` /
        ``kind``: where it was read now, if not where it was written)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: from_json(v) for k, v in record.items() if k in fields}
        missing = {"builder", "arguments", "spec"} - set(values)
        if missing:
            raise ValueError(f"{source}: its model record lacks {sorted(missing)}.")
        values["spec"] = ClipSpec(**values["spec"])
        values["arguments"] = MappingProxyType(dict(values["arguments"]))
        values["metrics"] = MappingProxyType(dict(values.get("metrics") or {}))
        values["source"] = source or values.get("source", "")
        values["kind"] = kind or values.get("kind", "keras")
        values.setdefault("weights", None)
        return cls(**values)


def model_info(source: str, weights: str | None = DEFAULT) -> ModelInfo:
    """What ``source`` is (see the module's docstring), without building it;
    with ``weights`` (as `create_model` takes them), what it is with those
    weights instead of its own (their recipe: ``finetune`` from trained
    weights, the official one from ImageNet or from scratch)."""
    info = _source_info(os.fspath(source))
    if weights == DEFAULT:
        return info
    if weights == "imagenet":
        weights = f"resnet{info.arguments['depth']}.imagenet_caffe2"
    trained = weights is not None and not _is_imagenet(weights)
    recipe = "finetune" if trained else _official_recipe(info)
    return info.replace(weights=weights, recipe=recipe)


def _source_info(source: str) -> ModelInfo:
    kind = sources.kind_of(source)
    if kind == "variant":
        return _variant_info(source)
    if kind in ("entry", "preset"):
        return _entry_info(loader.find_entry(source), kind, source)
    if kind in ("run", "keras"):
        record = loader.trained_record(source)
        if not record.get("spec"):
            raise ValueError(
                f"{source} does not record what it is (saved before nonlocal_tf 0.2, or not by "
                "this library); build it by name and load it with weights=."
            )
        return ModelInfo.from_json(record, source, kind).replace(weights=source)
    if kind == "saved_model":
        record = sources.saved_model_record(source)
        if not record.get("spec"):
            raise ValueError(
                f"{source} is a SavedModel without nonlocal_tf's record (exported before 0.2): "
                "give its clip settings by hand (zoo.predict --clip)."
            )
        return ModelInfo.from_json(record, source, kind).replace(weights=source)
    raise ValueError(
        f"{source} is a checkpoint: weights without an architecture. Name the model and pass "
        f"it as weights, e.g. create_model('i3d_nl5_r50_8x8', weights={source!r})."
    )


def create_model(
    source: str,
    weights: str | None = DEFAULT,
    classes: int | None = None,
    class_names: list[str] | tuple[str, ...] | None = None,
    **overrides,
) -> keras.Model:
    """The model ``source`` names, built once, with its weights.

    Args:
        source: a named model (``"i3d_nl5_r50_8x8"``), a catalogue entry
            (``"i3d_nl5_r50_8x8.k400"``), a preset (folder, ``hf://``,
            ``kaggle://``), a ``zoo.train`` run folder or a ``.keras`` file.
        weights: the source's own (default); None for none (random
            initialisation); or other weights for this architecture: a
            catalogue entry, a preset, a run folder, a ``.keras`` or
            checkpoint file, or ``"imagenet"`` (the official ImageNet ResNet of
            the model's depth, inflated into a video model).
        classes: the classifier's size; another than the weights' gives a new,
            initialised classifier (everything else loaded).
        class_names: the names of the classes, in label order (sets
            ``classes``); default the source's (or its weights'), where their
            classifier is kept.
        **overrides: builder arguments (`VideoResNet`'s): ``include_top``,
            ``fully_convolutional``, ``input_shape``, ``include_preprocessing``,
            ``dropout_rate``, ... An override that changes what the weights mean
            (another depth, kernel or non-local block) is refused.

    Returns:
        A `keras.Model` whose ``info`` is its `ModelInfo` as JSON data (kept
        in ``.keras`` files, presets and SavedModels).
    """
    info = model_info(source, weights)
    if info.kind == "saved_model":
        raise ValueError(
            f"{source} is a SavedModel: it runs as exported (zoo.predict / zoo.evaluate "
            "--model=<folder>, or tf.saved_model.load) and cannot be rebuilt as a Keras model."
        )
    if class_names is not None:
        class_names = tuple(str(n) for n in class_names)
        if classes is not None and classes != len(class_names):
            raise ValueError(
                f"{len(class_names)} class names for classes={classes}. Received: "
                f"class_names={list(class_names)[:5]}..."
            )
        classes = len(class_names)
    if classes is not None:
        overrides["classes"] = classes
    function, arguments = architecture.arguments(info.builder, **{**info.arguments, **overrides})
    model = architecture.build(function, **arguments)
    if info.weights is not None:
        report = loader.load_weights(model, info.weights)
        if report is not None and report.inflated:  # an image checkpoint file: from ImageNet
            info = info.replace(recipe=_official_recipe(info))
    arguments = MappingProxyType(from_json(model.info["arguments"]))
    names = class_names or _names(info, arguments)
    model.info = info.replace(arguments=arguments, class_names=names).to_json()
    return model


def _names(info: ModelInfo, arguments: Mapping) -> tuple[str, ...] | None:
    """The class names of the source, or of the weights loaded into it, when
    their classifier is the model's (a new head has no names)."""
    if not arguments.get("include_top", True):
        return None
    classes = arguments.get("classes")
    if info.class_names is not None and len(info.class_names) == classes:
        return info.class_names
    if info.weights is None or info.weights == info.source:
        return None
    try:
        names = _source_info(info.weights).class_names
    except ValueError:  # a checkpoint file: no names
        return None
    return names if names is not None and len(names) == classes else None


def _is_imagenet(weights: str) -> bool:
    entry = catalog.CATALOG.get(weights)
    return entry is not None and entry.dataset == "ImageNet-1k"


def _official_recipe(info: ModelInfo) -> str:
    """The recipe that trains this architecture from scratch or ImageNet."""
    return "official_frozen_bn" if info.arguments.get("frozen_bn") else "official"


def _variant_info(name: str) -> ModelInfo:
    function, arguments = architecture.arguments(name)
    if name in models.VARIANTS:
        variant = models.VARIANTS[name]
        spec, recipe = ClipSpec(variant.clip.frames, variant.clip.rate), variant.recipe
    else:  # an image model: clips of one frame
        spec, recipe = ClipSpec(1, 1), "official"
    return ModelInfo(
        name, "variant", function, MappingProxyType(arguments), None, spec, recipe=recipe
    )


def _entry_info(entry: WeightsEntry, kind: str, source: str) -> ModelInfo:
    function, arguments = entry.architecture()
    return ModelInfo(
        source,
        kind,
        function,
        MappingProxyType(arguments),
        source,
        _entry_spec(entry),
        mean=tuple(entry.mean),
        std=tuple(entry.std),
        recipe="finetune",
        class_names=entry.class_names,
        license=entry.license,
        dataset=entry.dataset,
        metrics=entry.metrics,
    )


def _entry_spec(entry: WeightsEntry) -> ClipSpec:
    """The clips an entry's weights were trained and tested on: the official
    Kinetics protocol at a 224 crop (short side 256-320, test 256), Charades'
    (288 crop, test 320), or every size at the entry's own crop."""
    frames, rate = entry.frames or 1, entry.rate or 1
    if entry.dataset.startswith("Charades"):
        return dataclasses.replace(CHARADES_32X4, clip_len=frames, rate=rate)
    if entry.crop == 224:
        return ClipSpec(frames, rate)
    return ClipSpec.at_size(frames, rate, entry.crop)
