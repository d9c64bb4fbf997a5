"""Small real videos, encoded by the tests with PyAV, whose frames carry their
own index (so tests can check which frames were sampled)."""

from __future__ import annotations

import fractions

import numpy as np

STEP = 16  # gray levels 16 apart survive H.264 / MPEG-4 / VP8 compression


def frame_image(index: int, height: int, width: int) -> np.ndarray:
    """Index in base 16 as two gray halves (low digit left, high digit right) of
    the bottom half; a red top-left corner checks RGB order and flips."""
    image = np.full((height, width, 3), 128, np.uint8)
    image[height // 2 :, : width // 2] = (index % 16) * STEP
    image[height // 2 :, width // 2 :] = (index // 16 % 16) * STEP
    image[: height // 4, : width // 4] = (255, 0, 0)
    return image


def write_video(
    path,
    num_frames=30,
    height=48,
    width=64,
    codec="libx264",
    fps=25,
    sizes=None,
    first_pts=0,
    options=None,
    stamps=None,
    rotation=None,
) -> str:
    """Writes ``num_frames`` frames; ``sizes`` may give a (height, width) per
    frame, ``options`` the encoder's (libx264: GOPs of 8, no B-frames unless
    given), ``stamps`` each frame's timestamp in 1/``fps`` (default: one apart
    from ``first_pts``), ``rotation`` the display rotation in degrees
    counterclockwise (the stream's display matrix, as phones write it)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = fractions.Fraction(1, fps)
        if codec == "libx264" or options:
            stream.options = options or {"g": "8", "bf": "0"}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(num_frames):
            h, w = sizes[i] if sizes else (height, width)
            frame = av.VideoFrame.from_ndarray(frame_image(first_pts + i, h, w), format="rgb24")
            if (h, w) != (height, width):
                frame = frame.reformat(width=width, height=height)
            frame.pts = stamps[i] if stamps is not None else first_pts + i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def write_black_video(path, height: int, width: int, num_frames: int = 10) -> str:
    """A black H.264 video of any size, cheap to make: frames of the largest
    sizes compress to a few kB each (a 3840x2160 10-frame file is about 50 kB)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = {"g": "8", "bf": "0", "preset": "ultrafast"}
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane, level in zip(frame.planes, (0, 128, 128), strict=True):
            plane.update(bytes([level]) * plane.buffer_size)
        for i in range(num_frames):
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def frame_indices(frames: np.ndarray) -> np.ndarray:
    """The index each decoded frame carries (from its mean gray level away from the corner)."""
    h, w = frames.shape[-3:-1]
    low = frames[..., h // 2 + 2 : h - 2, 2 : w // 2 - 2, 1].mean(axis=(-1, -2))
    high = frames[..., h // 2 + 2 : h - 2, w // 2 + 2 : w - 2, 1].mean(axis=(-1, -2))
    return (np.round(low / STEP) + 16 * np.round(high / STEP)).astype(int)
