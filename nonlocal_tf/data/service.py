"""Input served by tf.data service: decoding on as many machines as it takes.

A dispatcher hands the splits of an epoch (the TFRecord files) to workers on
any number of machines; each worker reads, decodes, crops and batches its
files, and the training processes read the batches over the network. An
epoch is processed once in all ("distributed_epoch": no file twice, none
lost while the workers live). Start them with ``python -m zoo.data_service``;
give the trainer ``data_service="grpc://<dispatcher>:<port>"``
(``--data_service`` on ``zoo.train``).

TFRecord shards only: the video-file engines decode in Python (PyAV), which a
tf.data service worker cannot run from a serialised graph.
"""

from __future__ import annotations

import socket

import tensorflow as tf

PROTOCOL = "grpc"


def dispatcher(port: int, work_dir: str | None = None):
    """A started dispatcher on ``port``; ``work_dir`` keeps its journal, so a
    restarted dispatcher resumes the jobs it was running."""
    config = tf.data.experimental.service.DispatcherConfig(
        port=port, work_dir=work_dir, fault_tolerant_mode=bool(work_dir)
    )
    return tf.data.experimental.service.DispatchServer(config)


def worker(dispatcher_address: str, port: int = 0, worker_address: str | None = None):
    """A started worker registered with the dispatcher at ``host:port``;
    ``worker_address``: how the trainers reach this worker (default
    ``localhost:<port>``, for one machine)."""
    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=dispatcher_address.removeprefix(f"{PROTOCOL}://"),
        port=port,
        **({"worker_address": worker_address} if worker_address else {}),
    )
    return tf.data.experimental.service.WorkerServer(config)


def distribute(dataset: tf.data.Dataset, service: str, job_name: str | None = None):
    """``dataset`` (its whole graph: files to batches) run by the service's
    workers, each file of an epoch on one worker; read here over the network.
    Consumers naming the same ``job_name`` share one epoch between them."""
    if not service.startswith(f"{PROTOCOL}://"):
        raise ValueError(f"A tf.data service address is 'grpc://host:port'. Received: {service!r}")
    _check_reachable(service)
    return dataset.apply(
        tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
            service=service,
            job_name=job_name,
        )
    )


def _check_reachable(service: str, seconds: float = 10.0) -> None:
    """A `ValueError` naming ``service`` when nothing listens there: tf.data
    would wait for that dispatcher forever, saying nothing."""
    host, _, port = service.removeprefix(f"{PROTOCOL}://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"No tf.data service dispatcher answers at {service} ({exc}): start one with "
            "python -m zoo.data_service --role=dispatcher --port=PORT."
        ) from None
