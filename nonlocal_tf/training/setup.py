"""A model made ready to train by a recipe, and the standard callbacks: what
``zoo.train`` and the notebooks share, so that a run from either is the same
run (weight decay, optimizer and schedule, loss, metrics; checkpoints,
backups, logs and progress in one order)."""

from __future__ import annotations

import os

import keras

from nonlocal_tf import runtime
from nonlocal_tf.data.skips import SkipLog, SkipReport
from nonlocal_tf.training.backup import StepBackup
from nonlocal_tf.training.callbacks import (
    EpochCheckpoint,
    EpochTensorBoard,
    EpochTimer,
    InputWait,
    PreciseBatchNorm,
    ProgressBar,
    StopOnNaN,
)
from nonlocal_tf.training.recipes import Recipe, apply_weight_decay, make_optimizer

CHECKPOINTS = os.path.join("checkpoints", "epoch-{epoch:03d}.weights.h5")
BACKUP = "backup"  # `StepBackup`'s folder in a run's output folder


def compile_for_recipe(
    model: keras.Model,
    recipe: Recipe,
    total_steps: int,
    batch_size: int,
    multi_label: bool = False,
    jit_compile: bool | None = None,
) -> int:
    """Compiles ``model`` to train with ``recipe`` for ``total_steps`` steps of
    ``batch_size`` clips (the global batch: the learning rate scales with it):
    the official weight decay (`apply_weight_decay`), SGD with the recipe's
    schedule, cross-entropy (binary for ``multi_label`` data, Charades), and
    accuracy and top-5 (top-all under 5 classes: PyTorch's topk refuses k >
    classes) or, multi-label, AUC-PR. ``jit_compile``: default as
    `nonlocal_tf.runtime.jit_compile` measured fastest here. Returns the
    number of weights with L2 decay."""
    decayed = apply_weight_decay(model, recipe.weight_decay)
    classes = int(model.outputs[0].shape[-1])
    if multi_label:
        loss = keras.losses.BinaryCrossentropy()
        metrics = [keras.metrics.AUC(curve="PR", multi_label=True, name="auc_pr")]
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
        metrics = [
            "accuracy",
            keras.metrics.SparseTopKCategoricalAccuracy(min(5, classes), name="top5"),
        ]
    model.compile(
        optimizer=make_optimizer(recipe, total_steps, batch_size),
        loss=loss,
        metrics=metrics,
        jit_compile=runtime.jit_compile() if jit_compile is None else jit_compile,
    )
    return decayed


def standard_callbacks(
    output_dir: str,
    precise_bn_data=None,
    precise_bn_batches: int = 0,
    log_every: int = 50,
    backup_every: int = 1000,
    skips: SkipLog | None = None,
    write: bool = True,
    logs_dir: str | None = None,
    input_clock=None,
    data_position=None,
) -> list[keras.callbacks.Callback]:
    """The callbacks of a training run writing into ``output_dir``, in the
    order they must run at an epoch's end: the epoch timer (first: precise BN
    and checkpoints are not training time), NaN stop, progress, precise BN
    over ``precise_bn_batches`` batches of ``precise_bn_data`` (before
    anything saves or validates the statistics), epoch checkpoints
    (``checkpoints/epoch-NNN.weights.h5``), backups every ``backup_every``
    steps (``backup/``: a killed run started again resumes), TensorBoard and
    CSV logs (in ``logs_dir``, default ``output_dir``), the skipped videos of
    ``skips``, and, where `fit` reads a stream timed by ``input_clock`` (a
    `nonlocal_tf.prefetch.InputClock`), the share of each epoch spent
    waiting for it (`InputWait`); the backups record ``data_position`` (a
    `DataPosition`) where given. None of them makes `fit` wait for each step
    (see `nonlocal_tf.training.callbacks`). ``write=False``: a process of a
    multi-process run that takes part in the saves but keeps none."""
    logs_dir = logs_dir or output_dir
    os.makedirs(logs_dir, exist_ok=True)  # the CSV log opens its file when `fit` starts
    checkpoints = os.path.join(output_dir, CHECKPOINTS)
    timer = EpochTimer()
    callbacks = [timer, StopOnNaN(every=log_every), ProgressBar(every=log_every, display=write)]
    if input_clock is not None:
        callbacks.append(InputWait(input_clock, timer, display=write))
    if precise_bn_batches and precise_bn_data is not None:
        callbacks.append(PreciseBatchNorm(precise_bn_data, precise_bn_batches))
    callbacks += [
        EpochCheckpoint(checkpoints, write=write),
        StepBackup(
            os.path.join(output_dir, BACKUP),
            save_freq=backup_every,
            fallback=checkpoints,
            write=write,
            data=data_position,
        ),
        EpochTensorBoard(os.path.join(logs_dir, "logs")),
        keras.callbacks.CSVLogger(os.path.join(logs_dir, "history.csv"), append=True),
    ]
    if skips is not None:
        callbacks.append(SkipReport(skips))
    return callbacks
