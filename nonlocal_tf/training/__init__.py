"""Training utilities: recipes, optimiser and schedules, weight decay, precise BN."""

from nonlocal_tf.training.callbacks import PreciseBatchNorm, recompute_bn_statistics
from nonlocal_tf.training.recipes import (
    COSINE_WARMUP,
    FINETUNE,
    OFFICIAL,
    OFFICIAL_FROZEN_BN,
    RECIPES,
    Recipe,
    apply_weight_decay,
    learning_rate_schedule,
    make_optimizer,
    recipe_for,
)

__all__ = [
    "COSINE_WARMUP",
    "FINETUNE",
    "OFFICIAL",
    "OFFICIAL_FROZEN_BN",
    "RECIPES",
    "PreciseBatchNorm",
    "Recipe",
    "apply_weight_decay",
    "learning_rate_schedule",
    "make_optimizer",
    "recipe_for",
    "recompute_bn_statistics",
]
