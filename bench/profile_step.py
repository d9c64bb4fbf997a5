"""Where the time of one training step goes (Keras on JAX or PyTorch).

JAX: the rate of ``train_on_batch`` (which converts the loss to a Python
float, so the host waits for every step) against the same compiled Keras train
step called back to back (the host queues the next step while the GPU runs this
one); then a profiler trace of a few steps, summed per GPU kernel and per kind
of kernel (convolutions, matrix products, fusions, copies), and the optimised
HLO of the step (layouts of the convolutions, transposes).

Several GPUs (JAX, ``--gpus=2``): the step data-parallel as `fit` runs it
(`keras.distribution.DataParallel`, ``--batch`` clips per GPU); the trace's
timeline gives, per GPU, the time any kernel runs against the traced span and
the collectives' (NCCL) time, with the part no other kernel overlaps.

PyTorch (eager): the step's wall time against the GPU's busy time (kernel time
summed by the PyTorch profiler; the rest is the host preparing the step) and
the kernels by kind.

    KERAS_BACKEND=jax python bench/profile_step.py --variant=i3d_r50_8x8 --out=/tmp/prof
    KERAS_BACKEND=torch python bench/profile_step.py --variant=i3d_nl5_r50_8x8
    KERAS_BACKEND=jax python bench/profile_step.py --variant=i3d_nl5_r50_8x8 --gpus=2
    python bench/profile_step.py --variant=c2d_r50_8x8 --batch=2 --size=64 --notrace   # CPU
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import shutil
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._steps import CompiledSteps, seconds_per_train_on_batch, training_setup  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("variant", "i3d_r50_8x8", "A named variant.")
flags.DEFINE_integer("frames", 8, "Clip length.")
flags.DEFINE_string("dtype", "mixed_bfloat16", "Keras dtype policy.")
flags.DEFINE_integer("batch", 16, "Training batch.")
flags.DEFINE_integer("size", 224, "Frame size.")
flags.DEFINE_integer("steps", 10, "Timed steps.")
flags.DEFINE_string("out", "/tmp/profile_step", "Where traces and the HLO go.")
flags.DEFINE_bool("trace", True, "Record and summarise a profiler trace (--notrace: skip).")
flags.DEFINE_bool("hlo", False, "Write the optimised HLO of the step.")
flags.DEFINE_enum("mode", "train", ["train", "test"], "Training step or 30-view test.")
flags.DEFINE_enum("conv_implementation", "auto", ["auto", "folded", "native"], "VideoResNet's.")
flags.DEFINE_bool("compare", False, "Only compare folded and native logits.")
flags.DEFINE_integer(
    "gpus", 0, "JAX: the step data-parallel over the first N GPUs (--batch clips each); 0: one."
)

# Kernel-name patterns -> kind, first match wins (cuDNN/CUTLASS/cuBLAS names, XLA fusions).
KINDS = [
    ("collective (NCCL)", r"nccl|all_reduce|allreduce|all-reduce|reduce_scatter|all_gather"),
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


def _union(intervals):
    """Merged ``(start, end)`` intervals, sorted."""
    merged = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def _length(intervals) -> float:
    return sum(end - start for start, end in intervals)


def _minus(a, b) -> float:
    """Length of the merged intervals ``a`` outside the merged intervals ``b``."""
    total, j = 0.0, 0
    for start, end in a:
        covered = 0.0
        while j < len(b) and b[j][1] <= start:
            j += 1
        k = j
        while k < len(b) and b[k][0] < end:
            covered += min(end, b[k][1]) - max(start, b[k][0])
            k += 1
        total += end - start - covered
    return total


def gpu_timeline(events, process, thread, steps: int) -> dict:
    """Per GPU, from the kernels on its streams: the traced span, the time any
    kernel runs, the collectives' time and how much of it no other kernel
    overlaps (exposed), in ms per step."""
    compute = collections.defaultdict(list)
    collective = collections.defaultdict(list)
    for e in events:
        name = process.get(e.get("pid"), "")
        if e.get("ph") != "X" or "GPU" not in name:
            continue
        if not thread.get((e["pid"], e["tid"]), "").startswith("Stream"):
            continue
        kind = kind_of(e["name"])
        (collective if kind.startswith("collective") else compute)[name].append(
            (e["ts"], e["ts"] + e["dur"])
        )
    out = {}
    for name in sorted(set(compute) | set(collective)):
        comp, coll = _union(compute[name]), _union(collective[name])
        every = _union(comp + coll)
        span = (every[-1][1] - every[0][0]) if every else 0.0
        out[name] = {
            key: round(value / 1000 / steps, 2)
            for key, value in {
                "span_ms_per_step": span,
                "busy_ms_per_step": _length(every),
                "collective_ms_per_step": _length(coll),
                "exposed_collective_ms_per_step": _minus(coll, comp),
            }.items()
        }
    return out


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
    summary["timeline"] = gpu_timeline(events, process, thread, steps)
    return summary


def profile_torch(model, x, y, steps: int = 3, top: int = 25) -> dict:
    """Wall time and GPU kernel time per eager PyTorch training step."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA]
    with profile(activities=activities) as prof:
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        torch.cuda.synchronize()
        wall = (time.perf_counter() - started) / steps
    kernels = collections.Counter()
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            kernels[event.name] += event.device_time_total / 1000 / steps  # ms
    kinds = collections.Counter()
    for name, ms in kernels.items():
        kinds[kind_of(name)] += ms
    busy = sum(kernels.values())
    return {
        "wall_ms_per_step_profiled": round(1000 * wall, 1),
        "gpu_busy_ms_per_step": round(busy, 1),
        "kinds": {k: round(v, 2) for k, v in kinds.most_common()},
        "top": [(k[:120], round(v, 3)) for k, v in kernels.most_common(top)],
    }


def profile_test(args=FLAGS) -> dict:
    """The 30-view test (JAX): videos/s of ``predict_on_batch`` on 30 views of
    256x256 and the kernels of a few calls, by kind."""
    import jax
    import numpy as np

    from nonlocal_tf import models

    model = models.create_model(
        args.variant,
        input_shape=(args.frames, 256, 256, 3),
        classes=400,
        fully_convolutional=True,
        conv_implementation=args.conv_implementation,
    )
    x = jax.device_put(
        np.random.default_rng(0).normal(size=(30, args.frames, 256, 256, 3)).astype("float32")
    )
    for _ in range(3):
        np.asarray(model.predict_on_batch(x))
    started = time.perf_counter()
    for _ in range(args.steps):
        out = model.predict_on_batch(x)
    np.asarray(out)
    row = {"variant": args.variant, "mode": "test", "dtype": args.dtype}
    row["videos_per_s"] = round(args.steps / (time.perf_counter() - started), 2)
    if args.trace:
        trace_dir = os.path.join(args.out, "trace_test")
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(3):
                out = model.predict_on_batch(x)
            np.asarray(out)
        found = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
        if found:
            row["trace"] = summarise_trace(found[0], steps=3)
        shutil.rmtree(trace_dir)
    return row


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


def main(argv) -> None:
    del argv
    args = FLAGS
    if args.compare:
        print("RESULT " + json.dumps(compare_logits(args.variant, args.frames, args.dtype)))
        return

    if args.gpus:  # before JAX starts
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, range(args.gpus)))
    import keras

    os.makedirs(args.out, exist_ok=True)
    keras.config.set_dtype_policy(args.dtype)
    if args.mode == "test":
        print("RESULT " + json.dumps(profile_test(args)), flush=True)
        return
    replicas = 1
    if args.gpus > 1:
        from nonlocal_tf.training import distribute

        replicas = distribute.data_parallel()
    batch = args.batch * replicas
    model, x, y = training_setup(
        args.variant, args.frames, args.size, batch, args.conv_implementation
    )
    row = {
        "variant": args.variant,
        "frames": args.frames,
        "dtype": args.dtype,
        "backend": keras.backend.backend(),
        "conv_implementation": args.conv_implementation,
        "gpus": replicas,
        "global_batch": batch,
    }
    seconds = seconds_per_train_on_batch(model, x, y, warmup=3, steps=args.steps)
    row["train_on_batch_clips_per_s"] = round(batch / seconds, 1)
    if keras.backend.backend() == "torch":
        if args.trace:
            row["profile"] = profile_torch(model, x, y)
        print("RESULT " + json.dumps(row), flush=True)
        return
    import jax

    steps = CompiledSteps(model, x, y)
    steps.run(3)
    row["compiled_step_clips_per_s"] = round(batch / steps.run(args.steps), 1)
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
    app.run(main)
