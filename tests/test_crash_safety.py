"""A training process killed (SIGKILL) at random moments and, every other
time, frozen and killed in the middle of a backup's or an epoch checkpoint's
write, resumes every time from its newest good state, clearing the writes the
kill cut, and finally finishes."""

from __future__ import annotations

import glob
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

CHILD = """
import json, os, sys
import keras, numpy as np
from nonlocal_tf import training

out, epochs = sys.argv[1], 40
rng = np.random.default_rng(0)
x, y = rng.normal(size=(64, 256)).astype("float32"), rng.integers(0, 4, 64)
model = keras.Sequential([keras.Input((256,)), keras.layers.Dense(1024), keras.layers.Dense(4)])
model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy")
pattern = os.path.join(out, "checkpoints", "epoch-{epoch:03d}.weights.h5")
backup = training.StepBackup(os.path.join(out, "backup"), save_freq=1, fallback=pattern)

class Report(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        if batch == 1:
            print("running", backup.restored_from, flush=True)

history = model.fit(
    x, y, batch_size=4, epochs=epochs, verbose=0,
    callbacks=[training.EpochCheckpoint(pattern), backup, Report()],
)
print("done", json.dumps(history.epoch), flush=True)
"""


def _kill_inside_a_write(proc, folder, timeout=120.0):
    """Waits for a temporary file of an atomic write to appear in ``folder``,
    freezes the process (SIGSTOP), and kills it if the file is still there, so
    that the kill lands inside the write whatever the machine's speed. True if
    it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if glob.glob(str(folder / ".tmp-*")):
            proc.send_signal(signal.SIGSTOP)
            if glob.glob(str(folder / ".tmp-*")):
                proc.kill()
                return True
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.0005)
    proc.kill()
    return False


@pytest.mark.slow
def test_random_kills_always_resume(tmp_path):
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env |= {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-c", CHILD, str(out)]
    chance = random.Random(17)
    resumed, cut = [], []
    for attempt in range(8):
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = proc.stdout.readline().decode()  # "running <source>" once training is under way
        assert line.startswith("running"), (line, proc.stderr.read().decode()[-3000:])
        resumed.append(line.split(maxsplit=1)[1].strip())
        assert not any(os.path.exists(p) for p in cut), cut  # the restart cleared the cut writes
        if attempt % 2:  # frozen inside a backup's or an epoch checkpoint's write, then killed
            folder = out / ("backup" if attempt % 4 == 1 else "checkpoints")
            assert _kill_inside_a_write(proc, folder), f"no write in {folder} to kill inside"
        else:  # killed at a random moment
            time.sleep(chance.uniform(0.0, 2.5))
            proc.kill()
        proc.wait()
        assert proc.returncode == -9, proc.stderr.read().decode()[-3000:]  # killed, not crashed
        cut = glob.glob(str(out / "*" / ".tmp-*"))  # the writes this kill cut
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert resumed[0] == "None"  # the first run starts fresh; every later one resumes
    assert all(source != "None" for source in resumed[1:]), resumed
    final = json.loads(done.stdout.split("done", 1)[1]) if "done" in done.stdout else []
    assert final and final[-1] == 39
    assert os.path.exists(out / "checkpoints" / "epoch-040.weights.h5")
    assert glob.glob(str(out / "*" / ".tmp-*")) == []
