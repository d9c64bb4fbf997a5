"""Augmenting on the accelerator (JAX): what it costs inside the compiled
step, and `fit` from a frame shard with it against the host augmenting.

    KERAS_BACKEND=jax python bench/device_augment.py --workdir=/tmp/shards
    taskset -c 0-1 python bench/device_augment.py --steps=0 --workers=0   # 2 cores

1. The compiled train step (official SGD, ``--dtype``, batch ``--batch``) of
   each ``--variants`` model fed 8x8 clips of 224 (uint8, as the host
   augments them) against `layers.ClipCrops` cutting them from windows of
   282 and their geometry, then the step (as `training.cut_views` feeds
   `fit`), data on the device: clips/s each; and `ClipCrops` alone.
2. ``model.fit`` of the first variant from one frame shard
   (`bench/_videos.write_shard`), Grain with ``--workers`` processes (0:
   threads of this process), batches placed on the device a step ahead
   (`prefetch.to_device`, then `training.cut_views`), ``--epochs`` epochs of ``--fit_steps`` steps,
   each way: the last epoch's clips/s (steady state) and the share of it the
   step waited for input.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("KERAS_BACKEND", "jax")

from absl import app, flags  # noqa: E402

from bench._steps import CompiledSteps, device_arrays, seconds_per_call, sync  # noqa: E402
from bench._videos import write_shard  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("variants", ["i3d_nl5_r50_8x8", "c2d_r50_8x8"], "Models (nonlocal_tf variants).")
flags.DEFINE_string("dtype", "mixed_bfloat16", "Keras dtype policy.")
flags.DEFINE_integer("batch", 16, "Clips per step.")
flags.DEFINE_integer("steps", 30, "Timed compiled steps per case (0: skip part 1).")
flags.DEFINE_integer("fit_steps", 400, "Steps per fit epoch (0: skip part 2).")
flags.DEFINE_integer("epochs", 2, "fit epochs; the last is reported.")
flags.DEFINE_integer("workers", 15, "Grain worker processes for fit (0: threads).")
flags.DEFINE_list("augment_on", ["host", "device"], "fit cases.")
flags.DEFINE_integer("videos", 32, "Videos in the shard.")
flags.DEFINE_string("workdir", "/tmp/nl_device_augment", "Where the shard is (made once).")


def model_of(variant: str):
    import keras

    from nonlocal_tf import models, training

    model = models.create_model(variant, input_shape=(8, 224, 224, 3), classes=400)
    return model, lambda m: m.compile(
        optimizer=training.make_optimizer(training.OFFICIAL, 10_000, FLAGS.batch),
        loss=keras.losses.SparseCategoricalCrossentropy(),
    )


def window_batch(rng):
    """A batch as the device path sends it: windows and geometry of real
    random crops of 340x256 frames."""
    import numpy as np

    from nonlocal_tf.data import numpy_transforms
    from nonlocal_tf.data.spec import KINETICS_8X8, MODES

    mode = MODES["train"]
    side = numpy_transforms.window_side(mode, KINETICS_8X8)
    frames = rng.integers(0, 256, (8, 256, 340, 3), dtype=np.uint8)
    parts = [
        numpy_transforms.prepare(frames, rng, mode, KINETICS_8X8, side) for _ in range(FLAGS.batch)
    ]
    return np.stack([p["frames"] for p in parts]), np.stack([p["geometry"] for p in parts])


def compiled_steps() -> None:
    import jax
    import numpy as np

    from nonlocal_tf.layers import ClipCrops

    rng = np.random.default_rng(0)
    windows, where = window_batch(rng)
    clips = rng.integers(0, 256, (FLAGS.batch, 8, 224, 224, 3), dtype=np.uint8)
    labels = rng.integers(0, 400, FLAGS.batch).astype("int32")
    cut = jax.jit(ClipCrops())  # as training.cut_views runs it
    w, g, x, y = device_arrays(windows, where, clips, labels)
    alone = seconds_per_call(lambda: cut((w, g)), 3, FLAGS.steps)
    print(
        f"ClipCrops alone, batch {FLAGS.batch}: {alone * 1e3:.2f} ms ({FLAGS.batch / alone:.0f} clips/s)"
    )
    for variant in FLAGS.variants:
        model, compile_ = model_of(variant)
        compile_(model)
        steps = CompiledSteps(model, x, y)
        started = time.perf_counter()
        sync(steps())  # compiles
        compile_s = time.perf_counter() - started

        def cut_then_step(steps=steps):
            steps.data = (cut((w, g)), y, None)
            return steps()

        seconds_per_call(cut_then_step, 3, 3)
        rates = {}
        for _ in range(2):  # alternating: a busy host slows both alike
            steps.data = (x, y, None)
            rates["host"] = max(rates.get("host", 0), FLAGS.batch / steps.run(FLAGS.steps))
            device = FLAGS.batch / seconds_per_call(cut_then_step, 0, FLAGS.steps)
            rates["device"] = max(rates.get("device", 0), device)
        print(
            f"{variant} (compiled in {compile_s:.0f} s): step fed clips {rates['host']:.1f} clips/s, "
            f"ClipCrops then the step {rates['device']:.1f} ({rates['device'] / rates['host']:.1%})"
        )


def fit_from_shard() -> None:
    import keras

    from nonlocal_tf import data, prefetch, training

    shard = write_shard(FLAGS.workdir, FLAGS.videos, 10.0)
    cores = len(os.sched_getaffinity(0))
    model, compile_ = model_of(FLAGS.variants[0])
    compile_(model)
    for on in FLAGS.augment_on:
        ds = data.dataset_from_source(
            shard,
            "train",
            data.KINETICS_8X8,
            engine="grain",
            batch_size=FLAGS.batch,
            workers=FLAGS.workers,
            repeat=True,
            seed=0,
            augment_on=on,
        )
        clock = prefetch.InputClock()
        stream = iter(ds)
        placed = prefetch.to_device(tuple(b) for b in stream)
        fed = clock.wrap(training.cut_views(placed) if on == "device" else placed)
        timer = training.EpochTimer()
        wait = training.InputWait(clock, timer, display=False)
        model.fit(
            fed,
            steps_per_epoch=FLAGS.fit_steps,
            epochs=FLAGS.epochs,
            callbacks=[timer, wait],
            verbose=0,
        )
        last = FLAGS.epochs - 1
        rate = FLAGS.fit_steps * FLAGS.batch / timer.seconds[last]
        print(
            f"fit {FLAGS.variants[0]} from a shard, {cores} cores, {FLAGS.workers} workers, "
            f"augment on {on}: epoch {last + 1} {rate:.1f} clips/s, "
            f"input wait {wait.shares[last]:.0%} ({keras.config.dtype_policy().name})"
        )
        try:
            stream.close()  # Grain's workers end
        except ValueError:  # workers=0: the to_device thread is inside the generator
            pass


def main(argv) -> None:
    del argv
    import keras

    keras.config.set_dtype_policy(FLAGS.dtype)
    with open("/proc/cpuinfo") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    import jax

    print(f"{jax.devices()[0].device_kind}; {len(os.sched_getaffinity(0))} cores of {cpu}")
    if FLAGS.steps:
        compiled_steps()
    if FLAGS.fit_steps:
        fit_from_shard()


if __name__ == "__main__":
    app.run(main)
