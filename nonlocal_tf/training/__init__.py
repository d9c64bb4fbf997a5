"""Training utilities: recipes, optimiser and schedules, weight decay, precise BN, and
the set-up a run shares (`compile_for_recipe`, `standard_callbacks`)."""

from nonlocal_tf.layers.clip_crops import cut_views  # the stage between to_device and fit
from nonlocal_tf.training.backup import DataPosition, StepBackup, newest_data_state
from nonlocal_tf.training.build import prepare_for_fit
from nonlocal_tf.training.callbacks import (
    EpochCheckpoint,
    EpochTensorBoard,
    EpochTimer,
    InputWait,
    PreciseBatchNorm,
    ProgressBar,
    StopOnNaN,
    current_metrics,
    recompute_bn_statistics,
)
from nonlocal_tf.training.recipes import (
    COSINE_WARMUP,
    FINETUNE,
    OFFICIAL,
    OFFICIAL_FROZEN_BN,
    RECIPES,
    Recipe,
    WarmupCosine,
    apply_weight_decay,
    learning_rate_schedule,
    make_optimizer,
)
from nonlocal_tf.training.setup import BACKUP, compile_for_recipe, standard_callbacks

__all__ = [
    "BACKUP",
    "COSINE_WARMUP",
    "DataPosition",
    "EpochCheckpoint",
    "EpochTensorBoard",
    "EpochTimer",
    "FINETUNE",
    "InputWait",
    "OFFICIAL",
    "OFFICIAL_FROZEN_BN",
    "RECIPES",
    "PreciseBatchNorm",
    "ProgressBar",
    "Recipe",
    "StepBackup",
    "StopOnNaN",
    "WarmupCosine",
    "apply_weight_decay",
    "compile_for_recipe",
    "current_metrics",
    "cut_views",
    "learning_rate_schedule",
    "make_optimizer",
    "newest_data_state",
    "prepare_for_fit",
    "recompute_bn_statistics",
    "standard_callbacks",
]
