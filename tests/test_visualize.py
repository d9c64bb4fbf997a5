"""Figures: where a non-local block attends (the paper's Fig. 1) and training
curves from Keras's CSVLogger and TensorBoard logs."""

import os
import sys

import keras
import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf
from matplotlib.figure import Figure
from matplotlib.patches import ConnectionPatch

from nonlocal_tf import models, training
from nonlocal_tf.layers import NonLocalBlock
from nonlocal_tf.visualize import (
    attention_figure,
    attention_maps,
    batch_attention_maps,
    grid_coverage,
    plot_training_curves,
    read_training_log,
    spans,
    top_positions,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Four epochs of a tiny model with the loggers; returns (History, csv, log dir,
    the project's TensorFlow-free TensorBoard log dir)."""
    root = tmp_path_factory.mktemp("curves")
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    csv_path, log_dir, ours = str(root / "log.csv"), str(root / "tb"), str(root / "ours")
    history = model.fit(
        x,
        y,
        validation_split=0.25,
        epochs=4,
        verbose=0,
        callbacks=[
            keras.callbacks.CSVLogger(csv_path),
            keras.callbacks.TensorBoard(log_dir),
            training.EpochTensorBoard(ours),
        ],
    )
    return history, csv_path, log_dir, ours


@pytest.mark.parametrize("source", ["csv", "tensorboard", "epoch_tensorboard"])
def test_read_training_log(run, source):
    history, csv_path, log_dir, ours = run
    log = read_training_log({"csv": csv_path, "tensorboard": log_dir}.get(source, ours))
    assert sorted(os.listdir(ours)) == ["train", "validation"]  # Keras's layout
    for name in ("loss", "val_loss", "accuracy", "val_accuracy"):
        steps, values = zip(*log[name], strict=True)
        assert steps == (0, 1, 2, 3), name
        np.testing.assert_allclose(values, history.history[name], rtol=1e-5, err_msg=name)


def test_plot_training_curves(run, tmp_path):
    import matplotlib

    saved = matplotlib.get_backend()
    matplotlib.use("svg")  # not Agg: the function must not switch a session's backend
    _, csv_path, log_dir, _ = run
    for i, source in enumerate((csv_path, log_dir)):
        path = tmp_path / f"curves{i}.png"
        figure = plot_training_curves(source, str(path), metrics=["loss", "accuracy"])
        assert [ax.get_title() for ax in figure.axes] == ["loss", "accuracy"]
        assert [len(ax.lines) for ax in figure.axes] == [2, 2]  # train and validation
        # epochs numbered as fit prints them (1/4 .. 4/4), not as Keras logs them (0..3)
        assert list(figure.axes[0].lines[0].get_xdata()) == [1, 2, 3, 4]
        image = tf.io.decode_png(path.read_bytes()).numpy()
        assert image.shape[:2] == (350, 900)
        blue = np.all(np.abs(image[..., :3].astype(int) - (31, 119, 180)) < 12, axis=-1)
        orange = np.all(np.abs(image[..., :3].astype(int) - (255, 127, 14)) < 12, axis=-1)
        assert blue.sum() > 200 and orange.sum() > 200  # both curves drawn
    assert matplotlib.get_backend() == "svg"
    matplotlib.use(saved)


def test_a_log_without_validation_values(tmp_path):
    """CSVLogger writes NA in the val_* columns of a run without validation data."""
    (tmp_path / "h.csv").write_text("epoch,accuracy,loss,val_accuracy,val_loss\n0,0.5,1.2,NA,NA\n")
    log = read_training_log(str(tmp_path / "h.csv"))
    assert log == {"accuracy": [(0, 0.5)], "loss": [(0, 1.2)]}
    assert len(plot_training_curves(log).axes) == 2


def test_bad_logs(tmp_path):
    with pytest.raises(ValueError, match="No CSV file or TensorBoard"):
        read_training_log(str(tmp_path))
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a CSVLogger"):
        read_training_log(str(tmp_path / "x.csv"))
    with pytest.raises(ValueError, match="No series"):
        plot_training_curves({"loss": [(0, 1.0)]}, metrics=["top5"])


def test_write_video_refuses_what_h264_cannot_hold(tmp_path):
    from nonlocal_tf.data.synthetic import write_video

    with pytest.raises(ValueError, match="even frame sizes"):
        write_video(str(tmp_path / "a.mp4"), np.zeros((2, 31, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8 frames"):
        write_video(str(tmp_path / "a.mp4"), np.zeros((2, 32, 32), np.float32))


# ------------------------------------------------------------ the paper's Fig. 1


def attending_model(frames=8, size=16, pool_size=None):
    """A non-local block straight on the clip whose query of a red position
    attends to blue positions: theta maps red onto the blue axis, phi is the
    identity, no scale, so f(red query, blue key) = exp(10) and exp(0) elsewhere."""
    inputs = keras.Input((frames, size, size, 3))
    block = NonLocalBlock(inner_channels=3, use_scale=False, pool_size=pool_size, name="nl")
    x = block(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling3D()(x)))
    theta = np.zeros((3, 3), "float32")
    theta[0, 2] = 10.0
    block.theta.kernel.assign(theta)
    block.phi.kernel.assign(np.eye(3, dtype="float32"))
    return model


def red_and_blue_clip(frames=8, size=16):
    """Red square at frame 0 around (5, 5); a blue pixel at frame 5, (10, 12)."""
    clip = np.zeros((frames, size, size, 3), "float32")
    clip[0, 4:7, 4:7, 0] = 1.0
    clip[5, 10, 12, 2] = 1.0
    return clip


def arrows(figure):
    return [a for a in figure.artists if isinstance(a, ConnectionPatch)]


def strongest(figure):
    return max(arrows(figure), key=lambda a: float(a.get_label().rpartition(": ")[2]))


@pytest.mark.all_backends
@pytest.mark.parametrize(
    "pooled_keys, key, centre",
    [(False, (5, 10, 12), (12.0, 10.0)), (True, (5, 5, 6), (12.5, 10.5))],
)
def test_the_arrow_points_where_the_query_attends(pooled_keys, key, centre):
    model, clip = attending_model(), red_and_blue_clip()
    maps = attention_maps(model, clip, "nl", [(0, 5, 5)], pooled_keys=pooled_keys)[0]
    assert top_positions(maps, 1)[0][0] == key and maps[key] > 0.9
    figure = attention_figure(model, clip, "nl", (0, 5, 5), top_k=3, pooled_keys=pooled_keys)
    arrow = strongest(figure)
    assert arrow.get_label().startswith(f"query (0, 5, 5) -> key {key}: 0.9")
    assert arrow.axesB.get_title() == "frame 5"  # 8 frames, 8 time steps: one frame each
    assert arrow.axesA.get_title() == "frame 0"
    np.testing.assert_allclose(arrow.xy2, centre)  # pixel coordinates of the key's cell
    np.testing.assert_allclose(arrow.xy1, (5.0, 5.0))  # the query's pixel
    assert len(arrows(figure)) == 3


@pytest.fixture(scope="module")
def c2d():
    """The demo's architecture at width 4 (res3: 4x4 positions per step on 32x32 frames)."""
    keras.utils.set_random_seed(1)
    model = models.c2d_nl5_r50_8x8(width_per_group=4, classes=2, input_shape=(8, 32, 32, 3))
    for layer in model.layers:  # weights far from uniform (initial kernels have std 0.01)
        if isinstance(layer, NonLocalBlock):
            for dense in (layer.theta, layer.phi):
                dense.kernel.assign(30 * keras.ops.convert_to_numpy(dense.kernel))
    return model


@pytest.mark.all_backends
def test_attention_figure_reads_like_fig1(c2d, tmp_path):
    clip = np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3)).astype(np.uint8)
    path = tmp_path / "attention.png"
    queries = [(0, 1, 2), (2, 3, 0)]
    figure = attention_figure(
        c2d, clip, "nonlocal_conv3_3", queries, str(path), top_k=4, labels=["a", "b"], dpi=50
    )
    assert isinstance(figure, Figure)
    title = figure.get_suptitle()
    assert c2d.name in title and "nonlocal_conv3_3" in title
    titles = [ax.get_title() for ax in figure.axes]
    assert [f"frame {f}" for f in range(8)] == titles[:8]  # every frame, in order, on top
    steps = ["frames 0-1", "frames 2-3", "frames 4-5", "frames 6-7"]  # the block's 4 steps
    assert titles[8:16] == steps + steps
    assert [ax.get_ylabel() for ax in figure.axes[8:16:4]] == [
        "query (0, 1, 2)\na",
        "query (2, 3, 0)\nb",
    ]
    bars = [ax for ax in figure.axes if "attention weight" in ax.get_ylabel()]
    assert len(bars) == 1  # the colour bar, with the uniform weight marked
    assert any("uniform" in text.get_text() for text in bars[0].texts)
    assert "Keys unpooled" in figure.get_supxlabel()
    # Arrows end on the block's own 4x4 cells (8 pixels: centres 3.5, 11.5, ...),
    # at its highest weights, not on 2x2 quadrants of the frame (centres 7.5, 23.5).
    maps = attention_maps(c2d, clip, "nonlocal_conv3_3", queries, pooled_keys=False)
    assert maps.shape == (2, 4, 4, 4)
    for query, weights in zip(queries, maps, strict=True):
        drawn = sorted(
            a.get_label() for a in arrows(figure) if a.get_label().startswith(f"query {query}")
        )
        expected = sorted(
            f"query {query} -> key {k}: {w:.3f}" for k, w in top_positions(weights, 4) if k != query
        )
        assert drawn == expected
    for arrow in arrows(figure):
        assert set(arrow.xy2) <= {3.5, 11.5, 19.5, 27.5}
        t = int(arrow.get_label().split("key (")[1][0])
        assert arrow.axesB.get_title() == steps[t]
    image = matplotlib.image.imread(path)
    width, height = figure.get_size_inches() * 50
    assert image.shape[:2] == (round(height), round(width))


@pytest.mark.all_backends
def test_unpooled_weights_against_numpy(c2d):
    """Keys unpooled: softmax(theta(x_i) . phi(x_j) / sqrt(d)) over every position
    of the block's input, computed here from its input and weights."""
    clips = np.random.default_rng(1).integers(0, 255, (2, 8, 32, 32, 3)).astype(np.uint8)
    maps = batch_attention_maps(c2d, clips, "nonlocal_conv3_1", pooled_keys=False)
    assert maps.shape == (2, 4, 4, 4, 4, 4, 4)  # (B, query grid, key grid)
    block = c2d.get_layer("nonlocal_conv3_1")
    x = keras.ops.convert_to_numpy(
        keras.Model(c2d.input, block.input)(clips.astype("float32"))
    ).astype(np.float64)
    theta_w, theta_b = (keras.ops.convert_to_numpy(v) for v in block.theta.weights)
    phi_w, phi_b = (keras.ops.convert_to_numpy(v) for v in block.phi.weights)
    theta, phi = x @ theta_w + theta_b, x @ phi_w + phi_b  # (B, 4, 4, 4, 32)
    theta, phi = theta.reshape(2, 64, -1), phi.reshape(2, 64, -1)
    logits = np.einsum("bqd,bkd->bqk", theta, phi) / np.sqrt(theta.shape[-1])
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(maps.reshape(2, 64, 64), expected, atol=1e-5)
    pooled = batch_attention_maps(c2d, clips, "nonlocal_conv3_1")
    assert pooled.shape == (2, 4, 4, 4, 4, 2, 2)  # the model's keys: max-pooled 2x2
    np.testing.assert_allclose(
        pooled[1, 2, 1, 3],
        attention_maps(c2d, clips[1], "nonlocal_conv3_1", [(2, 1, 3)])[0],
        atol=1e-6,
    )


@pytest.mark.all_backends
def test_grid_coverage_and_spans():
    assert spans(8, 4) == [(0, 2), (2, 4), (4, 6), (6, 8)]
    mask = np.zeros((8, 32, 32), bool)
    mask[7, 4:12, 20:28] = True  # an 8x8 square of the last frame
    coverage = grid_coverage(mask, (4, 4, 4))
    assert coverage[:3].max() == 0
    np.testing.assert_allclose(coverage[3, :2, 2:], [[0.25, 0.25], [0.25, 0.25]])
    assert grid_coverage(mask, (4, 2, 2))[3, 0, 1] == 0.25


@pytest.mark.all_backends
def test_attention_figure_refuses_what_it_cannot_draw(c2d, monkeypatch):
    clip = np.zeros((8, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="not a NonLocalBlock"):
        attention_figure(c2d, clip, "res3_1_branch2a", (0, 0, 0))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install matplotlib"):
        attention_figure(c2d, clip, "nonlocal_conv3_1", (0, 0, 0))
