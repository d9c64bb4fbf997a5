"""Checks on input sizes that hold whether a size is known now or only when
the graph runs.

A static size (a Python int: always on JAX and PyTorch, and on TensorFlow
where the shape is known) is checked at once and raises `ValueError`. A size
that is symbolic in a TensorFlow graph (a ``None`` dimension) is checked by an
assertion inside the graph that the guarded tensor depends on, so that it
fails with the same message (``InvalidArgumentError``) before any kernel
sees the bad input (TensorFlow's oneDNN pooling dies of SIGFPE on an empty
window). Layers never branch in Python on a symbolic size. XLA compiles the
assertions away.
"""

from __future__ import annotations

import keras
from keras import ops


def is_static(*sizes) -> bool:
    return all(isinstance(s, int) for s in sizes)


def at_least(size, minimum: int, message: str):
    """The condition ``size >= minimum`` (a bool, or a graph tensor) and its message."""
    return (size >= minimum if is_static(size) else ops.greater_equal(size, minimum)), message


def multiple_of(size, factor: int, message: str):
    """The condition ``size % factor == 0`` and its message."""
    if is_static(size):
        return size % factor == 0, message
    return ops.equal(ops.mod(size, factor), 0), message


def guard(x, *conditions):
    """``x``, once every ``(condition, message)`` holds: a false static condition
    raises `ValueError` now; symbolic ones become assertions that ``x`` waits for."""
    pending = []
    for condition, message in conditions:
        if isinstance(condition, bool):
            if not condition:
                raise ValueError(message)
        else:
            pending.append((condition, message))
    if not pending or keras.backend.backend() != "tensorflow":
        return x
    import tensorflow as tf

    asserts = [tf.debugging.Assert(condition, [message]) for condition, message in pending]
    with tf.control_dependencies(asserts):
        return tf.identity(x)


def require_float(x, layer: str) -> None:
    """Refuses integer or boolean inputs, which a float layer would truncate."""
    dtype = keras.backend.standardize_dtype(x.dtype)
    if not dtype.startswith(("float", "bfloat")):
        raise ValueError(
            f"{layer} takes floating-point inputs (cast them first). Received: dtype={dtype}"
        )
