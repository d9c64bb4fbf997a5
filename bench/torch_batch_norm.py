"""PyTorch batch norm on a channels-last video tensor: which view is fast.

`nonlocal_tf.layers.torch_ops.batch_norm` hands PyTorch the ``(N, C)`` rows
of a ``(B, T, H, W, C)`` activation. This times that against the
``(B, C, T, H, W)`` channels-last view it used before, and against a
channels-first contiguous tensor (PySlowFast's layout), on the shapes of
I3D R50 at batch 16 and 224 (and one 30-view test activation): forward and
backward while training (batch statistics), forward with moving statistics,
in microseconds per call; with the largest difference of each output from the
5D view's (summation order only).

    python bench/torch_batch_norm.py            # on a GPU, bfloat16
    python bench/torch_batch_norm.py --device=cpu --dtype=float32
"""

from __future__ import annotations

import json
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("device", "cuda", "torch device.")
flags.DEFINE_string("dtype", "bfloat16", "activation dtype (statistics are float32).")
flags.DEFINE_integer("steps", 30, "Timed calls.")

SHAPES = [  # (B, T, H, W, C)
    (16, 8, 56, 56, 64),  # res2's inner width
    (16, 4, 56, 56, 256),  # res2's output, after the temporal pool
    (16, 4, 28, 28, 512),
    (16, 4, 14, 14, 1024),
    (30, 8, 64, 64, 256),  # a 30-view test batch at 256, res2
]
EPSILON = 1e-5


def microseconds(torch, fn, steps: int) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize() if FLAGS.device == "cuda" else None
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    torch.cuda.synchronize() if FLAGS.device == "cuda" else None
    return round((time.perf_counter() - start) / steps * 1e6, 1)


def layouts(torch, shape):
    """name -> (to PyTorch's input, back to (B, T, H, W, C))."""
    first = (0, 4, 1, 2, 3)
    last = (0, 2, 3, 4, 1)
    return {
        "rows_2d": (lambda x: x.reshape(-1, shape[-1]), lambda y: y.view(shape)),
        "view_5d": (lambda x: x.permute(first), lambda y: y.permute(last)),
        "channels_first": (
            lambda x: x.permute(first).contiguous(),
            lambda y: y.permute(last),
        ),
    }


def measure(torch, F, shape, device, dtype) -> dict:
    """Times and outputs of each layout on one activation shape."""
    channels = shape[-1]
    rng = torch.Generator(device=device).manual_seed(0)
    x0 = torch.randn(shape, device=device, generator=rng).to(dtype)
    dy = torch.randn(shape, device=device, generator=rng).to(dtype)
    gamma = (torch.rand(channels, device=device) + 0.5).requires_grad_()
    beta = torch.rand(channels, device=device).requires_grad_()
    mean = torch.rand(channels, device=device)
    variance = torch.rand(channels, device=device) + 0.5
    row = {"shape": shape, "dtype": FLAGS.dtype, "device": device}
    outputs = {}
    for name, (into, back) in layouts(torch, shape).items():
        # The activation and its incoming gradient as the layout holds them
        # (channels_first: copies made once, outside the timing).
        x = into(x0).detach().clone().requires_grad_()
        dy_held = into(dy).clone()

        def train(x=x, dy_held=dy_held):
            y, _, _ = torch.native_batch_norm(x, gamma, beta, None, None, True, 0.0, EPSILON)
            y.backward(dy_held)

        def infer(x=x):
            with torch.no_grad():
                return F.batch_norm(x, mean, variance, gamma, beta, False, 0.0, EPSILON)

        row[name] = {
            "train_us": microseconds(torch, train, FLAGS.steps),
            "inference_us": microseconds(torch, infer, FLAGS.steps),
        }
        x.grad = gamma.grad = beta.grad = None
        y, batch_mean, _ = torch.native_batch_norm(x, gamma, beta, None, None, True, 0.0, EPSILON)
        y.backward(dy_held)
        outputs[name] = [
            t.detach().float().clone()
            for t in (back(y), batch_mean, back(x.grad), gamma.grad, back(infer()))
        ]
    for name, got in outputs.items():
        row[name]["max_diff"] = [
            float((a - b).abs().max()) for a, b in zip(got, outputs["view_5d"], strict=True)
        ]
    return row


def main(argv) -> None:
    del argv
    import torch
    import torch.nn.functional as F

    torch.backends.cudnn.benchmark = True
    for shape in SHAPES:
        row = measure(torch, F, shape, FLAGS.device, getattr(torch, FLAGS.dtype))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    app.run(main)
