"""Clips per second of the input pipelines on this machine: video files (PyAV)
against TFRecord shards (JPEG frames), same videos, same run.

    python bench/data_pipeline.py --videos=24 --seconds=10

Generates H.264 videos at 340x256 (30 fps, ``--seconds`` long), converts them to
TFRecords, then times 8x8 and 32x2 train clips (224 crops) and 30-view test
videos (3 x 256 crops x 10 clips) from each source. Prints one JSON row per case
and a Markdown table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench._videos import write_dataset  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("videos", 24, "Videos to generate.")
flags.DEFINE_float("seconds", 10.0, "Length of each video.")
flags.DEFINE_integer("train_clips", 96, "Clips timed per train case.")
flags.DEFINE_integer("test_videos", 8, "Videos timed per test case.")
flags.DEFINE_string("workdir", None, "Reuse videos and shards from here.")


# The cores this process may run on (`taskset` limits them; os.cpu_count() does not see that).
CORES = len(os.sched_getaffinity(0))


def time_dataset(ds, elements: int, warmup: int) -> float:
    iterator = iter(ds.repeat())
    for _ in range(warmup):
        next(iterator)
    started = time.perf_counter()
    for _ in range(elements):
        next(iterator)
    return elements / (time.perf_counter() - started)


def main(argv) -> None:
    del argv
    args = FLAGS
    import tensorflow as tf

    from nonlocal_tf import data

    workdir = args.workdir or tempfile.mkdtemp(prefix="nl_bench_")
    videos_dir, shards = os.path.join(workdir, "gop_default"), os.path.join(workdir, "shards")
    if not os.path.isdir(videos_dir):
        started = time.time()
        write_dataset(workdir, args.videos, args.seconds)
        print(f"encoded {args.videos} videos in {time.time() - started:.0f}s", file=sys.stderr)
    if not os.path.isdir(shards):
        cmd = [
            sys.executable,
            "-m",
            "zoo.make_tfrecords",
            "--format=directory",
            f"--video_dir={videos_dir}",
            f"--output_dir={shards}",
            "--num_shards=8",
            f"--workers={CORES}",
        ]
        subprocess.run(
            cmd, check=True, capture_output=True, cwd=os.path.dirname(os.path.dirname(__file__))
        )
    pattern = os.path.join(shards, "train-*.tfrecord")
    cases = [
        ("train 8x8", data.KINETICS_8X8, "train"),
        ("train 32x2", data.KINETICS_32X2, "train"),
        ("test 30-view 8x8", data.KINETICS_8X8, "test"),
    ]
    rows = []
    for name, spec, mode in cases:
        n = args.train_clips if mode == "train" else args.test_videos
        row = {"case": name, "cores": CORES}
        ds = data.video_dataset_from_directory(videos_dir, mode, spec, batch_size=None, seed=0)
        row["video_files_per_s"] = round(time_dataset(ds, n, warmup=4 if mode == "train" else 1), 2)
        ds = data.tfrecord_dataset(pattern, mode, spec, batch_size=None, seed=0)
        row["tfrecord_per_s"] = round(time_dataset(ds, n, warmup=4 if mode == "train" else 1), 2)
        row["speedup"] = round(row["tfrecord_per_s"] / row["video_files_per_s"], 1)
        row["unit"] = "clips/s" if mode == "train" else "videos/s (30 views each)"
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(
        f"\n{CORES} cores, TensorFlow {tf.__version__}, H.264 340x256 30 fps, {args.seconds:g} s videos\n"
    )
    print("| case | video files | TFRecords | speed-up |\n|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['case']} | {r['video_files_per_s']} {r['unit']} | {r['tfrecord_per_s']} | {r['speedup']}x |"
        )


if __name__ == "__main__":
    app.run(main)
