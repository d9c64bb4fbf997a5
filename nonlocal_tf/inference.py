"""Classifying videos as users have them: many files (the multi-view protocol),
long videos as timelines of windows, and live sources read as they play.

A `Scorer` wraps what scores views: a Keras model or an exported SavedModel
directory (no library needed to make one, see `nonlocal_tf.export`). Views
are made as the evaluation pipeline makes them (`nonlocal_tf.data`).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np

from nonlocal_tf.data import numpy_transforms
from nonlocal_tf.data.decode import (
    VideoDecodeError,
    displayed_rgb,
    frame_times,
    iter_frames,
    probe,
    require_clip,
    short_side_size,
)
from nonlocal_tf.data.spec import ClipSpec


class Scorer:
    """``scorer(views)`` -> per-view class probabilities ``(V, classes)`` for
    float32 RGB views ``(V, T, H, W, 3)`` in [0, 255]."""

    def __init__(self, score: Callable[[np.ndarray], np.ndarray], num_classes: int):
        self._score, self.num_classes = score, num_classes

    def __call__(self, views: np.ndarray) -> np.ndarray:
        return np.asarray(self._score(np.asarray(views, np.float32)), np.float32)

    @classmethod
    def from_keras(cls, model) -> Scorer:
        return cls(model.predict_on_batch, int(model.outputs[0].shape[-1]))

    @classmethod
    def from_saved_model(cls, path: str) -> Scorer:
        """A SavedModel written by `nonlocal_tf.export.export_saved_model`."""
        import tensorflow as tf

        loaded = tf.saved_model.load(path)
        signature = loaded.signatures.get("serve")
        if signature is None:
            raise ValueError(f"{path} has no 'serve' signature: export it with zoo.export.")
        num_classes = int(signature.structured_outputs["probs"].shape[-1])
        return cls(lambda views: signature(video=tf.constant(views))["probs"].numpy(), num_classes)


def classify(
    model, path: str, top: int = 5, views: int = 30, spec: ClipSpec | None = None
) -> list[tuple[str, float]]:
    """The ``top`` classes of the video at ``path`` as ``(name, probability)``:
    the official multi-view test (``views=30``: 10 clips x 3 crops, the
    probabilities averaged) or the centred clip (``views=1``), sampled and
    sized as the model's record says (``model.info``, set by
    `nonlocal_tf.create_model`; ``spec`` overrides it). The model takes RGB in
    [0, 255] (``include_preprocessing=True``). Raises `VideoDecodeError` for a
    video that cannot be read."""
    import dataclasses

    from nonlocal_tf.data.decode import read_sampled
    from nonlocal_tf.data.spec import mode

    info = getattr(model, "info", {}) or {}
    if spec is None:
        if "spec" not in info:
            raise ValueError(
                "The model does not record its clips (build it with nonlocal_tf.create_model), "
                "or pass spec=."
            )
        spec = ClipSpec(**info["spec"])
    if views not in (1, 30):
        raise ValueError(f"`views` must be 30 (the official test) or 1. Received: views={views}")
    test = mode("test")
    if views == 1:
        spec = dataclasses.replace(spec, num_test_clips=1)
    frames = read_sampled(path, test, spec, np.random.default_rng(0))
    clips = numpy_transforms.augment(frames, None, test, spec)  # (3 * clips, T, S, S, 3)
    clips = clips[1:2] if views == 1 else clips  # the centre crop of the one clip
    probs = Scorer.from_keras(model)(clips).mean(axis=0)
    return top_k(probs, top, info.get("class_names"))


def top_k(probs: np.ndarray, k: int, class_names: list[str] | None) -> list[tuple[str, float]]:
    """The ``k`` largest of ``probs`` as ``(name, probability)``."""
    order = np.argsort(-probs, kind="stable")[:k]
    names = class_names or [f"class {i}" for i in range(len(probs))]
    return [(names[i], float(probs[i])) for i in order]


# ------------------------------------------------------------------ timeline
@dataclasses.dataclass
class Window:
    start_s: float
    end_s: float
    scores: np.ndarray  # what the scorer gives: probabilities, or features


def clip_seconds(spec: ClipSpec, fps: float) -> float:
    """The span of one clip at ``fps``: ``clip_len x rate`` frames."""
    return spec.clip_len * spec.rate / fps


def window_indices(start: int, frames: int, spec: ClipSpec, total: int) -> np.ndarray:
    """``spec.clip_len`` frame indices ``spec.rate`` apart, centred in the
    window ``[start, start + frames)``, kept inside the video."""
    span = spec.clip_len * spec.rate
    first = start + (frames - span) // 2
    indices = first + np.arange(spec.clip_len) * spec.rate
    return np.clip(indices, 0, total - 1)


def one_view(frames: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """The centred view of a clip ``(T, H, W, 3)``: short side to
    ``spec.test_short_side``, centre crop of ``spec.test_crop``."""
    return numpy_transforms.center_view(frames, spec.test_short_side, spec.test_crop)


def timeline(
    path: str,
    scorer: Scorer,
    spec: ClipSpec,
    window_s: float | None = None,
    stride_s: float | None = None,
) -> tuple[list[Window], float]:
    """Windows of ``window_s`` seconds every ``stride_s`` seconds over the video
    at ``path`` (defaults: one clip's span, and half of it), each scored on its
    centred view; also the video's frame rate. Windows hold the frames their
    timestamps place in them (`window_spans`), so a variable-rate video's
    windows are the seconds they are labelled. The video is decoded once, in
    order, and only the frames of the windows not yet scored are kept, so an
    hour-long video takes the memory of one window. A video shorter than a
    clip is a `VideoDecodeError`, as everywhere else (`require_clip`)."""
    _, fps = probe(path)
    window_s = window_s or clip_seconds(spec, fps)
    stride_s = stride_s or window_s / 2
    if window_s <= 0 or stride_s <= 0:
        raise ValueError(f"window and stride must be positive. Received: {window_s}, {stride_s}")
    times, duration = frame_times(path)
    require_clip(path, len(times), spec)
    spans = collections.deque(window_spans(times, duration, fps, window_s, stride_s))
    kept: dict[int, np.ndarray] = {}
    windows: list[Window] = []

    def clip(span, total: int) -> np.ndarray:
        _, first, frames = span
        return window_indices(first, frames, spec, total)

    def score(span, total: int):
        frames = np.stack([kept[int(i)] for i in clip(span, total)])
        scores = scorer(one_view(frames, spec)[None])[0]
        windows.append(Window(span[0], min(span[0] + window_s, duration), scores))

    decoded = 0
    for index, frame in enumerate(iter_frames(path, short_side=spec.test_short_side)):
        if not spans or index >= len(times):  # a frame no window holds
            continue
        kept[index], decoded = frame, index + 1
        # A window whose frames have all arrived: scored now, and the frames
        # before the next one's dropped.
        while spans and clip(spans[0], len(times))[-1] < decoded:
            score(spans.popleft(), len(times))
            for i in [i for i in kept if not spans or i < clip(spans[0], len(times))[0]]:
                del kept[i]
    for span in spans:  # fewer frames decoded than packets: the windows they fill
        if all(int(i) in kept for i in clip(span, decoded)):
            score(span, decoded)
    return windows, fps


def window_spans(
    times: np.ndarray, duration: float, fps: float, window_s: float, stride_s: float
) -> list[tuple[float, int, int]]:
    """``(start_s, first frame, frames)`` of each window: one every ``stride_s``
    seconds from 0 while a window fits in the video (one at 0 if none does),
    holding the frames that ``times`` (each frame's, `frame_times`) place in
    ``[start_s, start_s + window_s)``. A window past the video's end counts
    the frames it would hold at ``fps``, so its clip is centred where it would be."""
    eps = 1e-6  # timestamps are rationals: 0.75 s is 0.75 s
    count = max(int(np.floor((duration - window_s) / stride_s + eps)), 0) + 1
    starts = np.arange(count) * stride_s
    first = np.searchsorted(times, starts - eps)
    end = np.searchsorted(times, starts + window_s - eps)
    end += np.maximum(np.round((starts + window_s - duration) * fps), 0).astype(int)
    return [(float(s), int(a), int(b - a)) for s, a, b in zip(starts, first, end, strict=True)]


def plot_timeline(
    windows: list[Window], class_names: list[str] | None, path: str, top: int = 5
) -> str:
    """A PNG of the probabilities of the ``top`` classes (largest peaks) over
    time, each class in its own colour (`class_colour`: the same in every
    video's picture)."""
    from matplotlib.figure import Figure

    probs = np.stack([w.scores for w in windows])
    times = [(w.start_s + w.end_s) / 2 for w in windows]
    figure = Figure(figsize=(8, 3.2), dpi=100)
    axes = figure.add_subplot()
    names = class_names or [f"class {i}" for i in range(probs.shape[1])]
    for c in np.argsort(-probs.max(axis=0))[:top]:
        colour = class_colour(int(c), probs.shape[1])
        axes.plot(times, probs[:, c], marker=".", label=names[c], color=colour)
    axes.set_xlabel("time (s)")
    axes.set_ylabel("probability")
    axes.set_ylim(0, 1)
    axes.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
    return path


def class_colour(index: int, num_classes: int) -> tuple[float, float, float]:
    """The colour of class ``index`` in a timeline: matplotlib's ten
    categorical colours for up to ten classes; beyond, hues the golden ratio
    apart (neighbouring classes far apart on the wheel). It depends on the
    class alone, not on which classes a video's picture shows."""
    import colorsys

    if num_classes <= 10:
        from matplotlib import colormaps

        return tuple(colormaps["tab10"].colors[index])
    return colorsys.hsv_to_rgb((index * 0.618033988749895) % 1.0, 0.75, 0.8)


# ---------------------------------------------------------------------- live
@dataclasses.dataclass
class LivePrediction:
    time_s: float  # position in the source of the window's last frame
    probs: np.ndarray
    dropped_frames: int  # frames read since the last prediction that no window used


class _Reader(threading.Thread):
    """Reads a source into a ring buffer of the last ``capacity`` frames; a
    file is read at its own pace (real time), as a camera or stream delivers."""

    def __init__(self, source: str, capacity: int, short_side: int, realtime: bool):
        super().__init__(daemon=True, name="live-reader")
        self.source, self.short_side, self.realtime = source, short_side, realtime
        self.frames: collections.deque = collections.deque(maxlen=capacity)
        self.lock = threading.Lock()
        self.read = 0
        self.fps = None
        self.error: str | None = None
        self.finished = threading.Event()
        self.ready = threading.Event()

    def run(self):
        import av

        try:
            with av.open(self.source, timeout=10) as container:
                stream = container.streams.video[0]
                self.fps = float(stream.average_rate or stream.guessed_rate or 30)
                self.ready.set()
                started = time.perf_counter()
                for frame in container.decode(stream):
                    image = _resize_short(frame, self.short_side)
                    position = float(frame.time) if frame.time is not None else self.read / self.fps
                    if self.realtime:
                        time.sleep(max(0.0, started + position - time.perf_counter()))
                    with self.lock:
                        self.frames.append((position, image))
                        self.read += 1
        except (av.error.FFmpegError, OSError, IndexError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ready.set()
            self.finished.set()


def _resize_short(frame, short_side: int) -> np.ndarray:
    """A live frame as displayed (rotation applied), short side ``short_side``."""
    return displayed_rgb(frame, short_side_size(frame, short_side))


def live(
    source: str,
    scorer: Scorer,
    spec: ClipSpec,
    stride_s: float = 1.0,
    realtime: bool = True,
    max_predictions: int | None = None,
) -> Iterator[LivePrediction]:
    """Predictions every ``stride_s`` seconds over the last clip of a live
    source (a file, an HTTP/RTSP URL, a capture device PyAV opens). Frames
    arrive in a ring buffer one clip long; when scoring takes longer than the
    stride, the frames that went by unscored are dropped and counted. Raises
    `VideoDecodeError` if the source cannot be opened."""
    span = spec.clip_len * spec.rate
    # The first call traces or compiles the model: made before the source plays.
    scorer(np.zeros((1, spec.clip_len, spec.test_crop, spec.test_crop, 3), np.float32))
    reader = _Reader(source, span, spec.test_short_side, realtime)
    reader.start()
    reader.ready.wait(30)
    if reader.fps is None:
        raise VideoDecodeError(source, reader.error or "cannot be opened")
    used_until, emitted = 0, 0
    next_due = time.perf_counter() + stride_s
    while not (reader.finished.is_set() and reader.read == used_until):
        time.sleep(max(0.0, next_due - time.perf_counter()))
        next_due += stride_s
        with reader.lock:
            buffered, read = list(reader.frames), reader.read
        if len(buffered) < span:
            if reader.finished.is_set():
                break
            continue
        first_in_buffer = read - len(buffered)
        dropped = max(0, first_in_buffer - used_until) if emitted else 0
        clip = np.stack([image for _, image in buffered])[np.arange(spec.clip_len) * spec.rate]
        probs = scorer(one_view(clip, spec)[None])[0]
        used_until = read
        yield LivePrediction(buffered[-1][0], probs, dropped)
        emitted += 1
        if max_predictions is not None and emitted >= max_predictions:
            break
        if time.perf_counter() > next_due:  # slower than real time: skip to now
            next_due = time.perf_counter() + stride_s
    if reader.error and emitted == 0:
        raise VideoDecodeError(source, reader.error)
