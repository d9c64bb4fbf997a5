"""Every notebook runs top to bottom, offline, on small settings (nbclient)."""

import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))


def test_there_are_four_notebooks_with_a_colab_badge():
    assert len(NOTEBOOKS) == 4
    readme = open(os.path.join(ROOT, "README.md")).read()
    for path in NOTEBOOKS:
        assert f"notebooks/{os.path.basename(path)}" in readme
        assert "colab.research.google.com" in open(path).read()


# TensorFlow's kernels for CPUs without oneDNN's AVX-512 paths (where "auto" picks the folded
# convolutions) run the notebooks' steps elsewhere: zoo.train and zoo.evaluate in
# tests/test_train.py, export in tests/test_export.py, fit on unknown shapes in
# tests/test_unknown_shapes.py (one matrix case per step, not per notebook).
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    import nbclient
    import nbformat

    monkeypatch.setenv("NONLOCAL_TF_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("NONLOCAL_TF_OFFLINE", "1")
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", ROOT)
    notebook = nbformat.read(path, as_version=4)
    folders = {}
    if os.path.basename(path).startswith("02_"):  # a user's own folders: read, never written to
        from nonlocal_tf.data.synthetic import write_reappear_videos

        for split, seed in (("train", 1), ("val", 2)):
            folders[split] = tmp_path / f"my_{split}"
            write_reappear_videos(str(folders[split]), 8 if split == "train" else 4, seed=seed)
        cell = next(c for c in notebook.cells if "TRAIN_DIR, VAL_DIR = None, None" in c.source)
        cell.source = cell.source.replace(
            "TRAIN_DIR, VAL_DIR = None, None",
            f"TRAIN_DIR, VAL_DIR = {str(folders['train'])!r}, {str(folders['val'])!r}",
        )
    listed = {split: sorted(os.walk(folder)) for split, folder in folders.items()}
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors
    assert {split: sorted(os.walk(folder)) for split, folder in folders.items()} == listed
