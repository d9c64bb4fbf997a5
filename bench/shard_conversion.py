"""Frame shards on one core: how fast videos become shards
(`nonlocal_tf.data.shards`, no TensorFlow; TensorFlow's old path beside it
when installed), what they cost on disk per hour of video against the source
files, and how fast the Grain engine reads train clips from them against the
videos themselves.

    python bench/shard_conversion.py --videos=8 --seconds=10

Generates Kinetics-like H.264 videos (`bench/_videos.py`: 340x256, 30 fps,
libx264's defaults), then on one core: converts them (every frame a JPEG of
quality ``--quality``; videos/s, and seconds of video per second; best of
``--repeats``), and
times 8x8 train clips (224 crops) through `grain_shard_dataset` and
`grain_video_dataset` with no worker process. Prints one line per result.
"""

from __future__ import annotations

import glob
import os
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench._videos import write_dataset  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("videos", 8, "Videos to generate.")
flags.DEFINE_float("seconds", 10.0, "Length of each video.")
flags.DEFINE_integer("quality", 90, "JPEG quality (zoo.make_tfrecords' default).")
flags.DEFINE_integer("clips", 64, "Train clips timed per source.")
flags.DEFINE_bool("tensorflow", True, "Also time TensorFlow's writer, where installed.")
flags.DEFINE_integer("repeats", 2, "Conversions timed per writer, alternating; the best counts.")
flags.DEFINE_string("workdir", None, "Reuse the videos from here.")


def items_of(folder: str) -> list:
    paths = sorted(glob.glob(os.path.join(folder, "*", "*.mp4")))
    return [(p, [i % 4], [f"class{i % 4}"], os.path.basename(p)) for i, p in enumerate(paths)]


def convert(items: list, path: str) -> float:
    from nonlocal_tf.data import shards

    for leftover in glob.glob(path + "*"):  # a finished shard is not written again
        os.remove(leftover)
    started = time.perf_counter()
    shards.write_shard(path, items, shards.Conversion(quality=FLAGS.quality))
    return time.perf_counter() - started


def convert_with_tensorflow(items: list, path: str) -> float:
    """The converter before this change: TensorFlow's JPEG op, protobuf
    classes and writer."""
    import tensorflow as tf

    from nonlocal_tf.data import tfrecord
    from nonlocal_tf.data.decode import read_all_frames

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    started = time.perf_counter()
    with tf.io.TFRecordWriter(path) as writer:
        for video, labels, texts, media_id in items:
            jpegs = [
                tf.io.encode_jpeg(f, quality=FLAGS.quality).numpy() for f in read_all_frames(video)
            ]
            writer.write(tfrecord.encode_example(jpegs, labels, texts, media_id))
    return time.perf_counter() - started


def clips_per_second(ds, count: int) -> float:
    stream = iter(ds)
    next(stream)  # warm up
    started = time.perf_counter()
    for _ in range(count):
        next(stream)
    return count / (time.perf_counter() - started)


def main(argv) -> None:
    del argv
    from nonlocal_tf import data
    from nonlocal_tf.data import annotations, decode

    workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="nl_shards_")
    videos = os.path.join(workdir, "gop_default")
    if not os.path.isdir(videos):
        write_dataset(workdir, FLAGS.videos, FLAGS.seconds)
    items = items_of(videos)
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core from here on
    with open("/proc/cpuinfo") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    hours = sum(frames / fps for frames, fps in (decode.probe(p) for p, *_ in items)) / 3600
    source = sum(os.path.getsize(p) for p, *_ in items)
    print(f"{len(items)} videos, {hours * 3600:.0f} s of 340x256 30 fps H.264; one core of {cpu}")
    shard = os.path.join(workdir, "train-00000-of-00001.tfrecord")
    writers = {"shards, no TensorFlow": lambda: convert(items, shard)}
    if FLAGS.tensorflow:
        try:
            import tensorflow  # noqa: F401

            tf_shard = os.path.join(workdir, "tf.tfrecord")
            writers["TensorFlow, before"] = lambda: convert_with_tensorflow(items, tf_shard)
        except ImportError:
            print("convert (TensorFlow, before): TensorFlow not installed")
    best = {name: float("inf") for name in writers}
    for _ in range(FLAGS.repeats):  # alternating: a busy machine slows both alike
        for name, write in writers.items():
            best[name] = min(best[name], write())
    for name, seconds in best.items():
        print(
            f"convert ({name}): {len(items) / seconds:.3f} videos/s per core, "
            f"{hours * 3600 / seconds:.1f} s of video per s"
        )
    size, index = os.path.getsize(shard), os.path.getsize(shard + ".index")
    print(
        f"storage per hour of video: shards {size / hours / 1e9:.2f} GB "
        f"(index {index / hours / 1e6:.2f} MB), source videos {source / hours / 1e9:.2f} GB "
        f"({size / source:.1f}x)"
    )
    spec = data.KINETICS_8X8
    options = {"batch_size": None, "workers": 0, "repeat": True, "seed": 0}
    from_shards = data.grain_shard_dataset(shard, "train", spec, **options)
    listing = annotations.VideoList(
        [p for p, *_ in items], [labels for _, labels, *_ in items], [f"class{i}" for i in range(4)]
    )
    from_videos = data.grain_video_dataset(listing, "train", spec, **options)
    for name, ds in (("shards", from_shards), ("video files", from_videos)):
        rate = clips_per_second(ds, FLAGS.clips)
        print(f"read 8x8 train clips (Grain, no worker process) from {name}: {rate:.1f} clips/s")


if __name__ == "__main__":
    app.run(main)
