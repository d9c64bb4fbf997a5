"""Data parallelism over every GPU of one host or of several (Keras on JAX),
and what the input pipeline and the callbacks need to know about it.

One process per host (all its GPUs) or one per GPU: `initialize` joins the
processes (`keras.distribution.initialize`, i.e. ``jax.distributed``), then
`data_parallel` spreads each global batch over all their devices and
all-reduces the gradients. Each process reads only its shard of the data
(`shard`: files or TFRecord shards split by process index) at
``global_batch / processes`` clips per step, and only process 0 writes
checkpoints and logs (`is_chief`).

`nonlocal_tf.prefetch.to_device` moves the next batches to the devices from
a background thread: Keras's JAX trainer copies each batch to the devices in
its training loop when a distribution is set (it only looks one batch ahead
without one), and on several GPUs that copy (and the split of the host
batch) sat between the steps.
"""

from __future__ import annotations

import os

import keras


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> tuple[int, int]:
    """Joins the processes of a multi-process run (JAX); returns ``(process
    index, process count)``. Arguments left out come from the environment:
    ``KERAS_DISTRIBUTION_JOB_ADDRESSES`` / ``_NUM_PROCESSES`` /
    ``_PROCESS_ID`` (Keras's), else what JAX reads from the scheduler (SLURM,
    Open MPI, Kubernetes JobSet). One process: nothing to join."""
    if keras.backend.backend() != "jax":
        raise ValueError(
            "Several processes need the JAX backend (keras.distribution); on TensorFlow use "
            "--distribution=multi_worker with TF_CONFIG."
        )
    import jax

    if num_processes in (None, 1) and not _scheduled():
        return 0, 1
    # The all-reduce between processes on CPUs (tests, CPU clusters); GPUs use NCCL.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    keras.distribution.initialize(coordinator_address, num_processes, process_id)
    return jax.process_index(), jax.process_count()


def _scheduled() -> bool:
    """Whether the environment describes a multi-process job."""
    names = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES")
    return (
        any(name in os.environ for name in names)
        or int(os.environ.get("SLURM_NTASKS", os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))) > 1
    )


def data_parallel() -> int:
    """Sets `keras.distribution.DataParallel` over every device of every
    process, the input already sharded per process; returns the device count."""
    devices = keras.distribution.list_devices()
    # Each process reads its own shard (`shard`), so Keras must not shard again.
    distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    keras.distribution.set_distribution(distribution)
    return len(devices)


def shard() -> tuple[int, int]:
    """``(index, count)`` of this process's share of the input."""
    if keras.backend.backend() != "jax":
        return 0, 1
    import jax

    return jax.process_index(), jax.process_count()


def is_chief() -> bool:
    """Whether this process writes checkpoints, backups and logs."""
    return shard()[0] == 0
