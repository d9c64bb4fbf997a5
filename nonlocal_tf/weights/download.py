"""Checksummed downloads into a local cache.

Cache directory: ``$NONLOCAL_TF_HOME`` or ``~/.cache/nonlocal_tf``. Files are
written to ``<name>.part`` (resumed with an HTTP Range request after an
interruption), verified, then renamed: a file in the cache is always whole and
verified. Set ``NONLOCAL_TF_OFFLINE=1`` to never touch the network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tarfile
import time
import urllib.error
import urllib.request

log = logging.getLogger("nonlocal_tf")

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A file could not be fetched (network, HTTP error, offline)."""


class ChecksumError(ValueError):
    """A downloaded file's sha256 differs from the expected one."""


def cache_dir() -> str:
    root = os.environ.get("NONLOCAL_TF_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache", "nonlocal_tf"
    )
    os.makedirs(root, exist_ok=True)
    return root


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, **kwargs) -> str:
    """Returns the local path of ``url``, downloading it into the cache once;
    the arguments are those of `fetch_verified`."""
    return fetch_verified(url, **kwargs)[0]


def fetch_verified(
    url: str,
    filename: str | None = None,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    subdir: str = "downloads",
    retries: int = 3,
    progress: bool = True,
) -> tuple[str, str]:
    """``(local path, sha256)`` of ``url``, downloading it into the cache once.
    The file is hashed once per call: the digest returned is the one verified.

    Args:
        url: http(s) or file URL.
        filename: name in the cache; default the URL's last component.
        sha256: expected hash. A mismatch deletes the file and raises
            `ChecksumError` naming both hashes.
        sha256_prefix: a known prefix of the hash (mmaction2 and torchvision
            put one in their file names), checked the same way.
        subdir: folder of the cache.
        retries: attempts, resuming from the bytes already received.
        progress: print a progress line to stderr.

    When no hash is known, the hash seen on the first download is recorded in
    ``hashes.json`` of the cache with a warning, and later loads verify against it.
    """
    filename = filename or os.path.basename(url.split("?")[0])
    folder = os.path.join(cache_dir(), subdir)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, filename)
    known = sha256 or _recorded_hashes().get(url)
    if os.path.exists(path):
        digest = verify_file(path, url, known, sha256_prefix)
        if not known:  # cached before its hash was recorded
            _record_hash(url, digest)
        return path, digest
    if os.environ.get("NONLOCAL_TF_OFFLINE"):
        raise DownloadError(
            f"Offline (NONLOCAL_TF_OFFLINE is set) and {filename} is not cached. "
            f"Download {url} by hand and put it at {path}."
        )
    partial = path + ".part"
    for attempt in range(retries):
        try:
            _download(url, partial, progress)
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 416:  # a finished .part of a previous run
                break
            raise DownloadError(
                f"Could not download {url}: HTTP {exc.code}. If this machine is offline, "
                f"download the file elsewhere and put it at {path}."
            ) from exc
        except (urllib.error.URLError, OSError, DownloadError) as exc:
            if attempt == retries - 1:
                raise DownloadError(
                    f"Could not download {url} ({exc}) after {retries} attempts. If this machine is "
                    f"offline, download the file elsewhere and put it at {path}."
                ) from exc
            log.warning(
                "Download of %s interrupted (%s); resuming (%d/%d).", url, exc, attempt + 1, retries
            )
            time.sleep(0.2 * 2**attempt)
    digest = verify_file(partial, url, known, sha256_prefix)
    os.replace(partial, path)
    if not known:
        _record_hash(url, digest)
        log.warning(
            "No sha256 is known for %s; recorded %s, later loads will verify it.", url, digest
        )
    return path, digest


def _download(url: str, partial: str, progress: bool) -> None:
    have = os.path.getsize(partial) if os.path.exists(partial) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=60) as response:
        status = getattr(response, "status", 200)
        if have and status != 206:  # the server ignored the Range: start over
            have = 0
        length = response.headers.get("Content-Length")
        total = int(length) + have if length is not None else None
        mode = "ab" if have else "wb"
        received = have
        with open(partial, mode) as f:
            for block in iter(lambda: response.read(CHUNK), b""):
                f.write(block)
                received += len(block)
                if progress:
                    _progress(os.path.basename(url), received, total)
        if progress:
            sys.stderr.write("\n")
        if total is not None and received < total:
            raise DownloadError(f"connection closed after {received} of {total} bytes")


def _progress(name: str, received: int, total: int | None) -> None:
    if total:
        sys.stderr.write(
            f"\r{name}: {received / 2**20:.1f} / {total / 2**20:.1f} MiB ({100 * received / total:.0f}%)"
        )
    else:
        sys.stderr.write(f"\r{name}: {received / 2**20:.1f} MiB")
    sys.stderr.flush()


def verify_file(
    path: str, source: str, sha256: str | None, prefix: str | None, delete: bool = True
) -> str:
    """Hashes ``path`` and checks it against ``sha256`` (or its ``prefix``);
    returns the digest. A mismatch deletes the file (unless ``delete`` is
    False) and raises `ChecksumError` naming both hashes."""
    actual = sha256_of(path)
    expected = sha256 or prefix
    if expected and not actual.startswith(expected.lower()):
        if delete:
            os.remove(path)
        raise ChecksumError(
            f"sha256 mismatch for {source}: expected {expected}, got {actual}."
            + (
                " The file was deleted; try again, or check that the URL serves the right file."
                if delete
                else ""
            )
        )
    return actual


def _hash_file() -> str:
    return os.path.join(cache_dir(), "hashes.json")


def _recorded_hashes() -> dict:
    try:
        with open(_hash_file()) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _record_hash(url: str, digest: str) -> None:
    hashes = _recorded_hashes()
    hashes[url] = digest
    tmp = _hash_file() + ".tmp"
    with open(tmp, "w") as f:
        json.dump(hashes, f, indent=1, sort_keys=True)
    os.replace(tmp, _hash_file())


class UnsafeArchiveError(ValueError):
    """A tarball member would land outside the target folder, or is a link or device."""


def safe_extract(archive: str, target: str, members: list[str] | None = None) -> list[str]:
    """Extracts regular files (and folders) of a tarball under ``target`` only.

    Refuses absolute paths, ``..`` components, links and devices before
    extracting anything. Returns the extracted paths.
    """
    target = os.path.realpath(target)
    os.makedirs(target, exist_ok=True)
    try:
        tar = tarfile.open(archive)
    except tarfile.TarError as exc:
        raise UnsafeArchiveError(f"{archive} is not a readable tarball ({exc}).") from exc
    with tar:
        chosen = [m for m in tar.getmembers() if members is None or m.name in members]
        for member in chosen:
            dest = os.path.realpath(os.path.join(target, member.name))
            if os.path.isabs(member.name) or not dest.startswith(target + os.sep):
                raise UnsafeArchiveError(
                    f"{archive}: member {member.name!r} would be written outside {target}."
                )
            if not (member.isfile() or member.isdir()):
                raise UnsafeArchiveError(
                    f"{archive}: member {member.name!r} is a link or device; refused."
                )
        extracted = []
        for member in chosen:
            dest = os.path.join(target, member.name)
            if member.isdir():
                os.makedirs(dest, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            source = tar.extractfile(member)
            tmp = dest + ".part"
            with open(tmp, "wb") as f:
                while block := source.read(CHUNK):
                    f.write(block)
            os.replace(tmp, dest)
            extracted.append(dest)
    return extracted
