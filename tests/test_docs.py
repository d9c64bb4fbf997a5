"""Every code block of README.md and docs/*.md runs, as a reader would run it.

A page's ```python and ```bash blocks run top to bottom in one Jupyter
kernel (bash blocks as ``%%bash`` cells, ``set -euo pipefail``), in a fresh
folder that holds what a reader brings: ``videos/`` (a folder per class of
short generated videos) and ``my_video.mp4``. Blocks of other languages
(```text, ```json, ```console) show output and do not run; a block without a
language fails the test.

The official checkpoints cannot be downloaded here: a local server on
127.0.0.1 stands in for their hosts (``NONLOCAL_TF_MIRROR``), serving, for
every official-format catalogue entry a page names, a checkpoint the test
writes in that format (the entry's architecture, random weights). Hashes are
recorded on first use, as for any download of an entry without a known hash.

A page may scale a line down for the test, visibly in its source, with an HTML
comment before the block: ``<!-- docs-test: replace "--epochs=100" "--epochs=1" -->``
(applied to the next block only; ``$DOCS_REPO`` is the repository, where an
install line points).
"""

from __future__ import annotations

import glob
import io
import os
import re
import sys
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]
RUN = ("python", "bash")
SHOWN = ("text", "json", "console", "csv")
FENCE = re.compile(r"^```(\S*)\n(.*?)^```\s*$", re.S | re.M)
REPLACE = re.compile(r'<!--\s*docs-test:\s*replace\s+"([^"]*)"\s+"([^"]*)"\s*-->')


def blocks(path: str) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block, the page's replacements applied."""
    text = open(path, encoding="utf-8").read()
    found, start = [], 0
    for match in FENCE.finditer(text):
        code = match[2]
        for old, new in REPLACE.findall(text[start : match.start()]):
            assert old in code, (
                f"{path}: docs-test replace {old!r} matches nothing in the next block"
            )
            code = code.replace(old, new)
        found.append((match[1], code))
        start = match.end()
    return found


def test_every_block_has_a_language():
    for page in PAGES:
        for language, code in blocks(page):
            assert language in RUN + SHOWN, f"{page}: a block without a runnable language:\n{code}"


def test_readme_is_a_front_page():
    readme = open(PAGES[0], encoding="utf-8").read()
    assert len(readme.splitlines()) <= 200
    for command in ("make demo", "make test"):
        assert command in readme
    for page in PAGES[1:]:
        assert os.path.relpath(page, ROOT) in readme, f"README does not link {page}"


_BUILT: dict[str, tuple[str, bytes]] = {}  # entry -> (file name, bytes), built on demand


def _checkpoint_for(entry, depths=(50,)) -> tuple[str, bytes]:
    """A checkpoint in the entry's source format, named as its URL names it."""
    from nonlocal_tf import models, weights
    from tests.test_weights import caffe2_file

    if entry.archive_member:  # the ImageNet tarball: the members the page needs
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for depth in depths:
                blobs = weights.model_to_blobs(models.IMAGE_VARIANTS[f"resnet{depth}_image"]())
                data = caffe2_file(blobs)
                member = tarfile.TarInfo(
                    f"pretrained_model/r{depth}_pretrain_c2_model_iter450450_clean.pkl"
                )
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
        return os.path.basename(entry.url), buffer.getvalue()
    blobs = weights.model_to_blobs(entry.build())
    return os.path.basename(entry.url), caffe2_file(blobs)


def served_files(text: str) -> dict[str, bytes]:
    """The checkpoints of the official-format entries ``text`` (a page's code)
    names."""
    from nonlocal_tf import pretrained

    cache = _BUILT
    for entry in pretrained.ENTRIES:
        official = entry.format == "caffe2_pkl" and entry.url.startswith("https://")
        if official and entry.name in text and entry.sha256 is None and not entry.archive_member:
            name, data = cache.get(entry.name) or _checkpoint_for(entry)
            cache[entry.name] = (name, data)
    files = {f"/{name}": data for name, data in cache.values()}
    if "imagenet" in text:  # `weights="imagenet"` / `--weights=imagenet`: the ImageNet tarball
        depths = (50, 101) if re.search(r"r101|resnet101", text) else (50,)
        entry = pretrained.CATALOG["resnet50.imagenet_caffe2"]
        key = f"imagenet{depths}"
        name, data = cache.get(key) or _checkpoint_for(entry, depths)
        cache[key] = (name, data)
        files[f"/{name}"] = data
    return files


def reader_folder(folder: str) -> None:
    """What a reader brings: a folder of class folders of videos, and a video."""
    import shutil

    from nonlocal_tf.data import synthetic

    synthetic.write_reappear_videos(os.path.join(folder, "videos"), per_class=4, seed=1)
    shutil.copy(
        os.path.join(folder, "videos", "reappears", "0000.mp4"),
        os.path.join(folder, "my_video.mp4"),
    )


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[os.path.relpath(p, ROOT) for p in PAGES])
def test_page_runs(page, tmp_path, monkeypatch):
    import nbclient
    import nbformat

    from tests.http_server import serve

    code = [(language, block) for language, block in blocks(page) if language in RUN]
    if not code:
        pytest.skip(f"{page} has no code")
    cells = [
        nbformat.v4.new_code_cell(
            block if language == "python" else f"%%bash\nset -euo pipefail\n{block}"
        )
        for language, block in code
    ]
    reader_folder(str(tmp_path))
    with serve(served_files("\n".join(block for _, block in code))) as (url, _):
        monkeypatch.setenv("NONLOCAL_TF_MIRROR", url)
        monkeypatch.setenv("NONLOCAL_TF_HOME", str(tmp_path / ".cache"))
        monkeypatch.delenv("NONLOCAL_TF_OFFLINE", raising=False)
        monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
        monkeypatch.setenv("MPLBACKEND", "Agg")
        monkeypatch.setenv("PYTHONPATH", ROOT)
        monkeypatch.setenv("DOCS_REPO", ROOT)  # where a page's `pip install -e .` points
        monkeypatch.setenv("PATH", f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
        notebook = nbformat.v4.new_notebook(cells=cells)
        client = nbclient.NotebookClient(
            notebook,
            timeout=1200,
            kernel_name="python3",
            resources={"metadata": {"path": tmp_path}},
        )
        client.execute()  # a failing block raises CellExecutionError with its output
