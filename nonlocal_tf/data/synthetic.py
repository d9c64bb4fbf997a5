"""A generated video dataset whose label needs a long-range relation in spacetime.

"Reappear": a coloured square is seen in the first frame on the left side of
the clip; another square appears in the last frame on the right side. The label
is 1 when it is the same colour (the object reappears), 0 otherwise. Frames in
between hold noise and distractor squares of other colours.

A C2D network cannot solve it: its only temporal interaction is ``pool2``
(pairs of frames), so the first and last frames are never seen together before
the global average pool, and a linear read-out of a sum of separate per-object
features cannot tell "same" from "different". A non-local block relates the two
frames directly.
"""

from __future__ import annotations

import numpy as np

PALETTE = np.array(
    [(230, 40, 40), (40, 200, 60), (50, 90, 240), (240, 220, 40), (200, 60, 220), (40, 220, 220)],
    dtype=np.uint8,
)
CLASS_NAMES = ("different", "reappears")


def reappear_clip(
    rng: np.random.Generator,
    label: int,
    frames: int = 8,
    size: int = 32,
    square: int = 8,
    colors: int = 3,
):
    """One uint8 clip ``(frames, size, size, 3)`` with the given label; squares
    take one of the first ``colors`` colours of `PALETTE`."""
    clip = rng.integers(0, 40, size=(frames, size, size, 3), dtype=np.uint8)
    first = int(rng.integers(colors))
    last = first if label else int((first + rng.integers(1, colors)) % colors)
    half = size // 2

    def paint(t, color, x_range):
        y = int(rng.integers(0, size - square))
        x = int(rng.integers(*x_range))
        clip[t, y : y + square, x : x + square] = PALETTE[color]

    paint(0, first, (0, half - square))
    paint(frames - 1, last, (half, size - square))
    for t in range(1, frames - 1):  # distractors: never decide the label
        if rng.random() < 0.3:
            paint(t, int(rng.integers(colors)), (0, size - square))
    return clip


def reappear_dataset(
    num: int, seed: int = 0, frames: int = 8, size: int = 32, square: int = 8, colors: int = 3
):
    """``(clips uint8 (num, frames, size, size, 3), labels int32 (num,))``, balanced."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num) % 2).astype(np.int32)
    clips = np.stack([reappear_clip(rng, int(y), frames, size, square, colors) for y in labels])
    return clips, labels


def write_video(path: str, frames: np.ndarray, fps: int = 8) -> str:
    """Encodes uint8 RGB ``frames (T, H, W, 3)`` (even H and W) as an H.264
    file at ``path`` with PyAV, at near-lossless quality."""
    import fractions

    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"Expected uint8 frames (T, H, W, 3); got {frames.dtype} {frames.shape}.")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"H.264 (yuv420p) needs even frame sizes; got {frames.shape[1:3]}.")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.time_base = fractions.Fraction(1, fps)
        stream.options = {"crf": "4", "bf": "0"}
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def write_reappear_videos(directory: str, per_class: int, seed: int = 0, **kwargs) -> list[str]:
    """A folder-per-class video dataset: ``directory/<class>/<n>.mp4`` for the
    two `CLASS_NAMES`, ``per_class`` videos each (``kwargs``: `reappear_clip`'s)."""
    import os

    rng = np.random.default_rng(seed)
    paths = []
    for label, name in enumerate(CLASS_NAMES):
        os.makedirs(os.path.join(directory, name), exist_ok=True)
        for n in range(per_class):
            path = os.path.join(directory, name, f"{n:04d}.mp4")
            paths.append(write_video(path, reappear_clip(rng, label, **kwargs)))
    return paths
