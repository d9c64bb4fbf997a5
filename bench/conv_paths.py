"""Which 3D-convolution path and which ``jit_compile`` train fastest on the
current Keras backend and device: the measurements behind
`nonlocal_tf.runtime.conv_implementation` and `nonlocal_tf.runtime.jit_compile`.

Every combination of ``conv_implementation`` (``native``: Keras's Conv3D /
MaxPooling3D, with PyTorch's own ops on that backend; ``folded``: 2D
convolutions and matrix products, `nonlocal_tf.layers.VideoConv3D`) and
``jit_compile`` (off / on: XLA on TensorFlow and JAX, ``torch.compile`` on
PyTorch) trains a model with ``train_on_batch`` from host NumPy batches, as
`fit` feeds it; each case in a fresh process. Reported: seconds per step after
the warm-up, and the seconds until the first step returned (tracing and
compilation included).

Models: ``demo`` is `zoo.demo`'s non-local C2D (width 4, 8x32x32 clips, batch
32, its AdamW step); ``i3d`` is I3D-NL5 R50 at width 8 on 8x64x64 clips, batch
4, with the official SGD step (temporal kernels, which the demo lacks).

    KERAS_BACKEND=tensorflow python bench/conv_paths.py
    TF_ENABLE_ONEDNN_OPTS=0 KERAS_BACKEND=tensorflow python bench/conv_paths.py
    KERAS_BACKEND=jax python bench/conv_paths.py --models=demo,i3d
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._cases import case_command, report, run_case  # noqa: E402
from bench.train_throughput import seconds_per_train_on_batch, training_setup  # noqa: E402

IMPLEMENTATIONS = ("native", "folded")
JIT = ("off", "on")


def i3d_step_time(conv_implementation: str, jit_compile: str, warmup: int, steps: int) -> dict:
    """I3D-NL5 R50 (width 8, 8x64x64, batch 4, official SGD step,
    `train_throughput.training_setup`), timed as `zoo.demo.step_time` times
    the demo's model."""
    from nonlocal_tf import training

    started = time.perf_counter()
    model, x, y = training_setup(
        "i3d_nl5_r50_8x8", 8, 64, 4, conv_implementation, jit_compile, width_per_group=8
    )
    training.prepare_for_fit(model, (x[:1], y[:1]))
    float(model.train_on_batch(x, y))
    first = time.perf_counter() - started
    step = seconds_per_train_on_batch(model, x, y, warmup, steps)
    return {"first_step_s": round(first, 2), "step_s": round(step, 4)}


def measure(args) -> dict:
    import keras

    from nonlocal_tf import runtime

    if args.model == "demo":
        from zoo import demo

        timing = demo.step_time(
            conv_implementation=args.conv_implementation,
            jit_compile=args.jit_compile == "on",
            warmup=args.warmup,
            steps=args.steps,
        )
    else:
        timing = i3d_step_time(args.conv_implementation, args.jit_compile, args.warmup, args.steps)
    return {
        "model": args.model,
        "backend": keras.backend.backend(),
        "device": runtime.accelerator(),
        "onednn": runtime.onednn_enabled() if keras.backend.backend() == "tensorflow" else None,
        "conv_implementation": args.conv_implementation,
        "jit_compile": args.jit_compile,
        "first_step_s": timing["first_step_s"],
        "step_s": timing["step_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", default="demo,i3d")
    parser.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--jit", default=",".join(JIT), help="off,on")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--timeout", type=int, default=300)
    parser.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--conv_implementation", help=argparse.SUPPRESS)
    parser.add_argument("--jit_compile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        report(measure(args))
        return
    rows = []
    for model, implementation, jit in itertools.product(
        args.models.split(","), args.implementations.split(","), args.jit.split(",")
    ):
        case = dict(model=model, conv_implementation=implementation, jit_compile=jit)
        row = run_case(case_command(__file__, args, **case), case, args.timeout)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| model | conv_implementation | jit_compile | s/step | first step s |")
    print("|---|---|---|---|---|")
    for r in rows:
        rate = r.get("step_s", r.get("error"))
        print(
            f"| {r['model']} | {r['conv_implementation']} | {r['jit_compile']} | {rate} | "
            f"{r.get('first_step_s', '')} |"
        )


if __name__ == "__main__":
    main()
