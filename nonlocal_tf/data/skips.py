"""Counting and logging what a pipeline skips, so nothing is dropped silently."""

from __future__ import annotations

import collections
import logging
import os
import threading

log = logging.getLogger("nonlocal_tf")


class SkipLog:
    """Thread-safe record of skipped inputs: a file is logged with its reason
    the first time it is skipped (a training stream meets a bad file every
    epoch, some twice: 6 bad files of 12 made 350 lines in an epoch);
    `summary` gives the counts by reason (`SkipReport`: every epoch)."""

    def __init__(self, name: str = "pipeline"):
        self.name = name
        self._lock = threading.Lock()
        self.items: list[tuple[str, str]] = []
        self._named: set[str] = set()  # files logged already: kept across `reset`

    def add(self, path: str, reason: str) -> None:
        with self._lock:
            self.items.append((path, reason))
            first = path not in self._named
            self._named.add(path)
        if first:
            log.warning("%s: skipped %s: %s", self.name, printable(path), reason)

    @property
    def count(self) -> int:
        return len(self.items)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(collections.Counter(_kind(reason) for _, reason in self.items))

    def summary(self) -> str:
        counts = self.counts()
        if not counts:
            return f"{self.name}: nothing skipped"
        detail = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
        with self._lock:
            files = len({path for path, _ in self.items})
        return f"{self.name}: skipped {self.count} ({detail}) of {files} file(s)"

    def reset(self) -> None:
        """The counts back to zero (a new epoch); files logged stay logged."""
        with self._lock:
            self.items.clear()


def printable(path: str) -> str:
    """``path`` safe to print: bytes of a name that is not UTF-8 (which Python
    holds as lone surrogates, and a UTF-8 terminal cannot encode) as ``\\xff``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _kind(reason: str) -> str:
    return reason.split(" (")[0]


try:
    import keras

    class SkipReport(keras.callbacks.Callback):
        """Logs a pipeline's skip counts at the end of every epoch (and resets them)."""

        def __init__(self, *skip_logs: SkipLog):
            super().__init__()
            self.skip_logs = skip_logs

        def on_epoch_end(self, epoch, logs=None):
            for skips in self.skip_logs:
                level = logging.WARNING if skips.count else logging.INFO
                log.log(level, "epoch %d: %s", epoch + 1, skips.summary())
                skips.reset()
except ImportError:  # pragma: no cover
    SkipReport = None
