"""What a clip is (`ClipSpec`, the dataset presets) and what each mode does
with it (`MODES`): the one table of train / val / test differences, read by
both input engines (`pipeline`, tf.data; `host`, Grain processes).

No TensorFlow here: the host engine runs where TensorFlow is not installed.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """Sampling and augmentation of one dataset recipe."""

    clip_len: int = 8
    rate: int = 8
    train_scale: tuple[int, int] = (256, 320)  # random short side
    crop: int = 224
    val_short_side: int = 256
    test_short_side: int = 256
    test_crop: int = 256
    num_test_clips: int = 10
    min_frames: int | None = None  # fewer decodable frames: skipped; default clip_len

    @classmethod
    def at_size(cls, clip_len: int, rate: int, size: int, **kwargs) -> ClipSpec:
        """Every short side and crop ``size``, no scale jitter: clips at a
        model's own input size (`zoo.predict`, small generated videos)."""
        sizes = {"val_short_side": size, "test_short_side": size, "test_crop": size}
        return cls(clip_len, rate, (size, size), size, **sizes, **kwargs)

    def __post_init__(self):
        if self.clip_len < 1 or self.rate < 1 or self.num_test_clips < 1:
            raise ValueError(f"clip_len, rate and num_test_clips must be >= 1. Received: {self}")
        low, high = self.train_scale
        if not self.crop <= low <= high:
            raise ValueError(f"Need crop <= train_scale[0] <= train_scale[1]. Received: {self}")
        if self.crop > self.val_short_side or self.test_crop > self.test_short_side:
            raise ValueError(
                f"A crop cannot exceed the short side it is taken from. Received: {self}"
            )

    @property
    def fewest_frames(self) -> int:
        """Videos with fewer decodable frames are skipped."""
        return self.min_frames if self.min_frames is not None else self.clip_len


KINETICS_8X8 = ClipSpec(clip_len=8, rate=8)
KINETICS_32X2 = ClipSpec(clip_len=32, rate=2)
# Charades (paper section 5.2): the 224 jitter window rescaled to a 288 crop; test at 320.
CHARADES_32X4 = ClipSpec(
    clip_len=32,
    rate=4,
    train_scale=(329, 411),
    crop=288,
    val_short_side=320,
    test_short_side=320,
    test_crop=320,
)


@dataclasses.dataclass(frozen=True)
class Mode:
    """What one mode samples and how it augments (official
    ``customized_video_input_op`` / ``customized_video_io``), as data that
    each engine carries out with its own ops."""

    name: str
    shuffle: bool  # the default of ``shuffle``
    views: bool  # one element per video holding all its views (test), else one clip
    sampling: str  # "random" start, "center" clip, or the official "multi" clips
    crop: str  # "random", "center" or "three" (along the long side)
    flip: bool  # random horizontal flip of the whole clip

    def clips(self, spec: ClipSpec) -> int:
        return spec.num_test_clips if self.views else 1

    def short_side(self, spec: ClipSpec) -> tuple[int, int]:
        """Range of the short side frames are resized to (equal ends: fixed)."""
        side = {"train": spec.train_scale, "val": (spec.val_short_side,) * 2}
        return side.get(self.name, (spec.test_short_side,) * 2)

    def crop_size(self, spec: ClipSpec) -> int:
        return spec.test_crop if self.views else spec.crop

    def shape(self, spec: ClipSpec) -> list[int]:
        """Static shape of an element's frames: a clip, or a video's views
        ``(clips * 3, T, S, S, 3)``, clip-major (view ``3k + c`` is clip k, crop c)."""
        size = self.crop_size(spec)
        if self.views:
            return [3 * spec.num_test_clips, spec.clip_len, size, size, 3]
        return [spec.clip_len, size, size, 3]


MODES = {
    "train": Mode("train", shuffle=True, views=False, sampling="random", crop="random", flip=True),
    "val": Mode("val", shuffle=False, views=False, sampling="center", crop="center", flip=False),
    "test": Mode("test", shuffle=False, views=True, sampling="multi", crop="three", flip=False),
}


def mode(name: str) -> Mode:
    if name not in MODES:
        raise ValueError(f"`mode` must be one of {tuple(MODES)}. Received: mode={name!r}")
    return MODES[name]


AUGMENT_ON = ("host", "device")


def augment_on(value: str) -> str:
    """``value`` checked: where clips are resized, cropped and flipped, and
    test clips cut into their 3 crops (``"device"``:
    `nonlocal_tf.layers.ClipCrops` on the accelerator)."""
    if value not in AUGMENT_ON:
        raise ValueError(f"`augment_on` must be 'host' or 'device'. Received: augment_on={value!r}")
    return value
