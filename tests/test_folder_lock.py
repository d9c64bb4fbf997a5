"""One writer per output folder (`nonlocal_tf.files.FolderLock`): a second
run is refused at once naming the holder, a killed run's lock is taken over,
and the zoo commands that resume into a folder hold it."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from nonlocal_tf import files
from tests.test_train import TRAIN, run
from tests.videos import write_video

HOLDER = """
import sys, time
from nonlocal_tf import files
lock = files.FolderLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def _holder(folder):
    """A process that holds ``folder``'s lock until it is killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_holder_is_refused_naming_the_first(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(files.FolderInUseError) as refused:
            files.FolderLock(str(tmp_path)).acquire()
        message = str(refused.value)
        assert f"pid {proc.pid} on host {socket.gethostname()}, started " in message
        assert str(tmp_path) in message and "another run" in message
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_killed_holder_is_taken_over_with_a_warning(tmp_path, caplog):
    proc = _holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    record = json.loads((tmp_path / files.LOCK_NAME).read_text())
    assert record["pid"] == proc.pid  # the killed run's record stays ...
    with caplog.at_level(logging.WARNING, logger="nonlocal_tf"):
        with files.FolderLock(str(tmp_path)):  # ... but not its lock
            assert json.loads((tmp_path / files.LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"left by pid {proc.pid}" in caplog.text and "gone" in caplog.text
    assert (tmp_path / files.LOCK_NAME).read_text() == ""  # released cleanly: no record


def test_clean_release_lets_the_next_run_in_quietly(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="nonlocal_tf"):
        for _ in range(2):
            with files.FolderLock(str(tmp_path)):
                pass
    assert caplog.text == ""


def test_one_process_cannot_lock_a_folder_twice(tmp_path):
    with files.FolderLock(str(tmp_path)):
        with pytest.raises(files.FolderInUseError, match="this process"):
            files.FolderLock(str(tmp_path / ".." / tmp_path.name)).acquire()


def test_forked_children_do_not_keep_the_lock(tmp_path):
    """A record lock is the process's: a data worker forked by the holder
    neither holds it nor keeps it once the holder is gone."""
    script = HOLDER.replace(
        'print("held"', 'import os\nif os.fork() == 0:\n    time.sleep(600)\nprint("held"'
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        proc.kill()
        proc.wait()
        with files.FolderLock(str(tmp_path)):  # the forked child still runs
            pass
    finally:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def tiny_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("lock_videos")
    for label in ("a", "b"):
        os.makedirs(root / label)
        for i in range(2):
            write_video(root / label / f"{i}.mp4", num_frames=20, height=40, width=48)
    return root


SMALL = [
    "--model=c2d_r50_8x8",
    "--width_per_group=4",
    "--batch_size=2",
    "--crop=32",
    "--train_scale=32,40",
    "--precise_bn_batches=0",
]


@pytest.mark.parametrize("command", ["zoo.train", "zoo.make_tfrecords", "zoo.extract_features"])
def test_commands_refuse_a_held_folder_and_write_nothing(command, tiny_tree, tmp_path):
    out = tmp_path / "out"
    args = {
        "zoo.train": [*SMALL, f"--train_data={tiny_tree}"],
        "zoo.make_tfrecords": ["--format=directory", f"--video_dir={tiny_tree}", "--num_shards=1"],
        "zoo.extract_features": ["--model=c2d_nl5_r50_8x8.k400", f"--input={tiny_tree}"],
    }[command]
    out.mkdir()
    holder = _holder(out)
    try:
        done = run(command, *args, f"--output_dir={out}", timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{command}: error: The folder {str(out)!r} is in use by another run: ")
    assert f"pid {holder.pid} on host {socket.gethostname()}" in last
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in out.iterdir()) == [files.LOCK_NAME]  # nothing written


@pytest.mark.slow
def test_second_trainer_on_a_folder_is_refused_and_the_first_finishes(video_tree, tmp_path):
    """The field report's case: the same zoo.train started again on a folder
    whose first run is alive (a scheduler restarting a job)."""
    out = tmp_path / "run"
    args = [
        *TRAIN,
        f"--train_data={video_tree}",
        f"--output_dir={out}",
        "--epochs=2",
        "--steps_per_epoch=3",
        "--backup_every=1",
    ]
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    first = subprocess.Popen(
        [sys.executable, "-m", "zoo.train", *args],
        env=env | {"KERAS_BACKEND": "tensorflow"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not (out / "backup").exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.1)  # the first is training: its backups have begun
    second = run("zoo.train", *args)
    assert second.returncode == 1 and f"pid {first.pid} on host" in second.stderr, second.stderr
    assert first.poll() is None, "the first run ended before the second was refused"
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]
    assert "done: epochs 1..2" in stdout
    for epoch in (1, 2):
        assert (out / "checkpoints" / f"epoch-{epoch:03d}.weights.h5").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["first_epoch"] == 1


# ------------------------------------------------ hostile lock files
def _acquire_in_time(folder, seconds=20):
    """``FolderLock(folder).acquire()`` in a thread: what it raised (or the
    lock), failing the test when it has not returned in ``seconds`` (a FIFO
    read blocks forever)."""
    import threading

    outcome = []

    def attempt():
        try:
            outcome.append(files.FolderLock(str(folder)).acquire())
        except Exception as exc:  # what acquire raised is the result
            outcome.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"acquire hung for {seconds} s"
    if isinstance(outcome[0], files.FolderLock):
        outcome[0].release()
    return outcome[0]


@pytest.mark.parametrize("target", ["victim", "dangling"])
def test_a_link_in_place_of_the_lock_file_is_refused_its_target_untouched(tmp_path, target):
    """``ln -s /tmp/victim.txt out/.nonlocal_tf.lock``: the lock followed the
    link, wrote its record over the victim and then emptied it (a dangling
    link created a file outside the folder)."""
    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    out.mkdir()
    if target == "victim":
        victim.write_text("precious\n")
    (out / files.LOCK_NAME).symlink_to(victim)
    refused = _acquire_in_time(out)
    assert isinstance(refused, files.UnsafeLockFileError), refused
    assert isinstance(refused, OSError)  # the commands show it as one line
    message = str(refused)
    assert "\n" not in message and str(out / files.LOCK_NAME) in message
    assert "symbolic link" in message and "Remove it" in message
    if target == "victim":
        assert victim.read_text() == "precious\n"
    else:
        assert not victim.exists()
    assert (out / files.LOCK_NAME).is_symlink()


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_special_file_in_place_of_the_lock_file_is_refused_at_once(tmp_path, kind):
    """A FIFO as the lock file failed deep in io ("not seekable"), naming
    nothing; opened blocking, it would wait forever."""
    lock = tmp_path / files.LOCK_NAME
    os.mkfifo(lock) if kind == "fifo" else lock.mkdir()
    refused = _acquire_in_time(tmp_path)
    assert isinstance(refused, files.UnsafeLockFileError), refused
    assert str(lock) in str(refused) and "Remove it" in str(refused)


def test_a_garbage_lock_record_is_taken_over_with_a_warning(tmp_path, caplog):
    """Random bytes in the lock file (not UTF-8, not JSON) blocked every later
    run ("'utf-8' codec can't decode") until deleted by hand: the record of no
    live run, since nobody holds the lock."""
    lock = tmp_path / files.LOCK_NAME
    lock.write_bytes(bytes(np.random.default_rng(0).integers(128, 256, 4096, np.uint8)))
    with caplog.at_level(logging.WARNING, logger="nonlocal_tf"):
        with files.FolderLock(str(tmp_path)):
            assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert "unreadable record" in caplog.text and "gone" in caplog.text
    assert lock.read_bytes() == b""


def test_a_command_refuses_a_linked_lock_file_in_one_line(tmp_path):
    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_text("precious\n")
    (out / files.LOCK_NAME).symlink_to(victim)
    (tmp_path / "videos" / "a").mkdir(parents=True)
    video = write_video(tmp_path / "videos" / "a" / "0.mp4", num_frames=20, height=40, width=48)
    done = run(
        "zoo.make_tfrecords",
        "--format=directory",
        f"--video_dir={os.path.dirname(os.path.dirname(video))}",
        "--num_shards=1",
        f"--output_dir={out}",
        timeout=300,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("zoo.make_tfrecords: error: ") and str(out / files.LOCK_NAME) in last
    assert "Traceback" not in done.stderr
    assert victim.read_text() == "precious\n"


FILELOCK_HOLDER = """
import sys, time
import filelock
lock = filelock.FileLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_filelock_is_no_substitute(tmp_path):
    """Why `FolderLock` is hand-written: ``filelock`` (4.3: ``flock``, opened
    without following links, released in forked children) keeps no record of
    its holder, so a refused run could not say which run holds the folder."""
    filelock = pytest.importorskip("filelock")
    path = tmp_path / "out.lock"
    proc = subprocess.Popen(
        [sys.executable, "-c", FILELOCK_HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(filelock.Timeout) as refused:
            filelock.FileLock(str(path)).acquire(timeout=0)
        assert str(proc.pid) not in str(refused.value)
        assert path.read_bytes() == b""  # no host, no pid: nothing to name the holder by
    finally:
        proc.kill()
        proc.wait()
