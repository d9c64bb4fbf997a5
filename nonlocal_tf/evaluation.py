"""The multi-view test protocol: a video's score is the sum of the softmax
(or sigmoid) vectors of its views (official: 10 clips x 3 crops, through the
fully-convolutional head); video-level top-1 / top-5, clip-level (per view)
accuracy, and Charades mAP for multi-label data."""

from __future__ import annotations

import sys
import time

import keras
import numpy as np

from nonlocal_tf import prefetch
from nonlocal_tf.data.spec import MODES, ClipSpec
from nonlocal_tf.layers.clip_crops import cut_views
from nonlocal_tf.utils import passes_of_unknown_length


def views_per_video(spec: ClipSpec) -> int:
    """Views of a video in the multi-view test (10 clips x 3 crops officially)."""
    return MODES["test"].shape(spec)[0]


def average_precision(scores, labels) -> float:
    """AP of one class: mean precision at each positive, by decreasing score."""
    order = np.argsort(-scores, kind="stable")
    hits = labels[order] > 0
    if not hits.any():
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def evaluate(
    model,
    dataset,
    num_classes: int,
    multi_label: bool,
    max_videos=None,
    progress: bool = False,
    total: int | None = None,
) -> dict:
    """The multi-view protocol: each element of ``dataset`` is one video's
    views ``(V, T, H, W, 3)`` (or, made with ``augment_on="device"``, its
    clips' ``(windows, geometry)``, whose views `cut_views` cuts where the
    model runs), its label and its index; the V score vectors are
    summed. The views go through `model.predict` (compiled as the backend
    compiles), the next videos copied to the accelerator while the model runs
    on this one (`nonlocal_tf.prefetch`); a model that is not a Keras model
    (`nonlocal_tf.inference.Scorer`: a SavedModel) scores each video's views
    by a call. The report's ``seconds`` is the whole pass, ``videos_per_s``
    the rate after the first tenth of the videos (the start-up, compilation
    included, left out). ``progress``: a line on stderr every few seconds,
    out of ``total`` videos where the caller knows how many there are."""
    video_labels, view_counts, pulled = [], [], []
    expected = min((n for n in (total, max_videos) if n), default=None)
    started = time.perf_counter()

    def videos():
        elements = iter(dataset)
        try:
            for n, (views, label, _index) in enumerate(elements):
                if max_videos is not None and n >= max_videos:
                    return
                video_labels.append(np.asarray(label))
                if isinstance(views, tuple):  # (windows, geometry): K clips x their crops
                    view_counts.append(int(np.prod(views[1].shape[:2])))
                else:
                    view_counts.append(int(views.shape[0]))
                pulled.append(time.perf_counter())
                if progress:
                    _report(len(pulled), expected, started)
                yield (views,)
        finally:  # stopped early at max_videos: Grain's worker processes end here
            getattr(elements, "close", lambda: None)()

    stream = videos()
    first = next(stream, None)
    if first is None:
        raise ValueError("No video to evaluate: the data is empty or every video was skipped.")

    cut = cut_views if isinstance(first[0], tuple) else iter

    def all_videos():  # a generator, as `predict` wants
        yield first
        yield from stream

    if not isinstance(model, keras.Model):  # a Scorer
        # Views cut on an accelerator come back to the host: the scorer reads NumPy.
        probs = np.concatenate([model(keras.ops.convert_to_numpy(v)) for (v,) in cut(all_videos())])
    elif keras.backend.backend() == "tensorflow":
        # `predict` would run this generator inside a tf.data pipeline of its
        # own, which then iterates ``dataset``: one compiled call per video instead.
        probs = np.concatenate([model.predict_on_batch(v) for (v,) in cut(all_videos())])
    else:
        with passes_of_unknown_length():  # the generator ends with the videos
            placed = cut(prefetch.to_device(all_videos()))
            probs = model.predict(placed, verbose=0)  # (sum V, classes)
    ended = time.perf_counter()
    if progress:
        _report(len(pulled), expected, started, final=True)
    per_video = np.split(probs, np.cumsum(view_counts)[:-1])
    video_scores = [p.sum(axis=0) for p in per_video]
    clip_hits = []
    if not multi_label:
        for p, label in zip(per_video, video_labels, strict=True):
            clip_hits.extend(p.argmax(axis=1) == int(label))
    views = per_video[0]
    scores = np.stack(video_scores)
    report = {
        "videos": len(video_scores),
        "views_per_video": int(views.shape[0]),
        "seconds": round(ended - started, 3),
        "videos_per_s": _steady_rate(pulled, ended),
    }
    if multi_label:
        labels = np.stack(video_labels)
        aps = [average_precision(scores[:, c], labels[:, c]) for c in range(num_classes)]
        report["mAP"] = float(np.nanmean(aps))
        report["classes_with_positives"] = int(np.sum(~np.isnan(aps)))
    else:
        labels = np.array([int(v) for v in video_labels])
        top5 = np.argsort(-scores, axis=1)[:, :5]
        report["top1"] = float(np.mean(top5[:, 0] == labels))
        report["top5"] = float(np.mean([labels[i] in top5[i] for i in range(len(labels))]))
        report["clip_top1"] = float(np.mean(clip_hits))
    return report


_last_report = [0.0]


def _report(done: int, total: int | None, started: float, final: bool = False) -> None:
    """``[n/total videos] rate`` on stderr, at most every 5 seconds (and at the end)."""
    now = time.perf_counter()
    if not final and now - _last_report[0] < 5.0:
        return
    _last_report[0] = now
    of = f"/{total}" if total else ""
    rate = done / max(now - started, 1e-9)
    sys.stderr.write(f"[{done}{of} videos] {rate:.2f} videos/s, {now - started:.0f}s\n")
    sys.stderr.flush()


def _steady_rate(pulled: list[float], ended: float) -> float | None:
    """Videos per second from the first tenth of the videos on (each timed
    when the model's loop asked for it), to the end; None under 10 videos."""
    skip = len(pulled) // 10
    if len(pulled) < 10 or ended <= pulled[skip]:
        return None
    return round((len(pulled) - skip) / (ended - pulled[skip]), 2)
