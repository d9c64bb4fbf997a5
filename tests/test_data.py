"""Data pipelines on real videos encoded by the tests (H.264, MPEG-4, VP8), TFRecord
shards in a temp directory, and every kind of bad input."""

import dataclasses
import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest
import tensorflow as tf

from nonlocal_tf import data
from nonlocal_tf.data import sampling, transforms
from tests.videos import frame_indices, write_video

SPEC = dataclasses.replace(data.ClipSpec.at_size(4, 3, 48), train_scale=(48, 56), crop=40)


# ------------------------------------------------------------------ sampling
def test_train_indices_start_range_and_wrap():
    rng = np.random.default_rng(0)
    starts = {int(sampling.train_indices(100, 8, 8, rng)[0]) for _ in range(2000)}
    assert min(starts) == 0 and max(starts) == 100 - 64  # uniform in [0, N - L*rate]
    np.testing.assert_array_equal(
        sampling.train_indices(30, 8, 8, rng), [0, 8, 16, 24, 2, 10, 18, 26]
    )  # wraps


def test_test_indices_official_starts():
    np.testing.assert_array_equal(sampling.test_starts(95), [0, 9, 19, 28, 38, 47, 57, 66, 76, 85])
    idx = sampling.test_indices(95, 4, 8)
    np.testing.assert_array_equal(idx[9], [85, 93, 6, 14])  # int(9*95/10)=85, wraps modulo 95
    np.testing.assert_array_equal(sampling.center_indices(100, 8, 8), 18 + np.arange(8) * 8)


def test_a_one_clip_test_takes_the_centred_clip():
    """zoo.predict --views=1 / inference.classify(views=1): the middle of the video."""
    from nonlocal_tf.data.spec import MODES

    spec = data.ClipSpec(8, 8, num_test_clips=1)
    want = sampling.center_indices(300, 8, 8)[None]  # frames 118..174
    np.testing.assert_array_equal(sampling.indices(MODES["test"], 300, spec), want)
    np.testing.assert_array_equal(sampling.tf_indices(MODES["test"], 300, spec, None).numpy(), want)


@pytest.mark.parametrize("n", [5, 64, 95, 300])
def test_tf_sampling_matches_numpy(n):
    np.testing.assert_array_equal(
        sampling.tf_test_indices(n, 8, 8).numpy(), sampling.test_indices(n, 8, 8)
    )
    np.testing.assert_array_equal(
        sampling.tf_center_indices(n, 8, 8).numpy(), sampling.center_indices(n, 8, 8)
    )
    idx = sampling.tf_train_indices(n, 8, 8, tf.constant([1, 2], tf.int64)).numpy()
    assert np.all(np.diff(idx) % n == 8 % n) and idx.min() >= 0 and idx.max() < n


# ------------------------------------------------------------------ decoding
@pytest.mark.parametrize(
    "codec,ext", [("libx264", "mp4"), ("mpeg4", "avi"), ("libvpx", "webm"), ("libx264", "mkv")]
)
def test_decode_exact_frames(tmp_path, codec, ext):
    path = write_video(tmp_path / f"v.{ext}", num_frames=120, codec=codec)
    assert data.probe(path)[0] == 120
    frames = data.read_frames(path, lambda n: sampling.test_indices(n, 4, 8))
    assert frames.shape == (10, 4, 48, 64, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frame_indices(frames), sampling.test_indices(120, 4, 8))
    late = data.read_frames(path, lambda n: np.array([100, 101, 119]))  # seeks to a keyframe first
    np.testing.assert_array_equal(frame_indices(late), [100, 101, 119])
    assert late[0, 0, 0, 0] > 200 and late[0, 0, 0, 2] < 50  # RGB order: the corner is red


def test_decode_skips_unreferenced_frames_exactly(tmp_path):
    """libx264's defaults (one keyframe, B-frames): the wanted frames are
    decoded from the keyframe before them, skipping frames that are neither
    wanted nor referenced; same pixels and indices as decoding every frame."""
    import av

    from nonlocal_tf.data import decode

    path = write_video(tmp_path / "b.mp4", num_frames=120, options={"bf": "3"})
    with av.open(path) as container:
        every = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        container.seek(0)  # the stream really has B-frames (AV_PICTURE_TYPE_B = 3)
        b_frames = sum(int(frame.pict_type) == 3 for frame in container.decode(video=0))
    assert b_frames > 20
    for wanted in ([3, 11, 19, 27], [60, 61, 90, 119], [0], sampling.test_indices(120, 4, 8)):
        wanted = np.asarray(wanted)
        for threaded in (False, True):
            got = data.read_frames(path, lambda n, w=wanted: w, threaded=threaded)
            np.testing.assert_array_equal(got, every[wanted])
            np.testing.assert_array_equal(frame_indices(got), wanted)
        with av.open(path) as container:  # the skipping path is the one that ran
            stream = container.streams.video[0]
            packets = decode._timed_packets(container, stream)
            kept = decode._decode_wanted(stream, packets, path, set(wanted.ravel()))
        assert kept is not None and sorted(kept) == sorted(set(wanted.ravel()))


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_decode_counts_frames_of_a_variable_rate_video(tmp_path, ext):
    """Timestamps with gaps (a variable frame rate): the count is the frames'
    (not the duration's: Matroska lists no count) and a frame's index is its
    count in display order, also far into the video (after a seek)."""
    stamps = [i + i // 10 for i in range(120)]  # a gap every 10 frames
    for options in ({"g": "8", "bf": "0"}, {"bf": "3"}):
        path = write_video(tmp_path / f"vfr.{ext}", num_frames=120, options=options, stamps=stamps)
        counts = []
        late = data.read_frames(
            path, lambda n, seen=counts: seen.append(n) or np.array([99, 100, 110, n - 1])
        )
        assert counts == [120]
        np.testing.assert_array_equal(frame_indices(late), [99, 100, 110, 119])


def test_decode_a_stream_that_announces_no_frame_count(tmp_path):
    """A raw H.264 stream has no count nor duration: every frame is decoded
    once, and the indices chosen from what was decoded (this was a
    'corrupt stream' skip: the frames were decoded again from its end)."""
    import av

    source = write_video(tmp_path / "v.mp4", num_frames=60)
    raw = str(tmp_path / "v.h264")
    with av.open(source) as src, av.open(raw, "w", format="h264") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(video=0):
            if packet.size:
                packet.stream = out
                dst.mux(packet)
    seen = []
    frames = data.read_frames(raw, lambda n: seen.append(n) or np.array([5, 50, n - 1]))
    assert seen == [60]
    np.testing.assert_array_equal(frame_indices(frames), [5, 50, 59])


def test_damaged_videos_give_frames_or_a_decode_error(tmp_path):
    """Truncated, bit-flipped and overwritten copies of a long-GOP B-frame video:
    each read gives the clip or a `VideoDecodeError`, never another exception
    (seeking in some raised FFmpeg's PermissionError; a damaged header left no
    decoder)."""
    source = write_video(tmp_path / "v.mp4", num_frames=150, options={"bf": "3"})
    intact = open(source, "rb").read()
    rng = np.random.default_rng(1)
    outcomes = {"frames": 0, "skipped": 0}
    for trial in range(150):
        damaged = bytearray(intact)
        if trial % 3 == 0:
            damaged = damaged[: int(len(damaged) * rng.uniform(0.3, 0.99))]
        elif trial % 3 == 1:
            for _ in range(rng.integers(1, 20)):
                at = rng.integers(len(damaged) // 10, len(damaged))
                damaged[at] = rng.integers(0, 256)
        else:
            at, size = rng.integers(len(damaged) // 5, len(damaged) - 200), rng.integers(10, 200)
            damaged[at : at + size] = rng.integers(0, 256, size).astype(np.uint8).tobytes()
        path = tmp_path / "damaged.mp4"
        path.write_bytes(bytes(damaged))
        wanted = int(rng.integers(0, 90)) + np.arange(8) * 8
        try:
            frames = data.read_frames(str(path), lambda n, w=wanted: w % n, threaded=False)
        except data.VideoDecodeError:
            outcomes["skipped"] += 1
        else:
            assert frames.shape == (8, 48, 64, 3)
            outcomes["frames"] += 1
    assert outcomes["frames"] > 30 and outcomes["skipped"] > 30  # both kinds were met


# ------------------------------------------------------------------ transforms
def coordinate_clip(t=2, h=6, w=10):
    """Pixels carry their (y, x) position, to check crop offsets."""
    y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    frame = np.stack([y, x, np.zeros_like(y)], -1).astype(np.float32)
    return tf.constant(np.repeat(frame[None], t, 0))


def test_three_crops_along_the_long_side():
    crops = transforms.three_crops(coordinate_clip(h=6, w=11), 6).numpy()  # (3, T, 6, 6, 3)
    assert crops.shape == (3, 2, 6, 6, 3)
    assert [int(c[0, 0, 0, 1]) for c in crops] == [0, 2, 4]  # offsets 0, (W-S)/2, 2*((W-S)/2)
    tall = transforms.three_crops(coordinate_clip(h=12, w=6), 6).numpy()
    assert [int(c[0, 0, 0, 0]) for c in tall] == [0, 3, 6]


def test_random_crop_and_flip_positions():
    clip = coordinate_clip(h=20, w=30)
    seen = set()
    for i in range(40):
        out = transforms.random_crop(clip, 8, tf.constant([i, 7], tf.int64)).numpy()
        top, left = int(out[0, 0, 0, 0]), int(out[0, 0, 0, 1])
        assert 0 <= top <= 12 and 0 <= left <= 22
        np.testing.assert_array_equal(out[1], out[0])  # the same crop for every frame
        seen.add((top, left))
    assert len(seen) > 20
    flips = [
        transforms.random_flip(clip, tf.constant([i, 1], tf.int64)).numpy()[0, 0, 0, 1]
        for i in range(40)
    ]
    assert 0 < sum(f == 29 for f in flips) < 40


def test_resize_short_side():
    out = transforms.resize_short_side(tf.zeros((2, 240, 320, 3)), 256)
    assert tuple(out.shape) == (2, 256, 341, 3)


# ------------------------------------------------------------------ annotations
def make_tree(root, frames=30):
    for label, n in {"jump": 2, "run": 2}.items():
        os.makedirs(root / label, exist_ok=True)
        for i in range(n):
            write_video(
                root / label / f"{label}{i}.mp4", num_frames=frames + 7 * i, height=48, width=64
            )
    return root


def test_kinetics_and_charades_annotations(tmp_path):
    videos = tmp_path / "videos"
    os.makedirs(videos)
    write_video(videos / "abcdefghijk_000010_000020.mp4", num_frames=12)
    write_video(videos / "ZZZZZZZZZZZ_000000_000010.mp4", num_frames=12)
    write_video(videos / "46GP8.mp4", num_frames=12)
    csv = tmp_path / "k.csv"
    csv.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "zumba,abcdefghijk,10,20,train\n"
        "abseiling,ZZZZZZZZZZZ,0,10,train\n"
        "abseiling,missingvid01,0,10,train\n"
        "unknown class,ZZZZZZZZZZZ,0,10,train\n"
    )
    skips = data.SkipLog("annotations")
    k = data.read_kinetics(str(csv), str(videos), class_names=["abseiling", "zumba"], skips=skips)
    assert k.labels == [[1], [0]] and k.class_names == ["abseiling", "zumba"]
    assert skips.counts() == {"missing video": 1, "label not in the class list": 1}
    ccsv = tmp_path / "c.csv"
    ccsv.write_text(
        'id,subject,scene,actions,length\n46GP8,HR43,Kitchen,"c092 11.90 21.20;c147 0.00 12.60;c092 1 2",24\n'
    )
    c = data.read_charades(str(ccsv), str(videos))
    assert c.labels == [[92, 147]] and c.multi_label and len(c.class_names) == 157
    assert data.parse_charades_actions("") == []


# ------------------------------------------------------------------ pipelines
@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "tree")


def test_train_pipeline_and_determinism(tree):
    def first(seed):
        ds = data.video_dataset_from_directory(str(tree), "train", SPEC, batch_size=2, seed=seed)
        clips, labels = next(iter(ds))
        return clips.numpy(), labels.numpy(), ds

    a, la, ds = first(3)
    b, lb, _ = first(3)
    assert a.shape == (2, 4, 40, 40, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert ds.class_names == ["jump", "run"] and ds.skips.count == 0
    epochs = [np.concatenate([c.numpy() for c, _ in ds]) for _ in range(2)]
    assert not np.array_equal(epochs[0], epochs[1])  # new crops and starts every epoch


def test_val_and_test_views(tree):
    val = data.video_dataset_from_directory(str(tree), "val", SPEC, batch_size=None, shuffle=False)
    clip, label = next(iter(val))
    n = 30  # jump0 has 30 frames
    np.testing.assert_array_equal(frame_indices(clip.numpy()), sampling.center_indices(n, 4, 3))
    test = data.video_dataset_from_directory(str(tree), "test", SPEC, shuffle=False)
    elements = list(test)
    assert len(elements) == 4
    views, label, index = elements[1]  # jump1: 37 frames
    assert views.shape == (30, 4, 48, 48, 3) and int(label) == 0 and int(index) == 1
    views = views.numpy().reshape(10, 3, 4, 48, 48, 3)  # view 3k + c: clip k, crop c
    np.testing.assert_array_equal(frame_indices(views[:, 1]), sampling.test_indices(37, 4, 3))
    # Crop offsets 0, 8, 16: only the first reaches the red corner at x = 10.
    assert np.all(views[:, 0, :, 0, 10, 0] > 200) and np.all(views[:, 1:, :, 0, 10, 0] < 200)


def bad_files(root):
    """Every kind of bad input, in one class folder."""
    bad = root / "bad"
    os.makedirs(bad, exist_ok=True)
    (bad / "garbage.mp4").write_bytes(b"\x00garbage" * 500)
    (bad / "empty.webm").write_bytes(b"")
    good = write_video(root / "src.mp4", num_frames=40)
    blob = open(good, "rb").read()
    (bad / "truncated.mp4").write_bytes(blob[: len(blob) // 3])
    write_video(bad / "short.mkv", num_frames=2)
    with av.open(str(bad / "audio.mp4"), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
    a = write_video(root / "a.ts", num_frames=10, height=48, width=64)
    b = write_video(root / "b.ts", num_frames=10, height=64, width=80, first_pts=10)
    (bad / "resized.ts").write_bytes(open(a, "rb").read() + open(b, "rb").read())
    (bad / "notes.txt").write_text("not a video")
    os.remove(root / "src.mp4")
    os.remove(a)
    os.remove(b)
    return {
        "garbage.mp4",
        "empty.webm",
        "truncated.mp4",
        "short.mkv",
        "audio.mp4",
        "resized.ts",
        "notes.txt",
    }


@pytest.mark.parametrize("mode", ["train", "test"])
def test_bad_files_are_counted_skips(tree, mode, caplog):
    names = bad_files(tree)
    ds = data.video_dataset_from_directory(str(tree), mode, SPEC, batch_size=1, seed=0)
    with caplog.at_level("WARNING", logger="nonlocal_tf"):
        count = sum(1 for _ in ds)
    assert count == 4  # the good videos, none lost
    skipped = {os.path.basename(p) for p, _ in ds.skips.items}
    assert skipped == names
    counts = ds.skips.counts()
    assert counts["empty file"] == 1 and counts["no video stream"] == 1
    assert counts["frames change size"] == 1 and counts["shorter than a clip"] == 1
    assert counts["not a video file extension"] == 1
    for name in names:
        assert name in caplog.text


def test_strict_raises(tree):
    (tree / "jump" / "garbage.mp4").write_bytes(b"junk" * 100)
    ds = data.video_dataset_from_directory(
        str(tree), "val", SPEC, batch_size=1, shuffle=False, strict=True
    )
    with pytest.raises(tf.errors.OpError, match="garbage.mp4: unreadable container"):
        list(ds)


def test_unreadable_path_is_skipped(tree):
    videos = data.read_directory(str(tree))
    videos.paths.append(str(tree / "jump" / "gone.mp4"))
    videos.labels.append([0])
    ds = data.video_dataset(videos, "val", SPEC, batch_size=None)
    assert sum(1 for _ in ds) == 4 and ds.skips.counts() == {"file not found": 1}


def add_non_utf8_name(tree) -> bytes:
    """A copy of a good video under a name that is not UTF-8 (bytes 0xff)."""
    source = os.fsencode(str(tree / "jump" / "jump0.mp4"))
    target = os.fsencode(str(tree / "jump")) + b"/odd\xffname.mp4"
    with open(source, "rb") as f, open(target, "wb") as g:
        g.write(f.read())
    return target


def test_names_that_are_not_utf8_are_read(tree, caplog):
    add_non_utf8_name(tree)
    ds = data.video_dataset_from_directory(str(tree), "val", SPEC, batch_size=None, shuffle=False)
    assert sum(1 for _ in ds) == 5 and ds.skips.count == 0
    gone = os.fsdecode(os.fsencode(str(tree / "jump")) + b"/gone\xfe.mp4")
    videos = data.read_directory(str(tree))
    videos.paths.append(gone)
    videos.labels.append([0])
    with caplog.at_level("WARNING", logger="nonlocal_tf"):
        ds = data.video_dataset(videos, "val", SPEC, batch_size=None)
        assert sum(1 for _ in ds) == 5
    assert ds.skips.items == [(gone, "file not found")]
    assert "gone\\xfe.mp4: file not found" in caplog.text  # printable in the log


def test_bad_arguments(tree):
    with pytest.raises(ValueError, match="mode='fit'"):
        data.video_dataset_from_directory(str(tree), "fit", SPEC)
    with pytest.raises(ValueError, match="No TFRecord files"):
        data.tfrecord_dataset(str(tree / "*.tfrecord"))
    with pytest.raises(ValueError, match="No such directory"):
        data.video_dataset_from_directory(str(tree / "nope"))


# ------------------------------------------------------------------ TFRecords
def run_converter(*args):
    cmd = [sys.executable, "-m", "zoo.make_tfrecords", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_tfrecord_conversion_and_pipeline(tree, tmp_path):
    bad_files(tree)
    odd = add_non_utf8_name(tree)
    out = tmp_path / "shards"
    args = [
        "--format=directory",
        f"--video_dir={tree}",
        f"--output_dir={out}",
        "--num_shards=3",
        "--workers=2",
    ]
    summary = run_converter(*args)
    # The 2-frame video is kept (the clip length is not known yet); 6 files are skipped.
    assert "written: 6 videos" in summary and "skipped: 6" in summary
    assert "frames change size" in summary and "no video stream" in summary
    reports = [
        json.loads((out / f"train-0000{i}-of-00003.tfrecord.json").read_text()) for i in range(3)
    ]
    assert sum(r["videos"] for r in reports) == 6
    media_ids = [
        data.tfrecord.parse_example(record)["media_id"].numpy()
        for record in tf.data.TFRecordDataset(sorted(map(str, out.glob("*.tfrecord"))))
    ]
    assert os.path.relpath(odd, os.fsencode(str(tree))) in media_ids  # the name as on disk
    again = run_converter(*args)  # resumable: finished shards are kept
    assert "3 already written, 0 to write" in again
    pattern = str(out / "train-*.tfrecord")
    val = list(data.tfrecord_dataset(pattern, "val", SPEC, batch_size=None, shuffle=False))
    assert len(val) == 6
    lengths = {0: [2], 1: [30, 37], 2: [30, 37]}  # classes: bad, jump, run
    for clip, label in val:
        idx = frame_indices(clip.numpy())
        assert any(
            np.array_equal(idx, sampling.center_indices(n, 4, 3)) for n in lengths[int(label)]
        )
    test = list(data.tfrecord_dataset(pattern, "test", SPEC, shuffle=False))
    assert test[0][0].shape == (30, 4, 48, 48, 3)
    train = data.tfrecord_dataset(pattern, "train", SPEC, batch_size=2, seed=1)
    clips, labels = next(iter(train))
    assert clips.shape == (2, 4, 40, 40, 3) and labels.dtype == tf.int32
    again = next(iter(data.tfrecord_dataset(pattern, "train", SPEC, batch_size=2, seed=1)))[0]
    np.testing.assert_array_equal(clips.numpy(), again.numpy())


def test_tfrecord_multilabel_and_resize(tmp_path):
    videos = tmp_path / "videos"
    os.makedirs(videos)
    write_video(videos / "AAAAA.mp4", num_frames=20, height=60, width=80)
    csv = tmp_path / "c.csv"
    csv.write_text("id,actions\nAAAAA,c001 0 1;c156 2 3\n")
    out = tmp_path / "shards"
    run_converter(
        "--format=charades",
        f"--annotations={csv}",
        f"--video_dir={videos}",
        f"--output_dir={out}",
        "--num_shards=1",
        "--workers=1",
        "--short_side=30",
        "--fps=12.5",
    )
    ds = data.tfrecord_dataset(
        str(out / "*.tfrecord"), "val", SPEC, num_classes=157, multi_label=True, batch_size=None
    )
    clip, label = next(iter(ds))
    assert np.flatnonzero(label.numpy()).tolist() == [1, 156]
    raw = next(iter(tf.data.TFRecordDataset(str(out / "train-00000-of-00001.tfrecord"))))
    frames = data.tfrecord.parse_example(raw)["frames"]
    assert frames.shape[0] == 10  # 20 frames at 25 fps resampled to 12.5 fps
    assert tf.io.decode_jpeg(frames[0]).shape == (30, 40, 3)


@pytest.mark.parametrize(
    "kwargs",
    [{"crop": 300}, {"train_scale": (320, 256)}, {"test_crop": 300}, {"clip_len": 0}],
)
def test_clip_spec_rejects_impossible_settings(kwargs):
    with pytest.raises(ValueError, match="Received"):
        data.ClipSpec(**kwargs)
