"""Crash-safe training state: backups a killed run resumes from.

`keras.callbacks.BackupAndRestore` overwrites ``latest.weights.h5`` and
``training_metadata.json`` in place: a process killed while writing leaves a
torn file, and the next run dies on it (``OSError: bad object header version
number``, ``JSONDecodeError``). Here each backup is a new generation: the
weights are written under a temporary name, flushed and renamed, then a small
JSON record of the generation (epoch, its file and size) is written the same
way; the record is what makes the generation count. The previous generation is
deleted only after the new one is complete. On restart the newest generation
whose record and weights read back is restored; a damaged one is skipped with a
warning, then the newest readable epoch checkpoint, then nothing (training
starts over, with a warning): never a traceback.

With a `DataPosition` each generation also records where the training
stream stood (the Grain engine's iterator state, after the last batch `fit`
took): a resumed run reads on from there (`newest_data_state`, given to the
dataset before its stream opens) instead of reading the first epoch's clips
again.

Keras 3.15's ``BackupAndRestore(save_freq=..., double_checkpoint=True)`` keeps
the previous weights file too, but not the previous epoch record, and it works
from ``on_train_batch_end``, which makes `fit` wait for every step's logs:
`tests/test_callbacks.py::test_keras_backup_and_restore_makes_fit_wait_and_dies_on_a_torn_record`
shows both.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Iterable, Iterator

import keras

from nonlocal_tf import files

log = logging.getLogger("nonlocal_tf")

_RECORD = re.compile(r"^state-(\d{8})\.json$")


class StepBackup(keras.callbacks.Callback):
    """Backs up weights, optimizer state and epoch every ``save_freq`` steps
    (and at each epoch end), crash-safely, and restores them when `fit` starts.

    The backup after step ``n`` is written just before step ``n + 1`` starts
    (from ``on_train_batch_begin``, so `fit` never waits for each step's loss).
    As with Keras's `BackupAndRestore`, a restored run starts the epoch it
    was in from its first step, with the weights of its last backup.

    Args:
        backup_dir: folder of the backups (used by nothing else).
        save_freq: steps between backups, or ``"epoch"``.
        fallback: a pattern of epoch checkpoints, e.g.
            ``"run/checkpoints/epoch-{epoch:03d}.weights.h5"``, restored when no
            backup is readable (the epoch number is read from the file name).
        delete_when_done: remove the backups when `fit` ends normally.
        write: False on every process of a multi-process run but the one that
            writes (all of them restore from the same backups).
        data: the `DataPosition` of the stream `fit` reads, recorded with
            each backup (one process only: each reads its own share).
    """

    def __init__(
        self,
        backup_dir: str,
        save_freq: int | str = "epoch",
        fallback: str | None = None,
        delete_when_done: bool = True,
        write: bool = True,
        data: DataPosition | None = None,
    ):
        super().__init__()
        if save_freq != "epoch" and (not isinstance(save_freq, int) or save_freq < 1):
            raise ValueError(
                f"`save_freq` must be 'epoch' or a positive int. Received: save_freq={save_freq!r}"
            )
        self.backup_dir, self.save_freq = backup_dir, save_freq
        self.fallback, self.delete_when_done, self.write = fallback, delete_when_done, write
        self.data = data
        self._epoch = 0
        self.restored_from: str | None = None

    # ------------------------------------------------------------- restore
    def on_train_begin(self, logs=None):
        if self.write:
            files.remove_temporaries(self.backup_dir)
        if not self.model.built:
            raise ValueError("StepBackup needs a built model: call it on a batch before `fit`.")
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        for generation in reversed(_generations(self.backup_dir)):
            epoch = self._try_backup(generation)
            if epoch is not None:
                return self._resume(epoch, f"backup {generation}")
        if self.fallback:
            for path, epoch in _checkpoints(self.fallback):
                if self._try_load(path):
                    return self._resume(epoch, path)
        if _generations(self.backup_dir) or (self.fallback and _checkpoints(self.fallback)):
            log.warning("No readable backup or checkpoint: training starts from the beginning.")

    def _try_backup(self, generation: int) -> int | None:
        try:
            record = _record(self.backup_dir, generation)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("Backup %d is damaged (%s); trying an older one.", generation, exc)
            return None
        if not self._try_load(os.path.join(self.backup_dir, record["weights"])):
            return None
        if self.data is not None and record.get("data") != self.data.started_at:
            log.warning(
                "Backup %d's weights restored, but the data is read from the position of a "
                "newer backup, whose weights could not be read.",
                generation,
            )
        return int(record["epoch"])

    def _try_load(self, path: str) -> bool:
        try:
            self.model.load_weights(path)
        except Exception as exc:  # h5py/Keras raise many kinds on a damaged file
            log.warning(
                "Cannot restore %s (%s: %s); trying an older state.", path, type(exc).__name__, exc
            )
            return False
        return True

    def _resume(self, epoch: int, source: str) -> None:
        self.model._initial_epoch = epoch  # what Keras's BackupAndRestore sets
        self._epoch = epoch
        self.restored_from = source
        log.warning("Resuming from %s: epoch %d.", source, epoch + 1)

    # ---------------------------------------------------------------- save
    def on_train_batch_begin(self, batch, logs=None):
        if self.save_freq != "epoch" and batch > 0 and batch % self.save_freq == 0:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        self._epoch = epoch + 1
        self.save()

    def save(self) -> str | None:
        """Writes a new generation; returns its record's path (None where
        ``write`` is False: that process only takes part in the save, a
        collective on JAX, and throws its copy away)."""
        model = self.model
        if not self.write:
            with files.scratch_path("state.weights.h5") as path:
                model.save_weights(path)
            return None
        os.makedirs(self.backup_dir, exist_ok=True)
        previous = _generations(self.backup_dir)
        generation = previous[-1] + 1 if previous else 1
        name = f"state-{generation:08d}.weights.h5"
        path = os.path.join(self.backup_dir, name)
        with files.atomic_path(path) as tmp:
            model.save_weights(tmp)
        record = {"epoch": self._epoch, "weights": name, "bytes": os.path.getsize(path)}
        if self.data is not None:
            record["data"] = self.data.state()
        record_path = os.path.join(self.backup_dir, f"state-{generation:08d}.json")
        files.write_json(record_path, record)
        for old in previous[:-1]:  # keep the last complete generation besides the new one
            _remove_generation(self.backup_dir, old)
        return record_path

    def on_train_end(self, logs=None):
        stopped = getattr(self.model, "stop_training", False)
        if self.write and self.delete_when_done and not stopped:
            shutil.rmtree(self.backup_dir, ignore_errors=True)


class DataPosition:
    """Where the stream `fit` reads from a resumable dataset (one with
    ``get_state`` / ``set_state``: `grain_pipeline`'s) stands, as `fit` sees
    it: the dataset's state after the last batch `fit` (or precise BN,
    reading the same stream) took, whatever the stages between ran ahead.

        position = DataPosition(train.data, newest_data_state(backup_dir))
        stream = position.taken(prefetch.to_device(position.read(iter(train))))

    ``start``: a state to read on from (set on the dataset here, before its
    stream opens), or None for the beginning.
    """

    def __init__(self, dataset, start: dict | None = None, ahead: int = 256):
        self.dataset, self.started_at, self._ahead = dataset, start, ahead
        if start is not None:  # the dataset says whether it could (a warning either way)
            dataset.set_state(start)
        self._states: dict[int, dict] = {}
        self._lock = threading.Lock()
        self._read = self._taken = 0

    def read(self, batches: Iterable) -> Iterator:
        """``batches`` (straight from the dataset's iterator), each one's
        position noted as it is read."""
        for batch in batches:
            state = self.dataset.get_state()
            with self._lock:
                self._read += 1
                self._states[self._read] = state
                self._states.pop(self._read - self._ahead, None)
            yield batch

    def taken(self, batches: Iterable) -> Iterator:
        """``batches`` (what `fit` reads: the end of the stream `read` began)
        counted as they are taken."""
        for batch in batches:
            self._taken += 1
            yield batch

    def state(self) -> dict | None:
        """The dataset's state after the last batch taken (None: none yet)."""
        if not self._taken:
            return self.started_at
        with self._lock:
            return self._states.get(self._taken)


def newest_data_state(backup_dir: str) -> dict | None:
    """The data position of the backup a run started now would restore (the
    newest whose record and weights file read back), or None."""
    for generation in reversed(_generations(backup_dir)):
        try:
            return _record(backup_dir, generation).get("data")
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def _record(folder: str, generation: int) -> dict:
    """A generation's record, checked against its weights file's size."""
    with open(os.path.join(folder, f"state-{generation:08d}.json")) as f:
        record = json.load(f)
    weights = os.path.join(folder, record["weights"])
    size = os.path.getsize(weights)
    if size != record["bytes"]:
        raise ValueError(f"{weights} has {size} bytes, {record['bytes']} were written")
    int(record["epoch"])
    return record


def _generations(folder: str) -> list[int]:
    """Generation numbers with a record, oldest first."""
    if not os.path.isdir(folder):
        return []
    found = (_RECORD.match(name) for name in os.listdir(folder))
    return sorted(int(m[1]) for m in found if m)


def _remove_generation(folder: str, generation: int) -> None:
    for suffix in (".json", ".weights.h5"):
        path = os.path.join(folder, f"state-{generation:08d}{suffix}")
        if os.path.exists(path):
            os.remove(path)


def _checkpoints(pattern: str) -> list[tuple[str, int]]:
    """Files matching an ``{epoch...}`` pattern, newest epoch first."""
    head, _, tail = pattern.partition("{epoch")
    tail = tail.partition("}")[2]
    found = []
    for path in glob.glob(glob.escape(head) + "*" + glob.escape(tail)):
        number = path[len(head) : len(path) - len(tail)]
        if number.isdigit():
            found.append((path, int(number)))
    return sorted(found, key=lambda item: -item[1])
