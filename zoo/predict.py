"""What is in these videos: top-k classes per video, per window of a long video,
or every few seconds of a live source.

    python -m zoo.predict --model=reappear_c2d_nl5_r50.demo --input=videos/ --output=predictions.jsonl
    python -m zoo.predict --model=runs/my_run --input="clips/*.mp4" --views=1
    python -m zoo.predict --model=export/saved_model --input=clips/
    python -m zoo.predict --model=i3d_nl5_r50_8x8.k400 --input=match.mp4 --window=2 --stride=1 \\
        --output=timeline.csv --timeline_png=timeline.png
    python -m zoo.predict --model=... --input=rtsp://camera/stream --live --stride=1

``--model``: any model `nonlocal_tf.create_model` takes (a catalogue entry, a
preset, a ``zoo.train`` run folder, a ``.keras`` file) or a SavedModel written
by ``zoo.export``; its class names label the predictions.
``--input``: a video file, a folder (searched recursively), a text file with one
path per line, or a glob. Each video gets the official 30 views (10 clips x 3
crops, probabilities averaged) or, with ``--views=1``, its centred clip. Broken
files are skipped and listed with the reason; the exit status is non-zero only
when no video could be read. ``--output`` ends in ``.jsonl`` or ``.csv``.
"""

from __future__ import annotations

import csv
import json
import os
import sys

import numpy as np
from absl import app, flags

from zoo import _cli

FLAGS = flags.FLAGS
_cli.define_model_flags(saved_model=True)
_cli.define_input_flags(service=False, augment=False)
flags.DEFINE_alias("saved_model", "model")
flags.DEFINE_string(
    "input", None, "Video file, folder, list file or glob; or a live source.", required=True
)
flags.DEFINE_string(
    "clip", None, "FRAMESxRATE of the clips, e.g. 8x8: only for a SavedModel exported before 0.2."
)
flags.DEFINE_integer(
    "size",
    None,
    "View size; default the model's (256 for the official test).",
    lower_bound=32,
    upper_bound=2048,
)
flags.DEFINE_string(
    "class_names", None, "File with one class name per line (label order); default the model's."
)
flags.DEFINE_enum("views", "30", ["30", "1"], "30: 10 clips x 3 crops; 1: the centred clip.")
flags.DEFINE_integer("top_k", 5, "Classes reported per video or window.", lower_bound=1)
flags.DEFINE_string("output", None, "predictions.jsonl or .csv (default: print JSON lines).")
flags.DEFINE_float(
    "window", None, "Timeline: window length in seconds (default: one clip).", lower_bound=0.01
)
flags.DEFINE_float("stride", None, "Timeline / live: seconds between windows.", lower_bound=0.01)
flags.DEFINE_string(
    "timeline_png",
    None,
    "Timeline: a picture of the class probabilities over time (one video: this file; several: "
    "<name>_<nnnn>_<video>.png beside it). Needs matplotlib.",
)
flags.DEFINE_bool("live", False, "Read --input as a live source (file, URL, capture device).")
flags.DEFINE_integer("max_predictions", None, "Live: stop after this many.", lower_bound=1)

MAX_WINDOW_S = 24 * 3600.0  # a day: longer windows are a mistake, not a video


def scorer_and_spec(fully_convolutional: bool):
    """The `Scorer`, its `ClipSpec` (test mode), its class names and the Keras
    model (None for a SavedModel), from ``--model`` (`nonlocal_tf.model_info`)."""
    import dataclasses

    from nonlocal_tf import data, inference

    info = _model_info()
    frames, rate = info.frames, info.rate
    if info.kind == "saved_model":
        scorer, model = inference.Scorer.from_saved_model(FLAGS.model), None
    else:
        fixed = info.arguments.get("input_shape") or (None, None, None, 3)
        kwargs = {"include_preprocessing": True}
        if fixed[1] is None:  # any frame size: the official fully-convolutional test head
            kwargs |= {"input_shape": (frames, None, None, 3)}
            kwargs |= {"fully_convolutional": fully_convolutional}
        model = _cli.create_model(**kwargs)
        scorer = inference.Scorer.from_keras(model)
    names = _class_names() or (list(info.class_names) if info.class_names else None)
    if names and len(names) != scorer.num_classes:
        raise app.UsageError(
            f"{len(names)} class names for {scorer.num_classes} classes (--class_names)."
        )
    spec = info.spec if not FLAGS.size else data.ClipSpec.at_size(frames, rate, FLAGS.size)
    if FLAGS.views == "1":  # one clip: the middle one, centre crop kept (`one_view`)
        spec = dataclasses.replace(spec, num_test_clips=1)
    return scorer, spec, names, model


def _model_info():
    """``--model``'s `ModelInfo`; a SavedModel exported before it carried one
    gets its clip from ``--clip``."""
    from nonlocal_tf import data, pretrained

    if pretrained.kind_of(FLAGS.model) == "saved_model" and FLAGS.clip:
        frames, rate = _cli.int_pair(FLAGS.clip.split("x"), "--clip")
        spec = data.ClipSpec.at_size(frames, rate, FLAGS.size or 256)
        return pretrained.ModelInfo(FLAGS.model, "saved_model", "VideoResNet", {}, None, spec)
    try:
        return _cli.model_info()
    except ValueError as exc:
        if "SavedModel without" in str(exc):
            raise app.UsageError(f"{exc} (--clip=FRAMESxRATE, e.g. --clip=8x8)") from None
        raise


def _class_names() -> list[str] | None:
    if not FLAGS.class_names:
        return None
    with open(FLAGS.class_names, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


class Writer:
    """Rows to a .jsonl / .csv file (or JSON lines on stdout)."""

    def __init__(self, path: str | None, columns: list[str]):
        self.path, self.columns = path, columns
        self.file = open(path, "w", newline="") if path else sys.stdout
        self.csv = csv.DictWriter(self.file, columns) if path and path.endswith(".csv") else None
        if self.csv:
            self.csv.writeheader()

    def write(self, row: dict):
        if self.csv:
            self.csv.writerow(
                {k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()}
            )
        else:
            self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def close(self):
        if self.path:
            self.file.close()


def predict_files(paths, scorer, spec, names) -> int:
    from nonlocal_tf import data
    from nonlocal_tf.data.skips import printable

    videos = data.VideoList(list(paths), [[0]] * len(paths), ["?"])
    skips = data.SkipLog("predict")
    ds = _cli.videos_dataset(videos, spec, skips)
    writer = Writer(FLAGS.output, ["video", "top_k", "views"])
    progress, done = _cli.Progress(len(videos)), 0
    for views, _, index in ds:
        views = centre_only(np.asarray(views))
        probs = scorer(views).mean(axis=0)
        path = printable(videos.paths[int(index)])
        writer.write({"video": path, "top_k": top(probs, names), "views": len(views)})
        done += 1
        progress.update(done + skips.count)
    progress.update(done + skips.count, final=True)
    writer.close()
    report_skips(skips.items, done, len(videos))
    return 0 if done else 1


def centre_only(views: np.ndarray) -> np.ndarray:
    """With ``--views=1``, the centre crop of the one clip sampled; else all views."""
    return views[1:2] if FLAGS.views == "1" else views


def top(probs, names) -> list:
    from nonlocal_tf import inference

    return [[name, round(p, 5)] for name, p in inference.top_k(probs, FLAGS.top_k, names)]


def report_skips(items, done: int, total: int, what: str = "classified"):
    from nonlocal_tf.data.skips import printable

    print(f"{done} of {total} videos {what}, {len(items)} skipped", file=sys.stderr)
    for path, reason in items:
        print(f"  skipped {printable(path)}: {reason}", file=sys.stderr)


def predict_timelines(paths, scorer, spec, names) -> int:
    from nonlocal_tf import inference
    from nonlocal_tf.data.decode import VideoDecodeError

    writer = Writer(FLAGS.output, ["video", "start_s", "end_s", "top_k"])
    skipped, done = [], 0
    for path in paths:
        try:
            windows, _ = inference.timeline(path, scorer, spec, FLAGS.window, FLAGS.stride)
        except (VideoDecodeError, OSError) as exc:
            skipped.append((path, getattr(exc, "reason", str(exc))))
            continue
        for w in windows:
            row = {"video": path, "start_s": round(w.start_s, 3), "end_s": round(w.end_s, 3)}
            writer.write({**row, "top_k": top(w.scores, names)})
        done += 1
        if FLAGS.timeline_png and windows:
            png = timeline_png(path, len(paths), done)
            print(
                f"timeline picture: {inference.plot_timeline(windows, names, png)}", file=sys.stderr
            )
    writer.close()
    report_skips(skipped, done, len(paths))
    return 0 if done else 1


def timeline_png(video: str, videos: int, number: int) -> str:
    """Where a video's timeline picture goes: ``--timeline_png`` for one
    video; beside it, ``<name>_<number>_<video>.png``, for several (never
    into the input's folders)."""
    if videos == 1:
        return FLAGS.timeline_png
    stem, _ = os.path.splitext(FLAGS.timeline_png)
    name = os.path.splitext(os.path.basename(video))[0]
    return f"{stem}_{number:04d}_{name}.png"


def check_flags(timeline: bool) -> None:
    """Mistakes in the flags, found before any model is built or video read."""
    import math

    for flag in ("window", "stride"):
        value = getattr(FLAGS, flag)
        if value is not None and not (math.isfinite(value) and value <= MAX_WINDOW_S):
            raise app.UsageError(
                f"--{flag} must be a number of seconds up to a day. Received: {value}"
            )
    if FLAGS.timeline_png:
        if not timeline:
            raise app.UsageError("--timeline_png draws a timeline: give --window and/or --stride.")
        _cli.output_file(FLAGS.timeline_png, "--timeline_png")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise app.UsageError(
                "--timeline_png needs matplotlib: pip install 'nonlocal-tf[notebooks]'."
            ) from None


def predict_live(scorer, spec, names) -> int:
    from nonlocal_tf import inference

    writer = Writer(FLAGS.output, ["time_s", "top_k", "dropped_frames"])
    count = 0
    for prediction in inference.live(
        FLAGS.input, scorer, spec, FLAGS.stride or 1.0, max_predictions=FLAGS.max_predictions
    ):
        row = {"time_s": round(prediction.time_s, 3), "top_k": top(prediction.probs, names)}
        writer.write({**row, "dropped_frames": prediction.dropped_frames})
        if prediction.dropped_frames:
            print(
                f"slower than real time: {prediction.dropped_frames} frames dropped",
                file=sys.stderr,
            )
        count += 1
    writer.close()
    return 0 if count else 1


def main(argv) -> int:
    del argv
    if FLAGS.output:
        _cli.output_file(FLAGS.output)
    timeline = FLAGS.window is not None or (FLAGS.stride is not None and not FLAGS.live)
    check_flags(timeline)
    scorer, spec, names, _ = scorer_and_spec(fully_convolutional=not (timeline or FLAGS.live))
    if FLAGS.live:
        return predict_live(scorer, spec, names)
    paths = _cli.video_paths(FLAGS.input)
    if timeline:
        return predict_timelines(paths, scorer, spec, names)
    return predict_files(paths, scorer, spec, names)


if __name__ == "__main__":
    _cli.run(main)
