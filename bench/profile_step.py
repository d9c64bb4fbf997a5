"""Where the time of one training step goes (Keras on JAX).

For one model: the rate of ``train_on_batch`` (which converts the loss to a
Python float, so the host waits for every step) against the same compiled
Keras train step called back to back (the host queues the next step while the
GPU runs this one); then a profiler trace of a few steps, summed per GPU kernel
and per kind of kernel (convolutions, matrix products, fusions, copies), and
the optimised HLO of the step (layouts of the convolutions, transposes).

    KERAS_BACKEND=jax python bench/profile_step.py --variant=i3d_r50_8x8 --out=/tmp/prof
    python bench/profile_step.py --variant=c2d_r50_8x8 --batch=2 --size=64 --no-trace   # CPU
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.train_throughput import (  # noqa: E402
    CompiledSteps,
    seconds_per_train_on_batch,
    training_setup,
)

# Kernel-name patterns -> kind, first match wins (cuDNN/CUTLASS/cuBLAS names, XLA fusions).
KINDS = [
    ("convolution", r"conv|cudnn|implicit|fprop|dgrad|wgrad|xmma_fprop|xmma_dgrad|xmma_wgrad"),
    ("matrix product", r"gemm|cutlass|cublas|sm90_xmma|ampere_|triton_gemm|nvjet"),
    ("reduction (BN moments, pooling)", r"reduce|reduction|row_reduction|column_reduction"),
    ("transpose / copy", r"transpose|copy|memcpy|memset"),
    ("other fusion (elementwise)", r"fusion|loop|input_|kernel"),
]


def kind_of(name: str) -> str:
    lowered = name.lower()
    for kind, pattern in KINDS:
        if re.search(pattern, lowered):
            return kind
    return "other"


def summarise_trace(path: str, steps: int, top: int = 25) -> dict:
    """Sums GPU kernel time per name and per kind from a Perfetto/Chrome trace."""
    with gzip.open(path, "rt") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    process = {}
    thread = {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            process[e["pid"]] = e["args"]["name"]
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            thread[(e["pid"], e["tid"])] = e["args"]["name"]
    per_thread = collections.defaultdict(collections.Counter)
    for e in events:
        if e.get("ph") != "X" or "GPU" not in process.get(e.get("pid"), ""):
            continue
        per_thread[thread.get((e["pid"], e["tid"]), str(e["tid"]))][e["name"]] += e["dur"]
    # The thread with kernels ("Stream ...") rather than the XLA-op or module lines.
    summary = {}
    for name, counter in per_thread.items():
        total = sum(counter.values()) / 1000 / steps
        kinds = collections.Counter()
        for kernel, us in counter.items():
            kinds[kind_of(kernel)] += us / 1000 / steps
        summary[name] = {
            "ms_per_step": round(total, 2),
            "kinds": {k: round(v, 2) for k, v in kinds.most_common()},
            "top": [(k, round(v / 1000 / steps, 3)) for k, v in counter.most_common(top)],
        }
    return summary


def compare_logits(variant: str, frames: int, dtype: str, size: int = 224) -> dict:
    """Logits of the folded and the plain (``conv_implementation="native"``)
    model with the same weights on the same clips: relative L2 difference."""
    import keras
    import numpy as np

    from nonlocal_tf import models

    keras.config.set_dtype_policy(dtype)
    built = {
        impl: models.create_model(
            variant,
            input_shape=(frames, size, size, 3),
            classes=400,
            classifier_activation=None,
            conv_implementation=impl,
        )
        for impl in ("native", "folded")
    }
    rng = np.random.default_rng(1)
    weights = [w + rng.normal(0, 0.02, w.shape) for w in built["native"].get_weights()]
    for model in built.values():
        model.set_weights(weights)  # random, with non-zero residual-branch gammas
    x = rng.uniform(-2, 2, size=(2, frames, size, size, 3)).astype("float32")
    out = {k: np.asarray(m.predict_on_batch(x), dtype=np.float64) for k, m in built.items()}
    diff = np.linalg.norm(out["folded"] - out["native"]) / np.linalg.norm(out["native"])
    return {"variant": variant, "dtype": dtype, "relative_l2_logits": float(diff)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--variant", default="i3d_r50_8x8")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--dtype", default="mixed_bfloat16")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default="/tmp/profile_step")
    parser.add_argument("--no-trace", dest="trace", action="store_false")
    parser.add_argument("--hlo", action="store_true", help="write the optimised HLO of the step")
    parser.add_argument("--conv_implementation", default="auto")
    parser.add_argument(
        "--compare", action="store_true", help="only compare folded and native logits"
    )
    args = parser.parse_args()
    if args.compare:
        print("RESULT " + json.dumps(compare_logits(args.variant, args.frames, args.dtype)))
        return

    import jax
    import keras

    os.makedirs(args.out, exist_ok=True)
    keras.config.set_dtype_policy(args.dtype)
    model, x, y = training_setup(
        args.variant, args.frames, args.size, args.batch, args.conv_implementation
    )
    row = {
        "variant": args.variant,
        "frames": args.frames,
        "dtype": args.dtype,
        "conv_implementation": args.conv_implementation,
    }
    seconds = seconds_per_train_on_batch(model, x, y, warmup=3, steps=args.steps)
    row["train_on_batch_clips_per_s"] = round(args.batch / seconds, 1)
    steps = CompiledSteps(model, x, y)
    steps.run(3)
    row["compiled_step_clips_per_s"] = round(args.batch / steps.run(args.steps), 1)
    if args.hlo:
        lowered = jax.jit(model.train_step).lower(steps.state, (x, y, None))
        with gzip.open(os.path.join(args.out, "train_step_hlo.txt.gz"), "wt") as f:
            f.write(lowered.compile().as_text())
    if args.trace:
        trace_dir = os.path.join(args.out, "trace")
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            steps.run(3)
        found = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
        if found:
            row["trace"] = summarise_trace(found[0], steps=3)
            shutil.copy(found[0], os.path.join(args.out, "perfetto_trace.json.gz"))
        shutil.rmtree(trace_dir)
    print("RESULT " + json.dumps(row), flush=True)
    with open(os.path.join(args.out, f"profile_{args.variant}_{args.frames}.json"), "w") as f:
        json.dump(row, f, indent=1)


if __name__ == "__main__":
    main()
