"""The catalogue of released weights: one frozen entry per checkpoint.

An entry names the architecture that fits it (a named model of
`nonlocal_tf.models` and its arguments), where the source file lives and in
which format, what is known of its hash and size, its license, the input it
expects (the named model's clip unless stated) and the accuracy its authors
report. `zoo/MODEL_ZOO.md` is generated from this table
(``python -m zoo.make_model_zoo``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from types import MappingProxyType

from nonlocal_tf import models
from nonlocal_tf.pretrained import labels

OFFICIAL_URL = "https://dl.fbaipublicfiles.com/video-nonlocal/"
PYSLOWFAST_URL = "https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/kinetics400/"
MMACTION2_URL = "https://download.openmmlab.com/mmaction/v1.0/recognition/i3d/"

CC_BY_NC = "CC-BY-NC 4.0 (non-commercial use only)"
APACHE = "Apache-2.0"
BSD = "BSD-3-Clause (torchvision); ImageNet terms of use apply"

OFFICIAL_MEAN = (114.75, 114.75, 114.75)
OFFICIAL_STD = (57.375, 57.375, 57.375)
MMACTION2_MEAN = (123.675, 116.28, 103.53)
MMACTION2_STD = (58.395, 57.12, 57.375)
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

FORMATS = (
    "caffe2_pkl",
    "pyslowfast_pyth",
    "mmaction2_pth",
    "torchvision_pth",
    "keras_weights_h5",
    "keras_preset",  # an entry read from a preset (`presets.preset_entry`)
)
# Files shipped with the project (``package://`` URLs) are relative to the repository root.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


OFFICIAL_METRICS = "facebookresearch/video-nonlocal-net README (30-view fully-convolutional test)"


@dataclasses.dataclass(frozen=True)
class WeightsEntry:
    """One released checkpoint and everything needed to use it. The defaults
    are the official Kinetics-400 release's; entries state what differs."""

    name: str  # "<model>.<tag>"
    builder: str  # a name `nonlocal_tf.models.architecture` builds: a variant, "VideoResNet", ...
    url: str
    metrics: Mapping[str, float] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    metrics_source: str = OFFICIAL_METRICS
    format: str = "caffe2_pkl"  # one of FORMATS
    license: str = CC_BY_NC
    num_classes: int = 400
    dataset: str = "Kinetics-400"
    frames: int | None = None  # default: the named model's clip
    rate: int | None = None
    crop: int = 224
    builder_kwargs: Mapping = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    archive_member: str | None = None  # file inside a tarball
    sha256: str | None = None
    sha256_prefix: str | None = None
    size_mb: float | None = None
    mean: tuple[float, float, float] = OFFICIAL_MEAN
    std: tuple[float, float, float] = OFFICIAL_STD
    class_names: tuple[str, ...] | None = None  # in label order, where the project has them
    label_set: str | None = None  # a key of labels.LABEL_SETS: fills class_names when not given
    notes: str = ""

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"{self.name}: unknown format {self.format!r}")
        if self.frames is None and self.builder in models.VARIANTS:
            clip = models.VARIANTS[self.builder].clip
            object.__setattr__(self, "frames", clip.frames)
            object.__setattr__(self, "rate", clip.rate)
        if self.class_names is None and self.label_set is not None:
            object.__setattr__(self, "class_names", labels.class_names(self.label_set))
        # A list of another length would name the wrong outputs silently.
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{self.name}: {len(self.class_names)} class names for "
                f"{self.num_classes} classes (label_set={self.label_set!r})"
            )

    def arguments(self, **kwargs) -> dict:
        """The builder's keyword arguments for the architecture these weights
        fit; ``kwargs`` win."""
        kwargs = {**self.builder_kwargs, "classes": self.num_classes, **kwargs}
        if self.dataset == "Kinetics-400":
            kwargs.setdefault("pixel_mean", self.mean)
            kwargs.setdefault("pixel_std", self.std)
        return kwargs

    def architecture(self, **kwargs) -> tuple[str, dict]:
        """``(function, arguments)`` of the architecture these weights fit, every
        argument spelled out (`nonlocal_tf.models.architecture.arguments`)."""
        return models.architecture.arguments(self.builder, **self.arguments(**kwargs))

    def build(self, **kwargs):
        """Builds the architecture these weights fit (``weights=`` loads them)."""
        return models.architecture.build(self.builder, **self.arguments(**kwargs))


def _official(model, file, top1, top5, tag="k400", notes=""):
    return WeightsEntry(
        f"{model}.{tag}",
        model,
        f"{OFFICIAL_URL}{file}.pkl",
        MappingProxyType({"top1": top1, "top5": top5}),
        label_set="kinetics400_caffe2",
        notes=notes,
    )


def _pyslowfast(model, file, top1, top5, extra):
    return WeightsEntry(
        f"{model}.k400_pyslowfast",
        model,
        f"{PYSLOWFAST_URL}{file}",
        MappingProxyType({"top1": top1, "top5": top5}),
        "facebookresearch/SlowFast MODEL_ZOO.md (3 crops x 10 clips)",
        license=APACHE,
        builder_kwargs=MappingProxyType({"stem_pool_padding": True, **extra}),
        label_set="kinetics400_pyslowfast",
        notes="PySlowFast's padded pool1 (56x56 at res2).",
    )


def _mmaction2(model, tag, config, stamp, top1, top5, nonlocal_kwargs=None):
    kwargs = {"stem": "mmaction2", "bn_epsilon": 1e-5}
    if nonlocal_kwargs:
        kwargs["nonlocal_kwargs"] = MappingProxyType(
            {
                "pool_position": "after",
                "use_scale": False,
                "output_use_bias": False,
                "bn_epsilon": 1e-5,
                **nonlocal_kwargs,
            }
        )
    return WeightsEntry(
        f"{model}.{tag}",
        model,
        f"{MMACTION2_URL}{config}/{config}_{stamp}.pth",
        MappingProxyType({"top1": top1, "top5": top5}),
        "open-mmlab/mmaction2 configs/recognition/i3d/README.md (10 clips x 3 crops)",
        format="mmaction2_pth",
        license=APACHE,
        builder_kwargs=MappingProxyType(kwargs),
        sha256_prefix=stamp.split("-")[1],
        mean=MMACTION2_MEAN,
        std=MMACTION2_STD,
        label_set="kinetics400_mmaction2",
        notes="mmcv non-local flavour: pooling after phi/g, no scale, no bias before the BN.",
    )


def _imagenet(name, builder, url, metrics, source, **differs):
    torchvision = differs.get("format") == "torchvision_pth"
    return WeightsEntry(
        name,
        builder,
        url,
        MappingProxyType(metrics),
        source,
        num_classes=1000,
        dataset="ImageNet-1k",
        frames=1,
        rate=1,
        mean=IMAGENET_MEAN if torchvision else OFFICIAL_MEAN,
        std=IMAGENET_STD if torchvision else OFFICIAL_STD,
        **differs,
    )


_MM_I3D = "i3d_imagenet-pretrained-r50{}_8xb8-32x2x1-100e_kinetics400-rgb"

ENTRIES: tuple[WeightsEntry, ...] = (
    # The 15 official Kinetics-400 models (facebookresearch/video-nonlocal-net).
    _official("c2d_r50_32x2", "c2d_baseline_32x2_IN_pretrain_400k", 72.0, 90.0),
    _official("c2d_nl5_r50_32x2", "c2d_nonlocal_32x2_IN_pretrain_400k", 73.9, 91.0),
    _official("i3d_r50_32x2", "i3d_baseline_32x2_IN_pretrain_400k", 73.6, 90.8),
    _official("i3d_nl5_r50_32x2", "i3d_nonlocal_32x2_IN_pretrain_400k", 74.9, 91.6),
    _official("i3d_r50_128x1", "i3d_baseline_128x1_I3D_pretrain_400k", 75.2, 92.0),
    _official("i3d_nl5_r50_128x1", "i3d_nonlocal_128x1_I3D_pretrain_400k", 76.5, 92.7),
    _official("c2d_r50_8x8", "c2d_baseline_8x8_IN_pretrain_400k", 71.9, 90.0),
    _official("c2d_nl5_r50_8x8", "c2d_nonlocal_8x8_IN_pretrain_400k", 74.4, 91.4),
    _official("i3d_r50_8x8", "i3d_baseline_8x8_IN_pretrain_400k", 73.4, 90.9),
    _official("i3d_nl5_r50_8x8", "i3d_nonlocal_8x8_IN_pretrain_400k", 74.7, 91.6),
    _official("i3d_r50_32x4", "i3d_baseline_32x4_I3D_pretrain_400k", 75.5, 92.0),
    _official("i3d_nl5_r50_32x4", "i3d_nonlocal_32x4_I3D_pretrain_400k", 76.5, 92.6),
    _official("i3d_r50_8x8", "i3d_baseline_8x8_IN_pretrain_300k", 73.2, 90.8, tag="k400_300k"),
    _official(
        "i3d_r50_8x8",
        "i3d_baseline_8x8_IN_pretrain_600k_4gpu",
        73.0,
        90.4,
        tag="k400_600k_4gpu",
        notes="4 GPUs, 12/2017 data.",
    ),
    _official(
        "i3d_r50_8x8",
        "i3d_baseline_8x8_IN_pretrain_300k_4gpu",
        72.0,
        90.1,
        tag="k400_300k_4gpu",
        notes="4 GPUs, trained without dropout.",
    ),
    # PySlowFast's Caffe2-format models.
    _pyslowfast("c2d_r50_8x8", "C2D_NOPOOL_8x8_R50.pkl", 67.2, 87.8, {"temporal_pool": False}),
    _pyslowfast("i3d_r50_8x8", "I3D_8x8_R50.pkl", 73.5, 90.8, {}),
    _pyslowfast("i3d_nl5_r50_8x8", "I3D_NLN_8x8_R50.pkl", 74.0, 91.1, {}),
    # mmaction2 I3D and I3D-NL (32x2x1, ImageNet-pretrained).
    _mmaction2(
        "i3d_r50_32x2", "k400_mmaction2", _MM_I3D.format(""), "20220812-e213c223", 73.47, 91.27
    ),
    _mmaction2(
        "i3d_nl5_r50_32x2",
        "k400_mmaction2_dot_product",
        _MM_I3D.format("-nl-dot-product"),
        "20220812-8e1f2148",
        74.80,
        92.07,
        {"instantiation": "dot_product"},
    ),
    _mmaction2(
        "i3d_nl5_r50_32x2",
        "k400_mmaction2_embedded_gaussian",
        _MM_I3D.format("-nl-embedded-gaussian"),
        "20220812-afd8f562",
        74.73,
        91.80,
        {"instantiation": "embedded_gaussian"},
    ),
    _mmaction2(
        "i3d_nl5_r50_32x2",
        "k400_mmaction2_gaussian",
        _MM_I3D.format("-nl-gaussian"),
        "20220812-0c5cbf5a",
        73.97,
        91.33,
        {"instantiation": "gaussian"},
    ),
    # ImageNet sources for inflation.
    _imagenet(
        "resnet50.imagenet_caffe2",
        "resnet50_image",
        f"{OFFICIAL_URL}pretrained_model.tar.gz",
        {},
        "not published by the source",
        archive_member="r50_pretrain_c2_model_iter450450_clean.pkl",
        notes="The official ImageNet initialisation of the video models.",
    ),
    _imagenet(
        "resnet101.imagenet_caffe2",
        "resnet101_image",
        f"{OFFICIAL_URL}pretrained_model.tar.gz",
        {},
        "not published by the source",
        archive_member="r101_pretrain_c2_model_iter450450_clean.pkl",
        notes="The official ImageNet initialisation of the R101 video models.",
    ),
    _imagenet(
        "resnet50.imagenet_torchvision",
        "resnet50_image",
        "https://download.pytorch.org/models/resnet50-0676ba61.pth",
        {"top1": 76.13, "top5": 92.862},
        "torchvision ResNet50_Weights.IMAGENET1K_V1",
        format="torchvision_pth",
        license=BSD,
        sha256_prefix="0676ba61",
    ),
    _imagenet(
        "resnet101.imagenet_torchvision",
        "resnet101_image",
        "https://download.pytorch.org/models/resnet101-63fe2227.pth",
        {"top1": 77.374, "top5": 93.546},
        "torchvision ResNet101_Weights.IMAGENET1K_V1",
        format="torchvision_pth",
        license=BSD,
        sha256_prefix="63fe2227",
    ),
)

# The embedded demo model: shipped in the repository, so it loads offline. Trained by
# the first, longer `make demo` (today's demo trains a width-4 model for 3 minutes).
DEMO = WeightsEntry(
    "reappear_c2d_nl5_r50.demo",
    "VideoResNet",
    "package://zoo/weights/reappear_c2d_nl5_r50.weights.h5",
    MappingProxyType({"top1": 79.1}),
    "measured by the first `make demo` recipe on 1,000 held-out generated clips (2026-11-24); the C2D baseline: 47.7",
    format="keras_weights_h5",
    license=APACHE,
    num_classes=2,
    dataset="reappear (generated, nonlocal_tf.data.synthetic)",
    frames=8,
    rate=1,
    crop=32,
    builder_kwargs=MappingProxyType(
        {
            "depth": 50,
            "temporal_kernels": "c2d",
            "nonlocal_mask": "nl5",
            "width_per_group": 8,
            "input_shape": (8, 32, 32, 3),
            "include_preprocessing": True,
            "dropout_rate": 0.0,
            "name": "reappear_c2d_nl5_r50",
        }
    ),
    sha256="4a8e9f43cc02b1749073c7ed1c656fdebb90d0da3a0052a3b92c335c8039144f",
    size_mb=2.6,
    class_names=("different", "reappears"),  # nonlocal_tf.data.synthetic.CLASS_NAMES
    notes="C2D ResNet-50 (width 8) with 5 non-local blocks trained 6 epochs on 8,000 generated clips of 3 colours (SGD, cosine).",
)
ENTRIES = (*ENTRIES, DEMO)

CATALOG: Mapping[str, WeightsEntry] = MappingProxyType({e.name: e for e in ENTRIES})


def get_entry(name: str) -> WeightsEntry:
    if name not in CATALOG:
        raise ValueError(f"Unknown weights {name!r}. Known weights: {', '.join(sorted(CATALOG))}")
    return CATALOG[name]
