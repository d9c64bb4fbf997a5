"""Creating a compiled model's training state before `fit` traces its step."""

from __future__ import annotations

import logging

import keras

log = logging.getLogger("nonlocal_tf")


def prepare_for_fit(model: keras.Model, batch) -> None:
    """Creates the optimizer's variables and the compiled metrics' variables of
    a compiled ``model`` for batches like ``batch``: ``(x, y)`` or
    ``(x, y, sample_weight)`` arrays, or a `tf.data` ``element_spec`` of that
    form. Call it after `compile`, before `fit` / `train_on_batch`.

    Keras's TensorFlow trainer leaves both to the first trace of the step; a
    ``tf.function`` whose first trace creates variables is traced a second
    time, so the whole step (forward, gradients, one optimizer update per
    variable) is traced twice. Built beforehand, it is traced once: on 2 CPU
    cores `zoo.demo`'s non-local model reaches the end of a 3-step first epoch
    in 12.0 s instead of 20.5 s (``bench/RESULTS.md``). Other backends build
    this state symbolically before their first trace anyway; there the call
    only does that earlier.
    """
    if getattr(model, "optimizer", None) is None:
        raise ValueError("prepare_for_fit needs a compiled model: call `compile` first.")
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise ValueError(
            "prepare_for_fit expects a batch `(x, y)` or `(x, y, sample_weight)` (arrays or "
            f"a dataset's element_spec). Received: {type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        )
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    # Keras's own routine (what its JAX and PyTorch trainers call before the
    # first step): a symbolic pass of the model, loss and metrics on
    # KerasTensors shaped like the batch, which builds the metrics. It is
    # private: if a Keras release renames or changes it, `fit` builds the
    # metrics itself as before (TensorFlow then traces the step twice).
    symbolic_build = getattr(model, "_symbolic_build", None)
    if symbolic_build is None:
        log.warning("prepare_for_fit: this Keras has no Model._symbolic_build; skipped.")
        return
    try:
        symbolic_build(data_batch=tuple(batch))
    except TypeError as exc:  # another signature
        log.warning("prepare_for_fit: Model._symbolic_build changed (%s); skipped.", exc)
