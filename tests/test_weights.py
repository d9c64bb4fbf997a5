"""Pretrained weights: checkpoints built in each source format with the real
names and shapes, served from 127.0.0.1, loaded through ``weights=``, and
checked against an independent PyTorch forward pass of the checkpoint arrays."""

import dataclasses
import io
import logging
import os
import pickle
import struct
import tarfile

import keras
import numpy as np
import pytest

import nonlocal_tf.weights as nlw
from nonlocal_tf import models, pretrained
from nonlocal_tf.pretrained import catalog
from tests import checkpoints, reference, torch_reference
from tests.helpers import to_numpy
from tests.http_server import serve

NL5 = (
    "nonlocal_conv3_1",
    "nonlocal_conv3_3",
    "nonlocal_conv4_1",
    "nonlocal_conv4_3",
    "nonlocal_conv4_5",
)


class Py2Pickler(pickle._Pickler):
    """Writes pickles as Python 2's cPickle did: byte strings as STRING opcodes
    and numpy under ``numpy.core``, so loading needs ``encoding='latin1'``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj):
        n = len(obj)
        self.write(
            (pickle.SHORT_BINSTRING + bytes([n]))
            if n < 256
            else (pickle.BINSTRING + struct.pack("<i", n))
        )
        self.write(obj)
        self.memoize(obj)

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)

    dispatch[bytes] = save_bytes
    dispatch[type] = save_global
    dispatch[type(len)] = save_global
    dispatch[type(lambda: 0)] = save_global


def py2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def caffe2_file(blobs, wrapped=True) -> bytes:
    content = dict(blobs)
    content.update({f"{n}_momentum": np.zeros_like(v) for n, v in list(blobs.items())[:5]})
    content["lr"] = np.array([0.01], dtype=np.float32)
    content["model_iter"] = 400001
    return py2_pickle({"blobs": content} if wrapped else content)


@pytest.fixture(scope="module")
def official_blobs():
    return checkpoints.random_blobs(checkpoints.official_shapes(), seed=0)


def patch_entry(monkeypatch, name, **changes):
    entry = dataclasses.replace(catalog.CATALOG[name], **changes)
    table = {**catalog.CATALOG, name: entry}
    monkeypatch.setattr(catalog, "CATALOG", table)
    monkeypatch.setattr(pretrained, "CATALOG", table)
    return entry


def video(frames=8, size=64, seed=0):
    return np.random.default_rng(seed).normal(size=(1, frames, size, size, 3)).astype("float32")


def test_blob_list_is_the_official_one(official_blobs):
    assert len(official_blobs) == 327
    model = models.i3d_nl5_r50_8x8()
    report = nlw.assign_blobs(model, official_blobs)
    assert report.ok and len(report.assigned) == 327
    affine = checkpoints.to_affine(official_blobs)
    assert len(affine) == 201
    report = nlw.assign_blobs(models.i3d_nl5_r50_32x4(), affine)
    assert report.ok and len(report.assigned) == 201


def _no_second_conversion(*args, **kwargs):
    raise AssertionError("the checkpoint was converted a second time")


@pytest.mark.slow
@pytest.mark.parametrize("wrapped", [True, False])
def test_official_caffe2_through_catalogue(official_blobs, cache, monkeypatch, caplog, wrapped):
    from nonlocal_tf.pretrained import loader

    monkeypatch.setattr(loader, "_NOTIFIED", set())  # the license is warned once per process
    files = {"/i3d_nl.pkl": caffe2_file(official_blobs, wrapped)}
    with serve(files) as (url, server):
        patch_entry(monkeypatch, "i3d_nl5_r50_8x8.k400", url=f"{url}/i3d_nl.pkl")
        with caplog.at_level(logging.WARNING, logger="nonlocal_tf"):
            model = models.i3d_nl5_r50_8x8(
                weights="i3d_nl5_r50_8x8.k400", classifier_activation=None
            )
        assert "CC-BY-NC" in caplog.text
        x = video()
        want = torch_reference.forward(official_blobs, x, nonlocal_names=NL5)
        got = to_numpy(model(x, training=False))
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
        # One non-local block, in NumPy from the checkpoint arrays.
        block = model.get_layer("nonlocal_conv3_1")
        probe = keras.Model(model.input, [block.input, block.output])
        nl_in, nl_out = (to_numpy(t) for t in probe(x, training=False))
        p = "nonlocal_conv3_1"

        def pw(name):
            w = official_blobs[f"{p}_{name}_w"]
            return w.reshape(w.shape[0], w.shape[1]).T, official_blobs[f"{p}_{name}_b"]

        weights = {n: pw(n) for n in ("theta", "phi", "g", "out")}
        weights["bn"] = tuple(official_blobs[f"{p}_bn_{k}"] for k in ("s", "b", "rm", "riv"))
        want_nl = reference.nonlocal_block(
            nl_in, weights, instantiation="embedded_gaussian", pool=(1, 2, 2)
        )
        np.testing.assert_allclose(nl_out, want_nl, rtol=1e-4, atol=1e-4 * np.abs(want_nl).max())
        # Converted once: a second load neither downloads nor reads the checkpoint again.
        requests = len(server.requests)
        converted = list((cache / "converted").iterdir())
        assert len(converted) == 1 and converted[0].name.endswith(".npz")
        monkeypatch.setattr(nlw, "read_blobs", _no_second_conversion)
        headless = models.i3d_nl5_r50_8x8(
            weights="i3d_nl5_r50_8x8.k400", include_top=False, pooling="avg"
        )
        new_head = models.i3d_nl5_r50_8x8(weights="i3d_nl5_r50_8x8.k400", classes=7)
        assert len(server.requests) == requests
    features = to_numpy(headless(x, training=False))
    assert features.shape == (1, 2048)
    assert new_head.get_layer("pred").kernel.shape == (2048, 7)
    np.testing.assert_array_equal(
        to_numpy(new_head.get_layer("res5_2_branch2c").kernel),
        to_numpy(model.get_layer("res5_2_branch2c").kernel),
    )


@pytest.mark.slow
def test_affine_checkpoint_grouped_nonlocal(official_blobs, tmp_path, cache):
    affine = checkpoints.to_affine(official_blobs)
    path = tmp_path / "affine.pkl"
    path.write_bytes(caffe2_file(affine))
    model = models.i3d_nl5_r50_32x4(weights=str(path), classifier_activation=None)
    x = video(frames=32, size=32)
    want = torch_reference.forward(affine, x, nonlocal_names=NL5, affine=True, group_res3=4)
    np.testing.assert_allclose(to_numpy(model(x)), want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


@pytest.mark.slow
def test_pyslowfast_checkpoint(official_blobs, tmp_path, cache):
    import torch

    path = tmp_path / "I3D_NLN_8x8_R50.pyth"
    torch.save({"epoch": 196, "model_state": checkpoints.to_pyslowfast(official_blobs)}, path)
    with serve({"/I3D_NLN_8x8_R50.pyth": path.read_bytes()}) as (url, _):
        model = models.i3d_nl5_r50_8x8(
            weights=f"{url}/I3D_NLN_8x8_R50.pyth",
            stem_pool_padding=True,
            classifier_activation=None,
        )
    x = video()
    want = torch_reference.forward(official_blobs, x, nonlocal_names=NL5, flavour="pyslowfast")
    np.testing.assert_allclose(to_numpy(model(x)), want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


@pytest.mark.slow
@pytest.mark.parametrize("instantiation", ["dot_product", "embedded_gaussian", "gaussian"])
def test_mmaction2_checkpoint(official_blobs, tmp_path, cache, instantiation):
    import torch

    path = tmp_path / "i3d_nl.pth"
    state = checkpoints.to_mmaction2(official_blobs, instantiation)
    torch.save({"meta": {"mmaction_version": "1.2.0", "epoch": 100}, "state_dict": state}, path)
    entry = catalog.CATALOG[f"i3d_nl5_r50_32x2.k400_mmaction2_{instantiation}"]
    model = entry.build(weights=str(path), classifier_activation=None)
    x = video(frames=32, size=48)
    blobs = checkpoints.mmaction2_blobs(official_blobs, instantiation)
    want = torch_reference.forward(
        blobs, x, nonlocal_names=NL5, flavour="mmaction2", instantiation=instantiation, eps=1e-5
    )
    np.testing.assert_allclose(to_numpy(model(x)), want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


@pytest.fixture(scope="module")
def imagenet_blobs():
    return checkpoints.random_blobs(checkpoints.resnet2d_shapes(50), seed=1)


@pytest.mark.slow
def test_torchvision_and_inflation(imagenet_blobs, tmp_path, cache):
    import torch

    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(checkpoints.to_torchvision(imagenet_blobs), path)
    image_model = models.resnet50_image(weights=str(path), classifier_activation=None)
    x = np.random.default_rng(3).normal(size=(2, 64, 64, 3)).astype("float32")
    want = torch_reference.forward_2d(imagenet_blobs, x)
    np.testing.assert_allclose(
        to_numpy(image_model(x)), want, rtol=1e-3, atol=1e-3 * np.abs(want).max()
    )
    # Caffe2 ImageNet pickle inflated into C2D: identical frames give the 2D logits.
    pkl = tmp_path / "r50.pkl"
    pkl.write_bytes(caffe2_file(imagenet_blobs))
    video_model = models.VideoResNet(
        temporal_kernels="c2d", classes=1000, classifier_activation=None
    )
    report = nlw.load_weights(video_model, str(pkl))
    assert "conv1" in report.inflated and report.ok
    unpadded = models.ImageResNet(stem_pool_padding=False, classifier_activation=None)
    nlw.load_weights(unpadded, str(pkl))
    clip = np.repeat(x[:1, None], 8, axis=1)
    np.testing.assert_allclose(
        to_numpy(video_model(clip)),
        to_numpy(unpadded(x[:1])),
        rtol=1e-4,
        atol=1e-4 * np.abs(want).max(),
    )
    # I3D: 3x1x1 kernels are the 2D kernels repeated and divided by 3.
    i3d = models.i3d_r50_8x8(classes=1000)
    nlw.load_weights(i3d, str(pkl))
    kernel = to_numpy(i3d.get_layer("res2_0_branch2a").kernel)
    np.testing.assert_allclose(
        kernel[1, 0, 0], imagenet_blobs["res2_0_branch2a_w"][:, :, 0, 0].T / 3, rtol=1e-6
    )


@pytest.mark.slow
def test_imagenet_tarball_entry(imagenet_blobs, cache, monkeypatch):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = caffe2_file(imagenet_blobs)
        info = tarfile.TarInfo("pretrained_model/r50_pretrain_c2_model_iter450450_clean.pkl")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with serve({"/pretrained_model.tar.gz": buffer.getvalue()}) as (url, _):
        patch_entry(monkeypatch, "resnet50.imagenet_caffe2", url=f"{url}/pretrained_model.tar.gz")
        model = pretrained.load_model("resnet50.imagenet_caffe2", classifier_activation=None)
    x = np.random.default_rng(4).normal(size=(1, 64, 64, 3)).astype("float32")
    want = torch_reference.forward_2d(imagenet_blobs, x)
    np.testing.assert_allclose(to_numpy(model(x)), want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def tiny_blobs():
    shapes = {}
    for layer in tiny_model().layers:
        if not layer.weights:
            continue
        if layer.name == "pred":
            shapes["pred_w"], shapes["pred_b"] = (3, layer.kernel.shape[0]), (3,)
        elif layer.name.endswith("_bn"):
            for k in ("s", "b", "rm", "riv"):
                shapes[f"{layer.name}_{k}"] = (layer.gamma.shape[0],)
        else:
            k = layer.kernel.shape
            shapes[f"{layer.name}_w"] = (k[-1], k[-2], *k[:-2])
    return checkpoints.random_blobs(shapes, seed=5)


def tiny_model():
    return models.c2d_r50_8x8(width_per_group=4, classes=3)


def test_strict_conversion_errors():
    blobs = tiny_blobs()
    assert nlw.assign_blobs(tiny_model(), blobs).ok
    missing = {k: v for k, v in blobs.items() if not k.startswith("res4_2_branch2b")}
    with pytest.raises(nlw.ConversionError, match="missing: res4_2_branch2b"):
        nlw.assign_blobs(tiny_model(), missing)
    extra = {**blobs, "res6_0_branch2a_w": np.zeros((1, 1, 1, 1, 1), np.float32)}
    with pytest.raises(nlw.ConversionError, match="unmatched: res6_0_branch2a_w"):
        nlw.assign_blobs(tiny_model(), extra)
    wrong = {**blobs, "res3_1_branch2b_w": np.zeros((8, 8, 1, 1, 1), np.float32)}
    model = tiny_model()
    before = to_numpy(model.get_layer("conv1").kernel)
    with pytest.raises(nlw.ConversionError, match="shape mismatch res3_1_branch2b_w"):
        nlw.assign_blobs(model, wrong)
    np.testing.assert_array_equal(
        to_numpy(model.get_layer("conv1").kernel), before
    )  # nothing assigned
    report = nlw.assign_blobs(tiny_model(), extra, strict=False)
    assert report.unused_blobs == ["res6_0_branch2a_w"]


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"blobs": {"conv1_w": Evil()}}, protocol=2))
    with pytest.raises(nlw.UnsafeCheckpointError, match="system"):
        nlw.load_weights(tiny_model(), str(path))
    assert not marker.exists()
    path.write_bytes(pickle.dumps({"blobs": {"x": eval}}, protocol=2))
    with pytest.raises(nlw.UnsafeCheckpointError, match="eval"):
        nlw.load_checkpoint(str(path))


def test_truncated_and_foreign_files(tmp_path):
    data = caffe2_file(tiny_blobs())
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(nlw.CheckpointFormatError, match="not a readable pickle"):
        nlw.load_weights(tiny_model(), str(path))
    other = tmp_path / "notes.pkl"
    other.write_bytes(b"hello world")
    with pytest.raises(nlw.CheckpointFormatError):
        nlw.load_weights(tiny_model(), str(other))
    with pytest.raises(ValueError, match="weights="):
        nlw.load_weights(tiny_model(), "no_such_model.k400")


def test_hash_mismatch_leaves_no_file(cache, monkeypatch):
    data = caffe2_file(tiny_blobs())
    with serve({"/w.pkl": data}) as (url, _):
        patch_entry(monkeypatch, "c2d_r50_8x8.k400", url=f"{url}/w.pkl", sha256="0" * 64)
        with pytest.raises(nlw.ChecksumError, match="expected 0000.*got [0-9a-f]{64}"):
            pretrained.source_path(catalog.CATALOG["c2d_r50_8x8.k400"])
    leftovers = [p for p in cache.rglob("*") if p.is_file()]
    assert leftovers == []


def test_interrupted_download_resumes(cache):
    data = caffe2_file(tiny_blobs())
    with serve({"/w.pkl": data}, cut_after={"/w.pkl": len(data) // 3}) as (url, server):
        path = nlw.fetch(f"{url}/w.pkl", progress=False)
    with open(path, "rb") as f:
        assert f.read() == data
    assert server.requests[0][1] is None and server.requests[1][1] == f"bytes={len(data) // 3}-"
    assert not os.path.exists(path + ".part")


def test_unknown_hash_is_recorded_then_verified(cache, caplog):
    data = caffe2_file(tiny_blobs())
    files = {"/w.pkl": data}
    with serve(files) as (url, _):
        with caplog.at_level(logging.WARNING, logger="nonlocal_tf"):
            path = nlw.fetch(f"{url}/w.pkl", progress=False)
        assert "recorded" in caplog.text
        os.remove(path)
        files["/w.pkl"] = data[:-10] + b"x" * 10  # the server now serves another file
        with pytest.raises(nlw.ChecksumError):
            nlw.fetch(f"{url}/w.pkl", progress=False)
    assert not os.path.exists(path)


def test_offline_error_says_where_to_put_the_file(cache, monkeypatch):
    monkeypatch.setenv("NONLOCAL_TF_OFFLINE", "1")
    with pytest.raises(
        nlw.DownloadError, match=r"put it at .*i3d_nonlocal_8x8_IN_pretrain_400k\.pkl"
    ):
        models.i3d_nl5_r50_8x8(weights="i3d_nl5_r50_8x8.k400")


def test_unreachable_server_is_a_clear_error(cache):
    with serve({}) as (url, _):
        with pytest.raises(nlw.DownloadError, match="HTTP 404"):
            nlw.fetch(f"{url}/missing.pkl", progress=False)


def test_tarball_with_parent_paths_is_refused(tmp_path):
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("ok.txt", "../escaped.txt"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
    target = tmp_path / "out"
    with pytest.raises(nlw.UnsafeArchiveError, match="outside"):
        nlw.safe_extract(str(archive), str(target))
    assert not (tmp_path / "escaped.txt").exists() and not (target / "ok.txt").exists()
    link = tmp_path / "link.tar"
    with tarfile.open(link, "w") as tar:
        info = tarfile.TarInfo("evil")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(nlw.UnsafeArchiveError, match="link"):
        nlw.safe_extract(str(link), str(target))


def test_architecture_mismatch_is_refused(cache, monkeypatch, official_blobs):
    with serve({"/w.pkl": caffe2_file(official_blobs)}) as (url, _):
        patch_entry(monkeypatch, "i3d_nl5_r50_8x8.k400", url=f"{url}/w.pkl")
        with pytest.raises(nlw.ConversionError, match="differs from the architecture") as no:
            models.i3d_nl5_r50_8x8(
                weights="i3d_nl5_r50_8x8.k400", nonlocal_kwargs={"instantiation": "dot_product"}
            )
        assert "instantiation" in str(no.value) and "create_model(" in str(no.value)


def test_catalogue_entries_are_complete():
    names = [e.name for e in catalog.ENTRIES]
    assert len(names) == len(set(names))
    official = [
        e
        for e in catalog.ENTRIES
        if e.url.startswith(catalog.OFFICIAL_URL) and e.dataset == "Kinetics-400"
    ]
    assert len(official) == 15
    assert sum("pyslowfast" in e.name for e in catalog.ENTRIES) == 3
    for entry in catalog.ENTRIES:
        assert entry.format in catalog.FORMATS
        assert (
            entry.name.startswith(entry.builder + ".")  # "<model>.<tag>"
            or entry.dataset == "ImageNet-1k"
            or entry is catalog.DEMO
        )
        assert hasattr(models, entry.builder) and entry.frames >= 1 and entry.rate >= 1
        assert (
            entry.license
            and entry.metrics_source
            and entry.url.startswith(("https://", "package://"))
        )
        if entry.url.startswith(catalog.OFFICIAL_URL):
            assert "CC-BY-NC" in entry.license


def test_model_zoo_table_is_current():
    from zoo import make_model_zoo

    path = os.path.join(os.path.dirname(make_model_zoo.__file__), "MODEL_ZOO.md")
    with open(path) as f:
        assert f.read() == make_model_zoo.render(), (
            "zoo/MODEL_ZOO.md is stale: run python -m zoo.make_model_zoo"
        )


def test_convert_command(tmp_path, cache):
    import subprocess
    import sys

    pkl = tmp_path / "tiny.pkl"
    pkl.write_bytes(caffe2_file(tiny_blobs()))
    cmd = [
        sys.executable,
        "-m",
        "zoo.convert",
        f"--source={pkl}",
        "--model=c2d_r50_8x8",
        '--builder_kwargs={"width_per_group": 4}',
        f"--output_dir={tmp_path / 'out'}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "blobs assigned" in done.stdout
    model = models.c2d_r50_8x8(width_per_group=4, classes=3)
    model.load_weights(tmp_path / "out" / "c2d_r50_8x8.weights.h5")
    np.testing.assert_allclose(
        to_numpy(model.get_layer("conv1").kernel),
        np.transpose(tiny_blobs()["conv1_w"], (2, 3, 4, 1, 0)),
    )
    bad = tmp_path / "bad.pkl"
    blobs = tiny_blobs()
    del blobs["res2_0_branch2a_w"]
    bad.write_bytes(caffe2_file(blobs))
    cmd[3] = f"--source={bad}"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "res2_0_branch2a_w" in done.stderr


def test_demo_entry_loads_offline(cache, monkeypatch):
    from nonlocal_tf.data.synthetic import reappear_dataset

    monkeypatch.setenv("NONLOCAL_TF_OFFLINE", "1")
    model = pretrained.load_model("reappear_c2d_nl5_r50.demo")
    clips, labels = reappear_dataset(300, seed=11)
    accuracy = float(
        np.mean(np.argmax(to_numpy(model(clips.astype("float32"), training=False)), -1) == labels)
    )
    assert accuracy > 0.7  # 79.1 % measured by make demo on 1,000 clips


@pytest.mark.parametrize("instantiation", ["embedded_gaussian", "gaussian", "concatenation"])
@pytest.mark.parametrize("frozen_bn", [False, True])
def test_model_to_blobs_inverts_assign_blobs(instantiation, frozen_bn):
    def build():
        return models.VideoResNet(
            nonlocal_mask="nl5",
            frozen_bn=frozen_bn,
            width_per_group=4,
            classes=3,
            nonlocal_kwargs={"instantiation": instantiation},
        )

    source = build()
    rng = np.random.default_rng(0)
    for w in source.weights:
        w.assign(
            rng.uniform(0.5, 1.0, w.shape) if "variance" in w.path else rng.normal(0, 0.1, w.shape)
        )
    blobs = nlw.model_to_blobs(source)
    assert blobs["conv1_w"].shape == (4, 3, 5, 7, 7) and blobs["pred_w"].shape == (3, 128)
    target = build()
    report = nlw.assign_blobs(target, blobs)
    assert report.ok and len(report.assigned) == len(blobs)
    for a, b in zip(source.weights, target.weights, strict=True):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def test_each_load_hashes_the_file_once(cache, monkeypatch):
    from nonlocal_tf.weights import download

    calls = []
    real = download.sha256_of
    monkeypatch.setattr(download, "sha256_of", lambda path: calls.append(path) or real(path))
    data = caffe2_file(tiny_blobs())
    with serve({"/w.pkl": data}) as (url, _):
        path, digest = nlw.fetch_verified(
            f"{url}/w.pkl", progress=False
        )  # download, record the hash
        assert len(calls) == 1
        assert nlw.fetch_verified(f"{url}/w.pkl", progress=False) == (
            path,
            digest,
        )  # cached, verified
        assert len(calls) == 2
        os.remove(
            os.path.join(nlw.cache_dir(), "hashes.json")
        )  # a cache from before hashes were recorded
        nlw.fetch_verified(f"{url}/w.pkl", progress=False)
        assert download._recorded_hashes()[f"{url}/w.pkl"] == digest
