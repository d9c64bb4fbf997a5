"""The training callbacks that read the device only every N steps: progress in
Keras's format, NaN stop, step backups; and none of them (unlike Keras's own)
makes `fit` wait for every step's logs."""

import glob
import json
import os
import re
import time

import keras
import numpy as np
import pytest

from nonlocal_tf import training
from nonlocal_tf.training import callbacks

pytestmark = pytest.mark.all_backends


def tiny_model(lr: float = 0.1):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(
        optimizer=keras.optimizers.SGD(lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def data(n: int = 28):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 3)).astype("float32"), rng.integers(0, 2, n).astype("int32")


class CountSteps(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.steps += 1


def overrides_batch_end(callback) -> bool:
    """Whether `fit` must hand this callback every step's logs as Python
    numbers (Keras marks its no-op hooks with ``_is_default``)."""
    return not all(
        getattr(getattr(callback, hook), "_is_default", False)
        for hook in ("on_train_batch_end", "on_batch_end")
    )


def test_callbacks_never_need_every_steps_logs(tmp_path):
    ours = [
        training.ProgressBar(),
        training.StopOnNaN(),
        training.StepBackup(str(tmp_path / "backup"), save_freq=10),
        training.EpochCheckpoint(str(tmp_path / "epoch-{epoch}.weights.h5")),
        training.EpochTensorBoard(str(tmp_path / "logs")),
        training.EpochTimer(),
    ]
    assert not any(overrides_batch_end(c) for c in ours)
    # ... where Keras's equivalents do: the check can fail.
    assert overrides_batch_end(keras.callbacks.TerminateOnNaN())
    assert overrides_batch_end(keras.callbacks.BackupAndRestore(str(tmp_path / "b"), save_freq=10))


class Sleep(keras.callbacks.Callback):
    """0.3 s in every validation and every epoch end."""

    def on_test_begin(self, logs=None):
        time.sleep(0.3)

    def on_epoch_end(self, epoch, logs=None):
        time.sleep(0.3)


def test_epoch_timer_times_the_training_steps_alone():
    model, timer = tiny_model(), training.EpochTimer()
    x, y = data(28)
    started = time.perf_counter()
    model.fit(
        x, y, batch_size=4, epochs=2, validation_data=(x, y), verbose=0, callbacks=[timer, Sleep()]
    )
    whole = time.perf_counter() - started
    assert sorted(timer.seconds) == [0, 1]
    assert all(s > 0 for s in timer.seconds.values())
    assert sum(timer.seconds.values()) < whole - 4 * 0.3  # neither validation nor the epoch end
    model.evaluate(x, y, verbose=0, callbacks=[timer])  # outside `fit`: nothing recorded
    assert sorted(timer.seconds) == [0, 1]


def test_progress_bar_reads_the_metrics_every_n_steps(capsys, monkeypatch):
    model = tiny_model()
    reads = []
    read = callbacks.current_metrics
    monkeypatch.setattr(callbacks, "current_metrics", lambda cb: reads.append(1) or read(cb))
    x, y = data(28)  # 7 steps of 4
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[training.ProgressBar(every=3)])
    assert len(reads) == 4  # before steps 3 and 6 of each epoch
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out
    assert "3/7" in out and "6/7" in out and "7/7" in out and "2/7" not in out
    assert re.search(r"\d+(us|ms|s)/step - ", out) and "accuracy: " in out and "loss: " in out
    with pytest.raises(ValueError, match="every"):
        training.ProgressBar(every=0)


def test_stop_on_nan_within_n_steps():
    model = tiny_model()
    x, y = data(40)
    x[8:] = np.nan  # from the third step of 4 samples on
    counter = CountSteps()
    model.fit(
        x,
        y,
        batch_size=4,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[training.StopOnNaN(every=2), counter],
    )
    assert counter.steps == 5  # the check before step 4 sees NaN; step 4 still runs


def records(folder) -> list[str]:
    return sorted(glob.glob(os.path.join(folder, "state-*.json")))


def test_step_backup_writes_between_steps(tmp_path):
    backup = training.StepBackup(str(tmp_path / "backup"), save_freq=2)
    seen = {}

    class Probe(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen[batch] = len(records(tmp_path / "backup"))

    x, y = data(20)
    tiny_model().fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[backup, Probe()])
    assert seen == {0: 0, 1: 0, 2: 1, 3: 1, 4: 2}  # a new generation after steps 2 and 4
    assert not os.path.exists(tmp_path / "backup")  # deleted once training ends, as Keras's
    with pytest.raises(ValueError, match="save_freq"):
        training.StepBackup(str(tmp_path / "b"), save_freq=0)


def crash_in_epoch_two(backup: str):
    x, y = data(20)

    class Crash(keras.callbacks.Callback):  # killed before step 5 of epoch 2
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            if self.epoch == 1 and batch == 4:
                raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        tiny_model().fit(
            x,
            y,
            batch_size=4,
            epochs=4,
            verbose=0,
            callbacks=[training.StepBackup(backup, save_freq=3), Crash()],
        )


def test_step_backup_resumes_the_epoch(tmp_path):
    x, y = data(20)
    backup = str(tmp_path / "backup")
    crash_in_epoch_two(backup)
    kept = records(backup)
    assert len(kept) == 2  # the newest generation and the one before
    metadata = json.loads(open(kept[-1]).read())
    assert metadata["epoch"] == 1  # last backup mid-way through epoch 2 (index 1)
    again = tiny_model()
    history = again.fit(
        x, y, batch_size=4, epochs=4, verbose=0, callbacks=[training.StepBackup(backup, 3)]
    )
    assert history.epoch == [1, 2, 3]


@pytest.mark.parametrize("damage", ["truncated", "emptied record", "garbage record", "no weights"])
def test_a_damaged_backup_falls_back_to_the_previous_one(tmp_path, caplog, damage):
    backup = str(tmp_path / "backup")
    crash_in_epoch_two(backup)
    older, newest = records(backup)
    weights = newest.replace(".json", ".weights.h5")
    if damage == "truncated":
        with open(weights, "r+b") as f:
            f.truncate(os.path.getsize(weights) // 3)
    elif damage == "emptied record":
        open(newest, "w").close()
    elif damage == "garbage record":
        open(newest, "w").write('{"epoch": "x"')
    else:
        os.remove(weights)
    expected_epoch = json.loads(open(older).read())["epoch"]
    step = training.StepBackup(backup, save_freq=3)
    x, y = data(20)
    with caplog.at_level("WARNING", logger="nonlocal_tf"):
        history = tiny_model().fit(x, y, batch_size=4, epochs=4, verbose=0, callbacks=[step])
    assert "damaged" in caplog.text or "Cannot restore" in caplog.text
    assert step.restored_from == f"backup {int(os.path.basename(older)[6:14])}"
    assert history.epoch[0] == expected_epoch


def test_no_readable_backup_falls_back_to_the_epoch_checkpoints(tmp_path, caplog):
    backup, pattern = str(tmp_path / "backup"), str(tmp_path / "epoch-{epoch:03d}.weights.h5")
    x, y = data(20)
    model = tiny_model()
    model.fit(
        x, y, batch_size=4, epochs=2, verbose=0, callbacks=[training.EpochCheckpoint(pattern)]
    )
    crash_in_epoch_two(backup)
    for record in records(backup):
        open(record, "w").close()
    open(pattern.format(epoch=2), "r+b").truncate(100)  # the newest checkpoint is torn too
    step = training.StepBackup(backup, save_freq=3, fallback=pattern)
    with caplog.at_level("WARNING", logger="nonlocal_tf"):
        history = tiny_model().fit(x, y, batch_size=4, epochs=4, verbose=0, callbacks=[step])
    assert step.restored_from == pattern.format(epoch=1) and history.epoch == [1, 2, 3]
    for record in records(backup) if os.path.isdir(backup) else []:
        open(record, "w").close()
    step = training.StepBackup(str(tmp_path / "other"), fallback=str(tmp_path / "none-{epoch}.h5"))
    history = tiny_model().fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[step])
    assert step.restored_from is None and history.epoch == [0, 1]


def test_keras_backup_and_restore_makes_fit_wait_and_dies_on_a_torn_record(tmp_path):
    """Why `StepBackup` beside Keras 3.15's ``BackupAndRestore(save_freq=...,
    double_checkpoint=True)``: Keras's overrides ``on_train_batch_end``, which
    turns off the asynchronous dispatch of batch-end callbacks (`fit` then
    waits for every step's logs; StepBackup keeps it on), and a restart after
    a kill that tore its ``training_metadata.json`` ends in a JSON error
    (double_checkpoint only covers the weights file); StepBackup resumes."""
    from keras.src.callbacks.callback_list import CallbackList

    keras_backup = keras.callbacks.BackupAndRestore(
        str(tmp_path / "keras"), save_freq=1, double_checkpoint=True
    )
    ours = training.StepBackup(str(tmp_path / "ours"), save_freq=1)
    if keras.backend.backend() != "tensorflow":  # TensorFlow dispatches synchronously anyway
        assert not CallbackList([keras_backup])._async_train
        assert CallbackList([ours])._async_train
    x, y = np.zeros((8, 3), "float32"), np.zeros(8, "int32")
    folder = str(tmp_path / "keras")
    kept = keras.callbacks.BackupAndRestore(
        folder, save_freq=1, double_checkpoint=True, delete_checkpoint=False
    )
    tiny_model().fit(x, y, epochs=1, batch_size=2, callbacks=[kept], verbose=0)
    with open(os.path.join(folder, "training_metadata.json"), "w") as f:
        f.write('{"epoch": 1, "ba')  # the kill came while this was written
    again = keras.callbacks.BackupAndRestore(folder, save_freq=1, double_checkpoint=True)
    with pytest.raises(json.JSONDecodeError):
        tiny_model().fit(x, y, epochs=2, batch_size=2, callbacks=[again], verbose=0)


def test_input_wait_share_and_the_hint(capsys):
    """The share of an epoch the loop waited for its input stream, measured
    in `fit`, and the line naming the fixes when it is over a fifth; none for
    a quick stream."""
    from nonlocal_tf import prefetch

    x, y = np.zeros((4, 3), "float32"), np.zeros(4, "int32")

    def batches(pause: float):
        while True:
            time.sleep(pause)
            yield x, y

    clock = prefetch.InputClock()
    timer = callbacks.EpochTimer()
    wait = callbacks.InputWait(clock, timer)
    stream = clock.wrap(batches(0.08))
    tiny_model().fit(stream, steps_per_epoch=6, epochs=2, callbacks=[timer, wait], verbose=0)
    printed = capsys.readouterr().out
    assert "the step waited for data" in printed and "zoo.make_tfrecords" in printed
    # the second epoch: the first also holds the tracing of the step, seconds
    # on a loaded 2-core host that dwarf the 0.5 s waited
    assert 0.2 < wait.shares[1] <= 1.0

    # A quick stream, by the numbers (a real one's share is noise: the
    # handover to Keras's own threads against a millisecond step).
    clock = prefetch.InputClock()
    timer = callbacks.EpochTimer()
    wait = callbacks.InputWait(clock, timer)
    wait.on_epoch_begin(0)
    clock.waited, timer.seconds[0] = 0.05, 1.0
    wait.on_epoch_end(0)
    printed = capsys.readouterr().out
    assert wait.shares[0] == pytest.approx(0.05)
    assert "waited for data 5% of epoch 1" in printed and "zoo.make_tfrecords" not in printed
