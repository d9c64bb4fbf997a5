"""Training recipes, visible in one place.

``OFFICIAL`` is the video-nonlocal-net Kinetics recipe (paper section 4.1 and
the 8-GPU 400k configs): SGD with Nesterov momentum 0.9, lr 0.01 for a global
batch of 64, divided by 10 after 150k and 300k of 400k iterations (fractions
0.375 and 0.75), weight decay 1e-4 as an L2 term on every weight except BN
gamma/beta, dropout 0.5, precise BN over 200 batches before evaluation.
``OFFICIAL_FROZEN_BN`` is the long-clip ("affine") recipe: lr 0.0025 for a
batch of 16. The others are common alternatives.
"""

from __future__ import annotations

import dataclasses
import math

import keras


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    base_lr: float  # for `reference_batch_size` clips; scaled linearly with the batch size
    reference_batch_size: int
    schedule: str  # "steps" or "cosine"
    step_fractions: tuple[float, ...] = (0.375, 0.75)
    step_factor: float = 0.1
    warmup_fraction: float = 0.0
    warmup_start_factor: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    dropout_rate: float = 0.5
    precise_bn_batches: int = 200

    def learning_rate(self, batch_size: int) -> float:
        return self.base_lr * batch_size / self.reference_batch_size


OFFICIAL = Recipe("official", base_lr=0.01, reference_batch_size=64, schedule="steps")
OFFICIAL_FROZEN_BN = Recipe(
    "official_frozen_bn",
    base_lr=0.0025,
    reference_batch_size=16,
    schedule="steps",
    precise_bn_batches=0,
)
COSINE_WARMUP = Recipe(
    "cosine_warmup",
    base_lr=0.1,
    reference_batch_size=64,
    schedule="cosine",
    warmup_fraction=34 / 196,
)  # PySlowFast's I3D-NLN schedule
FINETUNE = Recipe(
    "finetune",
    base_lr=0.00125,
    reference_batch_size=8,
    schedule="steps",
    step_fractions=(0.375, 0.75),
)

RECIPES = {r.name: r for r in (OFFICIAL, OFFICIAL_FROZEN_BN, COSINE_WARMUP, FINETUNE)}


class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ``start`` to the wrapped schedule's value at ``warmup_steps``."""

    def __init__(self, schedule, warmup_steps: int, start: float):
        self.schedule, self.warmup_steps, self.start = schedule, warmup_steps, start

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        target = self.schedule(self.warmup_steps)
        warm = self.start + (target - self.start) * step / max(self.warmup_steps, 1)
        return keras.ops.where(step < self.warmup_steps, warm, self.schedule(step))

    def get_config(self):
        return {
            "schedule": keras.optimizers.schedules.serialize(self.schedule),
            "warmup_steps": self.warmup_steps,
            "start": self.start,
        }


@keras.saving.register_keras_serializable(package="nonlocal_tf")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Keras's ``CosineDecay(start, decay_steps, alpha, warmup_target=peak,
    warmup_steps=...)``, the same values, in a few element-wise operations and
    no conditional. Optimizers with decoupled weight decay (AdamW) read the
    learning rate once per variable, so on TensorFlow the schedule is traced
    once per variable: Keras's version builds a ``tf.cond`` each time, which
    made tracing `zoo.demo`'s step take seconds
    (`tests/test_train.py::test_keras_cosine_decay_traces_a_conditional_warmup_cosine_does_not`)."""

    def __init__(
        self,
        peak: float,
        decay_steps: int,
        warmup_steps: int,
        alpha: float = 0.0,
        start: float = 0.0,
    ):
        if decay_steps <= 0:
            raise ValueError(f"`decay_steps` must be > 0. Received: {decay_steps}")
        self.peak, self.decay_steps, self.warmup_steps = peak, decay_steps, warmup_steps
        self.alpha, self.start = alpha, start

    def __call__(self, step):
        ops = keras.ops
        step = ops.minimum(ops.cast(step, "float32"), self.decay_steps + self.warmup_steps)
        warm = self.start + (self.peak - self.start) * step / max(self.warmup_steps, 1)
        done = ops.maximum(step - self.warmup_steps, 0.0) / self.decay_steps
        cosine = 0.5 * (1.0 + ops.cos(math.pi * done))
        decayed = self.peak * ((1.0 - self.alpha) * cosine + self.alpha)
        return ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {
            "peak": self.peak,
            "decay_steps": self.decay_steps,
            "warmup_steps": self.warmup_steps,
            "alpha": self.alpha,
            "start": self.start,
        }


def learning_rate_schedule(recipe: Recipe, total_steps: int, batch_size: int):
    lr = recipe.learning_rate(batch_size)
    if recipe.schedule == "steps":
        # Keras switches after a boundary (step > b); the official lr changes at step b.
        boundaries = [max(int(f * total_steps), 1) - 1 for f in recipe.step_fractions]
        values = [lr * recipe.step_factor**i for i in range(len(boundaries) + 1)]
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    elif recipe.schedule == "cosine":
        schedule = keras.optimizers.schedules.CosineDecay(lr, max(total_steps, 1))
    else:
        raise ValueError(
            f"`schedule` must be 'steps' or 'cosine'. Received: schedule={recipe.schedule!r}"
        )
    warmup = int(recipe.warmup_fraction * total_steps)
    if warmup:
        schedule = WarmupSchedule(schedule, warmup, lr * recipe.warmup_start_factor)
    return schedule


def make_optimizer(recipe: Recipe, total_steps: int, batch_size: int) -> keras.optimizers.Optimizer:
    return keras.optimizers.SGD(
        learning_rate_schedule(recipe, total_steps, batch_size),
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
    )


def apply_weight_decay(model: keras.Model, weight_decay: float) -> int:
    """Official weight decay: an L2 term ``wd/2 * ||w||^2`` (gradient ``wd * w``,
    added before momentum as in Caffe2) on every trainable weight except the
    BatchNormalization gamma/beta (official ``WEIGHT_DECAY_BN = 0``); non-local
    and classifier biases included. Returns the number of decayed variables."""
    regularizer = keras.regularizers.L2(weight_decay / 2) if weight_decay else None
    count = 0
    for variable in model.trainable_variables:
        if variable.name in ("gamma", "beta"):  # BN scale and shift, NL blocks' BN included
            continue
        variable.regularizer = regularizer
        count += regularizer is not None
    return count
