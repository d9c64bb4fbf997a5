"""Converts video files and an annotation file to TFRecord shards of
SequenceExamples (one JPEG per frame), in parallel and resumably.

    python -m zoo.make_tfrecords --annotations=kinetics_train.csv --format=kinetics \
        --video_dir=videos/ --output_dir=shards/ --split=train --num_shards=256 --workers=8 \
        --short_side=256

A shard is written to ``<name>.tmp`` and renamed when complete, with a
``<name>.json`` of what it holds and what was skipped: finished shards are kept
when the command runs again. The summary at the end counts every skip by reason.
"""

from __future__ import annotations

import collections
import json
import multiprocessing
import os
import sys
import time

from absl import app, flags

from zoo import _cli

FLAGS = flags.FLAGS
flags.DEFINE_string("annotations", None, "Kinetics or Charades CSV; unused for --format=directory.")
flags.DEFINE_enum("format", "kinetics", ["kinetics", "charades", "directory"], "Annotation format.")
flags.DEFINE_string(
    "video_dir", None, "Folder of the videos (or the class folders).", required=True
)
flags.DEFINE_string("output_dir", None, "Where the shards go.", required=True)
flags.DEFINE_string("split", "train", "Shard name prefix, and the Kinetics split to keep.")
flags.DEFINE_string(
    "class_names", None, "Optional file with one class name per line (label order)."
)
flags.DEFINE_integer("num_shards", 16, "Number of shards.", lower_bound=1)
flags.DEFINE_integer(
    "workers", max(os.cpu_count() or 1, 1), "Parallel worker processes.", lower_bound=1
)
flags.DEFINE_integer(
    "short_side", 0, "Resize frames so the short side is this (0: keep).", lower_bound=0
)
flags.DEFINE_float("fps", 0.0, "Resample frames to this rate (0: keep).", lower_bound=0.0)
flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality.", lower_bound=1, upper_bound=100)


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def write_shard(job: dict) -> dict:
    """Worker: encodes the shard's videos; returns its report. A video that
    fails in any way is a counted skip; the shard's ``.tmp`` file is removed if
    the shard itself cannot be finished."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    from nonlocal_tf.data.decode import VideoDecodeError, read_all_frames
    from nonlocal_tf.data.tfrecord import encode_example

    path = job["path"]
    report = {"shard": os.path.basename(path), "videos": 0, "frames": 0, "skipped": []}
    try:
        with tf.io.TFRecordWriter(path + ".tmp") as writer:
            for video, labels, texts, media_id in job["items"]:
                try:
                    frames = read_all_frames(
                        video, fps=job["fps"] or None, short_side=job["short_side"] or None
                    )
                    jpegs = [tf.io.encode_jpeg(f, quality=job["quality"]).numpy() for f in frames]
                    record = encode_example(jpegs, labels, texts, media_id)
                except VideoDecodeError as exc:
                    report["skipped"].append([video, exc.reason])
                    continue
                except Exception as exc:  # any failure of one video is a counted skip
                    report["skipped"].append(
                        [video, f"decoder error ({type(exc).__name__}: {exc})"]
                    )
                    continue
                writer.write(record)
                report["videos"] += 1
                report["frames"] += len(jpegs)
        with open(path + ".json.tmp", "w") as f:
            json.dump(report, f)
        os.replace(path + ".tmp", path)
        os.replace(path + ".json.tmp", path + ".json")
    finally:
        for leftover in (path + ".tmp", path + ".json.tmp"):
            if os.path.exists(leftover):
                os.remove(leftover)
    return report


def main(argv) -> int:
    del argv
    _cli.output_dir(FLAGS.output_dir)
    with _cli.hold_output_dir(FLAGS.output_dir):
        return write_shards()


def write_shards() -> int:
    """The shards not yet in ``--output_dir``, written by ``--workers`` processes."""
    from nonlocal_tf.data import annotations
    from nonlocal_tf.data.skips import SkipLog, printable

    skips = SkipLog("annotations")
    class_names = None
    if FLAGS.class_names:
        with open(FLAGS.class_names) as f:
            class_names = [line.strip() for line in f if line.strip()]
    if FLAGS.format == "directory":
        videos = annotations.read_directory(FLAGS.video_dir, class_names, skips=skips)
    elif not FLAGS.annotations:
        raise app.UsageError("--annotations is required for --format=kinetics or charades.")
    elif FLAGS.format == "kinetics":
        videos = annotations.read_kinetics(
            FLAGS.annotations, FLAGS.video_dir, class_names, FLAGS.split, skips
        )
    else:
        videos = annotations.read_charades(FLAGS.annotations, FLAGS.video_dir, skips)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    with open(os.path.join(FLAGS.output_dir, f"{FLAGS.split}-classes.txt"), "w") as f:
        f.write("\n".join(videos.class_names) + "\n")
    jobs, done = [], []
    for index in range(FLAGS.num_shards):
        path = os.path.join(FLAGS.output_dir, shard_name(FLAGS.split, index, FLAGS.num_shards))
        if os.path.exists(path) and os.path.exists(path + ".json"):
            with open(path + ".json") as f:
                done.append(json.load(f))
            continue
        items = [
            (
                videos.paths[i],
                videos.labels[i],
                [videos.class_names[c] for c in videos.labels[i]],
                videos.video_ids[i],
            )
            for i in range(index, len(videos), FLAGS.num_shards)
        ]
        common = {"fps": FLAGS.fps, "short_side": FLAGS.short_side, "quality": FLAGS.jpeg_quality}
        jobs.append({"path": path, "items": items, **common})
    print(
        f"{len(videos)} videos, {FLAGS.num_shards} shards: {len(done)} already written, {len(jobs)} to write"
    )
    reports = list(done)
    started = time.time()
    if jobs:
        context = multiprocessing.get_context("spawn")
        with context.Pool(min(FLAGS.workers, len(jobs))) as pool:
            for n, report in enumerate(pool.imap_unordered(write_shard, jobs), 1):
                reports.append(report)
                elapsed = time.time() - started
                sys.stderr.write(f"\r[{n}/{len(jobs)}] shards written, {elapsed:.0f}s")
                sys.stderr.flush()
        sys.stderr.write("\n")
    reasons = collections.Counter(r.split(" (")[0] for r in (reason for _, reason in skips.items))
    for report in reports:
        reasons.update(reason.split(" (")[0] for _, reason in report["skipped"])
    written = sum(r["videos"] for r in reports)
    frames = sum(r["frames"] for r in reports)
    print(
        f"written: {written} videos, {frames} frames in {len(reports)} shards under {FLAGS.output_dir}"
    )
    skipped = sum(reasons.values())
    print(
        f"skipped: {skipped}"
        + (f" ({', '.join(f'{n} {r}' for r, n in sorted(reasons.items()))})" if skipped else "")
    )
    for report in reports:
        for video, reason in report["skipped"]:
            print(f"  skipped {printable(video)}: {reason}")
    return 0


if __name__ == "__main__":
    _cli.run(main)
