"""Presets in keras-hub's on-disk format (`nonlocal_tf.pretrained.presets`):
round trips to the same logits, new heads, a bad config or truncated weights
refused in one line, nothing in a preset ever run; ``hf://`` handles through
keras-hub's loader against a local server; ``zoo.make_presets``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from nonlocal_tf import models, pretrained
from nonlocal_tf.pretrained import presets
from tests.helpers import to_numpy
from tests.http_server import serve

DEMO = pretrained.DEMO


def clip(seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (2, 8, 32, 32, 3)).astype("float32")


@pytest.fixture(scope="module")
def demo_preset(tmp_path_factory):
    """The demo entry as a preset, and the model it was made from."""
    model, digest, _ = pretrained.converted(DEMO)
    folder = str(tmp_path_factory.mktemp("presets") / "demo")
    pretrained.save_to_preset(model, folder, entry=DEMO, source={"url": DEMO.url, "sha256": digest})
    return folder, model


def copy_of(folder, tmp_path) -> str:
    target = str(tmp_path / "copy")
    shutil.copytree(folder, target)
    return target


def edit_json(folder, name, change):
    path = os.path.join(folder, name)
    with open(path) as f:
        value = json.load(f)
    change(value)
    with open(path, "w") as f:
        json.dump(value, f)


@pytest.mark.all_backends
def test_round_trip_gives_the_same_logits(demo_preset):
    folder, model = demo_preset
    assert sorted(os.listdir(folder)) == ["config.json", "metadata.json", "model.weights.h5"]
    loaded = pretrained.from_preset(folder)
    x = clip()
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))
    meta = pretrained.preset_metadata(folder)
    ours = meta["nonlocal_tf"]
    assert ours["entry"]["name"] == DEMO.name and ours["class_names"] == list(DEMO.class_names)
    assert (
        ours["source"]["sha256"] == DEMO.sha256 and meta["parameter_count"] == model.count_params()
    )
    with open(os.path.join(folder, "model.weights.h5"), "rb") as f:
        assert ours["weights_sha256"] == hashlib.sha256(f.read()).hexdigest()
    config = json.load(open(os.path.join(folder, "config.json")))
    assert set(config) >= {"module", "class_name", "config", "registered_name"}  # keras-hub's keys


def test_new_head_and_weights_argument(demo_preset):
    folder, model = demo_preset
    x = clip(1)
    features = pretrained.from_preset(folder, classes=5)
    assert features.output.shape[-1] == 5
    target = DEMO.build(classes=5)
    pretrained.load_weights(target, folder)  # the builders' weights= path
    for name in ("conv1", "res3_0_branch2a", "nonlocal_conv3_1"):
        for a, b in zip(target.get_layer(name).weights, model.get_layer(name).weights, strict=True):
            np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    assert np.all(np.isfinite(to_numpy(features(x))))
    with pytest.raises(ValueError, match="differs from the architecture"):
        pretrained.load_weights(DEMO.build(temporal_kernels="i3d"), folder)


BAD_CONFIGS = {
    "unknown builder": (lambda c: c["config"].update(builder="os.system"), "unknown builder"),
    "unknown argument": (
        lambda c: c["config"]["arguments"].update(layers=3),
        r"takes no argument\(s\) \['layers'\]",
    ),
    "weights argument": (
        lambda c: c["config"]["arguments"].update(weights="http://127.0.0.1:9/x.pkl"),
        "may not set",
    ),
    "serialized object": (
        lambda c: c["config"]["arguments"].update(
            classifier_activation={"module": "os", "class_name": "system", "config": {}}
        ),
        "not plain data",
    ),
    "not ours": (lambda c: c.pop("nonlocal_tf_preset"), "not a nonlocal_tf preset"),
    "no non-local blocks": (  # Keras alone would load it, dropping their weights
        lambda c: c["config"]["arguments"].update(nonlocal_mask="none"),
        "holds 327 arrays, the model has 267 weights",
    ),
    "wrong classes": (
        lambda c: c["config"]["arguments"].update(classes=7),
        "does not load into the model its config describes",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_a_one_line_error(case, demo_preset, tmp_path):
    change, message = BAD_CONFIGS[case]
    folder = copy_of(demo_preset[0], tmp_path)
    edit_json(folder, "config.json", change)
    with pytest.raises(pretrained.PresetError, match=message) as refused:
        pretrained.from_preset(folder)
    assert "\n" not in str(refused.value)


def test_a_preset_that_would_not_load_is_not_written(demo_preset, tmp_path):
    model = demo_preset[1]
    with pytest.raises(pretrained.PresetError, match="does not build"):
        pretrained.save_to_preset(
            model, str(tmp_path / "p"), entry=DEMO, arguments={**DEMO.arguments(), "classes": 3}
        )
    with pytest.raises(pretrained.PresetError, match="takes no argument"):
        pretrained.save_to_preset(model, str(tmp_path / "p"), "c2d_nl5_r50_8x8", {"blocks": 3})
    assert not (tmp_path / "p").exists()


def test_a_preset_without_the_weights_hash_is_refused(demo_preset, tmp_path):
    """Without metadata.json (or its hash) nothing could tell altered weights."""
    folder = copy_of(demo_preset[0], tmp_path)
    edit_json(folder, "metadata.json", lambda m: m["nonlocal_tf"].pop("weights_sha256"))
    with pytest.raises(pretrained.PresetError, match="has no weights_sha256"):
        pretrained.from_preset(folder)
    os.remove(os.path.join(folder, "metadata.json"))
    with pytest.raises(pretrained.PresetError, match="has no weights_sha256"):
        pretrained.from_preset(folder)


def test_invalid_json_and_missing_files(demo_preset, tmp_path):
    folder = copy_of(demo_preset[0], tmp_path)
    with open(os.path.join(folder, "config.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(pretrained.PresetError, match="not valid JSON"):
        pretrained.from_preset(folder)
    os.remove(os.path.join(folder, "config.json"))
    assert not pretrained.is_preset(folder)
    with pytest.raises(pretrained.PresetError, match="has no config.json"):
        pretrained.from_preset(folder)
    with pytest.raises(pretrained.PresetError, match="a preset is a folder or a hf://"):
        pretrained.from_preset(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("checked", [True, False])
def test_truncated_weights_are_a_one_line_error(checked, demo_preset, tmp_path):
    folder = copy_of(demo_preset[0], tmp_path)
    path = os.path.join(folder, "model.weights.h5")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    if not checked:  # the hash updated with the file: the weights file itself fails
        digest = hashlib.sha256(data[: len(data) // 2]).hexdigest()
        edit_json(folder, "metadata.json", lambda m: m["nonlocal_tf"].update(weights_sha256=digest))
    message = "truncated or altered" if checked else "does not load into the model"
    with pytest.raises(pretrained.PresetError, match=message) as refused:
        pretrained.from_preset(folder)
    assert "\n" not in str(refused.value)


def test_loading_never_runs_code_from_the_preset(demo_preset, tmp_path):
    """A preset carrying code (a module beside the config, a config naming
    os.system with a command, a registered name of a callable) is read as
    data and refused; nothing of it runs."""
    folder = copy_of(demo_preset[0], tmp_path)
    sentinel = tmp_path / "ran"
    code = f"open({str(sentinel)!r}, 'w').write('x')\n"
    for name in ("__init__.py", "config.py", "sitecustomize.py"):
        (tmp_path / "copy" / name).write_text(code)

    def hostile(config):
        config.update(module="os", class_name="system", registered_name="os>system")
        config["config"]["arguments"]["nonlocal_kwargs"] = {
            "module": "builtins",
            "class_name": "exec",
            "config": {"source": code},
        }

    edit_json(folder, "config.json", hostile)
    with pytest.raises(pretrained.PresetError, match="not plain data"):
        pretrained.from_preset(folder)
    assert not sentinel.exists()
    imported = [getattr(m, "__file__", None) or "" for m in list(sys.modules.values())]
    assert not [f for f in imported if f.startswith(folder)]


HF_CLIENT = """
import sys, numpy as np
from nonlocal_tf import pretrained
model = pretrained.from_preset(sys.argv[1])
x = np.random.default_rng(0).uniform(0, 255, (2, 8, 32, 32, 3)).astype("float32")
np.save(sys.argv[2], np.asarray(model(x)))
print("classes", pretrained.preset_metadata(sys.argv[1])["nonlocal_tf"]["class_names"])
"""


@pytest.mark.slow
def test_hf_handle_through_keras_hub_loader(demo_preset, tmp_path):
    """``hf://org/name`` fetched by keras-hub's preset loader (huggingface_hub,
    its cache) from a local server standing in for the Hub; a second load is
    served from the cache; a missing file is a one-line error."""
    folder, model = demo_preset
    commit = "0123456789abcdef0123456789abcdef01234567"
    served, headers = {}, {}
    for name in os.listdir(folder):
        data = open(os.path.join(folder, name), "rb").read()
        path = f"/nonlocal-tf/demo/resolve/main/{name}"
        served[path] = data
        headers[path] = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
    with serve(served, headers=headers) as (url, server):
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env |= {"HF_ENDPOINT": url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_XET": "1"}
        for _ in range(2):
            done = subprocess.run(
                [sys.executable, "-c", HF_CLIENT, "hf://nonlocal-tf/demo", str(tmp_path / "out")],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stderr[-3000:]
            assert "classes ['different', 'reappears']" in done.stdout
            np.testing.assert_allclose(
                np.load(tmp_path / "out.npy"), to_numpy(model(clip())), rtol=1e-5, atol=1e-6
            )
            gets = [p for p, _ in server.requests if p.endswith("model.weights.h5")]
            assert gets.count("/nonlocal-tf/demo/resolve/main/model.weights.h5") == 1, gets
        del served["/nonlocal-tf/demo/resolve/main/model.weights.h5"]
        env["HF_HOME"] = str(tmp_path / "hf2")
        done = subprocess.run(
            [sys.executable, "-c", HF_CLIENT, "hf://nonlocal-tf/demo", str(tmp_path / "out")],
            env=env | {"NONLOCAL_TF_TRACEBACK": ""},
            capture_output=True,
            text=True,
            timeout=300,
        )
        last = done.stderr.strip().splitlines()[-1]
        assert done.returncode != 0 and "Preset hf://nonlocal-tf/demo" in last, done.stderr[-2000:]
        assert "model.weights.h5" in last


def test_make_presets_command(tmp_path):
    out = tmp_path / "presets"
    command = [
        sys.executable,
        "-m",
        "zoo.make_presets",
        f"--models={DEMO.name}",
        f"--output_dir={out}",
    ]
    env = dict(os.environ) | {"NONLOCAL_TF_HOME": str(tmp_path / "home")}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{DEMO.name}: made" in done.stdout and "max |logit difference| 0" in done.stdout
    folder = out / DEMO.name
    meta = pretrained.preset_metadata(str(folder))["nonlocal_tf"]
    assert meta["source"] == {"url": DEMO.url, "sha256": DEMO.sha256}
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "kept (same source)" in again.stdout
    bad = subprocess.run(
        [*command[:3], "--models=nope.k400", f"--output_dir={out}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 1 and "not catalogue entries: ['nope.k400']" in bad.stderr


@pytest.mark.slow
def test_make_preset_of_a_caffe2_entry_matches_an_independent_forward(tmp_path, monkeypatch):
    """An official-format checkpoint (built here with the official blob names,
    served from 127.0.0.1) converted into a preset: the preset's logits are
    those of an independent PyTorch forward pass over the checkpoint's blobs."""
    from tests import checkpoints, torch_reference
    from tests.test_weights import NL5, caffe2_file, patch_entry, video
    from zoo import make_presets

    monkeypatch.setenv("NONLOCAL_TF_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NONLOCAL_TF_OFFLINE", raising=False)
    blobs = checkpoints.random_blobs(checkpoints.official_shapes(), seed=3)
    with serve({"/i3d_nl.pkl": caffe2_file(blobs)}) as (url, _):
        entry = patch_entry(monkeypatch, "i3d_nl5_r50_8x8.k400", url=f"{url}/i3d_nl.pkl")
        row = make_presets.make_preset(entry, str(tmp_path / "p"))
    assert row["status"].startswith("made")
    meta = pretrained.preset_metadata(str(tmp_path / "p"))["nonlocal_tf"]
    assert "327" in meta["conversion"]  # every official blob assigned
    model = pretrained.from_preset(str(tmp_path / "p"), classifier_activation=None)
    x = video()
    want = torch_reference.forward(blobs, x, nonlocal_names=NL5)
    got = to_numpy(model(x, training=False))
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_is_preset():
    assert presets.is_preset("hf://org/name") and presets.is_preset("kaggle://o/m/keras/v")
    assert not presets.is_preset("http://example/x.pkl") and not presets.is_preset("resnet50")
    assert not presets.is_preset(models.__file__)


def test_zoo_commands_take_a_preset_as_model(demo_preset, tmp_path):
    """``--model=<preset>``: the same predictions as the catalogue entry it was
    made from (class names included); a broken preset is one line, exit 1."""
    from nonlocal_tf.data import synthetic

    paths = synthetic.write_reappear_videos(str(tmp_path / "clips"), per_class=1, seed=5)
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env |= {"KERAS_BACKEND": "tensorflow", "NONLOCAL_TF_OFFLINE": "1"}

    def predict(model, out):
        return subprocess.run(
            [sys.executable, "-m", "zoo.predict", f"--model={model}"]
            + [f"--input={tmp_path / 'clips'}", f"--output={out}", "--top_k=2"],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )

    for model, out in ((demo_preset[0], "preset.jsonl"), (DEMO.name, "entry.jsonl")):
        done = predict(model, tmp_path / out)
        assert done.returncode == 0, done.stderr[-3000:]
    rows = {
        out: [json.loads(line) for line in (tmp_path / out).read_text().splitlines()]
        for out in ("preset.jsonl", "entry.jsonl")
    }
    assert len(rows["preset.jsonl"]) == len(paths)
    for a, b in zip(rows["preset.jsonl"], rows["entry.jsonl"], strict=True):
        assert [n for n, _ in a["top_k"]] == [n for n, _ in b["top_k"]]
        assert {n for n, _ in a["top_k"]} == set(DEMO.class_names)
        np.testing.assert_allclose(
            [p for _, p in a["top_k"]], [p for _, p in b["top_k"]], atol=1e-6
        )
    broken = copy_of(demo_preset[0], tmp_path)
    edit_json(broken, "config.json", lambda c: c["config"].update(builder="nope"))
    done = predict(broken, tmp_path / "broken.jsonl")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "zoo.predict: error: Preset" in done.stderr and "unknown builder" in done.stderr
