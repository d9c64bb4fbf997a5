"""The field findings of issue 37 (a newcomer's run and a red-team run), one
test or more per row, each failing on the code before its fix: hostile
presets refused in one line before any large read; the zoo commands' flags
checked before long work, their logs readable, their extras checked up front."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nonlocal_tf import pretrained

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = pretrained.DEMO


# ------------------------------------------------------------------ presets
@pytest.fixture(scope="module")
def demo_preset(tmp_path_factory):
    """The demo entry as a preset (the valid base every hostile copy starts from)."""
    model, digest, _ = pretrained.converted(DEMO)
    folder = str(tmp_path_factory.mktemp("presets") / "demo")
    pretrained.save_to_preset(model, folder, entry=DEMO, source={"url": DEMO.url, "sha256": digest})
    return folder


def copy_of(folder: str, target) -> str:
    shutil.copytree(folder, str(target))
    return str(target)


def edit_json(folder: str, name: str, change) -> None:
    path = os.path.join(folder, name)
    with open(path) as f:
        value = json.load(f)
    value = change(value) or value
    with open(path, "w") as f:
        json.dump(value, f)


def rehash(folder: str) -> None:
    """The weights file's sha256 in the metadata made that of the file as it is now."""
    with open(os.path.join(folder, "model.weights.h5"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    edit_json(folder, "metadata.json", lambda m: m["nonlocal_tf"].update(weights_sha256=digest))


# Loads presets in a process of its own, its address space capped at 3 GB (a
# load that reads what a hostile file declares dies of MemoryError, not the
# machine), each load under an alarm (a FIFO or /dev/zero read would hang).
# One JSON line per preset: what was raised, and the process's peak RSS so far.
LOADER = """
import json, resource, signal, sys, time
cap = 3 * 2**30
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
from nonlocal_tf import pretrained
from nonlocal_tf.pretrained import presets

def hung(*_):
    raise TimeoutError("no answer in 20 s")

signal.signal(signal.SIGALRM, hung)
how, folders = sys.argv[1], sys.argv[2:]
model = pretrained.DEMO.build() if how == "weights" else None
for folder in folders:
    started = time.perf_counter()
    signal.alarm(20)
    try:
        if how == "weights":  # one model, many weights files: no build per file
            presets.load_preset_weights(model, folder)
        elif how == "entry":
            pretrained.preset_entry(folder)
        else:
            pretrained.from_preset(folder)
        outcome = {"raised": None}
    except BaseException as exc:
        outcome = {
            "raised": type(exc).__name__,
            "preset_error": isinstance(exc, pretrained.PresetError),
            "value_error": isinstance(exc, ValueError),
            "message": str(exc),
        }
    finally:
        signal.alarm(0)
    status = open("/proc/self/status").read()
    outcome["peak_mb"] = int(status.split("VmHWM:")[1].split()[0]) / 1024
    outcome["seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps({"folder": folder, **outcome}), flush=True)
"""


def load_in_child(folders: list[str], how: str = "load") -> dict[str, dict]:
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env |= {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3", "NONLOCAL_TF_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", LOADER, how, *folders],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=env,
    )
    outcomes = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            outcomes[row["folder"]] = row
    missing = [f for f in folders if f not in outcomes]
    assert not missing, (
        f"the loader died at {missing[:1]}: exit {done.returncode}\n{done.stderr[-3000:]}"
    )
    return outcomes


def assert_refused(outcome: dict, pattern: str) -> None:
    """A one-line `PresetError` matching ``pattern``, quickly."""
    assert outcome["preset_error"], outcome
    assert re.search(pattern, outcome["message"]), outcome
    assert "\n" not in outcome["message"] and outcome["seconds"] < 15, outcome


def huge_arrays(folder: str, count: int = 50) -> None:
    """``count`` of the weights file's arrays replaced by arrays that declare
    1 GiB each (chunked, never written: the file grows by their headers only)."""
    import h5py

    with h5py.File(os.path.join(folder, "model.weights.h5"), "r+") as f:
        names = []
        f.visititems(
            lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None
        )
        for name in names[:count]:
            del f[name]
            f.create_dataset(name, shape=(2**28,), chunks=True, dtype="f4")
    rehash(folder)


def test_preset_declaring_huge_arrays_is_refused_before_reading_them(demo_preset, tmp_path):
    """Row 15: 50 arrays of 1 GiB declared (50 GiB if read) in a file of a
    few MB: refused from the headers, under a 3 GB address space (before:
    Keras read them, "Unable to allocate 1.00 GiB" under the cap)."""
    folder = copy_of(demo_preset, tmp_path / "huge")
    huge_arrays(folder)
    assert os.path.getsize(os.path.join(folder, "model.weights.h5")) < 2**23
    outcome = load_in_child([folder])[folder]
    assert_refused(outcome, "holds 327 arrays, the model has 327 weights of other shapes")
    assert "allocate" not in outcome["message"] and outcome["peak_mb"] < 1500, outcome


BAD_SIZES = {
    "classes 10^9": ({"classes": 1_000_000_000}, r"classes must be an integer in \[1, 100000\]"),
    "classes 3x10^7": ({"classes": 3 * 10**7}, r"classes must be an integer in \[1, 100000\]"),
    "frames 10^6": (
        {"input_shape": [1_000_000, 32, 32, 3]},
        r"input_shape entries must be None or integers in \[1, 8192\]",
    ),
    "frame size 10^6": (
        {"input_shape": [8, 1_000_000, 1_000_000, 3]},
        r"input_shape entries must be None or integers in \[1, 8192\]",
    ),
}


def test_preset_config_sizing_a_huge_model_is_refused(demo_preset, tmp_path):
    """Row 16: a config asking for 10^9 or 3x10^7 classes (a terabyte, 30 GB
    of classifier), or frames of 10^6 pixels a side: one line, nothing built."""
    folders = {}
    for i, (case, (arguments, _)) in enumerate(BAD_SIZES.items()):
        folder = copy_of(demo_preset, tmp_path / f"size{i}")
        edit_json(folder, "config.json", lambda c, a=arguments: c["config"]["arguments"].update(a))
        folders[case] = folder
    outcomes = load_in_child(list(folders.values()))
    for case, folder in folders.items():
        assert_refused(outcomes[folder], BAD_SIZES[case][1])


def nested(depth: int):
    value = 8
    for _ in range(depth):
        value = [value]
    return value


# (how it is loaded, the change, the one line expected)
MALFORMED = {
    "400-deep list in config.json": (
        "load",
        lambda folder: edit_json(
            folder,
            "config.json",
            lambda c: c["config"]["arguments"].update(nonlocal_mask=nested(400)),
        ),
        "not plain data|not valid JSON",
    ),
    "metadata.json a list": (
        "load",
        lambda folder: edit_json(folder, "metadata.json", lambda m: [m]),
        "metadata.json is not a JSON object",
    ),
    "'nonlocal_tf' a string": (
        "load",
        lambda folder: edit_json(folder, "metadata.json", lambda m: m.update(nonlocal_tf="x")),
        "'nonlocal_tf' is not an object",
    ),
    "entry.metrics a list": (
        "entry",
        lambda folder: edit_json(
            folder, "metadata.json", lambda m: m["nonlocal_tf"]["entry"].update(metrics=[1, 2])
        ),
        "metadata field 'metrics' has the wrong type",
    ),
    "frames a string": (
        "entry",
        lambda folder: edit_json(
            folder, "metadata.json", lambda m: m["nonlocal_tf"]["entry"].update(frames="8")
        ),
        "metadata field 'frames' has the wrong type",
    ),
    "no metadata.json": (
        "load",
        lambda folder: os.remove(os.path.join(folder, "metadata.json")),
        "has no weights_sha256",
    ),
}


def test_malformed_preset_files_are_one_line_errors(demo_preset, tmp_path):
    """Row 17: JSON of the wrong shape or type where the loader expects
    objects, numbers and lists: a `PresetError` naming the file and field
    (before: RecursionError, AttributeError, TypeError, or no check at all)."""
    folders = {how: {} for how in ("load", "entry")}
    for i, (case, (how, change, _)) in enumerate(MALFORMED.items()):
        folder = copy_of(demo_preset, tmp_path / f"bad{i}")
        change(folder)
        folders[how][case] = folder
    for how, cases in folders.items():
        outcomes = load_in_child(list(cases.values()), how)
        for case, folder in cases.items():
            assert_refused(outcomes[folder], MALFORMED[case][2])


def test_preset_files_that_are_links_or_fifos_are_refused(demo_preset, tmp_path):
    """Row 18: a preset file that is a link to /dev/zero (a read that never
    ends), a FIFO (an open that blocks forever) or a link to a file outside
    the folder (another file's content leaked or loaded): refused at once."""
    outside = tmp_path / "elsewhere.h5"
    shutil.copy(os.path.join(demo_preset, "model.weights.h5"), outside)
    cases = {
        "model.weights.h5 -> /dev/zero": ("model.weights.h5", "/dev/zero", "a link to /dev/zero"),
        "config.json -> /dev/zero": ("config.json", "/dev/zero", "a link to /dev/zero"),
        "metadata.json a FIFO": ("metadata.json", None, "not a regular file"),
        "model.weights.h5 -> outside": (
            "model.weights.h5",
            str(outside),
            "outside the preset's folder",
        ),
    }
    folders = {}
    for i, (case, (name, target, _)) in enumerate(cases.items()):
        folder = copy_of(demo_preset, tmp_path / f"link{i}")
        os.remove(os.path.join(folder, name))
        if target is None:
            os.mkfifo(os.path.join(folder, name))
        else:
            os.symlink(target, os.path.join(folder, name))
        folders[case] = folder
    outcomes = load_in_child(list(folders.values()))
    for case, folder in folders.items():
        assert_refused(outcomes[folder], cases[case][2])


def header_offsets(path: str, count: int, seed: int = 0) -> list[int]:
    """``count`` byte offsets of an HDF5 file outside its arrays' data: its
    superblock, object headers, B-trees and heaps, where a flipped byte
    changes what the file declares rather than a weight's value."""
    import h5py

    data = []
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda _, item: (
                data.append((item.id.get_offset(), item.id.get_storage_size()))
                if isinstance(item, h5py.Dataset) and item.id.get_offset() is not None
                else None
            )
        )
    in_data = np.zeros(os.path.getsize(path), bool)
    for offset, size in data:
        in_data[offset : offset + size] = True
    candidates = np.flatnonzero(~in_data)
    return sorted(np.random.default_rng(seed).choice(candidates, count, replace=False).tolist())


def test_byte_mutated_weights_are_refused_or_loaded_never_a_crash(demo_preset, tmp_path):
    """Row 17: copies of a valid weights file with one byte of its HDF5
    structure changed (the metadata's sha256 updated, so that the file
    itself is what is checked): each loads or is a `PresetError`; never
    h5py's RuntimeError / KeyError / TypeError, a hang or a crash."""
    source = os.path.join(demo_preset, "model.weights.h5")
    blob = bytearray(open(source, "rb").read())
    folders = []
    for i, offset in enumerate(header_offsets(source, 30)):
        folder = copy_of(demo_preset, tmp_path / f"m{i:02d}")
        mutated = bytearray(blob)
        mutated[offset] ^= 0xFF
        with open(os.path.join(folder, "model.weights.h5"), "wb") as f:
            f.write(mutated)
        rehash(folder)
        folders.append(folder)
    outcomes = load_in_child(folders, "weights")
    wrong = [o for o in outcomes.values() if o["raised"] and not o["value_error"]]
    assert not wrong, [(o["raised"], o["message"][:200]) for o in wrong[:5]]
    refused = [o for o in outcomes.values() if o["raised"]]
    assert len(refused) >= 5, f"only {len(refused)} of 30 mutations changed anything"
    for outcome in refused:
        assert_refused(outcome, "Preset .*model.weights.h5")


# --------------------------------------------------------------- the commands
def environment(hide: tuple[str, ...] = (), tmp_path=None) -> dict:
    """The commands' environment: TensorFlow, offline, TensorFlow's log level
    left to the command; ``hide``: modules whose import fails (a folder of
    stand-ins raising ImportError, first on PYTHONPATH)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL", "NONLOCAL_TF_TRACEBACK", "PYTHONPATH")
    }
    env |= {"KERAS_BACKEND": "tensorflow", "NONLOCAL_TF_OFFLINE": "1"}
    if hide:
        folder = tmp_path / "hidden"
        folder.mkdir(exist_ok=True)
        for module in hide:
            (folder / f"{module}.py").write_text(f"raise ImportError('No module named {module}')\n")
        env["PYTHONPATH"] = str(folder)
    return env


def capped() -> None:
    """In a command's process: a 4 GB address space (a flag that the code
    before its fix took as a size must not take the machine with it)."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))


def start(module: str, *args, env: dict | None = None, cap: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=ROOT,
        env=env or environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=capped if cap else None,
    )


def run(module: str, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = start(module, *args, env=env)
    stdout, stderr = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


# TensorFlow 2.21 prints these at import whatever TF_CPP_MIN_LOG_LEVEL says.
IMPORT_NOISE = re.compile(
    r"port\.cc|cudart_stub\.cc|WARNING: All log messages before absl::InitializeLog\(\)"
)


def our_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not IMPORT_NOISE.search(line)]


def one_line_error(done, command: str, pattern: str) -> None:
    """Exit 1, no traceback, one ``zoo.<command>: error:`` line matching ``pattern``."""
    errors = [line for line in done.stderr.splitlines() if line.startswith(f"zoo.{command}:")]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(errors) == 1 and re.search(pattern, errors[0]), done.stderr[-3000:]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Two class folders of the demo's generated videos (the demo's classes)."""
    from nonlocal_tf.data import synthetic

    root = tmp_path_factory.mktemp("field")
    paths = synthetic.write_reappear_videos(str(root / "clips"), per_class=2, seed=3)
    return root, paths


def test_onnx_without_its_extra_is_a_usage_error_before_any_work(tmp_path):
    """Row 9: ``--onnx`` where onnxruntime cannot be imported: one line naming
    the extra to install, before the SavedModel is written (before: a
    traceback after the SavedModel's export)."""
    out = tmp_path / "export"
    env = environment(hide=("onnxruntime",), tmp_path=tmp_path)
    done = run(
        "zoo.export",
        f"--model={DEMO.name}",
        f"--output_dir={out}",
        "--onnx",
        "--clip_size=32",
        env=env,
    )
    one_line_error(done, "export", r"--onnx needs onnxruntime: pip install 'nonlocal-tf\[onnx\]'")
    assert not (out / "saved_model").exists()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
@pytest.mark.slow
def test_a_training_run_logs_what_a_user_needs_and_nothing_alarming(videos, tmp_path):
    """Row 5: a ``zoo.train`` run (validation included) on TensorFlow prints
    no TensorFlow C++ error lines (cuInit, the graph optimizer), no Keras
    warning that ``shuffle`` is ignored or that the input ran out of data,
    and no warning about the Apache-licensed demo weights. Row 4: over 2
    epochs each bad file of its folder is named once, the first time it is
    met, and each epoch ends with its counts (before: a line every time a
    bad file came round, 350 in an epoch for 6 bad files of 12)."""
    from tests.videos import write_video

    root, _ = videos
    folder = tmp_path / "data"
    shutil.copytree(root / "clips", folder)
    bad = [folder / "different" / "garbage.mp4", folder / "reappears" / "empty.mp4"]
    bad[0].write_bytes(b"\x00garbage" * 500)
    bad[1].write_bytes(b"")
    bad.append(Path(write_video(folder / "reappears" / "short.mp4", num_frames=2)))
    done = run(
        "zoo.train",
        f"--model={DEMO.name}",
        f"--train_data={folder}",
        f"--val_data={root / 'clips'}",
        f"--output_dir={tmp_path / 'run'}",
        "--epochs=2",
        "--batch_size=2",
        "--steps_per_epoch=4",
        "--crop=32",
        "--train_scale=32,40",
        "--precise_bn_batches=1",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = our_lines(done.stderr)
    alarming = re.compile(
        r"^E\d{4}|cuInit|meta_optimizer|shuffle=True|ran out of data|^W\d{4} .*released under"
    )
    assert not [line for line in lines if alarming.search(line)], "\n".join(lines)[-3000:]
    named = [line for line in done.stderr.splitlines() if "train videos: skipped /" in line]
    files = [line.split("skipped ")[1].split(":")[0] for line in named]
    assert sorted(files) == sorted(map(str, bad)), named
    epochs = re.findall(r"epoch (\d): train videos: skipped \d+ \(.*\) of (\d) file", done.stderr)
    assert [e for e, _ in epochs] == ["1", "2"] and epochs[0][1] == "3", epochs


def test_license_notice_warns_only_for_restricted_weights(caplog):
    """Row 5: Apache-licensed weights are noted at INFO level; non-commercial
    ones warn, once per process."""
    import dataclasses

    from nonlocal_tf.pretrained import loader

    with caplog.at_level("INFO", logger="nonlocal_tf"):
        pretrained.load_model(DEMO.name)
    notices = [r for r in caplog.records if "released under" in r.getMessage()]
    assert notices and {r.levelname for r in notices} == {"INFO"}
    caplog.clear()
    restricted = dataclasses.replace(DEMO, name="field.nc", license="CC-BY-NC-4.0")
    with caplog.at_level("INFO", logger="nonlocal_tf"):
        loader._license_notice(restricted)
        loader._license_notice(restricted)
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]


def test_flag_mistakes_are_usage_errors_before_any_work(videos, tmp_path):
    """Row 22: values that the commands took and failed on late (an
    OverflowError traceback for ``--window=inf``, a frame size of -5 or
    100000, a NaN tolerance that removed a good preset, an empty model list
    that did nothing and exited 0) are refused while parsing the flags."""
    _, paths = videos
    video, presets_dir = paths[0], tmp_path / "presets"
    cases = {
        "window inf": (
            ["zoo.predict", f"--model={DEMO.name}", f"--input={video}", "--window=inf"],
            r"zoo.predict: error: --window must be a number of seconds up to a day",
        ),
        "size -5": (
            ["zoo.predict", f"--model={DEMO.name}", f"--input={video}", "--size=-5"],
            r"flag --size=-5: .* range \[32, 2048\]",
        ),
        "size 100000": (
            ["zoo.predict", f"--model={DEMO.name}", f"--input={video}", "--size=100000"],
            r"flag --size=100000: .* range \[32, 2048\]",
        ),
        "tolerance nan": (
            ["zoo.make_presets", f"--models={DEMO.name}", f"--output_dir={presets_dir / 'nan'}"]
            + ["--tolerance=nan"],
            r"zoo.make_presets: error: --tolerance must be a number >= 0",
        ),
        "no models": (
            ["zoo.make_presets", "--models=", f"--output_dir={presets_dir / 'none'}"],
            r"zoo.make_presets: error: --models is empty",
        ),
    }
    running = {name: start(*args, cap=True) for name, (args, _) in cases.items()}
    failures = []
    for name, proc in running.items():
        _, stderr = proc.communicate(timeout=600)
        if proc.returncode == 0 or "Traceback" in stderr or not re.search(cases[name][1], stderr):
            failures.append(f"{name}: exit {proc.returncode}\n{stderr[-1500:]}")
    assert not failures, "\n\n".join(failures)
    assert not [name for _, _, found in os.walk(presets_dir) for name in found]


@pytest.mark.slow
def test_extract_features_again_on_a_finished_folder(videos, tmp_path):
    """Rows 10 and 22: a stray file beside the shards is ignored (before:
    "invalid literal for int()"), the summary says "extracted", and a run
    with nothing left to do says so in one line and exits 0."""
    _, paths = videos
    listing, out = tmp_path / "list.txt", tmp_path / "features"
    args = [f"--model={DEMO.name}", f"--input={listing}", f"--output_dir={out}", "--views=1"]
    listing.write_text("\n".join(paths[:2]))
    first = run("zoo.extract_features", *args)
    assert first.returncode == 0, first.stderr[-3000:]
    (out / "features-notes.txt").write_text("what these are")
    listing.write_text("\n".join(paths[:3]))
    second = run("zoo.extract_features", *args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "1 of 1 videos extracted, 0 skipped" in second.stderr, second.stderr[-3000:]
    again = run("zoo.extract_features", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.splitlines() == [
        f"nothing to do: every video is in {out} already (3 done)"
    ], again.stdout


@pytest.mark.slow
def test_evaluate_reports_progress(videos, tmp_path):
    """Row 11: ``zoo.evaluate`` says what it is evaluating, then how far it
    is (before: silent until the report)."""
    root, paths = videos
    done = run(
        "zoo.evaluate",
        f"--model={DEMO.name}",
        f"--data={root / 'clips'}",
        f"--output={tmp_path / 'report.json'}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith(f"evaluating {DEMO.name} on {root / 'clips'}: 4 videos")
    progress = re.findall(r"\[(\d+)/4 videos\] [\d.]+ videos/s", done.stderr)
    assert progress and progress[-1] == "4", done.stderr[-3000:]
    assert json.loads((tmp_path / "report.json").read_text())["videos"] == len(paths)


# ---------------------------------------------------------------- predictions
def test_timeline_colours_follow_the_class(tmp_path, monkeypatch):
    """Row 3: a class has one colour in every video's timeline picture
    (before: colours went by rank of each video's peaks, so "reappears" was
    blue in one picture and orange in the next)."""
    from matplotlib.figure import Figure

    from nonlocal_tf import inference

    drawn = []
    monkeypatch.setattr(Figure, "savefig", lambda figure, path, **_: drawn.append(figure))
    names = ["walk", "run", "jump"]
    peaks = {"a.png": [0.9, 0.05, 0.05], "b.png": [0.05, 0.05, 0.9], "c.png": [0.1, 0.8, 0.1]}
    for path, scores in peaks.items():
        windows = [inference.Window(t, t + 1.0, np.array(scores) * (1 + t) / 3) for t in range(3)]
        inference.plot_timeline(windows, names, str(tmp_path / path), top=2)
    colours = {}
    for figure in drawn:
        for line in figure.axes[0].get_lines():
            colours.setdefault(line.get_label(), set()).add(tuple(np.round(line.get_color(), 4)))
    assert set(colours) == set(names) and all(len(c) == 1 for c in colours.values()), colours
    assert len({next(iter(c)) for c in colours.values()}) == 3  # and three colours


def test_video_shorter_than_a_clip_has_no_timeline(tmp_path):
    """Row 3: a 3-frame video for an 8-frame model is skipped by the
    timeline as by the multi-view test, naming why (before: a one-point
    timeline of one frame repeated)."""
    from nonlocal_tf import data, inference
    from tests.videos import write_video

    path = write_video(tmp_path / "short.mp4", num_frames=3)
    scorer = inference.Scorer(lambda views: views.mean(axis=(1, 2, 3, 4))[:, None], 1)
    with pytest.raises(data.VideoDecodeError, match=r"shorter than a clip \(3 frames < 8\)"):
        inference.timeline(path, scorer, data.ClipSpec.at_size(8, 1, 32), 0.5, 0.5)


@pytest.mark.slow
def test_timeline_pictures_of_a_folder_go_beside_the_given_path(videos, tmp_path):
    """Row 3: with a folder as ``--input`` each video's picture is
    ``<name>_<nnnn>_<video>.png`` beside ``--timeline_png`` (before:
    ``<video>_timeline.png`` written into the input's class folders); a
    video shorter than a clip is a named skip."""
    from tests.videos import write_video

    root, paths = videos
    folder = tmp_path / "input"
    shutil.copytree(root / "clips", folder)
    write_video(folder / "reappears" / "short.mp4", num_frames=3)
    png = tmp_path / "pictures" / "timeline.png"
    done = run(
        "zoo.predict",
        f"--model={DEMO.name}",
        f"--input={folder}",
        "--window=0.5",
        f"--output={tmp_path / 't.csv'}",
        f"--timeline_png={png}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    names = [os.path.splitext(os.path.relpath(p, root / "clips"))[0] for p in sorted(paths)]
    wanted = [f"timeline_{i + 1:04d}_{os.path.basename(n)}.png" for i, n in enumerate(names)]
    assert sorted(os.listdir(png.parent)) == sorted(wanted)
    written = [f for _, _, found in os.walk(folder) for f in found if f.endswith(".png")]
    assert not written
    assert "4 of 5 videos classified, 1 skipped" in done.stderr
    assert re.search(r"skipped .*short\.mp4: shorter than a clip \(3 frames < 8\)", done.stderr)


def test_timeline_png_without_matplotlib_is_a_usage_error(videos, tmp_path):
    """Row 3: ``--timeline_png`` where matplotlib cannot be imported: one line
    naming what to install, before the model is built or a video read."""
    _, paths = videos
    out = tmp_path / "t.csv"
    done = run(
        "zoo.predict",
        f"--model={DEMO.name}",
        f"--input={paths[0]}",
        "--window=0.5",
        f"--output={out}",
        f"--timeline_png={tmp_path / 't.png'}",
        env=environment(hide=("matplotlib",), tmp_path=tmp_path),
    )
    one_line_error(done, "predict", r"--timeline_png needs matplotlib: pip install")
    assert not out.exists() or not out.read_text()


# Runs zoo.predict with `sampling.indices` (what every reader asks which frames
# to decode) recording the shape of each answer: (clips, frames) in test mode.
COUNTED = """
import json, runpy, sys
from nonlocal_tf.data import sampling

asked, indices = [], sampling.indices

def counted(*args, **kwargs):
    chosen = indices(*args, **kwargs)
    asked.append(list(chosen.shape))
    return chosen

sampling.indices = counted
sys.argv = [sys.argv[1], *sys.argv[2:]]
try:
    runpy.run_module("zoo.predict", run_name="__main__", alter_sys=True)
finally:
    print("ASKED " + json.dumps(asked))
"""


@pytest.mark.slow
def test_one_view_decodes_one_clip(videos, tmp_path):
    """Row 7: ``--views=1`` samples and decodes the one clip it scores
    (before: all 10 clips of the 30-view test, then kept one view)."""
    _, paths = videos
    out = tmp_path / "p.jsonl"
    proc = subprocess.run(
        [sys.executable, "-c", COUNTED, os.path.join(ROOT, "zoo", "predict.py")]
        + [f"--model={DEMO.name}", f"--input={paths[0]}", f"--output={out}", "--views=1"]
        + ["--input_engine=tf_data"],
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    asked = json.loads(proc.stdout.split("ASKED ")[-1])
    assert asked == [[1, 8]], asked
    assert json.loads(out.read_text())["views"] == 1


# ------------------------------------------------------------------- training
def processes_marked(marker: str) -> list[tuple[int, int, str]]:
    """``(pid, parent pid, command line)`` of every process whose
    environment holds ``marker`` (a run's processes, re-parented or not)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker.encode() not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        found.append((int(pid), parent, command))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_stopped_training_run_leaves_no_process_behind(videos, tmp_path, signum):
    """Row 14: ``zoo.train`` on the Grain engine stopped by SIGTERM (a
    scheduler's normal stop) or SIGKILL: its decoding workers and Grain's
    resource tracker end with it (before: they lived on under pid 1, about
    300 MB each). SIGTERM ends the command as Ctrl-C does, in one line."""
    import time
    import uuid

    root, _ = videos
    marker = f"NONLOCAL_TF_FIELD_RUN={uuid.uuid4().hex}"
    env = environment() | dict([marker.split("=")])
    command = [sys.executable, "-m", "zoo.train", f"--model={DEMO.name}"]
    command += [f"--train_data={root / 'clips'}", f"--output_dir={tmp_path / 'run'}"]
    command += ["--epochs=1000", "--batch_size=2", "--crop=32", "--train_scale=32,40"]
    command += ["--input_engine=grain", "--input_workers=2"]
    with open(tmp_path / "stderr", "w") as stderr:  # a file: orphans would hold a pipe open
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=stderr, stderr=stderr)
    try:
        started = time.monotonic()
        workers = []
        while len(workers) < 2 and time.monotonic() - started < 300 and proc.poll() is None:
            time.sleep(0.5)
            workers = [p for p in processes_marked(marker) if p[1] == proc.pid and "spawn" in p[2]]
        assert len(workers) == 2, (tmp_path / "stderr").read_text()[-3000:]
        time.sleep(3)  # the workers decoding
        proc.send_signal(signum)
        proc.wait(timeout=60)
        deadline, left = time.monotonic() + 20, processes_marked(marker)
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = processes_marked(marker)
        assert not left, left
    finally:
        for pid, _, _ in processes_marked(marker):  # what this test started, if it failed
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
    if signum == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM
        assert "zoo.train: stopped (SIGTERM)" in (tmp_path / "stderr").read_text()
