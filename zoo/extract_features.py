"""Pooled features of many videos (or of windows of long videos), resumable.

    python -m zoo.extract_features --model=reappear_c2d_nl5_r50.demo --input=videos/ \\
        --output_dir=features/ [--layer=res5_2_relu] [--views=1] [--window=2 --stride=1]

Writes ``features-00000.npy``, ... (float32, ``--shard_size`` rows each) and
``index.csv`` (one row per feature vector: video, shard, row, window start and
end in seconds) and ``skipped.csv`` (video, reason). Run again with the same
flags, it skips the videos already in either file. The features are those of
`nonlocal_tf.models.feature_extractor(model, layer)`: the named layer's output
averaged over time and space (default: the last residual block, 2048 for R50),
then over the views of a video.
"""

from __future__ import annotations

import csv
import os
import re

import numpy as np
from absl import app, flags

from zoo import _cli, predict

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(predict)  # --model, --input, --views, ...: this command's too
flags.DEFINE_string("output_dir", None, "Where the shards and the index go.", required=True)
flags.DEFINE_string("layer", None, "Layer whose pooled output is the feature; default res5's.")
flags.DEFINE_integer("shard_size", 1000, "Feature vectors per .npy file.", lower_bound=1)

INDEX, SKIPPED = "index.csv", "skipped.csv"


class Shards:
    """Feature rows collected into ``.npy`` shards; a shard is written (then
    its index rows appended) when full and at the end, so a killed run loses
    at most the shard in progress and never lists rows it did not write."""

    def __init__(self, folder: str, size: int):
        self.folder, self.size = folder, size
        self.rows, self.index = [], []
        numbers = [re.fullmatch(r"features-(\d{5})\.npy", n) for n in os.listdir(folder)]
        self.next = 1 + max((int(m[1]) for m in numbers if m), default=-1)

    def add(self, vector, video: str, start_s="", end_s=""):
        self.rows.append(vector)
        self.index.append([video, self.next, len(self.rows) - 1, start_s, end_s])
        if len(self.rows) >= self.size:
            self.flush()

    def flush(self):
        import numpy as np

        from nonlocal_tf import files

        if not self.rows:
            return
        with files.atomic_path(os.path.join(self.folder, f"features-{self.next:05d}.npy")) as tmp:
            np.save(tmp, np.stack(self.rows).astype("float32"))
        append(self.folder, INDEX, self.index, ["video", "shard", "row", "start_s", "end_s"])
        self.rows, self.index, self.next = [], [], self.next + 1


def append(folder: str, name: str, rows: list, header: list[str]):
    path = os.path.join(folder, name)
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(header)
        writer.writerows(rows)


def done_videos(folder: str) -> set[str]:
    done = set()
    for name in (INDEX, SKIPPED):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            with open(path, newline="") as f:
                done.update(row["video"] for row in csv.DictReader(f))
    return done


def main(argv) -> int:
    del argv
    folder = _cli.output_dir(FLAGS.output_dir)
    with _cli.hold_output_dir(folder):
        return extract_into(folder)


def extract_into(folder: str) -> int:
    """Features of the videos not yet in ``folder``, appended to its shards."""
    from nonlocal_tf import data, inference, models
    from nonlocal_tf.data.skips import printable

    _, spec, _, model = predict.scorer_and_spec(fully_convolutional=False)
    if model is None:
        raise app.UsageError(
            f"--model {FLAGS.model} is a SavedModel, which exports class scores only: features "
            "come from a Keras model (a catalogue entry, a preset, a run folder, a .keras file)."
        )
    features = models.feature_extractor(model, FLAGS.layer)
    extract = inference.Scorer.from_keras(features)
    already = done_videos(folder)
    paths = [p for p in _cli.video_paths(FLAGS.input) if printable(p) not in already]
    if not paths:
        print(f"nothing to do: every video is in {folder} already ({len(already)} done)")
        return 0
    print(f"{len(paths)} videos to do ({len(already)} already done) -> {folder}")
    shards = Shards(folder, FLAGS.shard_size)
    progress, finished, skipped = _cli.Progress(len(paths)), 0, []
    if FLAGS.window is not None or FLAGS.stride is not None:
        for path in paths:
            try:
                windows, _ = inference.timeline(path, extract, spec, FLAGS.window, FLAGS.stride)
            except (data.VideoDecodeError, OSError) as exc:
                skipped.append([printable(path), getattr(exc, "reason", str(exc))])
                continue
            for w in windows:
                shards.add(w.scores, printable(path), round(w.start_s, 3), round(w.end_s, 3))
            finished += 1
            progress.update(finished + len(skipped))
    else:
        videos = data.VideoList(list(paths), [[0]] * len(paths), ["?"])
        log = data.SkipLog("features")
        for views, _, index in _cli.videos_dataset(videos, spec, log):
            views = predict.centre_only(np.asarray(views))
            shards.add(extract(views).mean(axis=0), printable(videos.paths[int(index)]))
            finished += 1
            progress.update(finished + log.count)
        skipped = [[printable(p), reason] for p, reason in log.items]
    shards.flush()
    append(folder, SKIPPED, skipped, ["video", "reason"])
    progress.update(finished + len(skipped), final=True)
    predict.report_skips(skipped, finished, len(paths), "extracted")
    return 0 if finished or not paths else 1


if __name__ == "__main__":
    _cli.run(main)
