"""The Grain engine (video files decoded in worker processes, no TensorFlow)
against the tf.data engine and TensorFlow's own image ops, on real encoded
videos with every kind of bad file mixed in."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from nonlocal_tf import data
from nonlocal_tf.data import grain_pipeline, numpy_transforms, sampling, transforms
from nonlocal_tf.data.spec import MODES
from tests.test_data import SPEC, bad_files, make_tree
from tests.videos import frame_indices, write_video

# Frames resized to another short side (48x64 videos, short side 56 for
# train, 52 for val and test): the bilinear arithmetic is exercised everywhere.
RESIZING = dataclasses.replace(
    SPEC, train_scale=(50, 60), val_short_side=52, test_short_side=52, test_crop=44
)


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "tree")


def numpy_of(element):
    return tuple(np.asarray(part) for part in element)


# ------------------------------------------------------------------ transforms
@pytest.mark.parametrize(
    "height,width,short_side",
    [(256, 340, 287), (256, 340, 320), (240, 320, 256), (48, 64, 56), (101, 77, 60), (64, 48, 40)],
)
def test_resize_is_tensorflows(height, width, short_side):
    frames = np.random.default_rng(height).integers(0, 256, (2, height, width, 3), np.uint8)
    expected = transforms.resize_short_side(tf.constant(frames), short_side).numpy()
    got = numpy_transforms.resize_short_side(frames, short_side)
    assert got.shape == expected.shape
    difference = np.abs(got.astype(int) - expected)
    assert difference.max() <= 1 and np.mean(difference > 0) < 1e-3  # float32 ties, if any


def test_a_region_is_the_region_of_the_whole_resize():
    frames = np.random.default_rng(0).integers(0, 256, (3, 48, 64, 3), np.uint8)
    whole = numpy_transforms.resize_short_side(frames, 56)  # (3, 56, 75, 3)
    rows, cols = np.arange(5, 45), np.arange(60, 7, -1)  # mirrored columns
    region = numpy_transforms.resize_region(frames, whole.shape[1:3], rows, cols)
    np.testing.assert_array_equal(region, whole[:, 5:45, 60:7:-1])


@pytest.mark.parametrize("mode", ["val", "test"])
def test_deterministic_modes_match_tensorflow(mode):
    shape = (10, 4, 48, 64, 3) if mode == "test" else (4, 48, 64, 3)
    frames = np.random.default_rng(1).integers(0, 256, shape, np.uint8)
    recipe = MODES[mode]
    expected = transforms.augment(
        tf.constant(frames), tf.constant([0, 0], tf.int64), recipe, RESIZING
    )
    got = numpy_transforms.augment(frames, None, recipe, RESIZING)
    assert got.shape == tuple(recipe.shape(RESIZING)) == expected.shape
    assert np.abs(got.astype(int) - expected.numpy()).max() <= 1


def test_train_steps_are_tensorflows_at_the_drawn_sizes():
    """Each random draw (short side, crop corner, flip) gives TensorFlow's
    resize, cropped and mirrored there."""
    frames = np.random.default_rng(2).integers(0, 256, (4, 48, 64, 3), np.uint8)
    recipe, flips, sides = MODES["train"], 0, set()
    for seed in range(40):
        got = numpy_transforms.augment(frames, np.random.default_rng(seed), recipe, RESIZING)
        rng = np.random.default_rng(seed)  # the same draws, in the same order
        side = int(rng.integers(50, 61))
        resized = transforms.resize_short_side(tf.constant(frames), side).numpy()
        top = int(rng.integers(0, resized.shape[1] - 40 + 1))
        left = int(rng.integers(0, resized.shape[2] - 40 + 1))
        crop = resized[:, top : top + 40, left : left + 40]
        flip = rng.random() < 0.5
        flips += flip
        sides.add(side)
        assert np.abs(got.astype(int) - (crop[:, :, ::-1] if flip else crop)).max() <= 1
    assert 0 < flips < 40 and len(sides) > 5


# ------------------------------------------------------------------ datasets
@pytest.mark.parametrize("mode", ["val", "test"])
def test_same_elements_as_tf_data(tree, mode):
    videos = data.read_directory(str(tree))
    ours = grain_pipeline.grain_video_dataset(videos, mode, RESIZING, batch_size=None, workers=0)
    theirs = data.video_dataset(videos, mode, RESIZING, batch_size=None)
    pairs = list(zip(map(numpy_of, ours), map(numpy_of, theirs), strict=True))
    assert len(pairs) == 4
    for got, expected in pairs:
        assert got[0].shape == expected[0].shape and got[0].dtype == np.uint8
        assert np.abs(got[0].astype(int) - expected[0]).max() <= 1
        for a, b in zip(got[1:], expected[1:], strict=True):
            np.testing.assert_array_equal(a, b)  # labels (and video indices)
    if mode == "test":  # view 3k + c: clip k, crop c; the official starts
        unresized = grain_pipeline.grain_video_dataset(videos, mode, SPEC, workers=0)
        views, _, index = numpy_of(list(unresized)[1])  # jump1: 37 frames
        assert int(index) == 1
        np.testing.assert_array_equal(
            frame_indices(views.reshape(10, 3, *views.shape[1:])[:, 1]),
            sampling.test_indices(37, 4, 3),
        )


def one_video_per_class(root, count=6):
    """``count`` videos, each its own class: a batch's labels name its videos."""
    for i in range(count):
        os.makedirs(root / f"c{i}")
        write_video(root / f"c{i}" / "v.mp4", num_frames=24 + i)
    return data.read_directory(str(root))


def test_train_epochs_cover_every_video_once_and_reshuffle(tmp_path):
    videos = one_video_per_class(tmp_path)
    ds = grain_pipeline.grain_video_dataset(
        videos, "train", SPEC, batch_size=3, seed=5, repeat=True, workers=0
    )
    stream = iter(ds)
    epochs = [np.concatenate([np.asarray(next(stream)[1]) for _ in range(2)]) for _ in range(3)]
    for labels in epochs:
        assert sorted(labels) == list(range(6))  # nothing lost, nothing twice
    assert len({tuple(labels) for labels in epochs}) > 1  # a new order each epoch
    again = iter(
        grain_pipeline.grain_video_dataset(
            videos, "train", SPEC, batch_size=3, seed=5, repeat=True, workers=0
        )
    )
    first, repeat = numpy_of(next(iter(ds))), numpy_of(next(again))
    np.testing.assert_array_equal(first[0], repeat[0])  # deterministic given the seed
    assert first[0].shape == (3, 4, 40, 40, 3) and first[1].dtype == np.int32
    assert ds.element_spec[0].shape == (3, 4, 40, 40, 3)


@pytest.mark.parametrize(
    "cores,workers,threads", [(16, 15, 1), (64, 63, 1), (8, 3, 2), (2, 1, 2), (2, 2, 1), (2, 0, 2)]
)
def test_decoding_threads_per_process(monkeypatch, cores, workers, threads):
    monkeypatch.setattr(grain_pipeline.os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert grain_pipeline.decode_threads(workers) == threads
    assert grain_pipeline.default_workers() == cores - 1
    assert grain_pipeline.default_workers(shards=True) == (0 if cores <= 2 else cores - 1)


def test_decoding_threads_share_the_cores_a_batch_ahead(tmp_path, monkeypatch):
    """A process decodes on its share of the cores, at most a batch ahead of
    what was read (Grain's default, 16 threads and 500 elements ahead in each
    worker, decoded a whole repeated epoch into memory at once)."""
    import threading
    import time

    videos = one_video_per_class(tmp_path)
    calls, threads = [], set()
    read = grain_pipeline.read_sampled

    def counted(*args, **kwargs):
        calls.append(1)
        threads.add(threading.get_ident())
        return read(*args, **kwargs)

    monkeypatch.setattr(grain_pipeline, "read_sampled", counted)
    ds = grain_pipeline.grain_video_dataset(
        videos, "train", SPEC, batch_size=2, seed=0, repeat=True, workers=0
    )
    stream = iter(ds)
    next(stream)
    time.sleep(1.0)  # time to run ahead, were it allowed to
    most = len(os.sched_getaffinity(0))  # decode_threads(0): this process's cores
    assert len(threads) <= most
    # the batch read, then a batch (or a thread's video) ahead, one per thread in the making
    assert len(calls) <= 2 + max(2, most) + most
    stream.close()


def test_shards_split_the_videos(tmp_path):
    videos = one_video_per_class(tmp_path)
    seen = []
    for index in range(2):
        ds = grain_pipeline.grain_video_dataset(
            videos, "val", SPEC, batch_size=None, num_shards=2, shard_index=index, workers=0
        )
        seen.append(sorted(int(label) for _, label in ds))
    assert sorted(seen[0] + seen[1]) == list(range(6)) and not set(seen[0]) & set(seen[1])


@pytest.mark.parametrize("mode", ["train", "test"])
def test_bad_files_are_counted_skips_in_worker_processes(tree, mode, caplog):
    names = bad_files(tree)
    ds = data.dataset_from_source(
        str(tree), mode, SPEC, engine="grain", workers=2, batch_size=1, seed=0
    )
    with caplog.at_level("WARNING", logger="nonlocal_tf"):
        count = sum(len(np.asarray(element[1]).reshape(-1)) for element in ds)
    assert count == 4  # the good videos, none lost
    assert {os.path.basename(p) for p, _ in ds.skips.items} == names  # annotations' too
    counts = ds.skips.counts()
    assert counts["empty file"] == 1 and counts["no video stream"] == 1
    assert counts["frames change size"] == 1 and counts["shorter than a clip"] == 1
    for name in names:
        assert name in caplog.text


def test_full_batches_around_bad_videos(tree):
    bad_files(tree)
    videos = data.read_directory(str(tree))
    # Seeded: with other windows the two-size file can decode (its change not sampled).
    ds = grain_pipeline.grain_video_dataset(videos, "train", SPEC, batch_size=3, seed=0, workers=0)
    sizes = [len(labels) for _, labels in ds]
    assert sizes == [3, 1]  # 4 good videos of 10: bad ones replaced, the last batch short


def test_strict_raises_naming_the_video(tree):
    (tree / "jump" / "garbage.mp4").write_bytes(b"junk" * 100)
    videos = data.read_directory(str(tree))
    ds = grain_pipeline.grain_video_dataset(videos, "val", SPEC, strict=True, workers=0)
    with pytest.raises(data.VideoDecodeError, match="garbage.mp4: unreadable container"):
        list(ds)


def test_a_small_shared_memory_is_a_warning(tmp_path, monkeypatch, caplog):
    usage = shutil.disk_usage(tmp_path)._replace(free=64 * 2**20)  # docker's default /dev/shm
    monkeypatch.setattr(grain_pipeline.shutil, "disk_usage", lambda folder: usage)
    frames = (16, 8, 224, 224, 3)  # 19 MB a batch
    with caplog.at_level("WARNING", logger="nonlocal_tf"):
        grain_pipeline._check_shared_memory(frames, workers=1)
        assert not caplog.text  # 39 MB fit
        grain_pipeline._check_shared_memory(frames, workers=15)
    assert "--shm-size" in caplog.text and "15 decoding workers" in caplog.text


def test_arguments_are_checked(tree):
    videos = data.read_directory(str(tree))
    with pytest.raises(ValueError, match="mode='fit'"):
        grain_pipeline.grain_video_dataset(videos, "fit", SPEC)
    with pytest.raises(ValueError, match="workers"):
        grain_pipeline.grain_video_dataset(videos, "train", SPEC, workers=-1)
    with pytest.raises(ValueError, match="cannot be split between 9"):
        grain_pipeline.grain_video_dataset(videos, "train", SPEC, num_shards=9)
    with pytest.raises(ValueError, match="No TFRecord files match"):
        data.dataset_from_source(str(tree / "x.tfrecord"), "train", SPEC, engine="grain")
    with pytest.raises(ValueError, match="engine="):
        data.dataset_from_source(str(tree), "train", SPEC, engine="dali")


# ------------------------------------------------------------------ without TensorFlow
BLOCK_TENSORFLOW = "import runpy, sys; sys.modules['tensorflow'] = None; "
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_without_tensorflow(args: list[str], backend: str) -> subprocess.CompletedProcess:
    """``python args...`` (a zoo script and its flags) where importing TensorFlow fails."""
    script = (
        BLOCK_TENSORFLOW + f"sys.argv = {args!r}; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    env = os.environ | {"KERAS_BACKEND": backend}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
@pytest.mark.parametrize("backend,augment_on", [("jax", "device"), ("torch", "host")])
def test_zoo_train_without_tensorflow(video_tree, tmp_path, backend, augment_on):
    """What a JAX or PyTorch user without TensorFlow runs: zoo.train reads the
    videos through Grain processes (a broken file among them), logs TensorBoard
    scalars, checkpoints and backs up; importing TensorFlow would fail. On JAX
    the clips are cut on the device (`--augment_on=device`), and zoo.evaluate's
    30 views of the run's model too. (Three classes:
    the top-5 metric takes 3 on PyTorch, whose topk refuses k > classes.)"""
    videos = tmp_path / "videos"
    shutil.copytree(video_tree, videos)
    (videos / "a" / "broken.mp4").write_bytes(b"junk" * 50)
    out = tmp_path / "run"
    args = [
        "zoo/train.py",
        "--model=c2d_nl5_r50_8x8",
        "--width_per_group=4",
        "--batch_size=4",
        "--precise_bn_batches=1",
        f"--train_data={videos}",
        f"--output_dir={out}",
        "--steps_per_epoch=2",
        "--crop=32",
        "--train_scale=36,40",
        "--input_workers=2",
        f"--augment_on={augment_on}",
    ]
    done = run_without_tensorflow(args, backend)
    assert "broken.mp4: unreadable container" in done.stderr
    assert (out / "checkpoints" / "epoch-001.weights.h5").exists()
    assert any((out / "logs" / "train").iterdir())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 1
    record = json.loads((out / "run.json").read_text())
    assert record["command"]["augment_on"] == augment_on
    spec = record["model_info"]["spec"]  # --crop / --train_scale, as trained
    assert spec["crop"] == 32 and list(spec["train_scale"]) == [36, 40]
    # The run folder evaluated, the 3 crops cut where the windows were placed.
    report = tmp_path / "report.json"
    evaluate = [
        "zoo/evaluate.py",
        f"--model={out}",
        f"--data={videos}",
        f"--output={report}",
        "--max_videos=2",
        "--input_workers=1",
        f"--augment_on={augment_on}",
    ]
    done = run_without_tensorflow(evaluate, backend)
    result = json.loads(report.read_text())
    assert result["videos"] == 2 and result["views_per_video"] == 30


@pytest.mark.slow
def test_zoo_predict_on_jax_without_tensorflow(video_tree, tmp_path):
    """zoo.predict with the shipped demo model: views through the Grain engine,
    the timeline's centred views in NumPy; importing TensorFlow would fail."""
    (tmp_path / "broken.mp4").write_bytes(b"junk" * 50)
    listing = tmp_path / "list.txt"
    listing.write_text(
        f"{video_tree / 'a' / '0.mp4'}\n{video_tree / 'b' / '1.mp4'}\n{tmp_path / 'broken.mp4'}\n"
    )
    outputs = {"files": tmp_path / "p.jsonl", "timeline": tmp_path / "t.csv"}
    errors = {}
    for kind, extra in (("files", []), ("timeline", ["--window=1", "--stride=1"])):
        args = [
            "zoo/predict.py",
            "--model=reappear_c2d_nl5_r50.demo",
            f"--input={listing if kind == 'files' else video_tree / 'a' / '0.mp4'}",
            f"--output={outputs[kind]}",
            "--input_workers=0",
            *extra,
        ]
        errors[kind] = run_without_tensorflow(args, "jax").stderr
    rows = [json.loads(line) for line in outputs["files"].read_text().splitlines()]
    assert [r["views"] for r in rows] == [30, 30]
    assert {name for name, _ in rows[0]["top_k"]} == {"reappears", "different"}
    assert "broken.mp4: unreadable container" in errors["files"]  # listed as skipped
    assert len(outputs["timeline"].read_text().splitlines()) > 1


def test_the_data_package_imports_without_tensorflow():
    script = BLOCK_TENSORFLOW + (
        "from nonlocal_tf import data; from nonlocal_tf.data import grain_pipeline; "
        "assert data.ClipSpec and data.grain_video_dataset; "
        "from nonlocal_tf import runtime; print(runtime.input_engine())"
    )
    env = os.environ | {"KERAS_BACKEND": "jax"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "grain"
