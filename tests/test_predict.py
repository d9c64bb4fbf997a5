"""What users ask for most, offline on the embedded demo model and generated
videos: zoo.predict over files, folders, lists and globs (broken files
skipped and listed), timelines of long videos, live sources read at real-time
pace, resumable feature extraction, and ONNX / TFLite files checked against
Keras."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from nonlocal_tf import data, inference, models, pretrained
from nonlocal_tf.data import synthetic

DEMO = "reappear_c2d_nl5_r50.demo"


def run(module, *args):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env |= {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3", "NONLOCAL_TF_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    paths = synthetic.write_reappear_videos(str(root / "clips"), per_class=2, seed=3)
    (root / "clips" / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    rng = np.random.default_rng(0)
    long = np.concatenate([synthetic.reappear_clip(rng, i % 2) for i in range(8)])  # 64 frames
    synthetic.write_video(str(root / "long.mp4"), long, fps=16)
    return root, paths


def test_demo_entry_names_its_classes():
    assert pretrained.DEMO.class_names == synthetic.CLASS_NAMES


@pytest.mark.slow
def test_predict_files_lists_and_skips(videos, tmp_path):
    root, paths = videos
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join([*paths[:3], str(root / "clips" / "broken.mp4"), "gone.mp4"]))
    out = tmp_path / "p.jsonl"
    done = run(
        "zoo.predict", f"--model={DEMO}", f"--input={listing}", f"--output={out}", "--top_k=2"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["video"] for r in rows] == paths[:3] and all(r["views"] == 30 for r in rows)
    assert all({name for name, _ in r["top_k"]} == set(synthetic.CLASS_NAMES) for r in rows)
    assert "3 of 5 videos classified, 2 skipped" in done.stderr
    assert "broken.mp4:" in done.stderr and "gone.mp4: file not found" in done.stderr
    folder_csv = tmp_path / "p.csv"  # a folder, one view, CSV
    done = run(
        "zoo.predict",
        f"--model={DEMO}",
        f"--input={root / 'clips'}",
        f"--output={folder_csv}",
        "--views=1",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with open(folder_csv, newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and {r["views"] for r in table} == {"1"}
    nothing = run("zoo.predict", f"--model={DEMO}", f"--input={root / 'clips' / 'broken.mp4'}")
    assert nothing.returncode == 1 and "0 of 1 videos classified" in nothing.stderr


def test_saved_model_scores_like_its_keras_model(tmp_path):
    from nonlocal_tf.export import export_saved_model

    model = pretrained.load_model(DEMO)
    views = np.random.default_rng(0).integers(0, 256, (3, 8, 32, 32, 3)).astype("float32")
    scorer = inference.Scorer.from_saved_model(export_saved_model(model, str(tmp_path / "sm")))
    assert scorer.num_classes == 2
    np.testing.assert_allclose(scorer(views), inference.Scorer.from_keras(model)(views), atol=1e-5)
    with pytest.raises(ValueError, match="no 'serve' signature"):
        import tensorflow as tf

        tf.saved_model.save(tf.Module(), str(tmp_path / "other"))
        inference.Scorer.from_saved_model(str(tmp_path / "other"))


@pytest.mark.slow
def test_timeline_of_a_long_video(videos, tmp_path):
    root, _ = videos
    out, png = tmp_path / "t.csv", tmp_path / "t.png"
    done = run(
        "zoo.predict",
        f"--model={DEMO}",
        f"--input={root / 'long.mp4'}",
        "--window=0.5",
        "--stride=0.5",
        f"--output={out}",
        f"--timeline_png={png}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["start_s"]) for r in rows] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "window_s, stride_s, rate",
    [(None, None, 1), (0.5, 0.25, 2), (0.25, 0.75, 2), (1.0, 1.0, 1), (8.0, 1.0, 1)],
    ids=["defaults", "overlapping", "window_shorter_than_clip", "window_longer", "past_the_end"],
)
def test_timeline_streams_the_video(videos, monkeypatch, window_s, stride_s, rate):
    """The timeline decodes the video once and keeps about one window of
    frames; its windows and scores are those of scoring every window from
    all frames at once."""
    import weakref

    root, _ = videos
    path = str(root / "long.mp4")
    spec = dataclasses.replace(demo_spec(), rate=rate)
    frames = data.decode.read_all_frames(path, short_side=spec.test_short_side)
    fingerprint = inference.Scorer(  # each view's mean pixel per frame: exact and cheap
        lambda views: views.mean(axis=(2, 3, 4)), spec.clip_len
    )
    alive, most = [], [0]

    def counted(*args, **kwargs):
        for frame in data.decode.iter_frames(*args, **kwargs):
            alive.append(weakref.ref(frame))
            most[0] = max(most[0], sum(ref() is not None for ref in alive))
            yield frame

    monkeypatch.setattr(inference, "iter_frames", counted)
    windows, fps = inference.timeline(path, fingerprint, spec, window_s, stride_s)
    size = max(round((window_s or spec.clip_len * rate / fps) * fps), 1)
    step = max(round((stride_s or size / fps / 2) * fps), 1)
    starts = list(range(0, max(len(frames) - size, 0) + 1, step))
    assert [round(w.start_s * fps) for w in windows] == starts
    for w, start in zip(windows, starts, strict=True):
        clip = frames[inference.window_indices(start, size, spec, len(frames))]
        want = fingerprint(inference.one_view(clip, spec)[None])[0]
        np.testing.assert_allclose(w.scores, want, rtol=1e-6)
    assert len(alive) == len(frames)  # decoded once, in order
    assert most[0] <= max(size, spec.clip_len * rate) + step + 1, (most[0], len(frames))


def demo_scorer(delay: float = 0.0):
    model = pretrained.load_model(DEMO)
    score = inference.Scorer.from_keras(model)
    if not delay:
        return score

    def slow(views):
        time.sleep(delay)
        return score(views)

    return inference.Scorer(slow, score.num_classes)


def demo_spec():
    return data.ClipSpec.at_size(8, 1, 32)


def test_live_source_at_real_time_pace(videos):
    root, _ = videos
    started = time.perf_counter()
    # A prediction every quarter second over a half-second ring buffer: a poll may come up to
    # four frames late (a loaded 2-core machine) before a frame goes by unscored.
    predictions = list(
        inference.live(str(root / "long.mp4"), demo_scorer(), demo_spec(), stride_s=0.25)
    )
    elapsed = time.perf_counter() - started
    assert elapsed >= 3.5  # 64 frames at 16 fps, read as they would play
    assert len(predictions) >= 5 and all(p.dropped_frames == 0 for p in predictions)
    times = [p.time_s for p in predictions]
    assert times == sorted(times) and times[-1] > 3.0


def test_live_source_slower_than_real_time_drops_frames(videos):
    root, _ = videos
    predictions = list(
        inference.live(str(root / "long.mp4"), demo_scorer(delay=1.0), demo_spec(), stride_s=0.25)
    )
    assert predictions and sum(p.dropped_frames for p in predictions) > 0


def test_unreachable_source_is_a_clear_error():
    with pytest.raises(data.VideoDecodeError, match="127.0.0.1"):
        list(inference.live("http://127.0.0.1:9/none.mp4", demo_scorer(), demo_spec()))


@pytest.mark.slow
def test_extract_features_resumes(videos, tmp_path):
    root, paths = videos
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join([*paths[:2], str(root / "clips" / "broken.mp4")]))
    out = tmp_path / "features"
    args = [
        f"--model={DEMO}",
        f"--input={listing}",
        f"--output_dir={out}",
        "--views=1",
        "--shard_size=1",
    ]
    done = run("zoo.extract_features", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    listing.write_text("\n".join([*paths[:3], str(root / "clips" / "broken.mp4")]))
    again = run("zoo.extract_features", *args)
    assert again.returncode == 0 and "1 videos to do (3 already done)" in again.stdout
    with open(out / "index.csv", newline="") as f:
        index = list(csv.DictReader(f))
    assert [r["video"] for r in index] == paths[:3]
    features = [np.load(out / f"features-{int(r['shard']):05d}.npy")[int(r["row"])] for r in index]
    assert all(v.shape == (256,) and np.isfinite(v).all() for v in features)  # res5 of width 8
    with open(out / "skipped.csv", newline="") as f:
        assert [r["video"] for r in csv.DictReader(f)] == [str(root / "clips" / "broken.mp4")]
    model = pretrained.load_model(DEMO)
    assert models.feature_extractor(model).output.shape == (None, 256)
    with pytest.raises(ValueError, match="no layer 'nope'"):
        models.feature_extractor(model, "nope")


@pytest.mark.slow
def test_onnx_and_tflite_files_agree_with_keras(tmp_path):
    done = run(
        "zoo.export",
        f"--model={DEMO}",
        f"--output_dir={tmp_path}",
        "--onnx",
        "--tflite=float32,float16,dynamic_int8",
        "--clip_size=32",
        "--check_clips=6",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # Quiet without --verbose (issue 37 rows 5, 9: 33 kB of TensorFlow and tf2onnx INFO lines
    # before; TFLite's one line naming its CPU delegate stays).
    from tests.test_field_findings import our_lines

    lines = our_lines(done.stderr)
    assert len("\n".join(lines)) < 2048, lines
    assert not [line for line in lines if re.match(r"[IEW]\d{4} ", line)], lines
    rows = {r["format"]: r for r in json.loads((tmp_path / "edge_report.json").read_text())}
    assert rows["ONNX Runtime"]["max_abs_difference"] < 1e-4
    assert rows["TFLite float32"]["max_abs_difference"] < 1e-4
    assert rows["TFLite float16"]["max_abs_difference"] < 2e-2
    assert rows["ONNX Runtime"]["max_log_difference"] < 1e-3
    assert rows["TFLite float32"]["max_log_difference"] < 1e-3
    assert rows["TFLite dynamic_int8"]["top1_agreement"] >= 0.5
    assert all(r["top1_agreement"] == 1.0 for k, r in rows.items() if "int8" not in k)
    # The class names travel in every file, outputs named for what they are.
    import onnxruntime
    import tensorflow as tf

    from nonlocal_tf import export

    names = ["different", "reappears"]
    assert export.onnx_metadata(str(tmp_path / "model.onnx"))["class_names"] == names
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    assert [o.name for o in session.get_outputs()] == ["probs"]
    for q in ("float32", "dynamic_int8"):
        path = str(tmp_path / f"model_{q}.tflite")
        assert export.tflite_metadata(path)["class_names"] == names
        signature = tf.lite.Interpreter(model_path=path).get_signature_list()["serve"]
        assert signature["outputs"] == ["probs"]
    saved = tf.saved_model.load(str(tmp_path / "saved_model"))
    top = saved.serve(tf.zeros((1, 8, 32, 32, 3)))["top_class"].numpy()[0].decode()
    assert top in names
    assert (tmp_path / "saved_model" / "assets" / "class_names.txt").read_text().split() == names


@pytest.mark.slow
@pytest.mark.parametrize(
    "build",
    [
        dict(
            temporal_kernels="i3d",
            frozen_bn=True,
            stem="resnet_video",
            nonlocal_kwargs={"instantiation": "dot_product"},
        ),
        dict(
            temporal_kernels="c2d",
            stem="resnet_video_org",
            nonlocal_kwargs={"instantiation": "concatenation", "pool_position": "after"},
        ),
    ],
    ids=["i3d_frozen_bn_dot_product", "c2d_org_stem_concatenation"],
)
def test_onnx_and_tflite_export_of_other_variants(build, tmp_path):
    """Every non-local flavour and both stems export: the ONNX and TFLite
    files give the Keras model's probabilities (the chunked path is swapped
    out while exporting; TFLite takes only builtin ops of rank <= 5)."""
    import onnxruntime
    import tensorflow as tf

    from nonlocal_tf.export import export_onnx, export_tflite

    frames = 8 if build["stem"] == "resnet_video" else 16
    model = models.VideoResNet(
        nonlocal_mask="nl5",
        width_per_group=4,
        classes=3,
        include_preprocessing=True,
        input_shape=(frames, 64, 64, 3),
        nonlocal_group_size=None,
        **build,
    )
    for layer in model.layers:  # blocks that are not the identity, with chunked queries
        if layer.name.startswith("nonlocal"):
            layer.chunk_size = 16
            for weight in layer.weights:
                weight.assign(np.full(weight.shape, 0.05, "float32"))
    x = np.random.default_rng(1).integers(0, 256, (2, frames, 64, 64, 3)).astype("float32")
    want = np.asarray(model.predict(x, verbose=0))
    session = onnxruntime.InferenceSession(export_onnx(model, str(tmp_path / "m.onnx")))
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    interpreter = tf.lite.Interpreter(model_path=export_tflite(model, str(tmp_path / "m.tflite")))
    interpreter.allocate_tensors()
    source, result = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    for clip, probs in zip(x, want, strict=True):
        interpreter.set_tensor(source["index"], clip[None])
        interpreter.invoke()
        np.testing.assert_allclose(interpreter.get_tensor(result["index"])[0], probs, atol=1e-5)
    assert all(
        layer.implementation in ("auto",)
        for layer in model.layers
        if layer.name.startswith("nonlocal")
    )
    with pytest.raises(ValueError, match="must be one of .*Received: int4"):
        export_tflite(model, str(tmp_path / "x.tflite"), "int4")
