"""Keras's PyTorch training and predict steps replayed as CUDA graphs.

On the PyTorch backend Keras runs a model eagerly: a training step of a video
ResNet is several hundred Keras layer calls in Python, and on an H200 the host
needs three times as long to issue an I3D-NL5 step as the GPU needs to run it
(``bench/RESULTS.md``). A CUDA graph records the step's kernels once (forward,
backward, optimizer, metric and batch-norm statistics updates: exactly what
Keras's step launches) and replays them with one call.

`GraphedStep` wraps a Keras ``train_function`` or ``predict_function``
(`LeanFunctional` installs it where `nonlocal_tf.runtime.cuda_graphs` says so).
On the first batch it runs the eager step twice on a side stream (cuDNN picks
its kernels, the allocator warms up), records a third call, and puts every
variable back as it was before the warm-up: weights, optimizer state and
counters, metrics. Each batch is then copied into the recorded inputs and the
graph replayed; the outputs are copied out, so `predict` can keep each batch's
results. Batches of other shapes or dtypes get their own graph (in the same
memory pool), up to `MAX_GRAPHS`; beyond that, and wherever recording fails
(a step that reads a value back to the host, such as a loss scale's
condition), the eager step runs, with a warning.

What a graph fixes at recording: the step's Python-level decisions (which
branch, which shapes) and constants. Keras's built-in optimizers, losses,
metrics and learning-rate schedules keep their state in device variables, which
the graph reads at each replay; `Dropout` without a seed draws from PyTorch's
default generator, which CUDA graphs advance at each replay. The memory a
recorded step needs stays reserved for it between replays (its pool).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import warnings

import keras
from keras import tree

MAX_GRAPHS = 4  # shapes recorded per step function (an epoch's last batch, a second input size)
WARMUP_CALLS = 2


@contextlib.contextmanager
def _capturable_constants():
    """Keras turns Python numbers (and small NumPy arrays) into device tensors
    with ``torch.as_tensor(value, device=...)``: a copy from pageable host
    memory, which a CUDA graph cannot record. While recording, such constants
    are made on the device by fill kernels (their value is fixed in the graph,
    right for constants). Keras's PyTorch optimizers also pass the learning
    rate, a device tensor, as the ``alpha`` of ``torch._foreach_add_``, which
    PyTorch reads back to the host: it is multiplied on the device instead, so
    the graph follows a learning-rate schedule."""
    import numpy as np
    import torch

    as_tensor = torch.as_tensor
    foreach_add_ = torch._foreach_add_

    def capturable_as_tensor(data, dtype=None, device=None):
        target = torch.device(device) if device is not None else None
        if target is None or target.type != "cuda" or isinstance(data, torch.Tensor):
            return as_tensor(data, dtype=dtype, device=device)
        host = as_tensor(np.asarray(data), dtype=dtype)
        if host.numel() > 256:
            raise RuntimeError(
                f"a constant of shape {tuple(host.shape)} is copied to the GPU inside the step"
            )
        values = [
            torch.full((), v, dtype=host.dtype, device=target) for v in host.flatten().tolist()
        ]
        if not values:
            return torch.empty(host.shape, dtype=host.dtype, device=target)
        return torch.stack(values).reshape(host.shape)

    def capturable_foreach_add_(tensors, others, alpha=1):
        if isinstance(alpha, torch.Tensor) and isinstance(others, (list, tuple)):
            return foreach_add_(tensors, torch._foreach_mul(others, alpha))
        return foreach_add_(tensors, others, alpha=alpha)

    torch.as_tensor, torch._foreach_add_ = capturable_as_tensor, capturable_foreach_add_
    try:
        yield
    finally:
        torch.as_tensor, torch._foreach_add_ = as_tensor, foreach_add_


def _signature(batch):
    """The batch's structure with each tensor as (shape, dtype): equal
    signatures replay the same graph."""
    import numpy as np
    import torch

    def leaf(value):
        if value is None:
            return None
        if isinstance(value, (torch.Tensor, np.ndarray)):
            return (tuple(value.shape), _tensor(value).dtype)
        raise TypeError(type(value).__name__)

    return tuple(map(leaf, tree.flatten(batch)))


class CudaRecorder:
    """Records calls as CUDA graphs on one side stream, every graph of a step
    function in one memory pool (they never run at the same time)."""

    def __init__(self):
        import torch

        self.stream = torch.cuda.Stream()
        self.pool = None
        self.staging: dict = {}  # id of an input buffer -> two (pinned tensor, copy done) slots

    def device(self):
        import torch

        return torch.device("cuda", torch.cuda.current_device())

    def warm_up(self, call, times: int) -> None:
        import torch

        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            for _ in range(times):
                call()
        torch.cuda.current_stream().wait_stream(self.stream)

    def capture(self, call):
        """``(replay, outputs)``: ``replay()`` runs the recorded kernels again,
        writing into ``outputs``."""
        import torch

        graph = torch.cuda.CUDAGraph()
        with _capturable_constants(), torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            outputs = call()
        if self.pool is None:
            self.pool = graph.pool()
        return graph.replay, outputs

    def abandon(self) -> None:
        import torch

        torch.cuda.synchronize()

    def upload(self, buffer, value) -> None:
        """Copies ``value`` into the recorded input ``buffer``. From host
        memory through one of two pinned staging buffers per input, so that the
        copy to the GPU overlaps the step before (a copy from pageable memory
        makes the host wait for the GPU, then for the copy: 38 MB per training
        batch of 16 clips at 224)."""
        import torch

        if value.device.type != "cpu":
            buffer.copy_(value, non_blocking=True)
            return
        slots = self.staging.get(id(buffer))
        if slots is None:  # the buffer's shape: the batch matched its signature
            slots = [
                (torch.empty(value.shape, dtype=buffer.dtype, pin_memory=True), torch.cuda.Event())
                for _ in range(2)
            ]
            self.staging[id(buffer)] = slots
        slots.reverse()
        staging, copied = slots[0]
        copied.synchronize()  # this slot's copy of two batches ago has finished
        staging.copy_(value)
        buffer.copy_(staging, non_blocking=True)
        copied.record()


class GraphedStep:
    """A Keras step function (``model.train_function`` or
    ``model.predict_function`` of the PyTorch backend, called with
    ``[batch]``) replayed as CUDA graphs. ``state``: returns the variables the
    step updates, put back after the warm-up calls (none for predict);
    ``recorder``: a `CudaRecorder` (tests pass one that re-runs the step)."""

    def __init__(self, eager, state, name: str, recorder=None):
        self.eager, self.state, self.name = eager, state, name
        self.recorder = recorder if recorder is not None else CudaRecorder()
        self.recorded: dict = {}  # signature -> (replay, input buffers, outputs)
        self.failed = False
        self.warned_full = False

    def __call__(self, data):
        (batch,) = data
        try:
            key = _signature(batch)
        except TypeError:  # not arrays: the eager step knows what to do with it
            return self.eager(data)
        if key not in self.recorded:
            if self.failed:
                return self.eager(data)
            if len(self.recorded) >= MAX_GRAPHS:
                if not self.warned_full:
                    self.warned_full = True
                    warnings.warn(
                        f"The {self.name} step has met {MAX_GRAPHS} batch shapes; further shapes "
                        "run eagerly (slower on a GPU). Batches of one shape replay one graph.",
                        stacklevel=2,
                    )
                return self.eager(data)
            recorded = self._record(batch)
            if recorded is None:
                return self.eager(data)
            self.recorded[key] = recorded
        replay, buffers, outputs = self.recorded[key]
        for buffer, value in zip(buffers, tree.flatten(batch), strict=True):
            if buffer is not None:
                self.recorder.upload(buffer, _tensor(value))
        replay()
        return tree.map_structure(lambda t: t.clone() if hasattr(t, "clone") else t, outputs)

    def _record(self, batch):
        import torch

        device = self.recorder.device()
        buffers = [
            None if v is None else _tensor(v).to(device=device, copy=True)
            for v in tree.flatten(batch)
        ]
        call = functools.partial(self.eager, [tree.pack_sequence_as(batch, buffers)])
        variables = self.state()
        saved = [v.value.detach().clone() for v in variables]
        gc.collect()  # autograd graphs of earlier steps, held in reference cycles
        try:
            self.recorder.warm_up(call, WARMUP_CALLS)
            if len(self.state()) != len(variables):
                raise RuntimeError("the step created variables while warming up")
            gc.collect()
            replay, outputs = self.recorder.capture(call)
        except RuntimeError as error:
            self.failed = True
            self.recorder.abandon()
            warnings.warn(
                f"The {self.name} step could not be recorded as a CUDA graph and runs eagerly "
                f"(NONLOCAL_TF_CUDA_GRAPHS=0 skips recording). Reason: {error}",
                stacklevel=3,
            )
            return None
        finally:
            with torch.no_grad():
                for variable, value in zip(variables, saved, strict=True):
                    variable.value.copy_(value)
        return replay, buffers, outputs


def _tensor(value):
    import torch

    return torch.as_tensor(value)


def train_state(model: keras.Model):
    """What a training step changes: the model's variables, the optimizer's
    (slots, iteration counter) and the metrics'."""
    return lambda: [*model.variables, *model.optimizer.variables, *model.metrics_variables]


def install(model: keras.Model, kind: str) -> None:
    """Wraps ``model.train_function`` (``kind="train"``) or
    ``model.predict_function`` (``"predict"``) in a `GraphedStep`."""
    if kind == "train":
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.train_function = GraphedStep(model.train_function, train_state(model), "training")
    elif kind == "predict":
        model.predict_function = GraphedStep(model.predict_function, lambda: [], "predict")
    else:
        raise ValueError(f"kind must be 'train' or 'predict'. Received: kind={kind!r}")
