"""Named video models: every C2D / I3D / non-local variant of the official
zoo and the paper, for R50 and R101, at each official clip configuration.

Each entry point states its depth, temporal kernels, non-local mask and clip
configuration (stem, frames x rate, frozen BN); keyword arguments go to
`VideoResNet` (``include_top``, ``weights``, ``classes``, ``input_shape``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from nonlocal_tf.models.resnet_video import VideoResNet


@dataclass(frozen=True)
class ClipConfig:
    """An official clip configuration and the architecture details it implies."""

    frames: int
    rate: int
    stem: str  # "resnet_video" (conv1/pool1 temporal stride 1) or "resnet_video_org" (stride 2)
    frozen_bn: bool  # the long-clip "affine" models, res3 non-local blocks on groups of 4 frames


CLIP_8X8 = ClipConfig(frames=8, rate=8, stem="resnet_video", frozen_bn=False)
CLIP_32X2 = ClipConfig(frames=32, rate=2, stem="resnet_video_org", frozen_bn=False)
CLIP_32X4 = ClipConfig(frames=32, rate=4, stem="resnet_video", frozen_bn=True)
CLIP_128X1 = ClipConfig(frames=128, rate=1, stem="resnet_video_org", frozen_bn=True)
CLIPS = {"8x8": CLIP_8X8, "32x2": CLIP_32X2, "32x4": CLIP_32X4, "128x1": CLIP_128X1}


def _variant(
    name: str, depth: int, temporal: str, mask: str, clip: ClipConfig, kwargs: dict
) -> keras.Model:
    arguments = {
        "depth": depth,
        "temporal_kernels": temporal,
        "stem": clip.stem,
        "nonlocal_mask": mask,
        "frozen_bn": clip.frozen_bn,
        "input_shape": (clip.frames, None, None, 3),
        "name": name,
    }
    arguments.update(kwargs)  # e.g. a checkpoint's stem or non-local flavour
    return VideoResNet(**arguments)


def c2d_r50_8x8(**kwargs) -> keras.Model:
    """C2D, ResNet-50, 8 frames x rate 8 clips."""
    return _variant("c2d_r50_8x8", 50, "c2d", "none", CLIP_8X8, kwargs)


def c2d_r50_32x2(**kwargs) -> keras.Model:
    """C2D, ResNet-50, 32 frames x rate 2 clips."""
    return _variant("c2d_r50_32x2", 50, "c2d", "none", CLIP_32X2, kwargs)


def c2d_r50_32x4(**kwargs) -> keras.Model:
    """C2D, ResNet-50, 32 frames x rate 4 clips."""
    return _variant("c2d_r50_32x4", 50, "c2d", "none", CLIP_32X4, kwargs)


def c2d_r50_128x1(**kwargs) -> keras.Model:
    """C2D, ResNet-50, 128 frames x rate 1 clips."""
    return _variant("c2d_r50_128x1", 50, "c2d", "none", CLIP_128X1, kwargs)


def c2d_nl5_r50_8x8(**kwargs) -> keras.Model:
    """C2D with 5 non-local blocks, ResNet-50, 8 frames x rate 8 clips."""
    return _variant("c2d_nl5_r50_8x8", 50, "c2d", "nl5", CLIP_8X8, kwargs)


def c2d_nl5_r50_32x2(**kwargs) -> keras.Model:
    """C2D with 5 non-local blocks, ResNet-50, 32 frames x rate 2 clips."""
    return _variant("c2d_nl5_r50_32x2", 50, "c2d", "nl5", CLIP_32X2, kwargs)


def c2d_nl5_r50_32x4(**kwargs) -> keras.Model:
    """C2D with 5 non-local blocks, ResNet-50, 32 frames x rate 4 clips."""
    return _variant("c2d_nl5_r50_32x4", 50, "c2d", "nl5", CLIP_32X4, kwargs)


def c2d_nl5_r50_128x1(**kwargs) -> keras.Model:
    """C2D with 5 non-local blocks, ResNet-50, 128 frames x rate 1 clips."""
    return _variant("c2d_nl5_r50_128x1", 50, "c2d", "nl5", CLIP_128X1, kwargs)


def c2d_nl10_r50_8x8(**kwargs) -> keras.Model:
    """C2D with the 10-block non-local placement, ResNet-50, 8 frames x rate 8 clips."""
    return _variant("c2d_nl10_r50_8x8", 50, "c2d", "nl10", CLIP_8X8, kwargs)


def c2d_nl10_r50_32x2(**kwargs) -> keras.Model:
    """C2D with the 10-block non-local placement, ResNet-50, 32 frames x rate 2 clips."""
    return _variant("c2d_nl10_r50_32x2", 50, "c2d", "nl10", CLIP_32X2, kwargs)


def c2d_nl10_r50_32x4(**kwargs) -> keras.Model:
    """C2D with the 10-block non-local placement, ResNet-50, 32 frames x rate 4 clips."""
    return _variant("c2d_nl10_r50_32x4", 50, "c2d", "nl10", CLIP_32X4, kwargs)


def c2d_nl10_r50_128x1(**kwargs) -> keras.Model:
    """C2D with the 10-block non-local placement, ResNet-50, 128 frames x rate 1 clips."""
    return _variant("c2d_nl10_r50_128x1", 50, "c2d", "nl10", CLIP_128X1, kwargs)


def i3d_r50_8x8(**kwargs) -> keras.Model:
    """I3D (3x1x1 kernels every other block), ResNet-50, 8 frames x rate 8 clips."""
    return _variant("i3d_r50_8x8", 50, "i3d", "none", CLIP_8X8, kwargs)


def i3d_r50_32x2(**kwargs) -> keras.Model:
    """I3D (3x1x1 kernels every other block), ResNet-50, 32 frames x rate 2 clips."""
    return _variant("i3d_r50_32x2", 50, "i3d", "none", CLIP_32X2, kwargs)


def i3d_r50_32x4(**kwargs) -> keras.Model:
    """I3D (3x1x1 kernels every other block), ResNet-50, 32 frames x rate 4 clips."""
    return _variant("i3d_r50_32x4", 50, "i3d", "none", CLIP_32X4, kwargs)


def i3d_r50_128x1(**kwargs) -> keras.Model:
    """I3D (3x1x1 kernels every other block), ResNet-50, 128 frames x rate 1 clips."""
    return _variant("i3d_r50_128x1", 50, "i3d", "none", CLIP_128X1, kwargs)


def i3d_nl5_r50_8x8(**kwargs) -> keras.Model:
    """I3D with 5 non-local blocks, ResNet-50, 8 frames x rate 8 clips."""
    return _variant("i3d_nl5_r50_8x8", 50, "i3d", "nl5", CLIP_8X8, kwargs)


def i3d_nl5_r50_32x2(**kwargs) -> keras.Model:
    """I3D with 5 non-local blocks, ResNet-50, 32 frames x rate 2 clips."""
    return _variant("i3d_nl5_r50_32x2", 50, "i3d", "nl5", CLIP_32X2, kwargs)


def i3d_nl5_r50_32x4(**kwargs) -> keras.Model:
    """I3D with 5 non-local blocks, ResNet-50, 32 frames x rate 4 clips."""
    return _variant("i3d_nl5_r50_32x4", 50, "i3d", "nl5", CLIP_32X4, kwargs)


def i3d_nl5_r50_128x1(**kwargs) -> keras.Model:
    """I3D with 5 non-local blocks, ResNet-50, 128 frames x rate 1 clips."""
    return _variant("i3d_nl5_r50_128x1", 50, "i3d", "nl5", CLIP_128X1, kwargs)


def i3d_nl10_r50_8x8(**kwargs) -> keras.Model:
    """I3D with the 10-block non-local placement, ResNet-50, 8 frames x rate 8 clips."""
    return _variant("i3d_nl10_r50_8x8", 50, "i3d", "nl10", CLIP_8X8, kwargs)


def i3d_nl10_r50_32x2(**kwargs) -> keras.Model:
    """I3D with the 10-block non-local placement, ResNet-50, 32 frames x rate 2 clips."""
    return _variant("i3d_nl10_r50_32x2", 50, "i3d", "nl10", CLIP_32X2, kwargs)


def i3d_nl10_r50_32x4(**kwargs) -> keras.Model:
    """I3D with the 10-block non-local placement, ResNet-50, 32 frames x rate 4 clips."""
    return _variant("i3d_nl10_r50_32x4", 50, "i3d", "nl10", CLIP_32X4, kwargs)


def i3d_nl10_r50_128x1(**kwargs) -> keras.Model:
    """I3D with the 10-block non-local placement, ResNet-50, 128 frames x rate 1 clips."""
    return _variant("i3d_nl10_r50_128x1", 50, "i3d", "nl10", CLIP_128X1, kwargs)


def c2d_r101_8x8(**kwargs) -> keras.Model:
    """C2D, ResNet-101, 8 frames x rate 8 clips."""
    return _variant("c2d_r101_8x8", 101, "c2d", "none", CLIP_8X8, kwargs)


def c2d_r101_32x2(**kwargs) -> keras.Model:
    """C2D, ResNet-101, 32 frames x rate 2 clips."""
    return _variant("c2d_r101_32x2", 101, "c2d", "none", CLIP_32X2, kwargs)


def c2d_r101_32x4(**kwargs) -> keras.Model:
    """C2D, ResNet-101, 32 frames x rate 4 clips."""
    return _variant("c2d_r101_32x4", 101, "c2d", "none", CLIP_32X4, kwargs)


def c2d_r101_128x1(**kwargs) -> keras.Model:
    """C2D, ResNet-101, 128 frames x rate 1 clips."""
    return _variant("c2d_r101_128x1", 101, "c2d", "none", CLIP_128X1, kwargs)


def c2d_nl5_r101_8x8(**kwargs) -> keras.Model:
    """C2D with 5 non-local blocks, ResNet-101, 8 frames x rate 8 clips."""
    return _variant("c2d_nl5_r101_8x8", 101, "c2d", "nl5", CLIP_8X8, kwargs)


def c2d_nl5_r101_32x2(**kwargs) -> keras.Model:
    """C2D with 5 non-local blocks, ResNet-101, 32 frames x rate 2 clips."""
    return _variant("c2d_nl5_r101_32x2", 101, "c2d", "nl5", CLIP_32X2, kwargs)


def c2d_nl5_r101_32x4(**kwargs) -> keras.Model:
    """C2D with 5 non-local blocks, ResNet-101, 32 frames x rate 4 clips."""
    return _variant("c2d_nl5_r101_32x4", 101, "c2d", "nl5", CLIP_32X4, kwargs)


def c2d_nl5_r101_128x1(**kwargs) -> keras.Model:
    """C2D with 5 non-local blocks, ResNet-101, 128 frames x rate 1 clips."""
    return _variant("c2d_nl5_r101_128x1", 101, "c2d", "nl5", CLIP_128X1, kwargs)


def c2d_nl10_r101_8x8(**kwargs) -> keras.Model:
    """C2D with the 10-block non-local placement, ResNet-101, 8 frames x rate 8 clips."""
    return _variant("c2d_nl10_r101_8x8", 101, "c2d", "nl10", CLIP_8X8, kwargs)


def c2d_nl10_r101_32x2(**kwargs) -> keras.Model:
    """C2D with the 10-block non-local placement, ResNet-101, 32 frames x rate 2 clips."""
    return _variant("c2d_nl10_r101_32x2", 101, "c2d", "nl10", CLIP_32X2, kwargs)


def c2d_nl10_r101_32x4(**kwargs) -> keras.Model:
    """C2D with the 10-block non-local placement, ResNet-101, 32 frames x rate 4 clips."""
    return _variant("c2d_nl10_r101_32x4", 101, "c2d", "nl10", CLIP_32X4, kwargs)


def c2d_nl10_r101_128x1(**kwargs) -> keras.Model:
    """C2D with the 10-block non-local placement, ResNet-101, 128 frames x rate 1 clips."""
    return _variant("c2d_nl10_r101_128x1", 101, "c2d", "nl10", CLIP_128X1, kwargs)


def i3d_r101_8x8(**kwargs) -> keras.Model:
    """I3D (3x1x1 kernels every other block), ResNet-101, 8 frames x rate 8 clips."""
    return _variant("i3d_r101_8x8", 101, "i3d", "none", CLIP_8X8, kwargs)


def i3d_r101_32x2(**kwargs) -> keras.Model:
    """I3D (3x1x1 kernels every other block), ResNet-101, 32 frames x rate 2 clips."""
    return _variant("i3d_r101_32x2", 101, "i3d", "none", CLIP_32X2, kwargs)


def i3d_r101_32x4(**kwargs) -> keras.Model:
    """I3D (3x1x1 kernels every other block), ResNet-101, 32 frames x rate 4 clips."""
    return _variant("i3d_r101_32x4", 101, "i3d", "none", CLIP_32X4, kwargs)


def i3d_r101_128x1(**kwargs) -> keras.Model:
    """I3D (3x1x1 kernels every other block), ResNet-101, 128 frames x rate 1 clips."""
    return _variant("i3d_r101_128x1", 101, "i3d", "none", CLIP_128X1, kwargs)


def i3d_nl5_r101_8x8(**kwargs) -> keras.Model:
    """I3D with 5 non-local blocks, ResNet-101, 8 frames x rate 8 clips."""
    return _variant("i3d_nl5_r101_8x8", 101, "i3d", "nl5", CLIP_8X8, kwargs)


def i3d_nl5_r101_32x2(**kwargs) -> keras.Model:
    """I3D with 5 non-local blocks, ResNet-101, 32 frames x rate 2 clips."""
    return _variant("i3d_nl5_r101_32x2", 101, "i3d", "nl5", CLIP_32X2, kwargs)


def i3d_nl5_r101_32x4(**kwargs) -> keras.Model:
    """I3D with 5 non-local blocks, ResNet-101, 32 frames x rate 4 clips."""
    return _variant("i3d_nl5_r101_32x4", 101, "i3d", "nl5", CLIP_32X4, kwargs)


def i3d_nl5_r101_128x1(**kwargs) -> keras.Model:
    """I3D with 5 non-local blocks, ResNet-101, 128 frames x rate 1 clips."""
    return _variant("i3d_nl5_r101_128x1", 101, "i3d", "nl5", CLIP_128X1, kwargs)


def i3d_nl10_r101_8x8(**kwargs) -> keras.Model:
    """I3D with the 10-block non-local placement, ResNet-101, 8 frames x rate 8 clips."""
    return _variant("i3d_nl10_r101_8x8", 101, "i3d", "nl10", CLIP_8X8, kwargs)


def i3d_nl10_r101_32x2(**kwargs) -> keras.Model:
    """I3D with the 10-block non-local placement, ResNet-101, 32 frames x rate 2 clips."""
    return _variant("i3d_nl10_r101_32x2", 101, "i3d", "nl10", CLIP_32X2, kwargs)


def i3d_nl10_r101_32x4(**kwargs) -> keras.Model:
    """I3D with the 10-block non-local placement, ResNet-101, 32 frames x rate 4 clips."""
    return _variant("i3d_nl10_r101_32x4", 101, "i3d", "nl10", CLIP_32X4, kwargs)


def i3d_nl10_r101_128x1(**kwargs) -> keras.Model:
    """I3D with the 10-block non-local placement, ResNet-101, 128 frames x rate 1 clips."""
    return _variant("i3d_nl10_r101_128x1", 101, "i3d", "nl10", CLIP_128X1, kwargs)


VARIANTS = {
    "c2d_r50_8x8": c2d_r50_8x8,
    "c2d_r50_32x2": c2d_r50_32x2,
    "c2d_r50_32x4": c2d_r50_32x4,
    "c2d_r50_128x1": c2d_r50_128x1,
    "c2d_nl5_r50_8x8": c2d_nl5_r50_8x8,
    "c2d_nl5_r50_32x2": c2d_nl5_r50_32x2,
    "c2d_nl5_r50_32x4": c2d_nl5_r50_32x4,
    "c2d_nl5_r50_128x1": c2d_nl5_r50_128x1,
    "c2d_nl10_r50_8x8": c2d_nl10_r50_8x8,
    "c2d_nl10_r50_32x2": c2d_nl10_r50_32x2,
    "c2d_nl10_r50_32x4": c2d_nl10_r50_32x4,
    "c2d_nl10_r50_128x1": c2d_nl10_r50_128x1,
    "i3d_r50_8x8": i3d_r50_8x8,
    "i3d_r50_32x2": i3d_r50_32x2,
    "i3d_r50_32x4": i3d_r50_32x4,
    "i3d_r50_128x1": i3d_r50_128x1,
    "i3d_nl5_r50_8x8": i3d_nl5_r50_8x8,
    "i3d_nl5_r50_32x2": i3d_nl5_r50_32x2,
    "i3d_nl5_r50_32x4": i3d_nl5_r50_32x4,
    "i3d_nl5_r50_128x1": i3d_nl5_r50_128x1,
    "i3d_nl10_r50_8x8": i3d_nl10_r50_8x8,
    "i3d_nl10_r50_32x2": i3d_nl10_r50_32x2,
    "i3d_nl10_r50_32x4": i3d_nl10_r50_32x4,
    "i3d_nl10_r50_128x1": i3d_nl10_r50_128x1,
    "c2d_r101_8x8": c2d_r101_8x8,
    "c2d_r101_32x2": c2d_r101_32x2,
    "c2d_r101_32x4": c2d_r101_32x4,
    "c2d_r101_128x1": c2d_r101_128x1,
    "c2d_nl5_r101_8x8": c2d_nl5_r101_8x8,
    "c2d_nl5_r101_32x2": c2d_nl5_r101_32x2,
    "c2d_nl5_r101_32x4": c2d_nl5_r101_32x4,
    "c2d_nl5_r101_128x1": c2d_nl5_r101_128x1,
    "c2d_nl10_r101_8x8": c2d_nl10_r101_8x8,
    "c2d_nl10_r101_32x2": c2d_nl10_r101_32x2,
    "c2d_nl10_r101_32x4": c2d_nl10_r101_32x4,
    "c2d_nl10_r101_128x1": c2d_nl10_r101_128x1,
    "i3d_r101_8x8": i3d_r101_8x8,
    "i3d_r101_32x2": i3d_r101_32x2,
    "i3d_r101_32x4": i3d_r101_32x4,
    "i3d_r101_128x1": i3d_r101_128x1,
    "i3d_nl5_r101_8x8": i3d_nl5_r101_8x8,
    "i3d_nl5_r101_32x2": i3d_nl5_r101_32x2,
    "i3d_nl5_r101_32x4": i3d_nl5_r101_32x4,
    "i3d_nl5_r101_128x1": i3d_nl5_r101_128x1,
    "i3d_nl10_r101_8x8": i3d_nl10_r101_8x8,
    "i3d_nl10_r101_32x2": i3d_nl10_r101_32x2,
    "i3d_nl10_r101_32x4": i3d_nl10_r101_32x4,
    "i3d_nl10_r101_128x1": i3d_nl10_r101_128x1,
}


def create_model(name: str, **kwargs) -> keras.Model:
    """Builds the named variant (a key of `VARIANTS`), e.g. ``"i3d_nl5_r50_8x8"``."""
    if name not in VARIANTS:
        raise ValueError(f"Unknown model {name!r}. Known models: {', '.join(sorted(VARIANTS))}")
    return VARIANTS[name](**kwargs)
