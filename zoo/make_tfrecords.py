"""Converts video files and an annotation file to TFRecord shards of
SequenceExamples (one JPEG per frame), in parallel and resumably, without
TensorFlow (`nonlocal_tf.data.shards`); tf.data and Grain read them.

    python -m zoo.make_tfrecords --annotations=kinetics_train.csv --format=kinetics \
        --video_dir=videos/ --output_dir=shards/ --split=train --num_shards=256 --workers=8 \
        --short_side=256

A shard is written to ``<name>.tmp`` and renamed when complete, with a
``<name>.json`` of what it holds and what was skipped, and its index
``<name>.index`` (what Grain reads it by): finished shards are kept when the
command runs again, and given an index if they lack one. The summary at the
end counts every skip by reason.

    python -m zoo.make_tfrecords --index_only --output_dir=shards/

indexes the shards of ``--output_dir`` (``*.tfrecord*``, written by any
SequenceExample writer) that have no current index.
"""

from __future__ import annotations

import collections
import glob
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
flags.DEFINE_string("video_dir", None, "Folder of the videos (or the class folders).")
flags.DEFINE_string("output_dir", None, "Where the shards go.", required=True)
flags.DEFINE_bool(
    "index_only", False, "Only index the shards of --output_dir that have no current index."
)
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
    """Worker: one shard, its index and report (`shards.write_shard`)."""
    from nonlocal_tf.data import shards

    return shards.write_shard(job["path"], job["items"], job["conversion"])


def index_shard(path: str) -> str:
    """Worker: "" once the shard has a current index, else the one-line error
    naming it (a truncated shard, one whose index cannot be written)."""
    from nonlocal_tf.data import shards

    try:
        shards.index_for(path)
    except shards.ShardError as exc:
        return str(exc)
    return ""


def has_index(path: str) -> bool:
    from nonlocal_tf.data import shards

    try:
        shards.index_for(path, build=False)
    except shards.ShardError:
        return False
    return True


def main(argv) -> int:
    del argv
    if not FLAGS.video_dir and not FLAGS.index_only:
        raise app.UsageError("--video_dir is required (unless --index_only).")
    _cli.output_dir(FLAGS.output_dir)
    with _cli.hold_output_dir(FLAGS.output_dir):
        return index_shards() if FLAGS.index_only else write_shards()


def index_shards() -> int:
    """Indexes the shards of ``--output_dir`` that lack a current index."""
    # Shards as any writer names them (x.tfrecord, x.tfrecord-00000-of-00008), not
    # what sits beside them (.json, .index, temporary files).
    paths = sorted(
        path
        for path in glob.glob(os.path.join(FLAGS.output_dir, "*.tfrecord*"))
        if "." not in path.rpartition(".tfrecord")[2]
    )
    if not paths:
        raise app.UsageError(f"No *.tfrecord* shards in {FLAGS.output_dir}.")
    errors = [error for error in run_pool(index_shard, paths, "shards indexed") if error]
    for error in errors:
        print(error)
    failed = f", {len(errors)} failed" if errors else ""
    print(f"indexed: {len(paths) - len(errors)} of {len(paths)} shards{failed}")
    return 1 if errors else 0


def run_pool(work, jobs: list, done: str):
    """``work`` over ``jobs`` in ``--workers`` processes, results as they come,
    with a progress line."""
    if not jobs:
        return
    started = time.time()
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(FLAGS.workers, len(jobs))) as pool:
        for n, result in enumerate(pool.imap_unordered(work, jobs), 1):
            yield result
            sys.stderr.write(f"\r[{n}/{len(jobs)}] {done}, {time.time() - started:.0f}s")
            sys.stderr.flush()
    sys.stderr.write("\n")


def write_shards() -> int:
    """The shards not yet in ``--output_dir``, written by ``--workers`` processes."""
    from nonlocal_tf.data import annotations
    from nonlocal_tf.data.shards import Conversion
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
        conversion = Conversion(FLAGS.fps, FLAGS.short_side, FLAGS.jpeg_quality)
        jobs.append({"path": path, "items": items, "conversion": conversion})
    print(
        f"{len(videos)} videos, {FLAGS.num_shards} shards: {len(done)} already written, {len(jobs)} to write"
    )
    reports = list(done)
    reports += run_pool(write_shard, jobs, "shards written")
    # Shards written before indexes (or changed since) get theirs.
    finished = [os.path.join(FLAGS.output_dir, r["shard"]) for r in done]
    unindexed = [path for path in finished if not has_index(path)]
    unindexed = [error for error in run_pool(index_shard, unindexed, "indexed") if error]
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
    for error in unindexed:
        print(error)
    return 1 if unindexed else 0


if __name__ == "__main__":
    _cli.run(main)
