"""What `make demo` trains: the "reappear" task's models (a C2D ResNet-50 of
width 4 on 8 x 32 x 32 clips, with or without 5 non-local blocks), their recipe
(AdamW, linear warm-up, cosine decay), and a timing of the training step that
`zoo.demo`, `bench/conv_paths.py` and the demo's speed guard share."""

from __future__ import annotations

import time

import keras
import numpy as np

from nonlocal_tf import pretrained, runtime, training

CLIP = (8, 32, 32, 3)


def build(nonlocal_mask: str, conv_implementation: str = "auto") -> keras.Model:
    """The demo's C2D R50 (``nonlocal_mask`` "none" or "nl5"): the shipped demo
    entry's architecture and clips (`nonlocal_tf.create_model`), narrower,
    initialised at random."""
    return pretrained.create_model(
        pretrained.DEMO.name,
        weights=None,
        nonlocal_mask=nonlocal_mask,
        width_per_group=4,
        conv_implementation=conv_implementation,
        name=f"reappear_c2d_{nonlocal_mask}_r50",
    )


def compile_model(model, steps: int, learning_rate: float, jit_compile=None) -> None:
    """AdamW with a linear warm-up over the first 10 % of ``steps`` and a cosine
    decay, compiled as `nonlocal_tf.runtime.jit_compile` says is fastest here
    (or as ``jit_compile`` says)."""
    schedule = training.WarmupCosine(
        learning_rate, steps, warmup_steps=max(steps // 10, 1), alpha=0.01
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
        jit_compile=runtime.jit_compile() if jit_compile is None else jit_compile,
    )


def step_time(
    nonlocal_mask: str = "nl5",
    conv_implementation: str = "auto",
    jit_compile=None,
    batch_size: int = 32,
    warmup: int = 3,
    steps: int = 10,
) -> dict:
    """The demo's training step as `zoo.demo` sets it up, timed with
    ``train_on_batch`` on host uint8 batches: seconds to the end of the first
    step (tracing and compilation included) and seconds per step after
    ``warmup`` more."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(batch_size, *CLIP), dtype=np.uint8)
    y = rng.integers(0, 2, batch_size).astype("int32")
    started = time.perf_counter()
    model = build(nonlocal_mask, conv_implementation)
    compile_model(model, 1000, 0.004, jit_compile=jit_compile)
    training.prepare_for_fit(model, (x[:1], y[:1]))
    float(model.train_on_batch(x, y, return_dict=True)["loss"])
    first = time.perf_counter() - started
    for _ in range(warmup):
        model.train_on_batch(x, y)
    started = time.perf_counter()
    for _ in range(steps):
        logs = model.train_on_batch(x, y, return_dict=True)
    float(logs["loss"])  # the host waits for the last step
    return {
        "first_step_s": round(first, 2),
        "step_s": round((time.perf_counter() - started) / steps, 4),
    }
