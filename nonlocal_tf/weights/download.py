"""Checksummed downloads into a local cache.

Cache directory: ``$NONLOCAL_TF_HOME`` or ``~/.cache/nonlocal_tf``. Files are
written to ``<name>.part`` (resumed with an HTTP Range request after a cut
response, up to ``retries`` times), verified, then renamed: a file in the cache
is always whole and verified, and a failed download leaves nothing behind.
Set ``NONLOCAL_TF_OFFLINE=1`` to never touch the network, or
``NONLOCAL_TF_MIRROR=<address>`` to download every http(s) file from a mirror
of its file name under that address (a cluster without the internet, a
company proxy): hashes are checked, and recorded, as for the original URL.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zlib

from nonlocal_tf import files

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
        retries: attempts, each resuming from the bytes already received; a
            response cut short counts as a failed attempt. After the last one,
            `DownloadError`, and nothing of the file is left behind.
        progress: print a progress line to stderr.

    When no hash is known, the hash of the first complete download is
    recorded in ``hashes.json`` of the cache with a warning, and later loads
    verify against it. "Complete" means the server's length (Content-Length
    or Content-Range) was received, or its chunked response ended properly.
    A file whose length nothing confirms is recorded as unconfirmed: the next
    online use downloads it again and trusts it only if both copies agree.
    """
    filename = filename or os.path.basename(url.split("?")[0])
    folder = os.path.join(cache_dir(), subdir)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, filename)
    recorded, confirmed = _recorded(url)
    known = sha256 or recorded
    offline = bool(os.environ.get("NONLOCAL_TF_OFFLINE"))
    if os.path.exists(path):
        if sha256 or confirmed or offline:
            digest = verify_file(path, url, known, sha256_prefix)
            if not known:  # cached before its hash was recorded
                _record_hash(url, digest, confirmed=True)
            elif not (sha256 or confirmed):
                log.warning("Using %s, whose download was never confirmed complete.", path)
            return path, digest
        return _recheck(url, path, recorded, sha256_prefix, retries, progress)
    if offline:
        raise DownloadError(
            f"Offline (NONLOCAL_TF_OFFLINE is set) and {filename} is not cached. "
            f"Download {url} by hand and put it at {path}."
        )
    partial = path + ".part"
    with _removed_on_failure(partial):
        length_confirmed = _download_with_retries(url, partial, retries, progress, path)
        digest = verify_file(partial, url, known, sha256_prefix)
        os.replace(partial, path)
    if not known:
        _record_hash(url, digest, confirmed=length_confirmed)
        if length_confirmed:
            log.warning(
                "No sha256 is known for %s; recorded %s, later loads will verify it.", url, digest
            )
        else:
            log.warning(
                "No sha256 is known for %s and the server did not say its length: the file "
                "(sha256 %s) may be incomplete. It will be downloaded again and compared on next "
                "use; pass sha256= to trust it now.",
                url,
                digest,
            )
    return path, digest


def _recheck(url, path, recorded, prefix, retries, progress) -> tuple[str, str]:
    """A second download of a file whose first one was not confirmed complete:
    the same bytes confirm it; other bytes replace it, still unconfirmed."""
    digest = verify_file(path, url, recorded, prefix, delete=False) if recorded else sha256_of(path)
    partial = path + ".check"
    with _removed_on_failure(partial):
        length_confirmed = _download_with_retries(url, partial, retries, progress, path)
        again = sha256_of(partial)
        if again == digest or length_confirmed:
            os.replace(partial, path)
            _record_hash(url, again, confirmed=True)
            if again != digest:
                log.warning("%s: the earlier download was incomplete; replaced.", url)
            return path, again
        os.replace(partial, path)
    _record_hash(url, again, confirmed=False)
    log.warning(
        "%s: two downloads differ (sha256 %s, then %s) and the server gives no length; kept the "
        "newer. Pass sha256= once you know the right one.",
        url,
        digest,
        again,
    )
    return path, again


@contextlib.contextmanager
def _removed_on_failure(partial: str):
    """Deletes ``partial`` if the block fails, however it fails."""
    try:
        yield
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def mirrored(url: str) -> str:
    """Where ``url`` is downloaded from: its file name under
    ``$NONLOCAL_TF_MIRROR`` when that is set (http(s) URLs), else itself."""
    mirror = os.environ.get("NONLOCAL_TF_MIRROR")
    if not mirror or not url.startswith(("http://", "https://")):
        return url
    return f"{mirror.rstrip('/')}/{os.path.basename(url.split('?')[0])}"


def _download_with_retries(url: str, partial: str, retries: int, progress: bool, path: str) -> bool:
    """Downloads ``url`` (from its mirror, if one is set) to ``partial``,
    resuming after cut responses; returns whether the server confirmed the
    length (or ended its chunked response)."""
    url = mirrored(url)
    advice = f"If this machine is offline, download the file elsewhere and put it at {path}."
    for attempt in range(retries):
        try:
            return _download(url, partial, progress)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and os.path.exists(partial):  # a stale part longer than the file
                os.remove(partial)
                continue
            raise DownloadError(f"Could not download {url}: HTTP {exc.code}. {advice}") from None
        except ValueError as exc:  # an unknown URL scheme, a malformed URL
            raise DownloadError(f"Could not download {url}: {exc}.") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, DownloadError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if attempt == retries - 1:
                raise DownloadError(
                    f"Could not download {url} ({type(exc).__name__}: {reason}) after "
                    f"{retries} attempts. {advice}"
                ) from None
            log.warning(
                "Download of %s interrupted (%s); resuming (%d/%d).",
                url,
                reason,
                attempt + 1,
                retries,
            )
            time.sleep(0.2 * 2**attempt)
    raise DownloadError(f"Could not download {url} after {retries} attempts. {advice}")


def _download(url: str, partial: str, progress: bool) -> bool:
    have = os.path.getsize(partial) if os.path.exists(partial) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=60) as response:
        status = getattr(response, "status", 200)
        if have and status != 206:  # the server ignored the Range: start over
            have = 0
        total = _announced_total(response.headers, have)
        chunked = "chunked" in response.headers.get("Transfer-Encoding", "").lower()
        received = have
        with open(partial, "ab" if have else "wb") as f:
            while True:
                try:
                    block = response.read(CHUNK)
                except http.client.IncompleteRead as exc:  # a cut chunked response
                    f.write(exc.partial)  # kept: the next attempt resumes after it
                    raise
                if not block:
                    break
                f.write(block)
                received += len(block)
                if progress:
                    _progress(os.path.basename(url), received, total)
        if progress:
            sys.stderr.write("\n")
    if total is not None and received != total:
        raise DownloadError(f"connection closed after {received} of {total} bytes")
    return total is not None or chunked


def _announced_total(headers, have: int) -> int | None:
    """The file's full size as the response states it, if it does."""
    content_range = headers.get("Content-Range", "")
    if "/" in content_range and content_range.rsplit("/", 1)[1].strip().isdigit():
        return int(content_range.rsplit("/", 1)[1])
    length = headers.get("Content-Length")
    if length is not None and length.strip().isdigit():
        return int(length) + have
    return None


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
            hashes = json.load(f)
    except (OSError, ValueError):
        return {}
    return hashes if isinstance(hashes, dict) else {}


def _recorded(url: str) -> tuple[str | None, bool]:
    """``(sha256, confirmed)`` recorded for ``url``; an unconfirmed entry is
    ``{"sha256": ..., "length_confirmed": false}``."""
    entry = _recorded_hashes().get(url)
    if isinstance(entry, str):
        return entry, True
    if isinstance(entry, dict) and isinstance(entry.get("sha256"), str):
        return entry["sha256"], bool(entry.get("length_confirmed"))
    return None, False


def _record_hash(url: str, digest: str, confirmed: bool = True) -> None:
    hashes = _recorded_hashes()
    hashes[url] = digest if confirmed else {"sha256": digest, "length_confirmed": False}
    files.write_json(_hash_file(), hashes)


class UnsafeArchiveError(ValueError):
    """A tarball member would land outside the target folder, or is a link or device."""


def safe_extract(archive: str, target: str, members: list[str] | None = None) -> list[str]:
    """Extracts regular files (and folders) of a tarball under ``target`` only.

    Member names are normalised (``./a/b`` is ``a/b``). Before anything is
    written, refuses absolute paths, ``..`` components, links and devices, and
    names that conflict (a file ``a`` and a member ``a/b``; a member whose
    place on disk is taken by something of the other kind). Returns the
    extracted paths.
    """
    target = os.path.realpath(target)
    os.makedirs(target, exist_ok=True)
    try:
        tar = tarfile.open(archive)
    except (tarfile.TarError, OSError) as exc:
        raise UnsafeArchiveError(f"{archive} is not a readable tarball ({exc}).") from None
    extracted = []
    with tar:
        try:
            for name, member in _checked_members(archive, tar.getmembers(), target, members):
                dest = os.path.join(target, name)
                if member.isdir():
                    os.makedirs(dest, exist_ok=True)
                    continue
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                source = tar.extractfile(member)
                with files.atomic_path(dest) as tmp, open(tmp, "wb") as f:
                    while block := source.read(CHUNK):
                        f.write(block)
                extracted.append(dest)
        except (tarfile.TarError, EOFError, zlib.error) as exc:  # a truncated or corrupt archive
            raise UnsafeArchiveError(f"{archive} is not a readable tarball ({exc}).") from None
    return extracted


def _checked_members(archive, all_members, target, wanted):
    """``[(normalised name, member)]`` to extract, after every check."""
    chosen, kinds = [], {}
    for member in all_members:
        name = os.path.normpath(member.name)
        if wanted is not None and member.name not in wanted and name not in wanted:
            continue
        if name == "." and member.isdir():
            continue  # the archive's root, as ``tar -C dir -cf x.tar .`` writes it
        dest = os.path.realpath(os.path.join(target, name))
        if os.path.isabs(member.name) or not dest.startswith(target + os.sep):
            raise UnsafeArchiveError(
                f"{archive}: member {member.name!r} would be written outside {target}."
            )
        if not (member.isfile() or member.isdir()):
            raise UnsafeArchiveError(
                f"{archive}: member {member.name!r} is a link or device; refused."
            )
        kind = "folder" if member.isdir() else "file"
        parts = name.split(os.sep)
        for depth in range(1, len(parts)):  # every parent is a folder
            _claim(archive, kinds, os.sep.join(parts[:depth]), "folder", member.name)
        _claim(archive, kinds, name, kind, member.name)
        chosen.append((name, member))
    for name, kind in kinds.items():  # what is already on disk
        dest = os.path.join(target, name)
        if os.path.exists(dest) and os.path.isdir(dest) != (kind == "folder"):
            raise UnsafeArchiveError(
                f"{archive}: member {name!r} is a {kind}, but {dest} exists as "
                f"a {'folder' if os.path.isdir(dest) else 'file'}; nothing was extracted."
            )
    return chosen


def _claim(archive, kinds: dict, name: str, kind: str, member: str) -> None:
    previous = kinds.setdefault(name, kind)
    if previous != kind:
        raise UnsafeArchiveError(
            f"{archive}: {name!r} is both a file and a folder (member {member!r}); nothing was "
            "extracted."
        )
