"""Named video models: every C2D / I3D / non-local variant of the official zoo
and the paper, for R50 and R101, at each official clip configuration, as one
table of `Variant` records generated from the few real axes.

A record answers what a name stands for (``VARIANTS["i3d_nl5_r50_8x8"].clip``,
``.depth``, ``.recipe``); callers read it and never parse names. The named
builders (``models.i3d_nl5_r50_8x8(**kwargs)``, the keras.applications habit)
are generated from the table; keyword arguments go to `VideoResNet`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from types import MappingProxyType

import keras

from nonlocal_tf.models.resnet_video import VideoResNet


@dataclasses.dataclass(frozen=True)
class ClipConfig:
    """An official clip configuration and the architecture details it implies."""

    frames: int
    rate: int
    stem: str  # "resnet_video" (conv1/pool1 temporal stride 1) or "resnet_video_org" (stride 2)
    frozen_bn: bool  # the long-clip "affine" models: res3 non-local blocks on groups of 4 frames


CLIPS = MappingProxyType(
    {
        "8x8": ClipConfig(frames=8, rate=8, stem="resnet_video", frozen_bn=False),
        "32x2": ClipConfig(frames=32, rate=2, stem="resnet_video_org", frozen_bn=False),
        "32x4": ClipConfig(frames=32, rate=4, stem="resnet_video", frozen_bn=True),
        "128x1": ClipConfig(frames=128, rate=1, stem="resnet_video_org", frozen_bn=True),
    }
)
ARCHITECTURES = {"c2d": "C2D", "i3d": "I3D (3x1x1 kernels every other block)"}
NONLOCAL = {"none": "", "nl5": " with 5 non-local blocks", "nl10": " with the 10-block placement"}
DEPTHS = (50, 101)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One named video model: ``{arch}[_{nonlocal}]_r{depth}_{clip}``."""

    name: str
    arch: str  # "c2d" or "i3d": the temporal kernels
    depth: int
    nonlocal_mask: str  # "none", "nl5" or "nl10" (see `resolve_nonlocal_mask`)
    clip: ClipConfig

    @property
    def recipe(self) -> str:
        """The official training recipe (`nonlocal_tf.training.RECIPES`)."""
        return "official_frozen_bn" if self.clip.frozen_bn else "official"

    @property
    def description(self) -> str:
        clip = self.clip
        return (
            f"{ARCHITECTURES[self.arch]}{NONLOCAL[self.nonlocal_mask]}, ResNet-{self.depth}, "
            f"{clip.frames} frames x rate {clip.rate} clips."
        )

    @property
    def arguments(self) -> dict:
        """`VideoResNet`'s arguments for this variant."""
        return {
            "depth": self.depth,
            "temporal_kernels": self.arch,
            "stem": self.clip.stem,
            "nonlocal_mask": self.nonlocal_mask,
            "frozen_bn": self.clip.frozen_bn,
            "input_shape": (self.clip.frames, None, None, 3),
            "name": self.name,
        }

    def build(self, **overrides) -> keras.Model:
        """`VideoResNet` with this variant's arguments; ``overrides`` win
        (``include_top``, ``weights``, ``classes``, ``input_shape``, a
        checkpoint's stem or non-local flavour, ...)."""
        return VideoResNet(**{**self.arguments, **overrides})

    __call__ = build


def _variants():
    axes = itertools.product(DEPTHS, ARCHITECTURES, NONLOCAL, CLIPS.items())
    for depth, arch, mask, (clip_name, clip) in axes:
        nonlocal_part = "" if mask == "none" else f"_{mask}"
        name = f"{arch}{nonlocal_part}_r{depth}_{clip_name}"
        yield Variant(name, arch, depth, mask, clip)


VARIANTS: MappingProxyType[str, Variant] = MappingProxyType({v.name: v for v in _variants()})


def create_model(name: str, **overrides) -> keras.Model:
    """Builds the named variant (a key of `VARIANTS`), e.g. ``"i3d_nl5_r50_8x8"``."""
    if name not in VARIANTS:
        raise ValueError(f"Unknown model {name!r}. Known models: {', '.join(sorted(VARIANTS))}")
    return VARIANTS[name].build(**overrides)


def _builder(variant: Variant) -> Callable[..., keras.Model]:
    def build(**kwargs) -> keras.Model:
        return variant.build(**kwargs)

    build.__name__ = build.__qualname__ = variant.name
    build.__doc__ = f"{variant.description}\n\nKeyword arguments go to `VideoResNet`."
    return build


globals().update({name: _builder(variant) for name, variant in VARIANTS.items()})
__all__ = ["CLIPS", "VARIANTS", "ClipConfig", "Variant", "create_model", *VARIANTS]
