"""tf.data service: a dispatcher and two workers in processes of their own
(``python -m zoo.data_service``) serve an epoch of TFRecord shards; what the
trainer reads is one host's epoch, nothing lost and nothing twice."""

import collections
import hashlib
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from nonlocal_tf import data
from nonlocal_tf.data import tfrecord
from tests.videos import frame_image

SPEC = data.ClipSpec.at_size(4, 3, 48)
VIDEOS, FILES = 12, 4


def write_shards(root) -> str:
    """``FILES`` shards of ``VIDEOS`` videos, video k of class k, 20 to 31 frames."""
    os.makedirs(root)
    for f in range(FILES):
        with tf.io.TFRecordWriter(str(root / f"train-{f}.tfrecord")) as writer:
            for k in range(f, VIDEOS, FILES):
                jpegs = [tf.io.encode_jpeg(frame_image(i, 48, 64)).numpy() for i in range(20 + k)]
                writer.write(tfrecord.encode_example(jpegs, [k], [f"c{k}"], f"v{k}"))
    return str(root / "train-*.tfrecord")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture
def service():
    """A dispatcher and two workers, each its own process; the address."""
    port, worker_ports = free_port(), [free_port(), free_port()]
    command = [sys.executable, "-m", "zoo.data_service"]
    procs = [subprocess.Popen([*command, "--role=dispatcher", f"--port={port}"])]
    procs += [
        subprocess.Popen(
            [*command, "--role=worker", f"--dispatcher=localhost:{port}", f"--port={worker_port}"]
        )
        for worker_port in worker_ports
    ]
    for listening in (port, *worker_ports):  # all three up before the trainer reads
        deadline = time.time() + 120
        while True:
            try:
                socket.create_connection(("localhost", listening), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline, f"nothing listens on port {listening}"
                time.sleep(0.2)
    yield f"grpc://localhost:{port}"
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=30)


def fingerprints(ds) -> collections.Counter:
    return collections.Counter(
        (int(label), hashlib.sha1(np.asarray(clip).tobytes()).hexdigest()) for clip, label in ds
    )


@pytest.mark.slow
def test_a_served_epoch_is_one_hosts_epoch(tmp_path, service):
    pattern = write_shards(tmp_path / "shards")
    local = data.tfrecord_dataset(pattern, "val", SPEC, batch_size=None)
    served = data.tfrecord_dataset(pattern, "val", SPEC, batch_size=None, data_service=service)
    expected = fingerprints(local)
    assert sum(expected.values()) == VIDEOS
    assert fingerprints(served) == expected  # the same clips, each once
    # Training: random clips, each video once per epoch, batched by the workers.
    train = data.dataset_from_source(
        pattern, "train", SPEC, num_classes=VIDEOS, batch_size=3, seed=0, data_service=service
    )
    labels = [int(label) for _, batch in train for label in batch]
    assert sorted(labels) == list(range(VIDEOS))


def test_what_a_service_cannot_serve(tmp_path):
    pattern = str(tmp_path / "x.tfrecord")
    tf.io.TFRecordWriter(pattern).close()
    with pytest.raises(ValueError, match="num_shards must be 1"):
        data.tfrecord_dataset(
            pattern, "train", SPEC, data_service="grpc://localhost:1", num_shards=2
        )
    with pytest.raises(ValueError, match="grpc://host:port"):
        data.tfrecord_dataset(pattern, "train", SPEC, data_service="localhost:1")
    with pytest.raises(ValueError, match="No tf.data service dispatcher answers at"):
        data.tfrecord_dataset(
            pattern, "train", SPEC, data_service=f"grpc://localhost:{free_port()}"
        )
    os.makedirs(tmp_path / "videos" / "a")
    with pytest.raises(ValueError, match="zoo.make_tfrecords"):
        data.dataset_from_source(
            str(tmp_path / "videos"), "train", SPEC, data_service="grpc://localhost:1"
        )
