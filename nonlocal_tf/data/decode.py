"""Decoding video files with PyAV, only the frames a clip needs.

Errors are turned into `VideoDecodeError` with a short reason (corrupt file, no
video stream, frames that change size, ...), which the pipelines count and log
as skips.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import numpy as np

from nonlocal_tf.data import sampling
from nonlocal_tf.data.spec import ClipSpec, Mode

# Frames whose short side is over the bound a caller passes (by default this)
# are scaled down by FFmpeg as they are decoded: a 4K video takes the memory
# of one at the bound, not gigabytes for its sampled frames.
MAX_SHORT_SIDE = 1080
# More pixels than this in a frame is no video to learn from: refused before
# decoding (one such RGB frame is 200 MB).
MAX_FRAME_PIXELS = 8192 * 8192


class VideoDecodeError(RuntimeError):
    """A video could not be decoded; ``reason`` says why in a few words."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def probe(path: str) -> tuple[int, float]:
    """(number of frames, frames per second) of the first video stream; the
    count is read from the container, or estimated from the duration."""

    with _video(path) as (container, stream):
        return _frame_count(container, stream), _fps(stream)


def read_frames(
    path: str,
    choose: Callable[[int], np.ndarray],
    threaded: bool = True,
    max_short_side: int | None = MAX_SHORT_SIDE,
) -> np.ndarray:
    """Decodes the frames ``choose(num_frames)`` asks for (any shape of indices).

    Where every packet of the stream has its own timestamp, the frame count is
    the packet count and only the wanted frames and those they reference are
    decoded, from the keyframe before the first (`_decode_wanted`; one core of
    an Intel Xeon decoded a train 8x8 clip of long-GOP H.264 in 21.7 ms instead
    of 31.5, ``bench/RESULTS.md``). Otherwise (raw streams, a decoder error)
    every frame up to the last wanted one is decoded (`_decode_every`).
    Returns uint8 RGB ``(*indices.shape, H, W, 3)``, as displayed (turned by
    the stream's display rotation). ``threaded``: FFmpeg's own decoding
    threads (off where one process decodes per core). Frames whose short side
    is over ``max_short_side`` are scaled down to it by FFmpeg as they are
    decoded (aspect kept; None: never), so memory is that of the frames the
    caller will use; a frame over ``MAX_FRAME_PIXELS`` pixels is a
    `VideoDecodeError` naming its size.
    """

    with _video(path, threaded) as (container, stream):
        packets = _timed_packets(container, stream)
        if packets is not None:
            indices = np.asarray(choose(len(packets)))
            frames = _decode_wanted(stream, packets, path, _wanted(indices), max_short_side)
            if frames is not None:
                return _stack(frames, indices, path)
    return _decode_every(path, choose, threaded, max_short_side)


def _decode_every(
    path: str, choose: Callable[[int], np.ndarray], threaded: bool, max_short_side: int | None
) -> np.ndarray:
    """`read_frames` by decoding every frame on the way: from the start, or
    from the keyframe before the first wanted one when it is far in, frames
    indexed by count (by time after such a seek). The count is the
    container's; if it announced more frames than it holds, the indices are
    chosen again from the real count; if none, every frame is decoded once."""
    with _video(path, threaded) as (container, stream):
        announced = _frame_count(container, stream)
        if announced < 1:  # no count announced: every frame decoded, and kept
            frames = _decode_until(container, stream, path, None, set(), max_short_side)
            if not frames:
                raise VideoDecodeError(path, "no decodable frame")
            indices = np.asarray(choose(len(frames)))
        else:
            indices = np.asarray(choose(announced))
            last = indices.max()
            frames = _decode_until(container, stream, path, last, _wanted(indices), max_short_side)
    wanted = _wanted(indices)
    if not wanted.issubset(frames):
        real = max(frames) + 1 if frames else 0
        if real == 0:
            raise VideoDecodeError(path, "no decodable frame")
        # The container over-announced its length: choose again from what exists.
        indices = np.asarray(choose(real))
        wanted = _wanted(indices)
        if not wanted.issubset(frames):
            with _video(path, threaded) as (container, stream):
                frames = _decode_until(container, stream, path, max(wanted), wanted, max_short_side)
        if not wanted.issubset(frames):
            raise VideoDecodeError(path, "truncated: frames missing after decoding")
    return _stack(frames, indices, path)


def _wanted(indices: np.ndarray) -> set[int]:
    return set(int(i) for i in indices.ravel())


def _stack(frames: dict[int, np.ndarray], indices: np.ndarray, path: str) -> np.ndarray:
    """The frames at ``indices``, ``(*indices.shape, H, W, 3)``."""
    shapes = {frames[i].shape for i in _wanted(indices)}
    if len(shapes) > 1:
        raise VideoDecodeError(path, f"frames change size ({sorted(shapes)})")
    return np.stack([frames[int(i)] for i in indices.ravel()]).reshape(
        *indices.shape, *shapes.pop()
    )


def frame_times(path: str) -> tuple[np.ndarray, float]:
    """Each frame's display time in seconds from the first frame's, in display
    order, and the video's duration (to the end of its last frame), from the
    packets' timestamps without decoding (a variable-rate video's frames are
    not index / rate apart); index / nominal rate where packets lack
    timestamps of their own."""
    import av

    with _video(path) as (container, stream):
        stamps = []  # (pts, duration) per packet: a few bytes each, not the packets
        with contextlib.suppress(av.error.FFmpegError):  # a damaged tail: what was read
            for packet in container.demux(stream):
                if packet.size:
                    stamps.append((packet.pts, packet.duration))
        fps, base = _fps(stream), stream.time_base
    pts = [stamp for stamp, _ in stamps]
    if not stamps:
        raise VideoDecodeError(path, "no video packets")
    if base and None not in pts and len(set(pts)) == len(pts):
        stamps.sort()
        times = np.array([float((stamp - stamps[0][0]) * base) for stamp, _ in stamps])
        if stamps[-1][1]:  # the last frame's own duration
            last = float(stamps[-1][1] * base)
        else:  # as long as the one before it
            last = times[-1] - times[-2] if len(times) > 1 else (1 / fps if fps else 0.0)
        return times, float(times[-1] + last)
    if not fps:
        raise VideoDecodeError(path, "neither timestamps nor a frame rate")
    return np.arange(len(stamps)) / fps, len(stamps) / fps


def read_sampled(
    path: str, mode: Mode, spec: ClipSpec, rng: np.random.Generator, threaded: bool = True
) -> np.ndarray:
    """The frames ``mode`` samples from the video at ``path`` (`sampling.indices`):
    ``(T, H, W, 3)``, or ``(clips, T, H, W, 3)`` for the multi-clip test. A
    video with fewer than ``spec.fewest_frames`` frames is a `VideoDecodeError`.
    Frames come at most twice the largest short side the mode resizes to
    (``mode.short_side``): ordinary videos keep their pixels, a 4K one is
    scaled as it is decoded (the 30-view test read of a 3840x2160 video
    peaked at 2227 MB of RSS with its frames kept whole, 214 MB so)."""

    def choose(num_frames: int) -> np.ndarray:
        require_clip(path, num_frames, spec)
        return sampling.indices(mode, num_frames, spec, rng)

    return read_frames(path, choose, threaded, 2 * mode.short_side(spec)[1])


def require_clip(path: str, num_frames: int, spec: ClipSpec) -> None:
    """A `VideoDecodeError` for a video of fewer than ``spec.fewest_frames``
    frames: every reader skips it the same way (a clip of it would be one
    frame repeated)."""
    if num_frames < spec.fewest_frames:
        raise VideoDecodeError(
            path, f"shorter than a clip ({num_frames} frames < {spec.fewest_frames})"
        )


def skip_reason(exc: Exception) -> str:
    """What a pipeline logs and counts for a video that raised ``exc``."""
    if isinstance(exc, VideoDecodeError):
        return exc.reason
    return f"decoder error ({type(exc).__name__}: {exc})"


def _timed_packets(container, stream) -> list | None:
    """The stream's packets in decoding order, when each has a timestamp of its
    own (then a frame's index is the rank of its timestamp: its count in
    display order, whatever the frame rate); None otherwise, or when the
    container cannot be read to its end."""
    import av

    try:
        packets = [packet for packet in container.demux(stream) if packet.size]
    except av.error.FFmpegError:
        return None
    stamps = [packet.pts for packet in packets]
    if not packets or None in stamps or len(set(stamps)) != len(stamps):
        return None
    return packets


def _decode_wanted(
    stream, packets: list, path: str, wanted: set[int], max_short_side: int | None = None
):
    """The ``wanted`` frames by index (`_timed_packets`), decoding from the
    keyframe shown at or before the first of them and skipping the packets
    that neither are wanted nor serve as a reference (FFmpeg's
    ``skip_frame``, set per packet): about half of a long-GOP H.264 stream.
    A frame's pixels do not depend on the frames skipped, which no other frame
    reads. None on a decoder error or a wanted frame not produced (the caller
    then decodes every frame, with its own handling of damaged streams)."""
    import av

    rank = {stamp: i for i, stamp in enumerate(sorted(packet.pts for packet in packets))}
    if max(wanted) >= len(rank):
        return None
    first = min(wanted)
    start = 0
    for i, packet in enumerate(packets):
        if packet.is_keyframe and rank[packet.pts] <= first:
            start = i
    codec = stream.codec_context
    if codec is None:  # no decoder opened for it (a damaged header)
        return None
    kept: dict[int, np.ndarray] = {}
    size = None

    def keep(frames) -> None:
        nonlocal size
        for frame in frames:
            size = _same_size(path, size, frame)
            index = rank.get(frame.pts)
            if index in wanted:
                kept[index] = displayed_rgb(frame, _bounded(frame, max_short_side))

    try:
        for packet in packets[start:]:
            codec.skip_frame = "DEFAULT" if rank[packet.pts] in wanted else "NONREF"
            keep(codec.decode(packet))
            if len(kept) == len(wanted):
                return kept
        codec.skip_frame = "DEFAULT"
        keep(codec.decode(None))  # the frames still held for reordering
    except av.error.FFmpegError:
        return None
    finally:
        codec.skip_frame = "DEFAULT"
    return kept if len(kept) == len(wanted) else None


def _decode_until(
    container, stream, path, last: int | None, wanted: set[int], max_short_side: int | None
) -> dict[int, np.ndarray]:
    """Frames by index up to ``last`` (all when None), keeping those in ``wanted``
    (all when ``last`` is None), short side bounded (`_bounded`)."""
    import av

    fps = _fps(stream)
    start_pts = stream.start_time or 0
    first = min(wanted) if wanted else 0
    seeked = False
    if last is not None and fps > 0 and stream.time_base and first > 2 * fps:
        target = start_pts + int((first - fps) / fps / stream.time_base)
        try:
            container.seek(max(target, start_pts), stream=stream, backward=True, any_frame=False)
            seeked = True
        except av.error.FFmpegError:
            try:
                container.seek(0, stream=stream)
            except av.error.FFmpegError as exc:
                raise _broken(path, exc) from exc
    kept: dict[int, np.ndarray] = {}
    count = 0
    size = None
    try:
        for frame in container.decode(stream):
            size = _same_size(path, size, frame)
            if seeked and frame.pts is not None:
                index = int(round(float((frame.pts - start_pts) * stream.time_base) * fps))
            else:
                index = count
            count = index + 1
            if last is None or index in wanted:
                kept[index] = displayed_rgb(frame, _bounded(frame, max_short_side))
            if last is not None and index >= last:
                break
    except av.error.FFmpegError as exc:
        if not kept:
            raise _broken(path, exc) from exc
        # A truncated or damaged tail: keep what decoded; the caller checks what is missing.
    return kept


def _broken(path: str, exc: Exception) -> VideoDecodeError:
    """An FFmpeg error before any frame, as a skip: a corrupt stream, or memory
    that ran out (FFmpeg's ENOMEM, which is no fault of the file)."""
    import av

    if isinstance(exc, av.error.MemoryError):
        return VideoDecodeError(path, "out of memory while decoding (FFmpeg's MemoryError)")
    return VideoDecodeError(path, f"corrupt stream ({type(exc).__name__})")


def _same_size(path: str, size: tuple[int, int] | None, frame) -> tuple[int, int]:
    """The frame's (height, width); a `VideoDecodeError` when the frames before
    it had another ``size``."""
    current = (frame.height, frame.width)
    _check_pixels(path, *current)
    if size is not None and current != size:
        raise VideoDecodeError(path, f"frames change size ({size} then {current})")
    return current


def _check_pixels(path: str, height: int, width: int) -> None:
    if height * width > MAX_FRAME_PIXELS:
        raise VideoDecodeError(
            path, f"frame size {width}x{height} too large (over 8192x8192 pixels)"
        )


def short_side_size(frame, short_side: int) -> tuple[int, int]:
    """(height, width) of ``frame`` with its short side ``short_side``, aspect kept."""
    height, width = frame.height, frame.width
    scale = short_side / min(height, width)
    return max(int(round(height * scale)), 1), max(int(round(width * scale)), 1)


def _bounded(frame, max_short_side: int | None) -> tuple[int, int] | None:
    """The size `_scaled` to ``max_short_side`` of a frame whose short side is
    over it; None (its own size) otherwise."""
    if max_short_side and min(frame.height, frame.width) > max_short_side:
        return short_side_size(frame, max_short_side)
    return None


def displayed_rgb(frame, size: tuple[int, int] | None = None) -> np.ndarray:
    """``frame`` as uint8 RGB ``(H, W, 3)`` as it is displayed, scaled by
    FFmpeg (bilinear) to ``size`` (height, width, as stored) if given. A
    display rotation (phones store portrait video landscape) is applied as
    FFmpeg and players apply it: quarter turns counterclockwise by the
    frame's display matrix (``frame.rotation``); a mirror in it is not."""
    rotation = frame.rotation  # (a reformatted frame has no display matrix)
    if size is not None:
        frame = frame.reformat(width=size[1], height=size[0])
    image = frame.to_ndarray(format="rgb24")
    if rotation and rotation % 90 == 0:
        image = np.ascontiguousarray(np.rot90(image, rotation // 90))
    return image


def _open(path: str):
    import av

    if not os.path.exists(path):
        raise VideoDecodeError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "empty file")
    try:
        return av.open(path, metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise VideoDecodeError(path, f"unreadable container ({type(exc).__name__})") from exc


@contextlib.contextmanager
def _video(path: str, threaded: bool = True):
    """``(container, stream)``: the file opened, its first video stream
    decoding with FFmpeg's threads or not."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        if stream.codec_context is not None:  # the size in the header, before any frame
            _check_pixels(path, stream.codec_context.height, stream.codec_context.width)
        stream.thread_type = "AUTO" if threaded else "NONE"
        yield container, stream


def _video_stream(container, path):
    if not container.streams.video:
        raise VideoDecodeError(path, "no video stream")
    return container.streams.video[0]


def _fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _frame_count(container, stream) -> int:
    if stream.frames and stream.frames > 0:
        return int(stream.frames)
    fps = _fps(stream)
    if stream.duration and stream.time_base and fps:
        return int(round(float(stream.duration * stream.time_base) * fps))
    if container.duration and fps:
        return int(round(container.duration / 1_000_000 * fps))
    return 0


def iter_frames(
    path: str, fps: float | None = None, short_side: int | None = None
) -> Iterator[np.ndarray]:
    """Every frame in order (or frames resampled to ``fps`` by timestamp), as
    uint8 RGB ``(H, W, 3)`` as displayed (`_rgb`), optionally resized so the
    short side is ``short_side`` (bilinear, by FFmpeg); one frame in memory
    at a time.
    Raises `VideoDecodeError` for a stream that yields nothing or breaks
    part way (after the frames before the break)."""
    import av

    with _video(path) as (container, stream):
        source_fps = _fps(stream)
        count, next_time, size = 0, 0.0, None
        try:
            for index, frame in enumerate(container.decode(stream)):
                size = _same_size(path, size, frame)
                if fps:
                    time = (
                        float(frame.time) if frame.time is not None else index / (source_fps or fps)
                    )
                    if time + 1e-6 < next_time:
                        continue
                    next_time += 1.0 / fps
                    while next_time <= time:  # the source is slower than fps: catch up
                        next_time += 1.0 / fps
                count += 1
                yield displayed_rgb(
                    frame, short_side_size(frame, short_side) if short_side else None
                )
        except av.error.FFmpegError as exc:
            if not count:
                raise _broken(path, exc) from exc
            raise VideoDecodeError(
                path, f"truncated: decoding failed after {count} frames"
            ) from exc
    if not count:
        raise VideoDecodeError(path, "no decodable frame")


def read_all_frames(
    path: str, fps: float | None = None, short_side: int | None = None
) -> np.ndarray:
    """`iter_frames` stacked: uint8 RGB ``(N, H, W, 3)``."""
    return np.stack(list(iter_frames(path, fps, short_side)))
