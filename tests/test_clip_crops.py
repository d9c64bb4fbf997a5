"""Augmenting on the accelerator (`nonlocal_tf.layers.ClipCrops`): the host
sends a clip's frames uncropped and unresized in a window with where each
output pixel reads them (`numpy_transforms.prepare`), and the layer's views
are the host pipeline's pixels, on every backend, in a saved model and in
the stream `fit` reads (`training.cut_views`); a test video's clips travel
whole and the accelerator cuts their 3 crops (`evaluation.evaluate`)."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from nonlocal_tf import data, evaluation, prefetch, training
from nonlocal_tf.data import grain_pipeline, numpy_transforms
from nonlocal_tf.data.spec import KINETICS_8X8, MODES
from nonlocal_tf.layers import ClipCrops
from tests.test_data import SPEC, make_tree

pytestmark = pytest.mark.all_backends

# Frames 48x64 resized to short sides 50..60 (train) or 52 (val): interpolation everywhere.
RESIZING = dataclasses.replace(SPEC, train_scale=(50, 60), val_short_side=52)


def device_views(frames: np.ndarray, seeds, mode: str, spec) -> np.ndarray:
    """Each seed's clip cut by the layer from the window the host would send."""
    side = numpy_transforms.window_side(MODES[mode], spec)
    parts = [
        numpy_transforms.prepare(frames, np.random.default_rng(s), MODES[mode], spec, side)
        for s in seeds
    ]
    windows = np.stack([p["frames"] for p in parts])
    where = np.stack([p["geometry"] for p in parts])
    return keras.ops.convert_to_numpy(ClipCrops()((windows, where)))


def host_views(frames: np.ndarray, seeds, mode: str, spec) -> np.ndarray:
    rng = [np.random.default_rng(s) for s in seeds]
    return np.stack([numpy_transforms.augment(frames, r, MODES[mode], spec) for r in rng])


@pytest.mark.parametrize(
    "height,width,spec",
    [
        (256, 340, KINETICS_8X8),  # Kinetics as stored: scales 256..320 of 256, an upscale
        (320, 427, KINETICS_8X8),  # stored at the top of the scale range: a downscale
        (480, 360, KINETICS_8X8),  # tall, above the window: resized on the host
        (48, 64, RESIZING),
    ],
)
@pytest.mark.parametrize("mode", ["train", "val"])
def test_views_are_the_host_pipelines(height, width, spec, mode):
    frames = np.random.default_rng(height).integers(0, 256, (3, height, width, 3), np.uint8)
    seeds = range(6)
    got = device_views(frames, seeds, mode, spec)
    expected = host_views(frames, seeds, mode, spec)
    assert got.shape == expected.shape == (6, 3, spec.crop, spec.crop, 3)
    assert got.dtype == np.uint8
    # The same float32 arithmetic in the same order: equal but where a
    # compiler fuses a multiply-add (then by one level, as the issue allows).
    assert np.abs(got.astype(int) - expected).max() <= 1
    assert (got != expected).mean() < 1e-3


@pytest.mark.parametrize(
    "height,width,spec,window",
    [
        (256, 340, KINETICS_8X8, (256, 352)),  # Kinetics as stored: crops, no resize
        (340, 256, KINETICS_8X8, (352, 256)),  # tall: the crops go down
        (320, 427, KINETICS_8X8, (320, 448)),  # a downscale, sent as stored
        (200, 300, KINETICS_8X8, (224, 320)),  # an upscale
        (480, 640, KINETICS_8X8, (256, 352)),  # above the window: resized on the host
        (48, 64, RESIZING, (64, 64)),
    ],
)
def test_a_test_videos_views_are_the_host_pipelines(height, width, spec, window):
    """A test video's K clips travel as they are (sides rounded up to 32),
    smaller than their 3K views; the accelerator cuts the 3 crops of each."""
    spec = dataclasses.replace(spec, num_test_clips=2)
    frames = np.random.default_rng(width).integers(0, 256, (2, 3, height, width, 3), np.uint8)
    mode = MODES["test"]
    part = numpy_transforms.prepare(
        frames, None, mode, spec, numpy_transforms.window_side(mode, spec)
    )
    assert part["frames"].shape == (2, 3, *window, 3)
    assert part["geometry"].shape == (2, 3, 2, 3, spec.test_crop)
    expected = numpy_transforms.augment(frames, None, mode, spec)
    assert part["frames"].nbytes < expected.nbytes
    got = keras.ops.convert_to_numpy(ClipCrops()((part["frames"], part["geometry"])))
    assert got.shape == expected.shape == (6, 3, spec.test_crop, spec.test_crop, 3)
    assert np.abs(got.astype(int) - expected).max() <= 1
    assert (got != expected).mean() < 1e-3


def test_the_window_holds_only_the_read_region_and_flips_travel_as_geometry():
    frames = np.random.default_rng(0).integers(0, 256, (2, 256, 340, 3), np.uint8)
    mode, side = MODES["train"], numpy_transforms.window_side(MODES["train"], KINETICS_8X8)
    assert side == 282  # 224 * 1.25 + the neighbours
    flipped = 0
    for seed in range(20):
        where = numpy_transforms.clip_geometry(
            (256, 340), np.random.default_rng(seed), mode, KINETICS_8X8
        )
        window, shifted = numpy_transforms.window(frames, where, side)
        assert window.shape == (2, side, side, 3) and shifted.shape == (1, 2, 3, 224)
        top, left = int(where[0, 0, 0].min()), int(where[0, 1, 0].min())
        height = int(where[0, 0, 1].max()) - top + 1
        width = int(where[0, 1, 1].max()) - left + 1
        np.testing.assert_array_equal(
            window[:, :height, :width], frames[:, top : top + height, left : left + width]
        )
        assert not window[:, height:].any() and not window[:, :, width:].any()
        flipped += where[0, 1, 0, 0] > where[0, 1, 0, -1]  # columns read right to left
    assert 0 < flipped < 20


def test_mixed_precision_and_a_saved_model(tmp_path):
    """The layer computes in float32 under any policy (its indices stay
    exact), and a model holding it saves and loads."""
    frames = np.random.default_rng(3).integers(0, 256, (3, 256, 340, 3), np.uint8)
    side = numpy_transforms.window_side(MODES["train"], KINETICS_8X8)
    part = numpy_transforms.prepare(
        frames, np.random.default_rng(1), MODES["train"], KINETICS_8X8, side
    )
    windows, where = part["frames"][None], part["geometry"][None]
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        layer = ClipCrops()
        under_bf16 = keras.ops.convert_to_numpy(layer((windows, where)))
    finally:
        keras.config.set_dtype_policy(previous)
    assert layer.compute_dtype == "float32"
    expected = numpy_transforms.augment(
        frames, np.random.default_rng(1), MODES["train"], KINETICS_8X8
    )
    assert np.abs(under_bf16[0].astype(int) - expected).max() <= 1

    inputs = (keras.Input((3, side, side, 3), dtype="uint8"), keras.Input((1, 2, 3, 224)))
    views = ClipCrops(name="crops")(inputs)
    assert tuple(views.shape) == (None, 3, 224, 224, 3) and views.dtype == "uint8"
    model = keras.Model(
        inputs, keras.layers.GlobalAveragePooling3D()(keras.ops.cast(views, "float32"))
    )
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(again.get_layer("crops"), ClipCrops)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(again((windows, where))),
        keras.ops.convert_to_numpy(model((windows, where))),
    )


def tiny_classifier(spec) -> keras.Model:
    clips = keras.Input((spec.clip_len, spec.crop, spec.crop, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(keras.ops.cast(clips, "float32"))
    x = keras.layers.Conv3D(4, 3, padding="same")(x)
    return keras.Model(clips, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling3D()(x)))


def test_grain_batches_cut_on_the_device_are_the_host_batches_and_fit(tmp_path):
    """The same videos, seed and draws through the Grain engine: a batch cut
    from its windows equals the batch the host augments, and `fit` trains on
    the stream of cut batches."""
    videos = data.read_directory(str(make_tree(tmp_path / "tree")))

    def batches(augment_on):
        ds = data.video_list_dataset(
            videos,
            "train",
            RESIZING,
            engine="grain",
            batch_size=2,
            workers=0,
            seed=7,
            augment_on=augment_on,
        )
        return ds, list(ds)

    host, on_host = batches("host")
    device, on_device = batches("device")
    (windows, where), labels = device.element_spec
    side = numpy_transforms.window_side(MODES["train"], RESIZING)
    assert windows.shape == (2, RESIZING.clip_len, side, side, 3) and where.shape == (
        2,
        1,
        2,
        3,
        40,
    )
    assert len(on_host) == len(on_device) == 2
    for (clips, y), ((w, g), y_device) in zip(on_host, on_device, strict=True):
        np.testing.assert_array_equal(y, y_device)
        cut = keras.ops.convert_to_numpy(ClipCrops()((w, g)))
        assert np.abs(cut.astype(int) - clips).max() <= 1

    # What fit reads: the windows placed on the device, the clips cut there.
    assert device.step_spec == host.element_spec
    classifier = tiny_classifier(RESIZING)
    classifier.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    training.prepare_for_fit(classifier, device.step_spec)
    before = [keras.ops.convert_to_numpy(v).copy() for v in classifier.trainable_variables]
    stream = training.cut_views(prefetch.to_device(iter(device)))
    history = classifier.fit(stream, steps_per_epoch=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    after = [keras.ops.convert_to_numpy(v) for v in classifier.trainable_variables]
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))


def test_the_multi_view_test_with_views_cut_on_the_device(tmp_path):
    """`evaluation.evaluate` of a Grain test dataset whose videos travel as
    windows: the same report as from the host's views."""
    videos = data.read_directory(str(make_tree(tmp_path / "tree")))
    spec = dataclasses.replace(RESIZING, test_short_side=52, test_crop=40, num_test_clips=2)
    model = tiny_classifier(dataclasses.replace(spec, crop=40))
    reports, elements = [], []
    for augment_on in ("host", "device"):
        ds = data.video_list_dataset(
            videos, "test", spec, engine="grain", workers=0, augment_on=augment_on
        )
        elements.append(list(ds))
        report = evaluation.evaluate(model, ds, num_classes=2, multi_label=False)
        reports.append({k: v for k, v in report.items() if k not in ("seconds", "videos_per_s")})
    assert reports[0] == reports[1] and reports[0]["views_per_video"] == 6
    assert len(elements[0]) == len(elements[1]) == 4
    for (views, label, index), (windows, *rest) in zip(*elements, strict=True):
        assert [int(label), int(index)] == [int(v) for v in rest]
        cut = keras.ops.convert_to_numpy(ClipCrops()(windows))
        assert np.abs(cut.astype(int) - views).max() <= 1
    (windows, where), label, index = ds.element_spec
    assert windows.shape == (2, spec.clip_len, None, None, 3) and where.shape == (2, 3, 2, 3, 40)
    assert ds.step_spec[0].shape == (6, spec.clip_len, 40, 40, 3)
    views, *_ = next(training.cut_views(iter(ds)))
    assert tuple(views.shape) == (6, spec.clip_len, 40, 40, 3)


def test_wrong_requests_are_clear_errors(tmp_path):
    videos = data.read_directory(str(make_tree(tmp_path / "tree")))
    with pytest.raises(ValueError, match="augment_on="):
        grain_pipeline.grain_video_dataset(videos, "train", RESIZING, workers=0, augment_on="gpu")
    with pytest.raises(ValueError, match="Grain engine"):
        data.video_list_dataset(videos, "train", RESIZING, engine="tf_data", augment_on="device")
    auto = data.video_list_dataset(videos, "train", RESIZING, workers=0, augment_on="device")
    assert auto.engine == "grain"  # whatever the backend's default engine
    with pytest.raises(ValueError, match="must be 'host' or 'device'"):
        data.video_list_dataset(videos, "train", RESIZING, engine="tf_data", augment_on="gpu")
    for batch_size in (2, 3):  # two clips unpack as (windows, geometry) too
        host = data.video_list_dataset(
            videos, "train", RESIZING, engine="grain", workers=0, batch_size=batch_size
        )
        with pytest.raises(ValueError, match="augment_on='device' and a batch size"):
            next(training.cut_views(iter(host)))
    unbatched = data.video_list_dataset(
        videos, "val", RESIZING, engine="grain", workers=0, batch_size=None, augment_on="device"
    )
    with pytest.raises(ValueError, match="and a batch size"):
        next(training.cut_views(iter(unbatched)))
    windows = np.zeros((2, 3, 52, 52, 3), np.uint8)
    for where in (np.zeros((2, 2, 3, 40)), np.zeros((2, 1, 3, 2, 40)), np.zeros((3, 1, 2, 3, 40))):
        with pytest.raises(ValueError, match="geometry \\(B, V, 2, 3, S\\)"):
            ClipCrops()((windows, where.astype("float32")))
