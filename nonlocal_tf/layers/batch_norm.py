"""BatchNormalization with a fused, copy-free PyTorch path."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="nonlocal_tf")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` (same arguments, weights, config and
    function) that normalises channels-last inputs with fused kernels instead
    of Keras's separate float32 operations: on the PyTorch backend PyTorch's
    own batch norm on the activation's ``(N, C)`` rows
    (`nonlocal_tf.layers.torch_ops.batch_norm`), on JAX while training one
    pass for the statistics and a hand-written two-pass gradient
    (`nonlocal_tf.layers.jax_ops.batch_norm_training`); only the input, in its
    own dtype, is kept for the backward pass. Statistics are float32 either
    way; the moving averages are updated as Keras does (biased batch
    variance).

    Under `keras.distribution.DataParallel` (JAX), training normalises each
    device's share of the batch with its own statistics (`_per_device`).

    Other backends, and settings the fused kernel does not cover (a mask,
    renorm, synchronized, a channel axis other than the last), run Keras's
    layer unchanged.

    The class has Keras's name on purpose: Keras names the groups of a
    ``.weights.h5`` file after layer classes, so files written with either
    class load into models built with the other.
    """

    def call(self, inputs, training=None, mask=None):
        if self._data_parallel_shards(inputs, training, mask) > 1:
            return self._per_device(inputs)
        update = bool(training) and self.trainable
        backend = self._fused_backend(inputs, mask, update)
        if backend is None:
            return super().call(inputs, training=training, mask=mask)
        gamma, beta = self._scale_and_offset()
        if backend == "jax":
            from nonlocal_tf.layers import jax_ops

            y, mean, variance = jax_ops.batch_norm_training(inputs, gamma, beta, self.epsilon)
        else:
            from nonlocal_tf.layers import torch_ops

            y, mean, variance = torch_ops.batch_norm(
                inputs,
                gamma,
                beta,
                ops.convert_to_tensor(self.moving_mean),
                ops.convert_to_tensor(self.moving_variance),
                update,
                self.epsilon,
            )
        if update:
            self._update_moving_statistics(mean, variance)
        return ops.cast(y, self.compute_dtype)

    def _scale_and_offset(self):
        """gamma and beta as tensors, None where the layer has none."""
        gamma = ops.convert_to_tensor(self.gamma) if self.scale else None
        beta = ops.convert_to_tensor(self.beta) if self.center else None
        return gamma, beta

    def _update_moving_statistics(self, mean, variance):
        """Keras's moving averages (of the biased batch variance)."""
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))

    def _data_parallel_shards(self, inputs, training, mask) -> int:
        """Devices the batch is split over by `keras.distribution.DataParallel`
        (JAX) while training, else 1."""
        if not (training and self.trainable) or mask is not None or self.renorm:
            return 1
        if self.synchronized or keras.backend.backend() != "jax":
            return 1
        distribution = keras.distribution.distribution()
        if not isinstance(distribution, keras.distribution.DataParallel):
            return 1
        shards = distribution.device_mesh.shape[0]
        batch, rank = inputs.shape[0], len(inputs.shape)
        last = self.axis in (-1, rank - 1)
        return shards if last and batch is not None and batch % shards == 0 else 1

    def _per_device(self, inputs):
        """Training under data parallelism: each device's share of the batch
        normalised with its own statistics, as the official multi-GPU recipe
        (and PySlowFast, and `tf.distribute` replicas) does, so that no
        all-reduce sits between one layer and the next: the statistics of the
        global batch (what XLA computes otherwise) cost an all-reduce in every
        BN of the forward and backward pass, a quarter of a two-GPU step. The
        moving averages take the mean of the devices' statistics.
        ``synchronized=True`` keeps the global statistics.

        Each device runs the one-GPU normalisation
        (`jax_ops.batch_norm_training`) on its share (``jax.shard_map`` over
        the batch axis), so that a device's program is the one-GPU program: a
        formulation on the whole batch (statistics per clip, averaged per
        device and broadcast back) cost 10 % more GPU time in an I3D-NL5 step,
        forced on one H200 (bench/RESULTS.md)."""
        import jax
        from jax.sharding import PartitionSpec

        from nonlocal_tf.layers import jax_ops

        distribution = keras.distribution.distribution()
        axis = distribution.batch_dim_name
        batch = PartitionSpec(axis)
        gamma, beta = self._scale_and_offset()

        def normalise(x, gamma, beta):  # one device's share
            # The hand-written gradient of gamma and beta is each device's own:
            # marked as varying by device, they get their transposes' sum.
            gamma, beta = _varying((gamma, beta), axis)
            y, mean, variance = jax_ops.batch_norm_training(x, gamma, beta, self.epsilon)
            return y, mean[None], variance[None]

        shard_map = getattr(jax, "shard_map", None)
        if shard_map is None:  # JAX < 0.7
            from jax.experimental.shard_map import shard_map
        y, mean, variance = shard_map(
            normalise,
            mesh=distribution.device_mesh.backend_mesh,
            in_specs=(batch, PartitionSpec(), PartitionSpec()),
            out_specs=(batch, batch, batch),
        )(inputs, gamma, beta)
        self._update_moving_statistics(ops.mean(mean, 0), ops.mean(variance, 0))
        return ops.cast(y, self.compute_dtype)

    def _fused_backend(self, inputs, mask, update: bool) -> str | None:
        """Which fused kernels take the call: PyTorch's (training and
        inference) or JAX's (training); None: Keras's layer."""
        rank = len(inputs.shape)
        covered = (
            mask is None
            and not self.renorm
            and not self.synchronized
            and rank >= 3
            and self.axis in (-1, rank - 1)
        )
        backend = keras.backend.backend()
        if not covered or backend not in ("torch", "jax"):
            return None
        if backend == "jax" and not update:
            return None  # inference: Keras's one elementwise pass
        return backend


def _varying(values, axis):
    """``values`` marked as varying along the ``shard_map`` axis ``axis``
    (``jax.lax.pcast``; ``pvary`` in JAX 0.6-0.8; before, nothing to mark)."""
    import jax

    pcast = getattr(jax.lax, "pcast", None)
    if pcast is not None:
        return pcast(values, axis, to="varying")
    pvary = getattr(jax.lax, "pvary", None)
    return pvary(values, axis) if pvary is not None else values
