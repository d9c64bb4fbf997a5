"""Serves input with tf.data service: one dispatcher, and workers on as many
machines as decoding needs (`nonlocal_tf.data.service`).

    python -m zoo.data_service --role=dispatcher --port=5050 [--work_dir=/shared/dispatcher]
    python -m zoo.data_service --role=worker --dispatcher=host0:5050 --port=5051 \\
        --worker_address=$(hostname):5051                  # on each decoding machine
    python -m zoo.train ... --train_data='shards/train-*.tfrecord' --data_service=grpc://host0:5050

Each worker reads, decodes, crops and batches the TFRecord files the
dispatcher gives it; every file of an epoch goes to one worker. Runs until
stopped (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import time

from absl import app, flags

from zoo import _cli

FLAGS = flags.FLAGS
flags.DEFINE_enum(
    "role", None, ["dispatcher", "worker"], "What this process serves.", required=True
)
flags.DEFINE_integer("port", None, "Port to serve on (a worker: 0 picks one).", lower_bound=0)
flags.DEFINE_string("dispatcher", None, "host:port of the dispatcher (workers).")
flags.DEFINE_string("worker_address", None, "host:port the trainers reach this worker at.")
flags.DEFINE_string(
    "work_dir", None, "Dispatcher journal: a restarted dispatcher resumes its jobs."
)


def main(argv) -> int:
    del argv
    from nonlocal_tf.data import service

    if FLAGS.role == "dispatcher":
        if FLAGS.port is None:
            raise app.UsageError("--role=dispatcher needs --port.")
        server = service.dispatcher(FLAGS.port, FLAGS.work_dir)
        print(f"dispatcher: {server.target}", flush=True)
    else:
        if not FLAGS.dispatcher:
            raise app.UsageError("--role=worker needs --dispatcher=host:port.")
        server = service.worker(FLAGS.dispatcher, FLAGS.port or 0, FLAGS.worker_address)
        print(f"worker of {FLAGS.dispatcher}: serving", flush=True)
    # The server runs in TensorFlow's threads. Waiting in Python, not in its C++
    # join, lets SIGTERM and Ctrl-C stop the command (a signal handler runs only
    # between Python instructions).
    while server is not None:
        time.sleep(1.0)
    return 0


if __name__ == "__main__":
    _cli.run(main)
