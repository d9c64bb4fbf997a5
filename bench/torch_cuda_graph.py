"""Experiment: Keras's training step replayed as one CUDA graph (PyTorch
backend, GPU). Not part of the library; used by ``--cuda_graph`` in
``bench/train_throughput.py`` and ``bench/fit_throughput.py``.

On the PyTorch backend Keras runs eagerly, and a training step of a video
ResNet is several hundred Keras layer calls in Python: on an H100 the host
needs about three times as long to issue an I3D-NL5 step as the GPU needs to
run it (``bench/profile_step.py``, ``bench/RESULTS.md``). A CUDA graph records
the step's kernels once (forward, backward, optimizer and metric updates,
exactly what `Model.train_step` launches) and replays them with one call, so
the host's time per step no longer matters.

    model.compile(...)                       # jit_compile=False (eager)
    graph_train_step(model, x, y)            # one batch of the training shape
    model.fit(...)                           # replays the graph

Status (H100, PyTorch 2.11, 2026-11-25, see bench/RESULTS.md): a small fp32
I3D-NL5 records and replays with the eager step's losses; the full-size bf16
models fail to record in most runs ("operation would make the legacy stream
depend on a capturing blocking stream", raised inside ``loss.backward``) and
record reliably only with ``CUDA_LAUNCH_BLOCKING=1``. Hence an experiment.

Batches of another shape (an epoch's last, smaller batch) run the eager step.
Requirements, as for any CUDA graph: no host synchronisation inside the step
(true of Keras's step with the built-in optimizers, losses, metrics and
schedules), and random numbers from PyTorch's default generator (Keras's
`Dropout` without a seed uses it).
"""

from __future__ import annotations

import contextlib

import keras

CAPTURE_ERROR_MODE = "global"  # torch.cuda.graph's capture_error_mode


@contextlib.contextmanager
def _capturable_constants():
    """Keras turns Python numbers (and small NumPy arrays) into device tensors
    with ``torch.as_tensor(value, device=...)``: a copy from pageable host
    memory, which a CUDA graph cannot record. While recording, such constants
    are made on the device by fill kernels (one per number; small arrays
    only), so the value is fixed in the graph, which is right for constants.
    Keras's PyTorch optimizers also pass the learning rate, a device tensor,
    as an ``alpha`` that PyTorch reads back to the host (see ``foreach_add``)."""
    import numpy as np
    import torch

    original = torch.as_tensor

    def as_tensor(data, dtype=None, device=None):
        target = torch.device(device) if device is not None else None
        if target is None or target.type != "cuda" or isinstance(data, torch.Tensor):
            return original(data, dtype=dtype, device=device)
        if isinstance(data, (bool, int, float)):
            if dtype is None:
                return original(data, device=device)  # let it fail loudly: no silent dtype
            return torch.full((), data, dtype=dtype, device=target)
        host = original(np.asarray(data), dtype=dtype)
        if host.numel() > 256:
            raise ValueError(
                f"A constant of shape {tuple(host.shape)} is copied to the GPU inside the "
                "training step: a CUDA graph cannot record that copy."
            )
        # one fill per element (no host copy, no pinned-memory bookkeeping,
        # whose event queries a capture forbids)
        values = [
            torch.full((), v, dtype=host.dtype, device=target) for v in host.flatten().tolist()
        ]
        if not values:
            return torch.empty(host.shape, dtype=host.dtype, device=target)
        return torch.stack(values).reshape(host.shape)

    foreach_add_ = torch._foreach_add_

    def foreach_add(tensors, others, alpha=1):
        # Keras's PyTorch optimizers pass the learning rate (a device tensor)
        # as ``alpha``, which PyTorch reads back to the host: scaled on the
        # device instead, so the graph also follows a learning-rate schedule.
        if isinstance(alpha, torch.Tensor) and isinstance(others, (list, tuple)):
            return foreach_add_(tensors, torch._foreach_mul(others, alpha))
        return foreach_add_(tensors, others, alpha=alpha)

    torch.as_tensor, torch._foreach_add_ = as_tensor, foreach_add
    try:
        yield
    finally:
        torch.as_tensor, torch._foreach_add_ = original, foreach_add_


def graph_train_step(model: keras.Model, x, y, warmup: int = 3) -> None:
    """Records ``model``'s training step on a batch shaped like ``(x, y)``
    into a CUDA graph and installs it as ``model.train_function`` (what `fit`
    and `train_on_batch` call). The warm-up steps it needs run on ``(x, y)``
    and are then undone: weights, optimizer state and metrics are restored.
    Call after `compile` (which removes it again)."""
    import torch

    if keras.backend.backend() != "torch" or not torch.cuda.is_available():
        raise ValueError("graph_train_step needs the PyTorch backend on a CUDA GPU.")
    if model.jit_compile:
        raise ValueError("graph_train_step replaces torch.compile: compile with jit_compile=False.")
    device = torch.device("cuda")
    static_x = torch.as_tensor(keras.ops.convert_to_numpy(x)).to(device)
    static_y = torch.as_tensor(keras.ops.convert_to_numpy(y)).to(device)
    model.make_train_function(force=True)
    eager = model.train_function
    model.optimizer.build(model.trainable_variables)
    variables = [*model.variables, *model.optimizer.variables]
    saved = [v.value.detach().clone() for v in variables]  # the state before any step

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # CUDA graphs need warmed-up kernels and allocator
        for _ in range(warmup):
            eager([(static_x, static_y)])
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with _capturable_constants(), torch.cuda.graph(graph, capture_error_mode=CAPTURE_ERROR_MODE):
        static_logs = eager([(static_x, static_y)])
    with torch.no_grad():
        for variable, value in zip(variables, saved, strict=True):
            variable.value.copy_(value)
    model.reset_metrics()

    def train_function(data):
        batch_x, batch_y, *rest = data[0]
        if tuple(batch_x.shape) != tuple(static_x.shape) or any(r is not None for r in rest):
            return eager(data)  # another batch shape, or sample weights
        static_x.copy_(torch.as_tensor(batch_x), non_blocking=True)
        static_y.copy_(torch.as_tensor(batch_y), non_blocking=True)
        graph.replay()
        return static_logs

    train_function.graph = graph  # alive as long as the model

    model.train_function = train_function


def check(steps: int = 5) -> None:
    """A small I3D-NL5 (float32, no dropout) trained ``steps`` steps by the
    eager step and by the recorded graph from the same weights: prints both
    losses, the largest relative weight difference and the optimizer's
    step counts.

        KERAS_BACKEND=torch python bench/torch_cuda_graph.py
    """
    import numpy as np

    from nonlocal_tf import models, training

    def build():
        keras.utils.set_random_seed(0)
        model = models.create_model(
            "i3d_nl5_r50_8x8",
            input_shape=(8, 64, 64, 3),
            classes=5,
            width_per_group=8,
            dropout_rate=0.0,
        )
        model.compile(
            optimizer=training.make_optimizer(training.OFFICIAL, 100, 4),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            jit_compile=False,
        )
        return model

    rng = np.random.default_rng(0)
    batches = [
        (
            rng.normal(size=(4, 8, 64, 64, 3)).astype("float32"),
            rng.integers(0, 5, 4).astype("int32"),
        )
        for _ in range(steps)
    ]
    eager, graphed = build(), build()
    graphed.set_weights(eager.get_weights())
    graph_train_step(graphed, *batches[0])
    for name, model in (("eager", eager), ("graph", graphed)):
        losses = [float(model.train_on_batch(x, y)) for x, y in batches]
        print(name, "losses", np.round(losses, 5).tolist())
    difference = max(
        float(np.linalg.norm(a - b) / (np.linalg.norm(a) + 1e-12))
        for a, b in zip(eager.get_weights(), graphed.get_weights(), strict=True)
    )
    print(f"max relative weight difference after {steps} steps", difference)
    print(
        "optimizer iterations",
        int(keras.ops.convert_to_numpy(eager.optimizer.iterations)),
        int(keras.ops.convert_to_numpy(graphed.optimizer.iterations)),
    )


if __name__ == "__main__":
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    check()
