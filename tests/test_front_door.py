"""One front door (`nonlocal_tf.create_model`, `model_info`): every kind of
source by its name, the weights loaded once into the model asked for, the
class names and clip settings travelling with the model, ImageNet inflation
through the same door, and one-line refusals of what does not fit."""

from __future__ import annotations

import io
import json
import os
import tarfile

import keras
import numpy as np
import pytest

import nonlocal_tf
from nonlocal_tf import models, pretrained
from nonlocal_tf.models import functional
from nonlocal_tf.pretrained import sources
from tests.helpers import to_numpy
from tests.http_server import serve

DEMO = pretrained.DEMO
# Backend-neutral: the demo-sized tests run on every backend; the full-size ImageNet
# inflation and keras-hub's loader on TensorFlow only (the suite's time).
backends = pytest.mark.all_backends


def clip(seed=0, size=32):
    return np.random.default_rng(seed).uniform(0, 255, (2, 8, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def demo_model():
    return nonlocal_tf.create_model(DEMO.name)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, demo_model):
    """A run folder as zoo.train writes it (run.json and final.keras), made here."""
    folder = str(tmp_path_factory.mktemp("run"))
    sources.write_run_record(folder, {"model_info": demo_model.info, "command": {}})
    demo_model.save(os.path.join(folder, sources.FINAL_MODEL))
    return folder


def count_builds(monkeypatch) -> list:
    """Every model built from now on (`LeanFunctional` is the class of them all)."""
    built = []
    original = functional.LeanFunctional.__init__

    def init(self, *args, **kwargs):
        built.append(kwargs.get("name") or (args[2] if len(args) > 2 else None))
        original(self, *args, **kwargs)

    monkeypatch.setattr(functional.LeanFunctional, "__init__", init)
    return built


@backends
def test_kinds_of_source(tmp_path, demo_model, run_folder):
    demo_model.save(tmp_path / "m.keras")
    pretrained.save_to_preset(demo_model, str(tmp_path / "preset"), entry=DEMO)
    (tmp_path / "w.pkl").write_bytes(b"x")
    assert sources.kind_of("i3d_nl5_r50_8x8") == "variant"
    assert sources.kind_of("resnet50_image") == "variant"
    assert sources.kind_of("i3d_nl5_r50_8x8.k400") == "entry"
    assert sources.kind_of(str(tmp_path / "preset")) == "preset"
    assert sources.kind_of("hf://org/name") == "preset"
    assert sources.kind_of(run_folder) == "run"
    assert sources.kind_of(str(tmp_path / "m.keras")) == "keras"
    assert sources.kind_of(str(tmp_path / "w.pkl")) == "checkpoint"
    with pytest.raises(pretrained.UnknownSourceError, match="Unknown model 'i3d_nl5'"):
        sources.kind_of("i3d_nl5")
    with pytest.raises(pretrained.UnknownSourceError, match="not a preset"):
        sources.kind_of(str(tmp_path))


@backends
def test_model_info_of_each_kind(tmp_path, demo_model, run_folder):
    variant = nonlocal_tf.model_info("i3d_nl5_r50_32x4")
    assert (variant.frames, variant.rate, variant.spec.crop) == (32, 4, 224)
    assert variant.settings("test")["short_side"] == (256, 256)
    assert variant.settings("train")["short_side"] == (256, 320)
    assert variant.recipe == "official_frozen_bn" and variant.weights is None
    entry = nonlocal_tf.model_info("i3d_nl5_r50_8x8.k400")
    assert entry.recipe == "finetune" and entry.weights == "i3d_nl5_r50_8x8.k400"
    assert len(entry.class_names) == 400 and entry.class_names[0] == "abseiling"
    assert "CC-BY-NC" in entry.license and entry.num_classes == 400
    demo = nonlocal_tf.model_info(DEMO.name)
    assert (demo.frames, demo.rate, demo.spec.crop, demo.spec.test_crop) == (8, 1, 32, 32)
    demo_model.save(tmp_path / "m.keras")
    for source in (str(tmp_path / "m.keras"), run_folder):
        info = nonlocal_tf.model_info(source)
        assert info.class_names == DEMO.class_names and info.spec == demo.spec
        assert info.weights == source
    imagenet = nonlocal_tf.model_info("i3d_r50_8x8", weights="imagenet")
    assert imagenet.weights == "resnet50.imagenet_caffe2" and imagenet.recipe == "official"
    with pytest.raises(ValueError, match="weights without an architecture"):
        (tmp_path / "w.pkl").write_bytes(b"x")
        nonlocal_tf.model_info(str(tmp_path / "w.pkl"))


@backends
def test_an_entry_is_built_once_and_loaded_into_it(monkeypatch):
    built = count_builds(monkeypatch)
    model = nonlocal_tf.create_model(DEMO.name, classes=3)
    assert len(built) == 1  # no reference model to copy from
    assert model.output.shape[-1] == 3 and model.info["class_names"] is None
    reference = DEMO.build()
    reference.load_weights(pretrained.source_path(DEMO))
    for name in ("conv1", "res3_0_branch2a", "nonlocal_conv3_1", "res5_2_branch2c_bn"):
        for a, b in zip(
            model.get_layer(name).weights, reference.get_layer(name).weights, strict=True
        ):
            np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


@backends
def test_a_preset_and_a_run_are_built_once(tmp_path, demo_model, run_folder, monkeypatch):
    pretrained.save_to_preset(demo_model, str(tmp_path / "preset"), entry=DEMO)
    x = clip()
    want = to_numpy(demo_model(x))
    built = count_builds(monkeypatch)
    for source in (str(tmp_path / "preset"), run_folder):
        model = nonlocal_tf.create_model(source)
        np.testing.assert_allclose(to_numpy(model(x)), want, rtol=1e-6, atol=1e-7)
        assert model.info["class_names"] == list(DEMO.class_names)
    assert len(built) == 2
    new_head = nonlocal_tf.create_model(run_folder, classes=4)
    assert new_head.output.shape[-1] == 4
    np.testing.assert_array_equal(
        to_numpy(new_head.get_layer("nonlocal_conv4_3").weights[0]),
        to_numpy(demo_model.get_layer("nonlocal_conv4_3").weights[0]),
    )


@backends
def test_class_names_travel_with_the_model(tmp_path, demo_model):
    assert demo_model.info["class_names"] == list(DEMO.class_names)
    demo_model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")  # Keras alone keeps the record
    assert reloaded.info["class_names"] == list(DEMO.class_names)
    named = nonlocal_tf.create_model(DEMO.name, class_names=["no", "yes", "maybe"])
    assert named.output.shape[-1] == 3 and named.info["class_names"] == ["no", "yes", "maybe"]
    with pytest.raises(ValueError, match="3 class names for classes=2"):
        nonlocal_tf.create_model(DEMO.name, classes=2, class_names=["a", "b", "c"])
    plain = models.c2d_nl5_r50_8x8(width_per_group=8)
    assert plain.info["builder"] == "VideoResNet" and "class_names" not in plain.info


@backends
def test_weights_that_do_not_fit_are_refused_in_one_line(tmp_path, demo_model, run_folder):
    for change in ({"temporal_kernels": "i3d"}, {"nonlocal_mask": "none"}, {"depth": 101}):
        with pytest.raises(ValueError, match="differs from the architecture") as refused:
            nonlocal_tf.create_model(run_folder, **change)
        assert "\n" not in str(refused.value) and next(iter(change)) in str(refused.value)
    empty = tmp_path / "run_without_a_model"
    empty.mkdir()
    sources.write_run_record(str(empty), {"model_info": demo_model.info, "command": {}})
    with pytest.raises(ValueError, match="holds no model yet"):
        nonlocal_tf.create_model(str(empty))
    with pytest.raises(ValueError, match="no argument"):
        nonlocal_tf.create_model(DEMO.name, blocks=3)


@backends
def test_a_preset_of_another_architecture_is_refused(tmp_path, demo_model):
    folder = str(tmp_path / "preset")
    pretrained.save_to_preset(demo_model, folder, entry=DEMO)
    other = models.c2d_r50_8x8(width_per_group=8, classes=2)
    with pytest.raises(ValueError, match="differs from the architecture of preset"):
        pretrained.load_weights(other, folder)


def test_imagenet_inflation_through_the_same_door(cache, monkeypatch):
    """The README's ``models.i3d_r50_8x8(weights="resnet50.imagenet_caffe2")``
    and ``create_model(..., weights="imagenet")``: the official ImageNet
    tarball (built here in its format, served from 127.0.0.1), each 2D kernel
    inflated (repeated over time, divided by its length): a C2D model given a
    clip of one frame repeated computes the 2D network's features."""
    from nonlocal_tf import weights
    from tests import checkpoints
    from tests.test_weights import caffe2_file, patch_entry

    blobs = checkpoints.random_blobs(checkpoints.resnet2d_shapes(50), seed=3)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = caffe2_file(blobs)
        member = tarfile.TarInfo("pretrained_model/r50_pretrain_c2_model_iter450450_clean.pkl")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    with serve({"/pretrained_model.tar.gz": buffer.getvalue()}) as (url, _):
        patch_entry(monkeypatch, "resnet50.imagenet_caffe2", url=f"{url}/pretrained_model.tar.gz")
        readme = models.i3d_r50_8x8(weights="resnet50.imagenet_caffe2")
        door = nonlocal_tf.create_model("c2d_r50_8x8", weights="imagenet", classes=10)
    kernel = to_numpy(readme.get_layer("res2_0_branch2a").kernel)  # (3, 1, 1, 64, 64)
    want = blobs["res2_0_branch2a_w"][:, :, 0, 0].T / 3
    for t in range(3):
        np.testing.assert_allclose(kernel[t, 0, 0], want, rtol=1e-6)
    image = models.resnet50_image(include_top=False, pooling="avg", stem_pool_padding=False)
    weights.assign_blobs(image, {k: v for k, v in blobs.items() if not k.startswith("pred")})
    frame = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)).astype("float32")
    features = keras.Model(door.input, door.get_layer("pool5").output)
    still = np.repeat(frame[:, None], 8, axis=1)
    np.testing.assert_allclose(
        to_numpy(features(still))[0], to_numpy(image(frame))[0], rtol=1e-4, atol=1e-5
    )
    assert door.info["recipe"] == "official" and door.output.shape[-1] == 10


@pytest.mark.slow
def test_keras_hub_loads_a_preset(tmp_path, demo_model):
    """keras-hub's own loader reads the presets (the class registered by
    `nonlocal_tf.pretrained.hub_models`); its config is checked as data."""
    import keras_hub

    import nonlocal_tf.pretrained.hub_models  # noqa: F401

    folder = str(tmp_path / "preset")
    pretrained.save_to_preset(demo_model, folder, entry=DEMO)
    loaded = keras_hub.models.Backbone.from_preset(folder)
    assert isinstance(loaded, keras_hub.models.Backbone)
    x = clip(3)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(demo_model(x)), rtol=1e-6, atol=1e-7)
    path = os.path.join(folder, "config.json")
    config = json.load(open(path))
    config["config"]["arguments"]["classes"] = 10**9
    json.dump(config, open(path, "w"))
    with pytest.raises(ValueError, match=r"classes must be an integer in \[1, 100000\]"):
        keras_hub.models.Backbone.from_preset(folder)
