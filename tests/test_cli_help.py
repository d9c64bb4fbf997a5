"""``--help`` of every zoo command: its description and its own flags
(the model flags it shares included), exit 0, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = {
    "train": ["--model", "--weights", "--classes", "--width_per_group", "--train_data", "--resume"],
    "evaluate": ["--model", "--weights", "--classes", "--width_per_group", "--data"],
    "export": ["--model", "--weights", "--classes", "--width_per_group", "--onnx"],
    "extract_features": ["--model", "--weights", "--input", "--output_dir", "--layer"],
    "predict": ["--model", "--input", "--views", "--timeline_png"],
    "convert": ["--model", "--source", "--output_dir"],
    "make_presets": ["--models", "--output_dir"],
    "make_model_zoo": ["--check"],
    "make_tfrecords": ["--video_dir", "--output_dir"],
    "data_service": ["--role", "--port"],
    "demo": ["--epochs", "--output_dir"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_lists_the_commands_own_flags_and_exits_0(command, tmp_path):
    zoo_table = os.path.join(ROOT, "zoo", "MODEL_ZOO.md")
    before = os.stat(zoo_table).st_mtime_ns
    done = subprocess.run(
        [sys.executable, "-m", f"zoo.{command}", "--help"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    listed = [
        flag
        for flag in COMMANDS[command]
        if f"  {flag}:" in done.stdout or f"  --[no]{flag[2:]}:" in done.stdout
    ]
    assert listed == COMMANDS[command], done.stdout[-3000:]
    assert "--helpfull" not in COMMANDS[command] and "python -m zoo." in done.stdout
    assert os.listdir(tmp_path) == []  # nothing written where it ran
    assert os.stat(zoo_table).st_mtime_ns == before
