"""Frame shards without TensorFlow (`nonlocal_tf.data.shards`): written in
TensorFlow's layout (tf.data reads them; the new reader reads TensorFlow's),
indexed, and read at random by the Grain engine, only the sampled frames,
with the clips of the tf.data path; damaged shards and records as one-line
errors or counted skips; Grain's iterator state resumes mid-epoch."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from nonlocal_tf import data
from nonlocal_tf.data import grain_pipeline, jpeg, sampling, sequence_example, shards
from nonlocal_tf.data.decode import read_all_frames
from nonlocal_tf.data.spec import MODES
from tests.videos import frame_indices, write_video

SPEC = dataclasses.replace(data.ClipSpec.at_size(4, 3, 48), train_scale=(48, 56), crop=40)
# Frames resized to another short side: the bilinear arithmetic is exercised.
RESIZING = dataclasses.replace(
    SPEC, train_scale=(50, 60), val_short_side=52, test_short_side=52, test_crop=44
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def tf():
    """TensorFlow, for the tests against its writer and tf.data: skipped
    where it cannot be imported (the rest of the file runs without it)."""
    return pytest.importorskip("tensorflow", exc_type=ImportError)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Four short videos of 30, 37, 44 and 51 frames, each its own class."""
    root = tmp_path_factory.mktemp("videos")
    paths = [write_video(root / f"v{i}.mp4", num_frames=30 + 7 * i) for i in range(4)]
    return [(path, [i], [f"class{i}"], os.path.basename(path)) for i, path in enumerate(paths)]


def write(folder, items, name="train-00000-of-00001.tfrecord") -> str:
    os.makedirs(folder, exist_ok=True)
    path = str(folder / name)
    shards.write_shard(path, items, shards.Conversion())
    return path


@pytest.fixture(scope="module")
def shard(videos, tmp_path_factory):
    return write(tmp_path_factory.mktemp("shards"), videos)


def grain(pattern, mode, spec=SPEC, **kwargs):
    kwargs = {"batch_size": None, "workers": 0, **kwargs}
    return data.dataset_from_source(str(pattern), mode, spec, engine="grain", **kwargs)


def write_with_tensorflow(tf, path, items) -> str:
    """A shard as the converter wrote it before this change: TensorFlow's JPEG
    encoder, protobuf classes and TFRecord writer."""
    from nonlocal_tf.data import tfrecord

    with tf.io.TFRecordWriter(str(path)) as writer:
        for video, labels, texts, media_id in items:
            frames = read_all_frames(video)
            jpegs = [tf.io.encode_jpeg(f, quality=90).numpy() for f in frames]
            writer.write(tfrecord.encode_example(jpegs, labels, texts, media_id))
    return str(path)


# ------------------------------------------------------------------ writing
def test_records_are_tensorflows_sequence_examples(tf):
    from nonlocal_tf.data import tfrecord

    jpegs, labels, texts = [b"\xff\xd8one", b"", b"x" * 300], [3, 300, -1], ["a", "b"]
    ours = sequence_example.encode(jpegs, labels, texts, "dir/v\udcff.mp4")
    theirs = tfrecord.encode_example(jpegs, labels, texts, "dir/v\udcff.mp4")
    assert tf.train.SequenceExample.FromString(ours) == tf.train.SequenceExample.FromString(theirs)
    for record in (ours, theirs):  # TensorFlow's bytes located as ours
        found = sequence_example.locate(record)
        assert [record[o : o + n] for o, n in found.frames] == jpegs
        assert found.labels == labels and found.media_id == b"dir/v\xff.mp4"


def test_round_trip_frames_are_the_videos_after_jpeg(videos, shard):
    """Writer -> index -> reader: every frame of every video, in order, the
    JPEG of the decoded frame byte for byte, and its pixels within JPEG error."""
    index = shards.index_for(shard, build=False)  # the writer's, current
    assert len(index) == 4 and index.labels.tolist() == [0, 1, 2, 3]
    assert index.media_id.tolist() == [b"v0.mp4", b"v1.mp4", b"v2.mp4", b"v3.mp4"]
    with open(shard, "rb") as f:
        contents = f.read()
    for record, (video, *_) in enumerate(videos):
        frames = read_all_frames(video)
        assert index.frame_count(record) == len(frames)
        offsets, lengths = index.frame_spans(record)
        stored = [contents[o : o + n] for o, n in zip(offsets, lengths, strict=True)]
        assert stored == [jpeg.encode(f) for f in frames]
        got = shards.read_frames(shard, index, record, np.arange(len(frames)))
        np.testing.assert_array_equal(frame_indices(got), np.arange(len(frames)))
        assert np.abs(got.astype(int) - frames).mean() < 1.5
    report = json.loads(open(shard + ".json").read())
    assert report["videos"] == 4 and report["frames"] == 30 + 37 + 44 + 51


def test_a_bad_video_is_a_counted_skip_of_the_writer(videos, tmp_path):
    (tmp_path / "junk.mp4").write_bytes(b"junk" * 100)
    items = [videos[0], (str(tmp_path / "junk.mp4"), [1], ["c"], "junk.mp4")]
    path = write(tmp_path / "out", items)
    report = json.loads(open(path + ".json").read())
    assert report["videos"] == 1 and report["skipped"][0][1].startswith("unreadable container")
    assert sorted(os.listdir(tmp_path / "out")) == [
        "train-00000-of-00001.tfrecord",
        "train-00000-of-00001.tfrecord.index",
        "train-00000-of-00001.tfrecord.json",
    ]  # no temporary file left


# ------------------------------------------------------------------ both engines
@pytest.mark.parametrize("mode", ["val", "test"])
def test_tf_data_reads_new_shards_as_grain_does(tf, shard, mode):
    """The same clips from the same records (test mode: the 10 x 3 views)."""
    ours = list(grain(shard, mode, RESIZING))
    theirs = list(data.tfrecord_dataset(shard, mode, RESIZING, batch_size=None))
    assert len(ours) == len(theirs) == 4
    for got, expected in zip(ours, theirs, strict=True):
        assert got[0].shape == tuple(expected[0].shape) == tuple(MODES[mode].shape(RESIZING))
        assert np.abs(got[0].astype(int) - expected[0].numpy()).max() <= 1
        for a, b in zip(got[1:], expected[1:], strict=True):
            assert int(a) == int(b)  # labels (and record indices)
    views, _, position = list(grain(shard, "test"))[1]  # 37 frames, no resize
    assert int(position) == 1
    np.testing.assert_array_equal(
        frame_indices(views.reshape(10, 3, *views.shape[1:])[:, 1]),
        sampling.test_indices(37, 4, 3),
    )


def test_the_new_reader_reads_a_shard_tensorflow_wrote(tf, videos, tmp_path, caplog):
    path = write_with_tensorflow(tf, tmp_path / "old.tfrecord", videos)
    with caplog.at_level("WARNING", logger="nonlocal_tf"):
        ours = list(grain(path, "val", RESIZING))  # indexes it first
    assert "old.tfrecord: no index; indexing it" in caplog.text
    assert os.path.exists(path + ".index")
    theirs = list(data.tfrecord_dataset(path, "val", RESIZING, batch_size=None))
    assert [int(label) for _, label in ours] == [0, 1, 2, 3]
    for (got, _), (expected, _) in zip(ours, theirs, strict=True):
        assert np.abs(got.astype(int) - expected.numpy()).max() <= 1
    clips = [clip for clip, _ in grain(path, "val")]
    for clip, n in zip(clips, (30, 37, 44, 51), strict=True):
        np.testing.assert_array_equal(frame_indices(clip), sampling.center_indices(n, 4, 3))


class Draws:
    """A generator whose draws are given: ``integers`` and ``random`` return
    the next of theirs (what `sampling` and `numpy_transforms` call)."""

    def __init__(self, integers, randoms):
        self._integers, self._randoms = list(integers), list(randoms)

    def integers(self, low, high):
        value = self._integers.pop(0)
        assert low <= value < high
        return value

    def random(self):
        return self._randoms.pop(0)


@pytest.mark.parametrize("flip", [False, True])
def test_a_train_clip_is_tensorflows_at_the_same_draws(tf, shard, flip):
    """Train mode at given draws (start 5, short side 57, crop at 6, 11, a
    flip or not) against the tf.data path's own steps on the same record."""
    from nonlocal_tf.data import tfrecord, transforms

    load = grain_pipeline._LoadRecord(MODES["train"], RESIZING, strict=True, num_classes=None)
    element = load((shard, 2, 2), Draws([5, 57, 6, 11], [0.2 if flip else 0.8]))
    record = list(tf.data.TFRecordDataset(shard))[2]
    jpegs = tfrecord.parse_example(record)["frames"]
    chosen = np.arange(4) * 3 + 5
    frames = tfrecord.decode_jpegs(tf.gather(jpegs, chosen), 4)
    resized = transforms.resize_short_side(frames, 57).numpy()[:, 6:46, 11:51]
    expected = resized[:, :, ::-1] if flip else resized
    assert element["frames"].shape == expected.shape == (4, 40, 40, 3)
    assert np.abs(element["frames"].astype(int) - expected).max() <= 1
    assert int(element["label"]) == 2
    np.testing.assert_array_equal(frame_indices(frames.numpy()), chosen)


def test_sources_pick_the_engine(shard, monkeypatch):
    assert grain(shard, "val").engine == "grain"
    monkeypatch.setenv("NONLOCAL_TF_INPUT_ENGINE", "grain")
    auto = data.dataset_from_source(shard, "val", SPEC, workers=0, batch_size=None)
    assert auto.engine == "grain" and len(list(auto)) == 4


@pytest.mark.parametrize("cores,processes", [(2, 0), (3, 2)])
def test_shards_decode_in_threads_on_two_cores(shard, monkeypatch, cores, processes):
    """By default frame shards are decoded by threads of the reading process
    on two cores (twice the clips of one worker process there), by worker
    processes above."""
    import multiprocessing

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    before = set(multiprocessing.active_children())
    stream = iter(grain(shard, "val", workers=None))
    next(stream)
    started = set(multiprocessing.active_children()) - before
    stream.close()
    assert len(started) == processes


def test_tf_data_reads_shards_when_asked(tf, shard):
    ds = data.dataset_from_source(shard, "val", SPEC, engine="tf_data", batch_size=None)
    assert ds.engine == "tf_data" and isinstance(ds.data, tf.data.Dataset)
    with pytest.raises(ValueError, match="a tf.data service runs tf.data pipelines"):
        data.dataset_from_source(shard, "val", SPEC, engine="grain", data_service="grpc://x:1")


# ------------------------------------------------------------------ the index
def test_an_old_shards_index_is_rebuilt_and_a_copy_is_kept(videos, shard, tmp_path, caplog):
    written = shards.load_index(shard + ".index")
    copy = str(tmp_path / "copy.tfrecord")
    shutil.copyfile(shard, copy)  # no index, a new mtime
    with caplog.at_level("WARNING", logger="nonlocal_tf"):
        rebuilt = shards.index_for(copy)
    assert caplog.text.count("indexing it") == 1 and "copy.tfrecord: no index" in caplog.text
    for field in dataclasses.fields(shards.ShardIndex):
        if field.name != "shard_mtime_ns":
            np.testing.assert_array_equal(
                getattr(rebuilt, field.name), getattr(written, field.name)
            )
    shutil.copyfile(shard + ".index", copy + ".index")  # copied along: mtimes differ
    os.utime(copy, ns=(1, 1))
    caplog.clear()
    with caplog.at_level("WARNING", logger="nonlocal_tf"):
        shards.index_for(copy)
    assert not caplog.text  # the same bytes: kept
    with open(copy, "r+b") as f:  # same size, other bytes: stale
        f.write(b"\0" * 8)
    with pytest.raises(shards.ShardError, match="copy.tfrecord: changed since it was indexed"):
        shards.index_for(copy, build=False)


def test_a_shard_written_again_is_read_from_its_new_index(videos, tmp_path):
    """The reader maps an index once per process, and again when it changes."""
    path = write(tmp_path, videos[:2])
    assert [int(label) for _, label in grain(path, "val")] == [0, 1]
    os.remove(path + ".json")
    write(tmp_path, videos[2:])
    assert [int(label) for _, label in grain(path, "val")] == [2, 3]


def cut(path, keep: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(keep)


@pytest.mark.parametrize("indexed", [True, False])
def test_a_truncated_shard_is_a_one_line_error_naming_it(shard, tmp_path, indexed):
    copy = str(tmp_path / "train-00000-of-00001.tfrecord")
    shutil.copyfile(shard, copy)
    if indexed:
        shutil.copyfile(shard + ".index", copy + ".index")
    cut(copy, os.path.getsize(copy) - 1000)  # inside the last record
    with pytest.raises(shards.ShardError) as error:
        grain(copy, "val")
    message = str(error.value)
    assert message.startswith(f"{copy}: truncated (") and "\n" not in message


def test_a_corrupt_jpeg_is_a_counted_skip_naming_shard_and_record(videos, tmp_path, caplog):
    good = read_all_frames(videos[0][0])
    frames = [jpeg.encode(f) for f in good]
    broken = frames[:6] + [frames[6][:300] + b"\0" * 50] + frames[7:]  # cut short
    path = str(tmp_path / "s.tfrecord")
    with shards.ShardWriter(path) as writer:
        for i, jpegs in enumerate([frames, broken, frames]):
            writer.write(sequence_example.encode(jpegs, [i], ["c"], f"v{i}"))
        shards.save_index(writer.close(), path + ".index")
    with caplog.at_level("WARNING", logger="nonlocal_tf"):
        ds = grain(path, "test")  # frame 6 among those sampled
        labels = [int(label) for _, label, _ in ds]
    assert labels == [0, 2]
    [(name, reason)] = ds.skips.items
    assert name == f"{path} record 1" and reason.startswith("corrupt JPEG (frame 6")
    assert ds.skips.counts() == {"corrupt JPEG": 1}
    assert f"{path} record 1: corrupt JPEG" in caplog.text


def test_a_record_failing_its_crc_is_a_counted_skip(shard, tmp_path):
    copy = str(tmp_path / "c.tfrecord")
    shutil.copyfile(shard, copy)
    index = shards.load_index(shard + ".index")
    with open(copy, "r+b") as f:  # a byte of record 2's 10th JPEG flipped
        where = int(index.record_offset[2] + index.frame_offset[index.frame_start[2] + 10] + 40)
        f.seek(where)
        byte = f.read(1)
        f.seek(where)
        f.write(bytes([byte[0] ^ 0xFF]))
    ds = grain(copy, "val")
    assert [int(label) for _, label in ds] == [0, 1, 3]
    assert ds.skips.items == [(f"{copy} record 2", "corrupt record (data CRC mismatch)")]


# ------------------------------------------------------------------ reading at random
@pytest.fixture(scope="module")
def three_shards(videos, tmp_path_factory):
    """Eleven records in three shards (4, 4, 3), record k labelled k."""
    folder = tmp_path_factory.mktemp("three")
    items = [(videos[k % 4][0], [k], ["c"], f"r{k}") for k in range(11)]
    for s in range(3):
        write(folder, items[4 * s : 4 * s + 4], f"train-{s:05d}-of-00003.tfrecord")
    return folder / "train-*.tfrecord"


def test_epochs_visit_every_record_once_shuffled_across_shards(three_shards):
    ds = grain(three_shards, "train", seed=3, repeat=True, batch_size=1)
    stream = iter(ds)
    epochs = [[int(next(stream)[1][0]) for _ in range(11)] for _ in range(3)]
    for labels in epochs:
        assert sorted(labels) == list(range(11))  # nothing lost, nothing twice
    assert len({tuple(labels) for labels in epochs}) == 3  # a new order each epoch
    shard_of = [[label // 4 for label in labels] for labels in epochs]
    runs = [sum(a != b for a, b in zip(s[1:], s[:-1], strict=True)) for s in shard_of]
    assert max(runs) > 2  # not one shard after another: one order over all records


def test_only_the_sampled_frames_are_read(shard, monkeypatch):
    """A pass of val clips reads each clip's 4 sampled JPEGs, one ``pread``
    each, and no other byte of the shard."""
    index = shards.load_index(shard + ".index")
    read = []
    pread = os.pread

    def counted(fd, length, offset):
        if os.readlink(f"/proc/self/fd/{fd}") == shard:  # not other tests' datasets
            read.append((offset, length))
        return pread(fd, length, offset)

    monkeypatch.setattr(os, "pread", counted)
    assert len(list(grain(shard, "val"))) == 4
    expected = []
    for record in range(4):
        offsets, lengths = index.frame_spans(record)
        chosen = sampling.center_indices(index.frame_count(record), 4, 3)
        expected += zip(offsets[chosen].tolist(), lengths[chosen].tolist(), strict=True)
    assert sorted(read) == sorted(expected)
    assert sum(n for _, n in read) < os.path.getsize(shard) / 8


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_the_iterator_state_resumes_mid_epoch(three_shards, workers):
    """Batches 3.. of a run restored from the state after batch 2 (saved as
    JSON, as a backup would) and the seed it drew are the uninterrupted run's."""
    options = {"repeat": True, "batch_size": 2, "workers": workers}
    ds = grain(three_shards, "train", **options)  # a seed drawn: the dataset says which
    stream = iter(ds)
    for _ in range(2):
        next(stream)
    state = json.loads(json.dumps(ds.data.get_state()))
    expected = [next(stream) for _ in range(4)]  # into the next epoch (11 records)
    stream.close()
    again = grain(three_shards, "train", **{**options, "seed": ds.data.seed})
    again.data.set_state(state)
    resumed = iter(again)
    for want in expected:
        got = next(resumed)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])  # the same crops and flips too
    resumed.close()


def test_a_backup_records_the_data_position_and_a_resumed_run_reads_on(three_shards, tmp_path):
    """`fit` with a `StepBackup` holding a `training.DataPosition`: the
    backup records the stream's state after the batches `fit` took, and a
    run started from it reads the next batches the uninterrupted run reads
    (on JAX and PyTorch on a CPU, where Keras takes no batch ahead), not the
    first ones."""
    import keras

    from nonlocal_tf import training
    from nonlocal_tf.training.backup import DataPosition, newest_data_state

    options = {"repeat": True, "batch_size": 2, "workers": 0, "seed": 3}
    clips = keras.Input((SPEC.clip_len, SPEC.crop, SPEC.crop, 3), dtype="uint8")
    pooled = keras.layers.GlobalAveragePooling3D()(keras.ops.cast(clips, "float32") / 255)
    model = keras.Model(clips, keras.layers.Dense(16)(pooled))  # labels below 16
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    backup = str(tmp_path / "backup")

    ds = grain(three_shards, "train", **options)
    position = DataPosition(ds.data)
    stream = position.taken(position.read(iter(ds)))
    step = training.StepBackup(backup, save_freq=2, delete_when_done=False, data=position)
    model.fit(stream, steps_per_epoch=3, epochs=2, verbose=0, callbacks=[step])
    state = newest_data_state(backup)
    assert state is not None and state == json.loads(json.dumps(state))

    uninterrupted = iter(grain(three_shards, "train", **options))
    expected = [next(uninterrupted) for _ in range(20)][6:]  # fit took 6
    uninterrupted.close()
    again = grain(three_shards, "train", **options)
    resumed = iter(again)
    first = next(resumed)  # without the position: the first epoch's first batch again
    resumed.close()
    assert not np.array_equal(first[0], expected[0][0])
    again = grain(three_shards, "train", **options)
    DataPosition(again.data, state)  # given before the stream opens
    resumed = iter(again)
    got = [next(resumed) for _ in range(2)]
    resumed.close()
    # On TensorFlow Keras reads a generator through a prefetching tf.data
    # pipeline: the batches it had read ahead are not read again.
    ahead = 0 if keras.backend.backend() != "tensorflow" else len(expected) - 2
    skipped = next(i for i in range(ahead + 1) if np.array_equal(got[0][0], expected[i][0]))
    for have, want in zip(got, expected[skipped:], strict=False):
        np.testing.assert_array_equal(have[1], want[1])
        np.testing.assert_array_equal(have[0], want[0])


def test_a_data_position_of_another_stream_is_a_warning(three_shards, caplog):
    """A state Grain cannot restore here (saved with 2 worker processes,
    read with none) starts the data from the beginning, with a warning."""
    ds = grain(three_shards, "train", repeat=True, batch_size=2, workers=2, seed=1)
    stream = iter(ds)
    next(stream)
    state = ds.data.get_state()
    stream.close()
    fresh = iter(grain(three_shards, "train", repeat=True, batch_size=2, workers=0, seed=1))
    want = next(fresh)
    fresh.close()
    again = grain(three_shards, "train", repeat=True, batch_size=2, workers=0, seed=1)
    again.data.set_state(state)
    with caplog.at_level("WARNING", logger="nonlocal_tf"):
        resumed = iter(again)
        got = next(resumed)
    resumed.close()
    assert "cannot be restored here" in caplog.text and "--input_workers" in caplog.text
    assert "Reading the data on" not in caplog.text
    np.testing.assert_array_equal(got[0], want[0])


# ------------------------------------------------------------------ the command, no TensorFlow
def run_without_tensorflow(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    """``python args...`` where no process (the command's workers included)
    can import TensorFlow: a package of that name that refuses, first on the path."""
    blocker = tmp_path / "blocker" / "tensorflow"
    os.makedirs(blocker, exist_ok=True)
    (blocker / "__init__.py").write_text("raise ImportError('TensorFlow is blocked here')\n")
    path = os.pathsep.join([str(tmp_path / "blocker"), ROOT])
    env = os.environ | {"KERAS_BACKEND": "jax", "PYTHONPATH": path}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )


@pytest.mark.slow
def test_make_tfrecords_without_tensorflow(videos, tmp_path):
    tree = tmp_path / "tree"
    for video, labels, *_ in videos:
        os.makedirs(tree / f"c{labels[0]}", exist_ok=True)
        shutil.copy(video, tree / f"c{labels[0]}")
    out = tmp_path / "shards"
    convert = ["-m", "zoo.make_tfrecords", "--format=directory", f"--video_dir={tree}"]
    done = run_without_tensorflow([*convert, f"--output_dir={out}", "--num_shards=2"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "written: 4 videos" in done.stdout
    check = run_without_tensorflow(["-c", "import tensorflow"], tmp_path)
    assert "TensorFlow is blocked here" in check.stderr  # the block holds
    os.remove(out / "train-00001-of-00002.tfrecord.index")  # as before indexes
    again = run_without_tensorflow(
        ["-m", "zoo.make_tfrecords", "--index_only", f"--output_dir={out}"], tmp_path
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "indexed: 2 of 2 shards" in again.stdout
    assert "train-00001-of-00002.tfrecord: no index; indexing it" in again.stderr
    ds = grain(out / "train-*.tfrecord", "val")
    assert sorted(int(label) for _, label in ds) == [0, 1, 2, 3]
    cut(out / "train-00000-of-00002.tfrecord", 100)
    broken = run_without_tensorflow(
        ["-m", "zoo.make_tfrecords", "--index_only", f"--output_dir={out}"], tmp_path
    )
    assert broken.returncode == 1
    assert f"{out / 'train-00000-of-00002.tfrecord'}: truncated (" in broken.stdout
