"""Every zoo command turns a user's mistake into one line on stderr and a
non-zero exit, before any long work, and never runs code from a checkpoint."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.test_safe_pickle import os_payloads
from tests.videos import write_video


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    for label in ("a", "b"):
        (root / "videos" / label).mkdir(parents=True)
    write_video(root / "videos" / "a" / "v0.mp4", num_frames=20)
    write_video(root / "videos" / "b" / "v1.mp4", num_frames=20)
    (root / "a_file").write_text("in the way")
    marker = root / "pwned"
    (root / "evil.pkl").write_bytes(os_payloads(str(marker))["reduce"])
    return root, marker


def cases(root):
    videos, file, evil = root / "videos", root / "a_file", root / "evil.pkl"
    tiny = ["--model=c2d_r50_8x8", "--width_per_group=4"]
    train = ["zoo.train", *tiny, f"--train_data={videos}", "--epochs=1", "--steps_per_epoch=1"]
    return {
        "train output is a file": (
            [*train, f"--output_dir={file}"],
            "--output_dir folder .* is a file",
        ),
        "train scale": (
            [*train, f"--output_dir={root / 'o1'}", "--train_scale=a,b"],
            "--train_scale takes two integers",
        ),
        "train width": (
            [*train, f"--output_dir={root / 'o2'}", "--width_per_group=0"],
            "FATAL Flags parsing error: flag --width_per_group=0",
        ),
        "train augments on the device through tf.data": (
            [
                *train,
                f"--output_dir={root / 'o7'}",
                "--augment_on=device",
                "--input_engine=tf_data",
            ],
            "--augment_on: augment_on='device' is the Grain engine's",
        ),
        "train missing csv": (
            [*train[:3], f"--train_data={root / 'no.csv'}", f"--output_dir={root / 'o3'}"],
            "No such data",
        ),
        "train malicious init": (
            [*train, f"--output_dir={root / 'o4'}", f"--init={evil}"],
            r"zoo.train: error: .*os\.system.*refused|never needs",
        ),
        "convert unknown builder": (
            ["zoo.convert", "--model=keras", f"--source={evil}", f"--output_dir={root / 'o5'}"],
            "Unknown --model 'keras'",
        ),
        "convert malicious": (
            ["zoo.convert", *tiny[:1], f"--source={evil}", f"--output_dir={root / 'o6'}"],
            r"zoo.convert: error: .*os\.system",
        ),
        "export output is a file": (
            ["zoo.export", *tiny, f"--output_dir={file}"],
            "zoo.export: error: .*is a file",
        ),
        "export malicious": (
            ["zoo.export", *tiny, f"--weights={evil}", f"--output_dir={root / 'o7'}"],
            r"zoo.export: error: .*os\.system",
        ),
        "evaluate output is a folder": (
            ["zoo.evaluate", *tiny, f"--data={videos}", f"--output={root}"],
            "zoo.evaluate: error: The --output file .* is a folder",
        ),
        "evaluate malicious": (
            [
                "zoo.evaluate",
                *tiny,
                f"--data={videos}",
                f"--weights={evil}",
                f"--output={root / 'r.json'}",
            ],
            r"zoo.evaluate: error: .*os\.system",
        ),
        "make_tfrecords output is a file": (
            [
                "zoo.make_tfrecords",
                "--format=directory",
                f"--video_dir={videos}",
                f"--output_dir={file}",
            ],
            "zoo.make_tfrecords: error: .*is a file",
        ),
    }


@pytest.mark.slow
def test_user_mistakes_are_one_line_errors(setup):
    root, marker = setup
    env = {
        k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "NONLOCAL_TF_TRACEBACK")
    }
    env |= {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    running = {
        name: subprocess.Popen(
            [sys.executable, "-m", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, _) in cases(root).items()
    }
    failures = []
    for name, proc in running.items():
        _, stderr = proc.communicate(timeout=600)
        expected = cases(root)[name][1]
        ours = [line for line in stderr.splitlines() if line.startswith("zoo.")]
        one_line = len(ours) == 1 or expected.startswith("FATAL")  # absl's own flag check
        if proc.returncode == 0 or "Traceback" in stderr or not re.search(expected, stderr):
            failures.append(f"{name}: exit {proc.returncode}\n{stderr[-1500:]}")
        elif not one_line or "\nflags:" in stderr:
            failures.append(f"{name}: not one line:\n{stderr[-1500:]}")
    assert not failures, "\n\n".join(failures)
    assert not marker.exists()
