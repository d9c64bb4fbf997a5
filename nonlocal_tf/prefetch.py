"""Moving the next batches to the accelerator from a background thread, so
that the copy of batch k+1 runs while the model computes on batch k.

Keras's own loops copy each batch in the thread that dispatches the model:
on JAX one batch ahead (``jax.device_put`` of pageable host memory, a host
memcpy before the DMA), on PyTorch when the step starts. For the 30-view test
that copy is 47 MB of uint8 views per video (I3D at 256); `fit` and
`predict` are fed through `to_device` by `zoo.train` and
`nonlocal_tf.evaluation`. Where there is nothing to overlap (a CPU, or
TensorFlow, whose tf.data prefetches on its own) batches pass through
untouched.

`nonlocal_tf.layers.cut_views` (also `training.cut_views`) is the stage after
it for batches of clips the accelerator augments (``augment_on="device"``).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator

import keras

from nonlocal_tf import runtime


def place_batch(batch):
    """A batch (a NumPy structure) on the accelerator: JAX arrays laid out as
    the current distribution splits batches (global arrays Keras takes as they
    are; with several processes left on the host, where Keras assembles the
    global arrays from each process's batch), or on the default device;
    PyTorch CUDA tensors, copied through pinned memory. Unchanged elsewhere."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        distribution = keras.distribution.distribution()
        if distribution is not None:
            if jax.process_count() > 1:
                return batch
            layout = lambda x: distribution.get_data_layout(x.shape).backend_layout  # noqa: E731
        elif runtime.accelerator() == "gpu":
            layout = lambda x: None  # noqa: E731  (the default device)
        else:
            return batch
        return keras.tree.map_structure(
            lambda x: None if x is None else jax.device_put(x, layout(x)), batch
        )
    if backend == "torch" and runtime.accelerator() == "gpu":
        import torch

        def place(x):
            if x is None:
                return x
            host = torch.from_numpy(x) if not isinstance(x, torch.Tensor) else x
            return host.pin_memory().to("cuda", non_blocking=True)

        with torch.cuda.stream(_copy_stream()):
            placed = keras.tree.map_structure(place, batch)
            torch.cuda.current_stream().synchronize()  # whole before the consumer sees it
        return placed
    return batch


def _copy_stream():
    import torch

    global _STREAM
    if _STREAM is None:
        _STREAM = torch.cuda.Stream()
    return _STREAM


_STREAM = None


def wanted() -> bool:
    """Whether `to_device` has anything to overlap here."""
    backend = keras.backend.backend()
    if backend == "jax" and keras.distribution.distribution() is not None:
        return True
    return backend in ("jax", "torch") and runtime.accelerator() == "gpu"


def to_device(batches: Iterable, depth: int = 2) -> Iterator:
    """The batches of ``batches`` (NumPy structures), `place_batch`-ed
    ``depth`` ahead by a background thread; ``batches`` itself, iterated,
    where nothing would overlap (`wanted`). An exception of ``batches`` is
    raised to the consumer."""
    if not wanted():
        return iter(batches)
    ready: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def produce():
        try:
            for batch in batches:
                ready.put(place_batch(batch))
        except BaseException as exc:  # handed to the consumer
            ready.put(exc)
        ready.put(done)

    threading.Thread(target=produce, daemon=True, name="prefetch.to_device").start()

    def consume():
        while True:
            item = ready.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    return consume()


class InputClock:
    """How long a consumer waited for the batches of the streams it `wrap`-s:
    ``waited`` seconds since the last `reset` (the model's loop waiting for
    input: on a stream fed by `to_device`, the time its queue was empty)."""

    def __init__(self):
        self.waited = 0.0

    def wrap(self, batches: Iterable) -> Iterator:
        """``batches`` as a generator (what Keras's `fit` takes) whose waits count."""
        iterator = iter(batches)
        while True:
            started = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            finally:
                self.waited += time.perf_counter() - started
            yield batch

    def reset(self) -> float:
        """The seconds waited so far, and the clock back to 0."""
        waited, self.waited = self.waited, 0.0
        return waited
