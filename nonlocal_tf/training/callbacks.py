"""Training callbacks: the official precise BN, and progress, NaN checks,
checkpoints and TensorBoard logs (and `backup.StepBackup`) that never make
`fit` wait for the device at every step.

Why the last four: `fit` hands every step's logs to the callbacks. When any
callback overrides ``on_train_batch_end`` (Keras's ``verbose=1`` progress bar,
`keras.callbacks.BackupAndRestore`, `ModelCheckpoint`, `TensorBoard`,
`TerminateOnNaN` all do), Keras first turns the logs into Python floats, which
waits for the step to finish on the device, so the host cannot queue the next
step ahead: the GPU idles while Python prepares each step. The callbacks below
work from ``on_train_batch_begin`` and ``on_epoch_end`` instead and read the
metrics only every ``every`` steps.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time

import keras

from nonlocal_tf import files
from nonlocal_tf.utils import iter_layers

log = logging.getLogger("nonlocal_tf")


def recompute_bn_statistics(model: keras.Model, batches, num_batches: int) -> int:
    """Official "precise BN" (``bn_helper.py``): replaces every BN's moving mean
    and variance by their averages over ``num_batches`` training batches (the
    population statistics), leaving all other weights untouched. Returns the
    number of batches used."""
    layers = [
        layer
        for layer in iter_layers(model, into_layers=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    if not layers or num_batches <= 0:
        return 0
    momenta = [layer.momentum for layer in layers]
    used = 0
    try:  # no batch beyond num_batches is drawn (``batches`` may be the training stream)
        for i, batch in enumerate(itertools.islice(batches, num_batches), start=1):
            x = batch[0] if isinstance(batch, tuple | list) else batch
            for layer in layers:  # cumulative average: moving_i = mean of batch stats 1..i
                layer.momentum = 1.0 - 1.0 / i
            model(x, training=True)
            used = i
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    return used


class PreciseBatchNorm(keras.callbacks.Callback):
    """Recomputes BN statistics over ``num_batches`` batches of ``dataset`` at
    the end of every epoch, before validation metrics and checkpoints use them.
    ``dataset``: a dataset (iterated afresh each time) or an iterator (the
    training stream itself, read on: no input pipeline started per epoch)."""

    def __init__(self, dataset, num_batches: int = 200):
        super().__init__()
        self.dataset, self.num_batches = dataset, num_batches

    def on_epoch_end(self, epoch, logs=None):
        used = recompute_bn_statistics(self.model, iter(self.dataset), self.num_batches)
        log.info("precise BN: statistics recomputed over %d batches", used)


class EpochTimer(keras.callbacks.Callback):
    """Seconds of each epoch's training steps, from the epoch's start to its
    validation (or end), once the queued steps have run: ``seconds[epoch]``.
    Put it first, so that no epoch-end callback's time (precise BN,
    checkpoints) is counted. One read of the metrics per epoch."""

    def __init__(self):
        super().__init__()
        self.seconds: dict[int, float] = {}
        self._epoch, self._start = None, None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._start = epoch, time.perf_counter()

    def on_test_begin(self, logs=None):
        self._stop()

    def on_epoch_end(self, epoch, logs=None):
        self._stop()

    def _stop(self):
        if self._start is None or self._epoch in self.seconds:
            return  # validation outside `fit`, or already stopped at validation
        current_metrics(self)  # waits for the steps queued on the device
        self.seconds[self._epoch] = time.perf_counter() - self._start


def current_metrics(callback: keras.callbacks.Callback) -> dict[str, float]:
    """The model's running metrics (``loss``, ``accuracy``, ...) as floats, as
    `fit` would log them now. Waits for the steps queued so far. (On JAX,
    ``callback.model`` first reattaches the training state to the model.)"""
    results = callback.model.get_metrics_result()
    return {name: float(keras.ops.convert_to_numpy(value)) for name, value in results.items()}


def _is_due(batch: int, every: int) -> bool:
    return batch > 0 and batch % every == 0


class ProgressBar(keras.callbacks.Callback):
    """The progress bar of ``fit(verbose=1)`` (`keras.utils.Progbar`: steps,
    ETA, time per step, running metrics, then the epoch's and validation
    metrics), updated every ``every`` steps instead of every step. Use it with
    ``fit(verbose=0)``.

    Args:
        every: steps between updates; each update waits for the device.
        print_epochs: print ``Epoch i/n`` before each epoch's bar.
        display: False on the processes of a multi-process run that do not
            print; they still read the metrics at the same steps (on JAX that
            read is a collective every process takes part in).
    """

    def __init__(self, every: int = 50, print_epochs: bool = True, display: bool = True):
        super().__init__()
        if every < 1:
            raise ValueError(f"`every` must be at least 1. Received: every={every}")
        self.every, self.print_epochs, self.display = every, print_epochs, display
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.print_epochs and self.display:
            print(f"Epoch {epoch + 1}/{self.params.get('epochs', '?')}", flush=True)
        self.bar = keras.utils.Progbar(
            self.params.get("steps"), interval=0.0, unit_name="step", verbose=int(self.display)
        )
        self.started = time.perf_counter()
        self.seen = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.seen = batch
        if _is_due(batch, self.every):
            self.bar.update(batch, list(current_metrics(self).items()))

    def on_epoch_end(self, epoch, logs=None):
        steps = self.params.get("steps") or self.seen + 1
        self.bar.update(steps, list((logs or {}).items()), finalize=True)


class StopOnNaN(keras.callbacks.Callback):
    """`keras.callbacks.TerminateOnNaN` checking the running loss every
    ``every`` steps and at each epoch end (the running mean stays NaN once
    one step's loss is)."""

    def __init__(self, every: int = 50):
        super().__init__()
        self.every = every

    def on_train_batch_begin(self, batch, logs=None):
        if _is_due(batch, self.every):
            self._check(batch, current_metrics(self).get("loss"))

    def on_epoch_end(self, epoch, logs=None):
        self._check(f"end of epoch {epoch + 1}", (logs or {}).get("loss"))

    def _check(self, where, loss):
        if loss is not None and not math.isfinite(loss):
            print(f"Loss is {loss} by step {where}: stopping.", flush=True)
            self.model.stop_training = True


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the weights at each epoch end to ``filepath.format(epoch=n)``
    (``n`` from 1), e.g. ``".../epoch-{epoch:03d}.weights.h5"``, atomically
    (a killed run never leaves a torn checkpoint). ``write=False``: a process
    of a multi-process run that takes part in the save (a collective on JAX)
    but does not keep it."""

    def __init__(self, filepath: str, write: bool = True):
        super().__init__()
        self.filepath, self.write = filepath, write

    def on_train_begin(self, logs=None):
        if self.write:
            files.remove_temporaries(os.path.dirname(os.path.abspath(self.filepath)))

    def on_epoch_end(self, epoch, logs=None):
        path = self.filepath.format(epoch=epoch + 1)
        # On JAX saving is a collective: every process saves, one keeps it.
        with files.atomic_path(path) if self.write else files.scratch_path("x.weights.h5") as tmp:
            self.model.save_weights(tmp)


class EpochTensorBoard(keras.callbacks.Callback):
    """Per-epoch scalars for TensorBoard, as `keras.callbacks.TensorBoard`
    with ``update_freq="epoch"`` lays them out (``log_dir/train`` and
    ``log_dir/validation``, tags ``epoch_<metric>``), written by the
    ``tensorboard`` package's own event writer: no TensorFlow needed (Keras's
    callback writes through ``tf.summary``), so logs are written on every
    backend, also where TensorFlow is not installed."""

    def __init__(self, log_dir: str):
        super().__init__()
        self.log_dir = log_dir
        self._writers = {}

    def _writer(self, split: str):
        if split not in self._writers:
            from tensorboard.summary.writer.event_file_writer import EventFileWriter

            self._writers[split] = EventFileWriter(os.path.join(self.log_dir, split))
        return self._writers[split]

    def on_epoch_end(self, epoch, logs=None):
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        logs = logs or {}
        for split, prefix in (("train", ""), ("validation", "val_")):
            values = [
                Summary.Value(tag=f"epoch_{name.removeprefix(prefix)}", simple_value=float(v))
                for name, v in logs.items()
                if name.startswith(prefix) and (prefix or not name.startswith("val_"))
            ]
            if values:
                writer = self._writer(split)
                writer.add_event(
                    Event(wall_time=time.time(), step=epoch, summary=Summary(value=values))
                )
                writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


class InputWait(keras.callbacks.Callback):
    """The share of each epoch's time the model's loop waited for input
    (``stream``: the `nonlocal_tf.prefetch.InputClock` of what `fit` reads),
    printed after the epoch; above ``threshold`` one more line names the
    fixes. Put it right after `EpochTimer`, whose epoch seconds it reads."""

    def __init__(self, stream, timer: EpochTimer, threshold: float = 0.2, display: bool = True):
        super().__init__()
        self.stream, self.timer, self.threshold, self.display = stream, timer, threshold, display
        self.shares: dict[int, float] = {}

    def on_epoch_begin(self, epoch, logs=None):
        self.stream.reset()

    def on_epoch_end(self, epoch, logs=None):
        seconds = self.timer.seconds.get(epoch)
        if not seconds:
            return
        share = min(self.stream.reset() / seconds, 1.0)
        self.shares[epoch] = share
        if not self.display:
            return
        print(f"input: the step waited for data {share:.0%} of epoch {epoch + 1}", flush=True)
        if share > self.threshold:
            cores = len(os.sched_getaffinity(0))
            print(
                f"input: the accelerator idles while {cores} cores decode: give decoding more "
                "processes (--input_workers), store frames as TFRecord shards instead of video "
                "files (python -m zoo.make_tfrecords; a JPEG frame decodes far faster than "
                "H.264), resize and crop on the accelerator (--augment_on=device), or train on "
                "a host with more cores per accelerator.",
                flush=True,
            )
