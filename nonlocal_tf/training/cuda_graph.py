"""Keras's training step replayed as one CUDA graph (PyTorch backend, GPU).

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

Batches of another shape (an epoch's last, smaller batch) run the eager step.
Requirements, as for any CUDA graph: no host synchronisation inside the step
(true of Keras's step with the built-in optimizers, losses, metrics and
schedules), and random numbers from PyTorch's default generator (Keras's
`Dropout` without a seed uses it).
"""

from __future__ import annotations

import keras


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
    eager([(static_x, static_y)])  # builds the optimizer and metric variables
    variables = [*model.variables, *model.optimizer.variables, *model.metrics_variables]
    saved = [v.value.detach().clone() for v in variables]

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # CUDA graphs need warmed-up kernels and allocator
        for _ in range(warmup):
            eager([(static_x, static_y)])
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_logs = eager([(static_x, static_y)])
    with torch.no_grad():
        for variable, value in zip(variables, saved, strict=True):
            variable.value.copy_(value)

    def train_function(data):
        batch_x, batch_y, *rest = data[0]
        if tuple(batch_x.shape) != tuple(static_x.shape) or any(r is not None for r in rest):
            return eager(data)  # another batch shape, or sample weights
        static_x.copy_(torch.as_tensor(batch_x), non_blocking=True)
        static_y.copy_(torch.as_tensor(batch_y), non_blocking=True)
        graph.replay()
        return static_logs

    model.train_function = train_function
