"""Downloads that servers cut, or whose length nobody states, and tarballs
with odd member names: nothing incomplete is trusted, nothing is left behind."""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile

import pytest

from nonlocal_tf import weights as nlw
from tests.http_server import serve

DATA = bytes(range(256)) * 4096  # 1 MiB


def cached_files(cache) -> list[str]:
    return sorted(p.name for p in cache.rglob("*") if p.is_file() and p.name != "hashes.json")


def recorded(cache, url):
    return json.loads((cache / "hashes.json").read_text()).get(url)


def test_unconfirmed_length_is_not_trusted_for_ever(cache, caplog):
    files = {"/w.bin": DATA}
    modes = {"/w.bin": "no_length"}
    with serve(files, cut_after={"/w.bin": len(DATA) // 2}, modes=modes) as (url, server):
        with caplog.at_level(logging.WARNING, logger="nonlocal_tf"):
            path, first = nlw.fetch_verified(f"{url}/w.bin", progress=False)
        assert os.path.getsize(path) == len(DATA) // 2  # nothing could tell it was cut
        assert "may be incomplete" in caplog.text
        assert recorded(cache, f"{url}/w.bin") == {"sha256": first, "length_confirmed": False}
        # next use: downloaded again, the whole file this time, and compared
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="nonlocal_tf"):
            path, second = nlw.fetch_verified(f"{url}/w.bin", progress=False)
        assert open(path, "rb").read() == DATA and second != first
        assert "two downloads differ" in caplog.text
        # a third copy agrees with the second: trusted from now on, and not fetched again
        path, third = nlw.fetch_verified(f"{url}/w.bin", progress=False)
        assert third == second and recorded(cache, f"{url}/w.bin") == second
        requests = len(server.requests)
        assert nlw.fetch_verified(f"{url}/w.bin", progress=False) == (path, second)
        assert len(server.requests) == requests
    assert cached_files(cache) == ["w.bin"]


def test_unconfirmed_file_is_used_offline_with_a_warning(cache, monkeypatch, caplog):
    with serve({"/w.bin": DATA}, modes={"/w.bin": "no_length"}) as (url, _):
        path, digest = nlw.fetch_verified(f"{url}/w.bin", progress=False)
    monkeypatch.setenv("NONLOCAL_TF_OFFLINE", "1")
    with caplog.at_level(logging.WARNING, logger="nonlocal_tf"):
        assert nlw.fetch_verified(f"{url}/w.bin", progress=False) == (path, digest)
    assert "never confirmed complete" in caplog.text


def test_a_known_hash_needs_no_length(cache):
    digest = nlw.sha256_of(write(cache.parent / "ref.bin", DATA))
    with serve({"/w.bin": DATA}, modes={"/w.bin": "no_length"}) as (url, server):
        path, got = nlw.fetch_verified(f"{url}/w.bin", sha256=digest, progress=False)
        assert got == digest
        nlw.fetch_verified(f"{url}/w.bin", sha256=digest, progress=False)
        assert len(server.requests) == 1


def write(path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("mode", ["length", "chunked"])
def test_cut_responses_are_resumed(cache, mode):
    cuts = [len(DATA) // 3, len(DATA) // 3]  # two cuts, then the rest
    with serve({"/w.bin": DATA}, cut_after={"/w.bin": cuts}, modes={"/w.bin": mode}) as (
        url,
        server,
    ):
        path, digest = nlw.fetch_verified(f"{url}/w.bin", progress=False)
    assert open(path, "rb").read() == DATA
    ranges = [r for _, r in server.requests]
    assert ranges[0] is None and ranges[1] == f"bytes={len(DATA) // 3}-"
    assert recorded(cache, f"{url}/w.bin") == digest  # the length was confirmed
    assert cached_files(cache) == ["w.bin"]


@pytest.mark.parametrize("mode", ["length", "chunked"])
def test_responses_cut_every_time_are_a_download_error(cache, mode):
    cuts = [1000] * 3
    with serve({"/w.bin": DATA}, cut_after={"/w.bin": cuts}, modes={"/w.bin": mode}) as (url, _):
        with pytest.raises(nlw.DownloadError, match="after 3 attempts"):
            nlw.fetch_verified(f"{url}/w.bin", progress=False)
    assert cached_files(cache) == []  # no .part, no .tmp


@pytest.mark.parametrize(
    "url, message", [("http://[::1", "Could not download"), ("nope://x/w.bin", "unknown url type")]
)
def test_bad_urls_are_download_errors(cache, url, message):
    with pytest.raises(nlw.DownloadError, match=message):
        nlw.fetch_verified(url, progress=False, retries=1)
    assert cached_files(cache) == []


def tarball(path, members: list[tuple[str, bytes | None]]) -> str:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(path)


def test_dot_slash_members_extract(tmp_path):
    archive = tarball(
        tmp_path / "x.tar", [(".", None), ("./model", None), ("./model/w.pkl", b"weights")]
    )
    extracted = nlw.safe_extract(archive, str(tmp_path / "out"))
    assert extracted == [str(tmp_path / "out" / "model" / "w.pkl")]
    assert (tmp_path / "out" / "model" / "w.pkl").read_bytes() == b"weights"


def test_conflicting_members_are_refused_before_extracting(tmp_path):
    archive = tarball(tmp_path / "x.tar", [("a", b"file"), ("a/b.txt", b"inside")])
    with pytest.raises(nlw.UnsafeArchiveError, match="'a' is both a file and a folder"):
        nlw.safe_extract(archive, str(tmp_path / "out"))
    assert list((tmp_path / "out").iterdir()) == []
    (tmp_path / "out2" / "w.pkl").mkdir(parents=True)  # a folder where a file goes
    archive = tarball(tmp_path / "y.tar", [("w.pkl", b"weights")])
    with pytest.raises(nlw.UnsafeArchiveError, match="exists as a folder"):
        nlw.safe_extract(archive, str(tmp_path / "out2"))


def test_truncated_tarball_is_a_clear_error(tmp_path):
    archive = tarball(tmp_path / "x.tar", [("w.pkl", os.urandom(100_000))])
    data = open(archive, "rb").read()
    open(archive, "wb").write(data[:50_000])
    with pytest.raises(nlw.UnsafeArchiveError, match="not a readable tarball"):
        nlw.safe_extract(archive, str(tmp_path / "out"))
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_a_mirror_serves_the_files_of_their_urls(cache, monkeypatch):
    """``NONLOCAL_TF_MIRROR``: a file of https://host/path/name comes from
    <mirror>/name; its hash is recorded for the original URL and checked."""
    import hashlib

    original = "https://dl.example.invalid/video-nonlocal/w.pkl"
    with serve({"/weights/w.pkl": DATA, "/weights/v.pkl": DATA}) as (url, server):
        monkeypatch.setenv("NONLOCAL_TF_MIRROR", f"{url}/weights/")
        path, digest = nlw.fetch_verified(original, progress=False)
        assert open(path, "rb").read() == DATA
        assert [p for p, _ in server.requests] == ["/weights/w.pkl"]
        record = recorded(cache, original)
        record = record["sha256"] if isinstance(record, dict) else record
        assert record == digest == hashlib.sha256(DATA).hexdigest()
        with pytest.raises(nlw.ChecksumError):
            nlw.fetch_verified(original.replace("w.pkl", "v.pkl"), sha256="0" * 64, progress=False)
