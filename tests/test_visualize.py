"""Training curves from Keras's CSVLogger and TensorBoard logs."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from nonlocal_tf import training
from nonlocal_tf.visualize import plot_training_curves, read_training_log


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
        image = tf.io.decode_png(path.read_bytes()).numpy()
        assert image.shape[:2] == (350, 900)
        blue = np.all(np.abs(image[..., :3].astype(int) - (31, 119, 180)) < 12, axis=-1)
        orange = np.all(np.abs(image[..., :3].astype(int) - (255, 127, 14)) < 12, axis=-1)
        assert blue.sum() > 200 and orange.sum() > 200  # both curves drawn
    assert matplotlib.get_backend() == "svg"
    matplotlib.use(saved)


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
