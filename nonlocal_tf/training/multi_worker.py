"""Keras `fit` across TensorFlow workers (`tf.distribute.MultiWorkerMirroredStrategy`).

With more than one worker, Keras 3 (3.15; tensorflow/tensorflow#72388) stops
`fit` twice: its symbolic build averages a first batch of ``PerReplica``
inputs across workers (``ValueError: Attempt to convert a value (PerReplica``),
and it averages each worker's scalar logs with ``strategy.reduce("MEAN", v,
axis=0)`` ("Invalid reduction dimension 0 for input with 0 dimensions").
`allow_fit` works around both for one model: the training state is built
beforehand (`prepare_for_fit`), so the symbolic build has nothing to do, and
scalar logs are averaged over the workers without an axis. The gradients are
all-reduced by the strategy as usual; nothing else changes. TensorFlow only.
"""

from __future__ import annotations

import logging

import keras

log = logging.getLogger("nonlocal_tf")


def allow_fit(model: keras.Model, strategy, batch) -> None:
    """Lets ``model.fit`` run over several workers of ``strategy``; ``batch``
    is as `prepare_for_fit`'s (a batch or an element spec). A no-op with one
    worker."""
    from nonlocal_tf.training.build import prepare_for_fit

    if strategy.extended._num_workers <= 1:  # noqa: SLF001  (no public count)
        return
    with strategy.scope():
        prepare_for_fit(model, batch)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None  # built above
    _patch_log_reduction()


def _patch_log_reduction() -> None:
    try:
        from keras.src.backend.tensorflow import trainer
    except ImportError:  # another Keras layout: leave it as it is
        log.warning("multi_worker: Keras's TensorFlow trainer moved; logs reduced as Keras does.")
        return
    original = trainer.reduce_per_replica
    if getattr(original, "_scalar_safe", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        import tensorflow as tf

        multi_worker = trainer._collective_all_reduce_multi_worker(strategy)
        if not (multi_worker and reduction in ("auto", "mean")):
            return original(values, strategy, reduction)

        def mean(v):
            axis = None if v.shape.rank == 0 else 0
            return strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=axis)

        return keras.tree.map_structure(mean, values)

    reduce_per_replica._scalar_safe = True
    trainer.reduce_per_replica = reduce_per_replica
