"""Training workflow: recipes, weight decay, precise BN, the train / evaluate
commands, kill-and-resume, data parallelism on two logical CPU devices."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from nonlocal_tf import models, training


def test_official_schedule_and_decay():
    schedule = training.learning_rate_schedule(training.OFFICIAL, total_steps=400, batch_size=64)
    values = [float(schedule(s)) for s in (0, 149, 150, 299, 300, 399)]
    np.testing.assert_allclose(values, [0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001], rtol=1e-6)
    assert training.OFFICIAL.learning_rate(8) == pytest.approx(0.00125)
    warm = training.learning_rate_schedule(training.COSINE_WARMUP, total_steps=196, batch_size=64)
    cosine = keras.optimizers.schedules.CosineDecay(0.1, 196)
    assert float(warm(0)) == pytest.approx(0.01, rel=1e-5)  # linear warm-up from lr/10 ...
    assert float(warm(34)) == pytest.approx(float(cosine(34)), rel=1e-4)  # ... to the cosine curve
    model = models.i3d_nl5_r50_8x8(width_per_group=4, classes=3)
    decayed = training.apply_weight_decay(model, 1e-4)
    bn = [v for v in model.trainable_variables if v.name in ("gamma", "beta")]
    assert decayed == len(model.trainable_variables) - len(bn)
    assert all(v.regularizer is None for v in bn)
    x = np.zeros((1, 8, 32, 32, 3), "float32")
    model(x)
    want = sum(
        0.5e-4 * float(np.sum(keras.ops.convert_to_numpy(v) ** 2))
        for v in model.trainable_variables
        if v.name not in ("gamma", "beta")
    )
    assert float(sum(keras.ops.convert_to_numpy(loss) for loss in model.losses)) == pytest.approx(
        want, rel=1e-4
    )


@pytest.mark.all_backends
def test_warmup_cosine_is_keras_cosine_decay_with_warmup():
    ours = training.WarmupCosine(0.004, 90, warmup_steps=10, alpha=0.01)
    keras_schedule = keras.optimizers.schedules.CosineDecay(
        0.0, 90, warmup_target=0.004, warmup_steps=10, alpha=0.01
    )
    steps = [0, 1, 5, 9, 10, 11, 50, 99, 100, 150]
    np.testing.assert_allclose(
        [float(ours(s)) for s in steps], [float(keras_schedule(s)) for s in steps], rtol=1e-5
    )
    restored = training.WarmupCosine.from_config(ours.get_config())
    assert float(restored(42)) == pytest.approx(float(ours(42)))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's tracing")
def test_keras_cosine_decay_traces_a_conditional_warmup_cosine_does_not():
    """Why `WarmupCosine` beside Keras's ``CosineDecay(warmup_target=...,
    warmup_steps=...)``: the same values (above), but Keras's builds a
    ``tf.cond``, and an optimizer with decoupled weight decay traces the
    schedule once per variable (the demo's AdamW: one conditional per
    weight in the step's graph)."""
    import tensorflow as tf

    def conditionals(schedule) -> int:
        graph = tf.function(schedule).get_concrete_function(tf.TensorSpec([], tf.int64)).graph
        return sum(op.type in ("If", "StatelessIf") for op in graph.get_operations())

    keras_schedule = keras.optimizers.schedules.CosineDecay(
        0.0, 90, warmup_target=0.004, warmup_steps=10
    )
    assert conditionals(keras_schedule) >= 1
    assert conditionals(training.WarmupCosine(0.004, 90, warmup_steps=10)) == 0


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's tracing")
def test_prepare_for_fit_traces_the_training_step_once():
    """Without it, Keras's TensorFlow trainer creates the optimizer's and the
    metrics' variables in the first trace of the step and traces it again."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype("float32")
    y = rng.integers(0, 3, 8).astype("int32")
    traces = {}
    for prepare in (None, "arrays", "element_spec"):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile(
            optimizer=keras.optimizers.AdamW(training.WarmupCosine(0.01, 10, 2)),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        traced = []
        step = model.train_step
        model.train_step = lambda data, step=step, traced=traced: (traced.append(1), step(data))[1]
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
        if prepare == "arrays":
            training.prepare_for_fit(model, (x[:1], y[:1]))
        elif prepare == "element_spec":
            training.prepare_for_fit(model, data.element_spec)
        model.fit(data, epochs=2, verbose=0)
        traces[prepare] = len(traced)
    assert traces == {None: 2, "arrays": 1, "element_spec": 1}
    with pytest.raises(ValueError, match="compile"):
        training.prepare_for_fit(
            keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]), (x, y)
        )
    with pytest.raises(ValueError, match=r"\(x, y\).*ndarray"):
        training.prepare_for_fit(model, x)  # the inputs alone
    with pytest.raises(ValueError, match="length 1"):
        training.prepare_for_fit(model, (x,))
    fresh = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    fresh.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    with pytest.raises(ValueError, match="incompatible"):
        training.prepare_for_fit(fresh, (x[:, :3], y))  # 3 features where the model takes 4


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="JAX's and PyTorch's fit call it themselves"
)
@pytest.mark.parametrize("change", ["removed", "new_signature"])
def test_prepare_for_fit_survives_a_keras_without_symbolic_build(monkeypatch, caplog, change):
    """`Model._symbolic_build` is private: if it goes or changes, `fit` still trains."""
    if change == "removed":
        monkeypatch.setattr(keras.Model, "_symbolic_build", None)
    else:
        monkeypatch.setattr(keras.Model, "_symbolic_build", lambda self, *, batch: None)
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    y = np.arange(8) % 3
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    with caplog.at_level("WARNING", logger="nonlocal_tf"):
        training.prepare_for_fit(model, (x, y))
    assert "_symbolic_build" in caplog.text and model.optimizer.built
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and "accuracy" in history.history


def test_precise_bn_is_the_population_average():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.9)(inputs))
    batches = [
        np.random.default_rng(i).normal(i, 1 + i, (16, 4)).astype("float32") for i in range(5)
    ]
    used = training.recompute_bn_statistics(model, iter(batches), 5)
    assert used == 5
    bn = model.layers[-1]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bn.moving_mean),
        np.mean([b.mean(0) for b in batches], 0),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bn.moving_variance),
        np.mean([b.var(0) for b in batches], 0),
        rtol=1e-4,
    )
    assert bn.momentum == 0.9


def run(module, *args, backend="tensorflow", env_extra=None, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"} | {"KERAS_BACKEND": backend}
    env |= env_extra or {}
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    return done


TRAIN = [
    "--model=c2d_nl5_r50_8x8",
    "--width_per_group=4",
    "--batch_size=4",
    "--precise_bn_batches=1",
]


def evaluate_checkpoint(weights, data, report, env_extra=None):
    """zoo.evaluate's 30-view test of three videos of ``data`` on ``weights``."""
    done = run(
        "zoo.evaluate",
        "--model=c2d_nl5_r50_8x8",
        "--width_per_group=4",
        f"--data={data}",
        f"--weights={weights}",
        f"--output={report}",
        "--max_videos=3",
        env_extra=env_extra,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["videos"] == 3 and result["views_per_video"] == 30
    assert 0 <= result["top1"] <= result["top5"] <= 1 and 0 <= result["clip_top1"] <= 1


def assert_finished(out, epochs):
    assert (out / "checkpoints" / f"epoch-{epochs:03d}.weights.h5").exists()
    assert (out / "final.keras").exists()
    assert any(p.name.startswith("events") for p in (out / "logs" / "train").iterdir())
    summary = json.loads((out / "summary.json").read_text())
    assert "val_accuracy" in summary["history"]
    return summary


# TensorFlow's kernels for CPUs without oneDNN's AVX-512 paths (AMD EPYC), where "auto"
# picks the folded convolutions: the path such a user's zoo.train and zoo.evaluate take.
# (The default path: test_killed_run_resumes_and_evaluates.)
@pytest.mark.slow
def test_train_then_evaluate_without_onednn(video_tree, tmp_path):
    out = tmp_path / "run"
    env = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    done = run(
        "zoo.train",
        *TRAIN,
        f"--train_data={video_tree}",
        f"--val_data={video_tree}",
        f"--output_dir={out}",
        "--epochs=2",
        "--steps_per_epoch=2",
        env_extra=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = assert_finished(out, 2)
    assert summary["epochs_run"] == 2 and summary["first_epoch"] == 1
    evaluate_checkpoint(
        out / "checkpoints" / "epoch-002.weights.h5", video_tree, tmp_path / "eval.json", env
    )


@pytest.mark.slow
def test_killed_run_resumes_and_evaluates(video_tree, tmp_path):
    """Killed (SIGKILL) in epoch 2 after a backup, the same command resumes and
    finishes, reading the training videos on from the backup's position (Grain
    processes on TensorFlow); then zoo.evaluate tests its last checkpoint."""
    out = tmp_path / "run"
    args = [
        *TRAIN,
        f"--train_data={video_tree}",
        f"--val_data={video_tree}",
        f"--output_dir={out}",
        "--epochs=3",
        "--steps_per_epoch=3",
        "--backup_every=1",
        "--input_engine=grain",
        "--input_workers=1",
    ]
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"} | {
        "KERAS_BACKEND": "tensorflow"
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "zoo.train", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    first = out / "checkpoints" / "epoch-001.weights.h5"

    def in_epoch_two():
        try:
            records = sorted((out / "backup").glob("state-*.json"))
            return first.exists() and json.loads(records[-1].read_text())["epoch"] >= 1
        except (IndexError, OSError, ValueError):  # none yet, or being written
            return False

    while not in_epoch_two() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # mid-way through epoch 2, after a backup of it
    proc.wait()
    assert first.exists() and not (out / "final.keras").exists()
    records = sorted((out / "backup").glob("state-*.json"))
    assert json.loads(records[-1].read_text())["data"]  # where the Grain stream stood
    done = run("zoo.train", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Taking over the lock of" in done.stderr  # the killed run's, with a warning
    assert "Reading the data on from the position given (a backup's)" in done.stderr
    summary = assert_finished(out, 3)
    assert summary["first_epoch"] >= 2  # resumed, not restarted
    evaluate_checkpoint(
        out / "checkpoints" / "epoch-003.weights.h5", video_tree, tmp_path / "eval.json"
    )


def test_train_errors(video_tree, tmp_path):
    done = run(
        "zoo.train",
        "--model=i3d_nl7_r50_8x8",
        f"--train_data={video_tree}",
        f"--output_dir={tmp_path}",
    )
    assert done.returncode != 0 and "Unknown --model" in done.stderr
    done = run("zoo.train", *TRAIN, f"--train_data={tmp_path / 'nope'}", f"--output_dir={tmp_path}")
    assert done.returncode != 0 and "No such data" in done.stderr
    done = run(
        "zoo.train", *TRAIN, f"--train_data={video_tree}", f"--output_dir={tmp_path}", "--classes=5"
    )
    assert done.returncode != 0 and "--classes=5 but the training data has 3 classes" in done.stderr


@pytest.mark.slow
def test_tf_mirrored_on_two_cpu_devices(video_tree, tmp_path):
    done = run(
        "zoo.train",
        *TRAIN,
        "--cpu_devices=2",
        f"--train_data={video_tree}",
        f"--output_dir={tmp_path / 'run'}",
        "--epochs=1",
        "--steps_per_epoch=2",
        "--distribution=mirrored",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 replica(s)" in done.stdout


DATA_PARALLEL = """
import sys, numpy as np, keras
from nonlocal_tf import models, prefetch, training
from nonlocal_tf.training import distribute
devices = keras.distribution.list_devices()
if sys.argv[1] == "2":
    distribute.data_parallel()
keras.utils.set_random_seed(0)  # frozen BN: with BN each device uses its own statistics
model = models.VideoResNet(temporal_kernels="c2d", nonlocal_mask="nl5", frozen_bn=True, width_per_group=4,
                           classes=3, input_shape=(8, 32, 32, 3), include_preprocessing=True, dropout_rate=0.0)
training.apply_weight_decay(model, 1e-4)
model.compile(optimizer=training.make_optimizer(training.OFFICIAL, 10, 4), loss="sparse_categorical_crossentropy")
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (8, 8, 32, 32, 3)).astype("uint8")
y = rng.integers(0, 3, 8).astype("int32")
losses = []
record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: losses.append(float(logs["loss"])))
batches = prefetch.to_device((x[i:i + 4], y[i:i + 4]) for i in (0, 4))  # placed ahead
model.fit(batches, epochs=1, steps_per_epoch=2, verbose=0, callbacks=[record])
print("DEVICES", len(devices), "LOSSES", *losses)
"""


@pytest.mark.slow
def test_jax_data_parallel_matches_one_device():
    """keras.distribution.DataParallel on two logical CPU devices, uint8
    batches placed on the devices ahead by `prefetch.to_device`:
    the same losses as one device at the same global batch."""
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    results = {}
    for replicas in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", DATA_PARALLEL, replicas],
            capture_output=True,
            text=True,
            timeout=600,
            env={k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
            | {"KERAS_BACKEND": "jax", **env},
        )
        assert done.returncode == 0, done.stderr[-3000:]
        line = [ln for ln in done.stdout.splitlines() if ln.startswith("DEVICES")][0].split()
        assert line[1] == "2"
        results[replicas] = [float(v) for v in line[3:]]
    np.testing.assert_allclose(results["2"], results["1"], rtol=1e-4)


def test_average_precision_and_multilabel_evaluation():
    import tensorflow as tf

    from nonlocal_tf.evaluation import average_precision, evaluate

    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = np.array([1, 0, 1, 0, 0])
    assert average_precision(scores, labels) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert np.isnan(average_precision(scores, np.zeros(5)))

    class Fixed(keras.Model):  # scores of a video's views, known in advance
        def call(self, views):
            return views[:, 0, 0, 0, :4] * 1.0

    views = np.zeros((3, 2, 1, 1, 1, 4), np.float32)  # 3 videos, 2 views, 4 classes
    views[0, :, 0, 0, 0] = [0.9, 0.1, 0.8, 0.1]
    views[1, :, 0, 0, 0] = [0.2, 0.7, 0.1, 0.1]
    views[2, :, 0, 0, 0] = [0.6, 0.6, 0.1, 0.9]
    multi_hot = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 1, 0, 1]], np.float32)
    ds = tf.data.Dataset.from_tensor_slices((views, multi_hot, np.arange(3)))
    report = evaluate(Fixed(), ds, num_classes=4, multi_label=True)
    want = np.nanmean(
        [average_precision(views[:, :, 0, 0, 0, c].sum(1), multi_hot[:, c]) for c in range(4)]
    )
    assert report["mAP"] == pytest.approx(want) and report["videos"] == 3
    single = tf.data.Dataset.from_tensor_slices((views, np.array([0, 1, 3]), np.arange(3)))
    report = evaluate(Fixed(), single, num_classes=4, multi_label=False)
    assert report["top1"] == 1.0 and report["clip_top1"] == 1.0


@pytest.mark.slow
def test_multi_worker_and_mixed_precision_flags(video_tree, tmp_path):
    done = run(
        "zoo.train",
        *TRAIN,
        f"--train_data={video_tree}",
        f"--output_dir={tmp_path / 'mw'}",
        "--epochs=1",
        "--steps_per_epoch=1",
        "--distribution=multi_worker",
        "--mixed_precision=bfloat16",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 replica(s)" in done.stdout  # one worker without TF_CONFIG


@pytest.mark.slow
def test_finetune_catalogue_entry_with_new_head(video_tree, tmp_path):
    """The shipped demo entry (offline) fine-tuned on 3 classes with the
    defaults: the entry's clips (8 frames of 32x32) and the finetune recipe,
    XLA-compiled, the data's class names recorded in final.keras and
    run.json; the run folder then resumes by its name (exported and predicted
    by its name in README.md's quickstart, tests/test_docs.py)."""
    out = tmp_path / "ft"
    env = {"NONLOCAL_TF_OFFLINE": "1", "NONLOCAL_TF_HOME": str(tmp_path / "cache")}
    done = run(
        "zoo.train",
        "--model=reappear_c2d_nl5_r50.demo",
        f"--train_data={video_tree}",
        f"--output_dir={out}",
        "--epochs=1",
        "--steps_per_epoch=2",
        "--batch_size=4",
        "--precise_bn_batches=1",
        "--jit_compile=on",
        env_extra=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "recipe finetune" in done.stdout
    model = keras.saving.load_model(out / "final.keras")
    assert model.get_layer("pred").units == 3 and model.info["class_names"] == ["a", "b", "c"]
    assert model.info["spec"]["crop"] == 32 and model.info["spec"]["rate"] == 1
    record = json.loads((out / "run.json").read_text())
    assert record["model_info"]["class_names"] == ["a", "b", "c"]
    from nonlocal_tf import pretrained

    demo = pretrained.load_model("reappear_c2d_nl5_r50.demo")
    kernel = keras.ops.convert_to_numpy(demo.get_layer("conv1").kernel)
    tuned = keras.ops.convert_to_numpy(model.get_layer("conv1").kernel)
    assert (
        np.abs(tuned - kernel).max() < 0.05 * np.abs(kernel).max()
    )  # started from the entry, briefly tuned
    resumed = run("zoo.train", f"--resume={out}", "--epochs=2", env_extra=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["first_epoch"] == 2 and summary["epochs_run"] == 1


@pytest.mark.slow
def test_init_from_an_imagenet_checkpoint_file(video_tree, tmp_path):
    """--init with a Caffe2 ImageNet R50 pickle: kernels inflated, NL blocks and head new."""
    from tests import checkpoints
    from tests.test_weights import caffe2_file

    blobs = checkpoints.random_blobs(checkpoints.resnet2d_shapes(50), seed=3)
    pkl = tmp_path / "r50_imagenet.pkl"
    pkl.write_bytes(caffe2_file(blobs))
    out = tmp_path / "run"
    done = run(
        "zoo.train",
        "--model=i3d_nl5_r50_8x8",
        f"--init={pkl}",
        f"--train_data={video_tree}",
        f"--output_dir={out}",
        "--epochs=1",
        "--steps_per_epoch=1",
        "--batch_size=2",
        "--crop=32",
        "--train_scale=32,40",
        "--precise_bn_batches=0",
        "--recipe=finetune",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "kernels inflated" in done.stdout + done.stderr
    model = keras.saving.load_model(out / "final.keras")
    kernel = keras.ops.convert_to_numpy(
        model.get_layer("res2_0_branch2a").kernel
    )  # (3, 1, 1, 64, 64)
    want = np.transpose(blobs["res2_0_branch2a_w"][:, :, 0, 0]) / 3
    assert (
        np.abs(kernel[1, 0, 0] - want).max() < 0.05 * np.abs(want).max()
    )  # inflated, then one small step


def test_precise_bn_reaches_the_nonlocal_blocks_bn():
    model = models.c2d_nl5_r50_8x8(width_per_group=4, classes=3)
    block_bn = model.get_layer("nonlocal_conv3_1").bn
    before = keras.ops.convert_to_numpy(block_bn.moving_mean).copy()
    batches = [
        np.random.default_rng(i).normal(size=(2, 8, 32, 32, 3)).astype("float32") for i in range(2)
    ]
    assert training.recompute_bn_statistics(model, iter(batches), 2) == 2
    assert not np.allclose(keras.ops.convert_to_numpy(block_bn.moving_mean), before)
