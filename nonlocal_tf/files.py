"""Writing files so that a crash or a kill never leaves a torn one.

A file is written under a temporary name beside its destination (same folder,
so the rename is atomic), flushed to disk, then renamed over the destination;
the folder entry is flushed too. Readers see the old file or the new one,
never a part of one. On any failure the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterator


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
