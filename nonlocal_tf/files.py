"""Writing files so that a crash or a kill never leaves a torn one.

A file is written under a temporary name beside its destination (same folder,
so the rename is atomic), flushed to disk, then renamed over the destination;
the folder entry is flushed too. Readers see the old file or the new one,
never a part of one. On any failure the temporary file is removed.

A folder that a run resumes into has one writer at a time (`FolderLock`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import stat
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator

log = logging.getLogger("nonlocal_tf")


def fsync_path(path: str) -> None:
    """Flushes a file (or a folder's entries) to disk."""
    flags = os.O_RDONLY
    if os.path.isdir(path):
        flags |= getattr(os, "O_DIRECTORY", 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary path to write ``path``'s new content to; it replaces
    ``path`` when the block ends without an exception. The temporary name ends
    like ``path`` (Keras wants ``.weights.h5`` / ``.keras`` suffixes)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex[:12]}-{os.path.basename(path)}")
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def scratch_path(name: str) -> Iterator[str]:
    """A path named ``name`` in a temporary folder removed afterwards: where a
    process that must take part in a save (a collective on JAX) but not keep
    it writes."""
    with tempfile.TemporaryDirectory(prefix="nonlocal_tf_") as folder:
        yield os.path.join(folder, name)


def write_json(path: str, value) -> None:
    """``json.dump`` of ``value`` to ``path``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(value, f, indent=1)


def remove_temporaries(folder: str) -> int:
    """Deletes what interrupted `atomic_path` writes left in ``folder``."""
    removed = 0
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith(".tmp-"):
                os.remove(os.path.join(folder, name))
                removed += 1
    return removed


def check_writable_dir(path: str, what: str = "output folder") -> str:
    """Creates ``path`` if needed and checks a file can be written in it;
    raises `ValueError` naming the problem (a file in the way, no permission)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"The {what} {path!r} is a file, not a folder.")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".tmp-{uuid.uuid4().hex[:12]}-probe")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise ValueError(f"Cannot write to the {what} {path!r}: {exc.strerror or exc}.") from None
    return path


def check_writable_file(path: str, what: str = "output file") -> str:
    """Checks ``path`` can be created or overwritten, before any long work."""
    if os.path.isdir(path):
        raise ValueError(f"The {what} {path!r} is a folder.")
    check_writable_dir(os.path.dirname(os.path.abspath(path)), f"folder of the {what}")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise ValueError(f"Cannot overwrite the {what} {path!r}: permission denied.")
    return path


# ------------------------------------------------------------ folder locks
LOCK_NAME = ".nonlocal_tf.lock"
_held: dict[str, FolderLock] = {}  # this process's locks, by real path


class FolderInUseError(RuntimeError):
    """Another run holds the lock of a folder this run would write."""


class UnsafeLockFileError(OSError):
    """Something other than a regular file (a link, a FIFO, a folder) sits
    where a folder's lock file goes: never followed, read or written."""


class FolderLock:
    """An advisory lock on a folder for one writer at a time: a POSIX record
    lock (``fcntl.lockf``) on ``<folder>/.nonlocal_tf.lock``, which holds the
    holder's host, pid, start time and command.

    The operating system drops the lock when its process ends, however it
    ends, so a run killed with SIGKILL leaves no lock behind, only its record:
    the next run takes over, warning that it does. A record lock (unlike
    ``flock``) belongs to one process, so processes forked by the holder (data
    workers) neither hold nor keep it, and it works on network file systems
    that lock at all. Within one process a second lock of the same folder is
    refused too. The lock file stays (emptied on release): removing it would
    let a run that opened it just before lock a file nobody else can see. As
    with every record lock, the holding process must not open the lock file
    elsewhere (closing any descriptor of it drops the lock); nothing here does.
    On a file system that cannot lock (``ENOLCK``) the run goes on unlocked,
    with a warning. The lock file is opened without following a link or
    blocking on a FIFO: anything but a regular file there is refused
    (`UnsafeLockFileError`), and a record that cannot be read is a dead run's.

    Not ``filelock``: it records no holder to name in the refusal
    (``tests/test_folder_lock.py::test_filelock_is_no_substitute``).

    Use as a context manager, or `acquire` / `release`.
    """

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self._file = None
        self._since = None

    def acquire(self) -> FolderLock:
        """Takes the lock, or raises `FolderInUseError` naming its holder."""
        import fcntl

        key = os.path.realpath(self.folder)
        if key in _held:
            raise FolderInUseError(self._busy(_held[key]._record(), "this process"))
        os.makedirs(self.folder, exist_ok=True)
        f = self._open()
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):  # ENOLCK: a file system without locks
                f.close()
                log.warning("Cannot lock %r (%s): running without a lock.", self.folder, exc)
                return self
            holder = _parse_record(_read_record(f))
            f.close()
            raise FolderInUseError(self._busy(holder, "another run")) from None
        text = _read_record(f)
        left = _parse_record(text)
        if left and (left.get("host"), left.get("pid")) != (socket.gethostname(), os.getpid()):
            log.warning(
                "Taking over the lock of %r left by %s: that run is gone (killed or crashed).",
                self.folder,
                _describe(left),
            )
        elif left is None and text.strip():
            log.warning(
                "Taking over the lock of %r: its lock file %s held an unreadable record "
                "(%d bytes) and no run holds it: that run is gone.",
                self.folder,
                self.path,
                len(text),
            )
        self._since = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        f.seek(0)
        f.truncate()
        f.write(json.dumps(self._record()).encode())
        f.flush()
        os.fsync(f.fileno())
        self._file = f
        _held[key] = self
        return self

    def release(self) -> None:
        """Empties the lock file and unlocks it (closing the file unlocks)."""
        if self._file is None:
            return
        _held.pop(os.path.realpath(self.folder), None)
        f, self._file = self._file, None
        with contextlib.suppress(OSError):  # the folder may be gone (deleted backups)
            f.seek(0)
            f.truncate()
            f.flush()
        f.close()

    def _open(self):
        """The lock file, read-write, created if missing. ``O_NOFOLLOW``: a link
        there is not followed (its target would be overwritten, then emptied);
        ``O_NONBLOCK``: opening or reading a FIFO there does not wait forever.
        Anything but a regular file is refused before a byte is read."""
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError:
            if os.path.lexists(self.path) and not stat.S_ISREG(os.lstat(self.path).st_mode):
                raise UnsafeLockFileError(self._unsafe()) from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UnsafeLockFileError(self._unsafe())
        return os.fdopen(fd, "r+b")  # (O_NONBLOCK changes nothing for a regular file)

    def _unsafe(self) -> str:
        mode = os.lstat(self.path).st_mode
        kind = next((kind for test, kind in _KINDS if test(mode)), "a special file")
        if stat.S_ISLNK(mode):
            kind += f" (to {os.readlink(self.path)!r})"
        return (
            f"The lock file {self.path} of the folder {self.folder!r} is {kind}, not a regular "
            f"file: it is neither followed nor written. Remove it (rm {self.path!r}) and run "
            "again."
        )

    def _record(self) -> dict:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": self._since,
            "command": " ".join(sys.argv)[:300],
        }

    def _busy(self, holder: dict | None, who: str) -> str:
        held_by = _describe(holder) if holder else "a run that has not written its record yet"
        return (
            f"The folder {self.folder!r} is in use by {who}: {held_by} (lock file "
            f"{self.path}). Wait for that run to end or stop it, or write elsewhere."
        )

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"))


def _read_record(f) -> bytes:
    """The lock file's content (a record is a few hundred bytes: a larger
    file is not one, and is not read whole)."""
    f.seek(0)
    return f.read(1 << 16)


def _parse_record(text: bytes) -> dict | None:
    try:
        record = json.loads(text)
    except ValueError:  # not JSON, not UTF-8 (UnicodeDecodeError is a ValueError)
        return None
    return record if isinstance(record, dict) else None


def _describe(holder: dict) -> str:
    return (
        f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
        f"started {holder.get('started', '?')}"
    )
