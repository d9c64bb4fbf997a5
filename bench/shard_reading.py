"""Train clips from frame shards through the Grain engine, without TensorFlow:
the host augmenting (resize, crop, flip in NumPy) against the accelerator
augmenting (`augment_on="device"`: the workers only decode and send each
clip's frames in a window, `nonlocal_tf.layers.ClipCrops` cuts it in the
step).

    python bench/shard_reading.py --videos=16 --seconds=10

Generates Kinetics-like H.264 videos (`bench/_videos.py`, 340x256, 30 fps),
converts them to one shard (`shards.write_shard`, JPEG quality 90), then
prints:

- per clip on one core, in this process: reading and decoding the 8 sampled
  JPEGs, the host's augmentation, the window the device path sends;
- 8x8 train clips/s of `grain_shard_dataset` (batches of ``--batch_size``)
  with each worker count of ``--workers`` (0: threads of this process), both ways, after a warm-up of
  ``--warmup`` batches (the workers' start and buffers), over ``--batches``;
- 30-view test videos/s the same way (``--test_videos`` timed after
  ``--warmup`` videos), with the megabytes each video sends: its 30 views of
  256, or its 10 clips as they are for the accelerator to cut.

TensorFlow is never imported (checked at the end).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("KERAS_BACKEND", "jax")  # the package imports Keras: never TensorFlow here

from bench._videos import write_shard  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("videos", 16, "Videos to generate.")
flags.DEFINE_float("seconds", 10.0, "Length of each video.")
flags.DEFINE_integer("batch_size", 16, "Clips per batch.")
flags.DEFINE_integer("batches", 40, "Batches timed per case.")
flags.DEFINE_integer("warmup", 8, "Batches read before the clock starts.")
flags.DEFINE_list("workers", None, "Worker process counts to time (default: 0 to the cores).")
flags.DEFINE_string("workdir", None, "Reuse the videos and shard from here.")
flags.DEFINE_integer("test_videos", 24, "30-view test videos timed per case (0: none).")


def per_clip(shard: str, clips: int = 64) -> None:
    """Milliseconds per clip of each host step, one core, this process."""
    from nonlocal_tf.data import numpy_transforms, sampling, shards
    from nonlocal_tf.data.spec import KINETICS_8X8, MODES

    index, mode, spec = shards.open_index(shard), MODES["train"], KINETICS_8X8
    side = numpy_transforms.window_side(mode, spec)
    rng = np.random.default_rng(0)
    seconds = {"read + decode 8 JPEGs": 0.0, "host augment": 0.0, "window (device path)": 0.0}
    for i in range(clips):
        record = i % len(index)
        started = time.perf_counter()
        chosen = sampling.indices(mode, index.frame_count(record), spec, rng)
        frames = shards.read_frames(shard, index, record, chosen)
        decoded = time.perf_counter()
        numpy_transforms.augment(frames, np.random.default_rng(i), mode, spec)
        augmented = time.perf_counter()
        numpy_transforms.prepare(frames, np.random.default_rng(i), mode, spec, side)
        windowed = time.perf_counter()
        seconds["read + decode 8 JPEGs"] += decoded - started
        seconds["host augment"] += augmented - decoded
        seconds["window (device path)"] += windowed - augmented
    for step, total in seconds.items():
        print(f"  {step}: {total / clips * 1e3:.2f} ms per clip")
    host = seconds["read + decode 8 JPEGs"] + seconds["host augment"]
    device = seconds["read + decode 8 JPEGs"] + seconds["window (device path)"]
    print(
        f"  one core: {clips / host:.0f} clips/s augmenting, {clips / device:.0f} sending windows"
    )


def clips_per_second(shard: str, workers: int, augment_on: str) -> float:
    from nonlocal_tf import data

    ds = data.grain_shard_dataset(
        shard,
        "train",
        data.KINETICS_8X8,
        batch_size=FLAGS.batch_size,
        workers=workers,
        repeat=True,
        seed=0,
        augment_on=augment_on,
    )
    stream = iter(ds)
    for _ in range(FLAGS.warmup):
        next(stream)
    started = time.perf_counter()
    for _ in range(FLAGS.batches):
        next(stream)
    rate = FLAGS.batches * FLAGS.batch_size / (time.perf_counter() - started)
    del stream  # its worker processes end
    return rate


def videos_per_second(shard: str, workers: int, augment_on: str) -> tuple[float, float]:
    """30-view test videos/s, and megabytes sent per video."""
    from nonlocal_tf import data

    ds = data.grain_shard_dataset(
        shard, "test", data.KINETICS_8X8, workers=workers, repeat=True, augment_on=augment_on
    )
    stream = iter(ds)
    for _ in range(FLAGS.warmup):
        next(stream)
    started, sent = time.perf_counter(), 0
    for _ in range(FLAGS.test_videos):
        frames, _, _ = next(stream)
        sent += frames[0].nbytes if isinstance(frames, tuple) else frames.nbytes
    rate = FLAGS.test_videos / (time.perf_counter() - started)
    del stream
    return rate, sent / FLAGS.test_videos / 1e6


def main(argv) -> None:
    del argv
    workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="nl_shard_reading_")
    shard = write_shard(workdir, FLAGS.videos, FLAGS.seconds)
    cores = len(os.sched_getaffinity(0))
    with open("/proc/cpuinfo") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    print(f"{cores} cores of {cpu}; shard {os.path.getsize(shard) / 1e6:.0f} MB, 340x256 frames")
    print("per clip (8x8, 224 crop), one core:")
    per_clip(shard)
    print(f"grain_shard_dataset, batches of {FLAGS.batch_size}, clips/s:")
    for workers in map(int, FLAGS.workers or range(cores + 1)):
        rates = {on: clips_per_second(shard, workers, on) for on in ("host", "device")}
        print(
            f"  {workers} worker processes: host augments {rates['host']:.1f}, "
            f"device augments {rates['device']:.1f} ({rates['device'] / rates['host']:.2f}x)"
        )
    if FLAGS.test_videos:
        print("grain_shard_dataset, 30-view test videos/s (MB sent a video):")
    for workers in map(int, FLAGS.workers or range(cores + 1)) if FLAGS.test_videos else ():
        (host, host_mb), (device, device_mb) = (
            videos_per_second(shard, workers, on) for on in ("host", "device")
        )
        print(
            f"  {workers} worker processes: host cuts the views {host:.1f} ({host_mb:.1f} MB), "
            f"the accelerator {device:.1f} ({device_mb:.1f} MB) ({device / host:.2f}x)"
        )
    assert "tensorflow" not in sys.modules, "TensorFlow was imported"
    print("TensorFlow: not imported")


if __name__ == "__main__":
    app.run(main)
