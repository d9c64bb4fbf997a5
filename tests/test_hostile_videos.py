"""Videos that are valid but unusual: frames far larger than a clip needs
(memory stays that of a sane input; a size no frame should have is a named
skip), a display rotation (frames come out as shown), a variable frame rate
(timelines are timed by the frames' own timestamps)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nonlocal_tf import data, inference
from nonlocal_tf.data import decode
from tests.videos import frame_indices, write_black_video, write_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Reads one video as a pipeline does, in a process of its own (its peak RSS is
# the read's), importing the data modules without TensorFlow. The peak is the
# process's VmHWM: ru_maxrss would count the RSS of the test process forking it.
READ = """
import json, resource, sys, types
for name in ("nonlocal_tf", "nonlocal_tf.data"):
    package = types.ModuleType(name)
    package.__path__ = [sys.argv[1] + "/" + name.replace(".", "/")]
    sys.modules[name] = package
import numpy as np
from nonlocal_tf.data import decode, spec
if len(sys.argv) > 4:  # a cap on the address space, in MB: a machine's memory
    cap = int(sys.argv[4]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
before = rss()
try:
    frames = decode.read_sampled(
        sys.argv[2], spec.MODES[sys.argv[3]], spec.KINETICS_8X8, np.random.default_rng(0), False
    )
    shape, reason = list(frames.shape), None
except Exception as exc:
    shape, reason = None, decode.skip_reason(exc)
status = open("/proc/self/status").read()
peak = int(status.split("VmHWM:")[1].split()[0]) / 1024
print(json.dumps({"shape": shape, "reason": reason, "before_mb": before, "peak_mb": peak}))
"""


def read_in_child(path, mode: str, cap_mb: int | None = None) -> dict:
    args = [sys.executable, "-c", READ, ROOT, str(path), mode]
    done = subprocess.run(
        [*args, *([str(cap_mb)] if cap_mb else [])], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------ large frames
def test_a_4k_video_is_shrunk_as_it_is_decoded(tmp_path):
    """The 30-view test of a 3840x2160 video kept its ~80 sampled frames at
    full size before any resize: 2.2 GB of frames (peak RSS 2260 MB here)
    for one video. Frames far over the short side the mode resizes to (256)
    are scaled by FFmpeg as they are decoded, to twice that, aspect kept."""
    path = write_black_video(tmp_path / "uhd.mp4", 2160, 3840)
    read = read_in_child(path, "test")
    assert read["shape"] == [10, 8, 512, 910, 3], read
    assert read["peak_mb"] - read["before_mb"] < 400, read
    train = read_in_child(path, "train")  # short side up to 320: frames of 640
    assert train["shape"] == [8, 640, 1138, 3], train


def test_frames_within_the_bound_keep_their_pixels(tmp_path):
    """Ordinary videos decode to exactly the pixels they did; only frames
    over the bound are scaled (their index marks still read)."""
    path = write_video(tmp_path / "v.mp4", num_frames=24, height=120, width=160)
    wanted = np.array([1, 9, 17, 23])
    full = decode.read_frames(path, lambda n: wanted, max_short_side=None)
    np.testing.assert_array_equal(decode.read_frames(path, lambda n: wanted), full)
    np.testing.assert_array_equal(decode.read_frames(path, lambda n: wanted, 120), full)
    small = decode.read_frames(path, lambda n: wanted, max_short_side=60)
    assert small.shape == (4, 60, 80, 3)
    np.testing.assert_array_equal(frame_indices(small), wanted)


def test_read_frames_bounds_the_short_side_to_1080_by_default(tmp_path):
    path = write_black_video(tmp_path / "uhd.mp4", 2160, 3840)
    assert data.read_frames(path, lambda n: np.array([0, 9])).shape == (2, 1080, 1920, 3)


def test_a_frame_too_large_to_hold_is_a_named_skip(tmp_path):
    """An 8200x8200 video needed 15 GB for its test views; under a memory cap
    it was a 'decoder error (MemoryError ...)'. A frame over 8192x8192
    pixels is refused before decoding, naming its size."""
    path = write_black_video(tmp_path / "huge.mp4", 8200, 8200)
    read = read_in_child(path, "test", cap_mb=3000)
    assert read["reason"] == "frame size 8200x8200 too large (over 8192x8192 pixels)", read
    assert read["peak_mb"] - read["before_mb"] < 200, read


def test_ffmpeg_out_of_memory_is_no_corrupt_stream(tmp_path, monkeypatch):
    """FFmpeg's ENOMEM (a machine short of memory) was a 'corrupt stream
    (MemoryError)' skip, blaming the file."""
    import av

    def no_memory(frame, size=None):
        raise av.error.MemoryError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(decode, "displayed_rgb", no_memory)
    path = write_video(tmp_path / "v.mp4", num_frames=12)
    with pytest.raises(decode.VideoDecodeError) as skipped:
        decode.read_frames(path, lambda n: np.array([3, 7]))
    assert skipped.value.reason == "out of memory while decoding (FFmpeg's MemoryError)"


# ---------------------------------------------------------------- rotation
@pytest.mark.parametrize("ext", ["mp4", "mkv"])
@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotated_videos_come_out_as_displayed(tmp_path, ext, rotation):
    """Phones store portrait video landscape with a display rotation; FFmpeg
    and players show it turned, and so does decoding: the red corner of the
    stored frames lands where the rotation takes it, height and width swap
    for a quarter turn."""
    plain = write_video(tmp_path / f"plain.{ext}", num_frames=12, height=48, width=64)
    turned = write_video(
        tmp_path / f"turned.{ext}", num_frames=12, height=48, width=64, rotation=rotation
    )
    wanted = np.array([0, 5, 11])
    stored = decode.read_frames(plain, lambda n: wanted)
    shown = decode.read_frames(turned, lambda n: wanted)
    turns = rotation // 90  # counterclockwise quarter turns
    np.testing.assert_array_equal(shown, np.rot90(stored, turns, axes=(1, 2)))
    assert shown.shape[1:3] == ((64, 48) if rotation % 180 else (48, 64))
    corner = {90: (-1, 0), -90: (0, -1), 180: (-1, -1)}[rotation]  # was top-left
    assert tuple(shown[0][corner]) == tuple(stored[0][0, 0])
    assert shown[0][corner][0] > 200 and shown[0][corner][1] < 60  # red
    np.testing.assert_array_equal(frame_indices(np.rot90(shown, -turns, axes=(1, 2))), wanted)
    listed = decode.read_all_frames(turned, short_side=24)
    assert listed.shape == ((12, 32, 24, 3) if rotation % 180 else (12, 24, 32, 3))


def test_a_live_source_comes_out_as_displayed(tmp_path):
    """zoo.predict --live reads frames as displayed too (it has a reader of its own)."""
    from nonlocal_tf import inference

    turned = write_video(tmp_path / "turned.mp4", num_frames=12, height=48, width=64, rotation=90)
    reader = inference._Reader(turned, capacity=12, short_side=24, realtime=False)
    reader.start()
    reader.finished.wait(30)
    assert reader.error is None and reader.read == 12
    assert {image.shape for _, image in reader.frames} == {(32, 24, 3)}  # portrait


# ---------------------------------------------------------------- timeline
def test_timeline_of_a_variable_rate_video_is_timed_by_its_frames(tmp_path):
    """A Matroska file whose frames come 25 a second for 1.4 s and then one
    every 0.2 s to 8.4 s: windows were placed and labelled by frame index over
    the nominal rate (the last one 2.4-2.9 s). They are times on the frames'
    own clock: 0.5 s windows every 0.25 s up to the end."""
    stamps = [*range(36), *range(40, 211, 5)]  # in 1/25 s
    path = write_video(
        tmp_path / "vfr.mkv", num_frames=len(stamps), height=32, width=32, stamps=stamps
    )
    spec = data.ClipSpec.at_size(8, 1, 32)
    scorer = inference.Scorer(lambda views: frame_indices(views), spec.clip_len)  # what it saw
    windows, _ = inference.timeline(path, scorer, spec, 0.5, 0.25)
    np.testing.assert_allclose([w.start_s for w in windows], np.arange(len(windows)) * 0.25)
    np.testing.assert_allclose([w.end_s - w.start_s for w in windows], 0.5)
    assert 8.0 <= windows[-1].end_s <= 8.6, windows[-1]  # the last frame shows at 8.4 s
    # The window at 5 s holds the frames shown at 5.0, 5.2 and 5.4 s (53-55): a
    # clip of 8 frames one apart centred on them.
    assert windows[20].start_s == pytest.approx(5.0)
    np.testing.assert_array_equal(windows[20].scores, np.arange(50, 58))
    # In the first 1.4 s, 25 frames a second: 0.5-1 s holds frames 13-24.
    np.testing.assert_array_equal(windows[2].scores, np.arange(15, 23))
