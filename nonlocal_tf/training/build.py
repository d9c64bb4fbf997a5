"""Creating a compiled model's training state before `fit` traces its step."""

from __future__ import annotations

import keras


def prepare_for_fit(model: keras.Model, batch) -> None:
    """Creates the optimizer's variables and the compiled metrics' variables of
    a compiled ``model`` for batches like ``batch`` (``(x, y)`` arrays, or a
    `tf.data` ``element_spec``), before `fit` / `train_on_batch` trace the
    training step.

    Keras's TensorFlow trainer leaves both to the first trace of the step; a
    ``tf.function`` whose first trace creates variables is traced a second
    time, so the whole step (forward, gradients, one optimizer update per
    variable) is traced twice. Built beforehand, it is traced once: on 2 CPU
    cores the first epoch of `zoo.demo` starts about 7 s earlier per model
    (``bench/RESULTS.md``). Other backends build this state symbolically
    before their first trace anyway; there the call costs a symbolic pass.
    """
    if getattr(model, "optimizer", None) is None:
        raise ValueError("prepare_for_fit needs a compiled model: call `compile` first.")
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    # Keras's own routine (what its JAX and PyTorch trainers call before the
    # first step): a symbolic pass of the model, loss and metrics on
    # KerasTensors shaped like the batch, which builds the metrics.
    model._symbolic_build(data_batch=tuple(batch))
