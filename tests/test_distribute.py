"""Training over several processes, as on several hosts, on CPU: each process
reads only its shard, the global batch is split exactly, the losses equal one
process's at the same global batch, and a killed run resumes (JAX
``keras.distribution`` and TensorFlow ``MultiWorkerMirroredStrategy``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from nonlocal_tf import data
from tests.test_data import SPEC, make_tree

# The same 4 global batches of 8 clips, one process or two: process p reads
# clips p, p + 2, ... in batches of 4 (the pipelines' shard, `num_shards`), so
# global batch k holds clips 8k .. 8k + 7 either way.
JAX_RUN = """
import sys, json, numpy as np, keras
from nonlocal_tf import models, prefetch, training
from nonlocal_tf.training import distribute
processes = int(sys.argv[1])
if processes > 1:
    distribute.initialize(f"127.0.0.1:{sys.argv[3]}", processes, int(sys.argv[2]))
    distribute.data_parallel()
index, count = distribute.shard()
keras.utils.set_random_seed(0)  # frozen BN: each device normalises with its own batch
model = models.VideoResNet(temporal_kernels="c2d", nonlocal_mask="nl5", frozen_bn=True,
    width_per_group=4, classes=3, input_shape=(8, 32, 32, 3), include_preprocessing=True,
    dropout_rate=0.0)
training.apply_weight_decay(model, 1e-4)
model.compile(optimizer=training.make_optimizer(training.OFFICIAL, 10, 8),
    loss="sparse_categorical_crossentropy")
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (32, 8, 32, 32, 3)).astype("float32")
y = rng.integers(0, 3, 32).astype("int32")
mine, local = (x[index::count], y[index::count]), 8 // count
batches = ((mine[0][k * local:(k + 1) * local], mine[1][k * local:(k + 1) * local]) for k in range(4))
losses = []
record = keras.callbacks.LambdaCallback(
    on_train_batch_end=lambda batch, logs: losses.append(float(logs["loss"])))
model.fit(prefetch.to_device(batches), epochs=1, steps_per_epoch=4, verbose=0,
          callbacks=[record])
print("LOSSES", json.dumps(losses), flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(backend: str) -> dict:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("KERAS_", "TF_CONFIG"))}
    return keep | {"KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}


def losses_of(procs) -> list[list[float]]:
    found = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        line = [ln for ln in out.splitlines() if ln.startswith("LOSSES")][0]
        found.append(json.loads(line.split(" ", 1)[1]))
    return found


def start(script: str, *args, backend="jax", extra_env=None):
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        env=env(backend) | (extra_env or {}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_shards_are_disjoint_and_cover_the_data(tmp_path):
    tree = make_tree(tmp_path / "tree")
    videos = data.read_directory(str(tree))
    seen = []
    for index in range(2):
        ds = data.video_dataset(videos, "test", SPEC, num_shards=2, shard_index=index, shuffle=True)
        seen.append({int(i) for _, _, i in ds})
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(len(videos)))


@pytest.mark.slow
def test_two_jax_processes_match_one():
    """`keras.distribution.DataParallel` over 2 processes (1 CPU device each,
    gloo all-reduce) against 1 process, same global batches: same losses (a
    frozen-BN model: with BN, each device uses its own batch's statistics,
    `test_batch_norm_statistics_per_device`)."""
    port = free_port()
    one = losses_of([start(JAX_RUN, 1, 0, port)])[0]
    two = losses_of([start(JAX_RUN, 2, i, port) for i in range(2)])
    np.testing.assert_allclose(two[0], two[1], rtol=1e-6)  # one global loss, seen by both
    np.testing.assert_allclose(two[0], one, rtol=1e-4)
    assert len(one) == 4 and one[0] != one[-1]


TF_RUN = """
import sys, json, os, numpy as np
import tensorflow as tf, keras
from nonlocal_tf import models, training
workers = int(sys.argv[1])
strategy = tf.distribute.MultiWorkerMirroredStrategy()
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (32, 8, 32, 32, 3)).astype("float32")
y = rng.integers(0, 3, 32).astype("int32")

def shard(context):  # zoo.train's way: this worker's clips, per-replica batches
    n, i = context.num_input_pipelines, context.input_pipeline_id
    batch = context.get_per_replica_batch_size(8)
    return tf.data.Dataset.from_tensor_slices((x[i::n], y[i::n])).batch(batch).repeat()

with strategy.scope():  # frozen BN: TensorFlow's replicas normalise with their own batches
    keras.utils.set_random_seed(0)
    model = models.VideoResNet(temporal_kernels="c2d", nonlocal_mask="nl5", frozen_bn=True,
        width_per_group=4, classes=3, input_shape=(8, 32, 32, 3), include_preprocessing=True,
        dropout_rate=0.0)
    model.compile(optimizer=training.make_optimizer(training.OFFICIAL, 10, 8),
        loss="sparse_categorical_crossentropy")
from nonlocal_tf.training import multi_worker
multi_worker.allow_fit(model, strategy, (x[:1], y[:1]))  # Keras 3's fit over workers
losses = []
model.fit(strategy.distribute_datasets_from_function(shard), epochs=1, steps_per_epoch=4,
    verbose=0, callbacks=[keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: losses.append(float(logs["loss"])))])
print("LOSSES", json.dumps(losses), flush=True)
"""


@pytest.mark.slow
def test_two_tensorflow_workers_match_one():
    """`MultiWorkerMirroredStrategy` with 2 workers (TF_CONFIG), each reading
    its shard, against 1 worker: same losses at the same global batch. (With
    BatchNormalization the replicas use their own batches' statistics, as
    the official 8-GPU recipe does, so a frozen-BN model is compared.)"""
    one = losses_of([start(TF_RUN, 1, backend="tensorflow")])[0]
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = [
        start(
            TF_RUN,
            2,
            backend="tensorflow",
            extra_env={
                "TF_CONFIG": json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": i}}
                )
            },
        )
        for i in range(2)
    ]
    two = losses_of(procs)
    np.testing.assert_allclose(two[0], two[1], rtol=1e-6)
    np.testing.assert_allclose(two[0], one, rtol=1e-4)


@pytest.mark.slow
def test_killed_two_process_run_resumes(tmp_path):
    """zoo.train over 2 JAX processes: only process 0 writes; both killed in
    epoch 2 and started again, they resume from its backup."""
    tree = make_tree(tmp_path / "tree", frames=20)
    out = tmp_path / "run"
    port = free_port()

    def command(index):
        return [
            sys.executable,
            "-m",
            "zoo.train",
            "--model=c2d_r50_8x8",
            "--width_per_group=4",
            f"--train_data={tree}",
            f"--output_dir={out}",
            "--batch_size=2",
            "--epochs=3",
            "--steps_per_epoch=4",
            "--backup_every=1",
            "--crop=32",
            "--train_scale=32,40",
            "--distribution=data_parallel",
            "--num_processes=2",
            f"--process_id={index}",
            f"--coordinator_address=127.0.0.1:{port}",
        ]

    def launch():
        return [
            subprocess.Popen(
                command(i),
                env=env("jax"),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]

    procs = launch()
    deadline = time.time() + 400
    while time.time() < deadline and all(p.poll() is None for p in procs):
        records = sorted((out / "backup").glob("state-*.json")) if (out / "backup").exists() else []
        try:
            if records and json.loads(records[-1].read_text())["epoch"] >= 1:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (out / "checkpoints" / "epoch-001.weights.h5").exists()
    port = free_port()
    procs = launch()
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr[-3000:]
    chief = outputs[0][0]
    assert "Taking over the lock of" in outputs[0][1]  # process 0 held it, and only it
    assert "global batch 2 (1 clips per step in each of 2 process(es)" in chief
    assert "done" in chief and "done" not in outputs[1][0]  # only process 0 reports and writes
    summary = json.loads((out / "summary.json").read_text())
    assert summary["first_epoch"] >= 2 and summary["processes"] == 2
    assert (out / "checkpoints" / "epoch-003.weights.h5").exists()


BN_PER_DEVICE = """
import numpy as np, keras
from nonlocal_tf.layers import BatchNormalization
from nonlocal_tf.training import distribute
x = np.random.default_rng(0).normal(2, 3, (4, 2, 3, 3, 5)).astype("float32")
bn = BatchNormalization(momentum=0.5)
bn.build(x.shape)
assert distribute.data_parallel() == 2
y = keras.ops.convert_to_numpy(bn(x, training=True))
halves = x.reshape(2, 2, 2, 3, 3, 5)
mean, var = halves.mean(axis=(1, 2, 3, 4), keepdims=True), halves.var(axis=(1, 2, 3, 4), keepdims=True)
want = ((halves - mean) / np.sqrt(var + bn.epsilon)).reshape(x.shape)
np.testing.assert_allclose(y, want, atol=1e-5)
moving = keras.ops.convert_to_numpy(bn.moving_mean)
np.testing.assert_allclose(moving, 0.5 * mean.reshape(2, 5).mean(0), atol=1e-5)
moving = keras.ops.convert_to_numpy(bn.moving_variance)
np.testing.assert_allclose(moving, 0.5 + 0.5 * var.reshape(2, 5).mean(0), atol=1e-4)

# ... and the gradient is that of normalising each half on its own.
import jax, jax.numpy as jnp
w = np.random.default_rng(1).normal(size=x.shape).astype("float32")
tv, ntv = [v.value for v in bn.trainable_variables], [v.value for v in bn.non_trainable_variables]
ours = jax.grad(lambda x: jnp.sum(bn.stateless_call(tv, ntv, x, training=True)[0] * w))(x)
def reference(x):
    h = x.reshape(2, 2, 2, 3, 3, 5)
    m, v = h.mean(axis=(1, 2, 3, 4), keepdims=True), h.var(axis=(1, 2, 3, 4), keepdims=True)
    return jnp.sum(((h - m) / jnp.sqrt(v + bn.epsilon)).reshape(x.shape) * w)
np.testing.assert_allclose(np.asarray(ours), np.asarray(jax.grad(reference)(x)), atol=1e-5)

# The compiled training step of a model: its all-reduces are the gradients'
# and the moving averages' (XLA combines each kind into one), none per layer.
import re, jax
from nonlocal_tf import models, prefetch, training
model = models.VideoResNet(temporal_kernels="i3d", nonlocal_mask="nl5", width_per_group=4,
    classes=3, input_shape=(4, 32, 32, 3))
model.compile(optimizer=training.make_optimizer(training.OFFICIAL, 10, 4),
    loss="sparse_categorical_crossentropy", jit_compile=True)
data = prefetch.place_batch([np.zeros((4, 4, 32, 32, 3), "float32"), np.zeros(4, "int32")])
model.optimizer.build(model.trainable_variables)
state = model._get_jax_state(trainable_variables=True, non_trainable_variables=True,
    optimizer_variables=True, metrics_variables=True)
step = jax.jit(model.train_step, out_shardings=(None, model._get_state_sharding_spec()))
hlo = step.lower(state, (*data, None)).compile().as_text()
reduces = len(re.findall(r"%all-reduce[.0-9]* = ", hlo))
others = re.findall(r"%(all-gather|collective-permute|all-to-all|reduce-scatter)[.0-9]* = ", hlo)
print("ALL_REDUCES", reduces, others)
assert reduces <= 4 and not others, (reduces, others)
print("OK")
"""


def test_batch_norm_statistics_per_device():
    """Under DataParallel each device's half of the batch is normalised with
    its own statistics (the official multi-GPU recipe), with no all-reduce
    between layers (counted in a compiled training step of an I3D-NL5: with
    the global batch's statistics it has one per BN, 225 at R50); the moving
    averages take the mean of the halves'."""
    extra = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    done = subprocess.run(
        [sys.executable, "-c", BN_PER_DEVICE],
        env=env("jax") | extra,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-3000:]
