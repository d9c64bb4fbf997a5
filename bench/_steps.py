"""What the benchmarks time: the models of the throughput tables, the official
training set-up on synthetic data, and the compiled Keras steps called back to
back (as `fit` and `predict` run them)."""

from __future__ import annotations

import time

# (label, variant, frames): the rows of bench/RESULTS.md
MODELS = [
    ("C2D R50 8x8", "c2d_r50_8x8", 8),
    ("I3D R50 8x8", "i3d_r50_8x8", 8),
    ("I3D-NL5 R50 8x8", "i3d_nl5_r50_8x8", 8),
    ("I3D-NL5 R50 32 frames", "i3d_nl5_r50_8x8", 32),
]


def sync(x):
    """Waits for ``x`` (a tensor or a structure of them) by reading it back."""
    import keras

    return keras.tree.map_structure(keras.ops.convert_to_numpy, x)


def device_arrays(*arrays):
    """The arrays on the device; under a distribution (JAX), split over the
    devices as `fit` splits each batch."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        from nonlocal_tf import prefetch

        if keras.distribution.distribution() is not None:
            return prefetch.place_batch(list(arrays))
        return [jax.device_put(a) for a in arrays]
    return [keras.ops.convert_to_tensor(a) for a in arrays]


def resolve_jit_compile(choice: str = "auto"):
    """``"auto"``: `nonlocal_tf.runtime.jit_compile` (XLA on JAX, eager on
    PyTorch, ...); ``"on"`` / ``"off"``: True / False."""
    from nonlocal_tf import runtime

    return {"auto": runtime.jit_compile(), "on": True, "off": False}[choice]


def training_setup(
    variant, frames, size, batch, conv_implementation="auto", jit_compile="auto", **overrides
):
    """A model compiled with the official SGD step (``jit_compile``: see
    `resolve_jit_compile`; ``overrides``: of the variant's builder) and one
    synthetic batch already on the device: ``(model, x, y)``. Call after
    setting the dtype policy."""
    import keras
    import numpy as np

    from nonlocal_tf import models, training

    model = models.create_model(
        variant,
        input_shape=(frames, size, size, 3),
        classes=400,
        conv_implementation=conv_implementation,
        **overrides,
    )
    model.compile(
        optimizer=training.make_optimizer(training.OFFICIAL, 10_000, batch),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        jit_compile=resolve_jit_compile(jit_compile),
    )
    rng = np.random.default_rng(0)
    x, y = device_arrays(
        rng.normal(size=(batch, frames, size, size, 3)).astype("float32"),
        rng.integers(0, 400, batch).astype("int32"),
    )
    return model, x, y


def seconds_per_call(call, warmup: int, steps: int) -> float:
    """Seconds per ``call()`` over ``steps`` calls after ``warmup`` calls; the
    last result is read back before the clock stops."""
    for _ in range(warmup):
        sync(call())
    started = time.perf_counter()
    for _ in range(steps):
        out = call()
    sync(out)
    return (time.perf_counter() - started) / steps


def seconds_per_train_on_batch(model, x, y, warmup: int, steps: int) -> float:
    return seconds_per_call(lambda: model.train_on_batch(x, y), warmup, steps)


class CompiledSteps:
    """The model's compiled Keras train function called back to back on the JAX
    backend (as `fit` runs it: the host queues step n + 1 while the device runs
    step n; `train_on_batch` waits for each loss), the state passed along."""

    def __init__(self, model, x, y):
        self.model, self.data = model, (x, y, None)
        model.optimizer.build(model.trainable_variables)
        model.make_train_function()
        self.state = model._get_jax_state(
            trainable_variables=True,
            non_trainable_variables=True,
            optimizer_variables=True,
            metrics_variables=True,
        )

    def __call__(self):
        """Runs one step; returns its logs."""
        logs, self.state = self.model.train_function(self.state, iter([self.data]))
        return logs

    def run(self, steps: int) -> float:
        """Runs ``steps`` steps; returns the seconds per step."""
        return seconds_per_call(self, 0, steps)


class CompiledPredict:
    """The model's compiled Keras predict function (JAX or PyTorch) called back
    to back on data already on the device, without reading each result back to
    the host (`predict_on_batch` does: it returns NumPy), as `predict` over
    many videos runs it. Each call runs one batch and returns its output."""

    def __init__(self, model, x):
        import keras

        self.model, self.x = model, x
        self.backend = keras.backend.backend()
        model.make_predict_function()
        if self.backend == "jax":
            self.state = model._get_jax_state(
                trainable_variables=True,
                non_trainable_variables=True,
                metrics_variables=False,
                purge_model_variables=False,
            )

    def __call__(self):
        if self.backend == "jax":
            out, self.state = self.model.predict_function(self.state, iter([(self.x,)]))
            return out
        return self.model.predict_function([(self.x,)])
