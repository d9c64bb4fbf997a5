"""From video files on disk to optimizer steps, on this host: `zoo.train` and
`zoo.evaluate` themselves, next to the input pipeline alone, the stages of one
clip on one core, and the compiled step of the same model.

    KERAS_BACKEND=jax python bench/end_to_end.py --workdir=/tmp/e2e
    KERAS_BACKEND=jax python bench/end_to_end.py --phases=stages,input --videos=24   # no GPU

Phases (``--phases``), on Kinetics-like videos it generates on every core
(``bench/_videos.py``: 10 s, 30 fps, 340x256, H.264 with libx264's default
keyframe interval of 250 and, from the same frames, GOPs of 16):

- ``stages``: seconds per clip of each stage of the Grain engine on one core
  (decode only the sampled frames with PyAV, seeking; resize and crop in
  NumPy), 8x8 train clips and 30-view test videos.
- ``input``: the Grain engine alone with ``--workers`` processes: train clips/s
  (batches of ``--batch_size``) and 30-view videos/s.
- ``train``: ``python -m zoo.train`` with its defaults and callbacks (``--model``,
  ``--batch_size`` and ``--mixed_precision`` set), ``--epochs`` epochs of
  ``--steps`` steps; the last epoch's clips/s from its ``summary.json``
  (training steps only, input included; precise BN and checkpoints not).
- ``evaluate``: ``python -m zoo.evaluate`` (30 views of 256) on ``--eval_videos``
  videos: the report's steady ``videos_per_s``.
- ``step``: the compiled train step and 30-view predict of the same model on
  data already on the device (``bench/train_throughput.py``), and `predict`
  from host uint8 views (`nonlocal_tf.evaluation`'s feed).

``--shards=N`` adds a source: the default-GOP videos converted into N frame
shards (``bench/_videos.write_shard``, no TensorFlow), on which ``train`` and
``evaluate`` run for each ``--augment_on`` (device: the workers only decode,
`nonlocal_tf.layers.ClipCrops` cuts on the accelerator) and each of
``--cores`` (``all``, or N: the zoo command pinned to the first N cores with
``taskset``, its decoding workers then every one of them but one).

    KERAS_BACKEND=jax python bench/end_to_end.py --workdir=/tmp/e2e --gops= \
        --shards=8 --augment_on=device --cores=all,8 --steps=1000 --epochs=2 \
        --phases=step,train,evaluate

The zoo runs share one JAX compilation cache in the work folder (the second
source's run does not compile again). Prints one JSON row per measurement and
a Markdown table.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench._videos import write_dataset, write_shard  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("phases", ["stages", "input", "train", "evaluate", "step"], "What to measure.")
flags.DEFINE_integer("videos", 160, "Videos per GOP setting.")
flags.DEFINE_float("seconds", 10.0, "Length of each video.")
flags.DEFINE_list("gops", ["default", "16"], "Keyframe intervals: libx264's default (250), or N.")
flags.DEFINE_string("workdir", None, "Videos, runs and the compilation cache (kept).")
flags.DEFINE_string("model", "i3d_nl5_r50_8x8", "Named variant trained and evaluated.")
flags.DEFINE_integer("batch_size", 16, "Global batch of zoo.train and of the input phase.")
flags.DEFINE_string("mixed_precision", "bfloat16", "zoo.train's --mixed_precision.")
flags.DEFINE_integer("steps", 150, "zoo.train's --steps_per_epoch.")
flags.DEFINE_integer(
    "epochs",
    3,
    "zoo.train's --epochs; the last is reported. Epoch 2 starts with the workers' buffers "
    "filled while epoch 1's end compiled precise BN: its rate is not the input's.",
    lower_bound=2,
)
flags.DEFINE_integer("eval_videos", 160, "zoo.evaluate's --max_videos.")
flags.DEFINE_integer("workers", None, "Grain processes; default: every core but one.")
flags.DEFINE_integer("stage_clips", 40, "Clips (train) or videos / 4 (test) timed per stage.")
flags.DEFINE_list("step_modes", ["train", "test"], "The compiled step's modes (phase step).")
flags.DEFINE_integer("timeout", 900, "Seconds per zoo command.")
flags.DEFINE_integer("shards", 0, "Also run on the videos as this many frame shards (0: not).")
flags.DEFINE_list("augment_on", ["host"], "zoo.train / zoo.evaluate --augment_on values, in turn.")
flags.DEFINE_list("cores", ["all"], "Cores the zoo commands run on: all, or N (taskset 0..N-1).")
flags.DEFINE_integer(
    "precise_bn_batches", None, "zoo.train's --precise_bn_batches; default: the recipe's."
)

CORES = len(os.sched_getaffinity(0))


def cpu_name() -> str:
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return names[0] if names else "unknown"


def emit(row: dict) -> dict:
    print(json.dumps(row), flush=True)
    return row


# ---------------------------------------------------------------- phases
def stages(gop: str, root: str) -> list[dict]:
    import numpy as np

    from nonlocal_tf import data
    from nonlocal_tf.data import numpy_transforms
    from nonlocal_tf.data.decode import read_sampled

    videos = data.read_directory(root)
    rng = np.random.default_rng(0)
    rows = []
    for mode, count in (("train", FLAGS.stage_clips), ("test", max(FLAGS.stage_clips // 4, 2))):
        recipe = data.MODES[mode]
        decode = augment = 0.0
        for i in range(count):
            path = videos.paths[i % len(videos)]
            started = time.perf_counter()
            frames = read_sampled(path, recipe, data.KINETICS_8X8, rng, threaded=False)
            decoded = time.perf_counter()
            numpy_transforms.augment(frames, rng, recipe, data.KINETICS_8X8)
            decode += decoded - started
            augment += time.perf_counter() - decoded
        unit = "clips/s" if mode == "train" else "30-view videos/s"
        rows.append(
            emit(
                {
                    "phase": "stages",
                    "gop": gop,
                    "mode": mode,
                    "decode_s": round(decode / count, 4),
                    "augment_s": round(augment / count, 4),
                    "per_core": round(count / (decode + augment), 2),
                    "unit": f"{unit} on one core (decode_s + augment_s each)",
                }
            )
        )
    return rows


def pipeline_rate(gop: str, root: str) -> list[dict]:
    from nonlocal_tf import data
    from nonlocal_tf.data import grain_pipeline

    workers = grain_pipeline.default_workers() if FLAGS.workers is None else FLAGS.workers
    videos = data.read_directory(root)
    rows = []
    # Each worker holds a finished element and one in the making: the first 3 x workers
    # elements drain those, the next 10 x workers are timed (buffers at most 20 % of them).
    for mode, batch in (("train", FLAGS.batch_size), ("test", None)):
        timed = 10 * max(workers, 4)
        ds = grain_pipeline.grain_video_dataset(
            videos, mode, data.KINETICS_8X8, batch_size=batch, workers=workers, repeat=True, seed=0
        )
        stream = iter(ds)
        for _ in range(3 * max(workers, 4)):  # every worker started, buffers drained
            next(stream)
        started = time.perf_counter()
        for _ in range(timed):
            next(stream)
        rate = timed * (batch or 1) / (time.perf_counter() - started)
        stream.close()  # the workers end here, not when the next phase runs
        rows.append(
            emit(
                {
                    "phase": "input",
                    "gop": gop,
                    "mode": mode,
                    "workers": workers,
                    "rate": round(rate, 2),
                    "unit": "clips/s" if mode == "train" else "videos/s (30 views)",
                }
            )
        )
    return rows


def run_zoo(
    module: str, gop: str, args: list[str], augment_on: str = "host", cores: str = "all"
) -> tuple[dict, bool]:
    """Runs ``python -m module`` with ``args`` (and ``--model``, ``--input_workers``,
    ``--augment_on``), on ``cores``: the row so far, and whether it succeeded (else
    the row holds the error)."""
    workers = [f"--input_workers={FLAGS.workers}"] if FLAGS.workers is not None else []
    pinned = [] if cores == "all" else ["taskset", "-c", f"0-{int(cores) - 1}"]
    started = time.perf_counter()
    # Its own process group: on a timeout the command and its decoding workers end
    # together (left running, they would load the host for whatever is timed next).
    child = subprocess.Popen(
        [
            *pinned,
            sys.executable,
            "-m",
            module,
            f"--model={FLAGS.model}",
            f"--augment_on={augment_on}",
            *args,
            *workers,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        _, stderr = child.communicate(timeout=FLAGS.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        _, stderr = child.communicate()
        stderr = f"timed out after {FLAGS.timeout} s\n{stderr}"
    row = {"phase": module, "gop": gop, "model": FLAGS.model, "augment_on": augment_on}
    row["cores"] = CORES if cores == "all" else int(cores)
    row["wall_s"] = round(time.perf_counter() - started, 1)
    if child.returncode:
        row["error"] = stderr[-2500:]
    return row, not child.returncode


def zoo_train(gop: str, root: str, workdir: str, augment_on: str, cores: str) -> dict:
    out = os.path.join(workdir, f"train_{gop}_{augment_on}_{cores}")
    shutil.rmtree(out, ignore_errors=True)  # a new run, not a resumed one
    row, ok = run_zoo(
        "zoo.train",
        gop,
        [
            f"--train_data={root}",
            f"--output_dir={out}",
            f"--batch_size={FLAGS.batch_size}",
            f"--mixed_precision={FLAGS.mixed_precision}",
            f"--steps_per_epoch={FLAGS.steps}",
            f"--epochs={FLAGS.epochs}",
            *(
                [f"--precise_bn_batches={FLAGS.precise_bn_batches}"]
                if FLAGS.precise_bn_batches is not None
                else []
            ),
        ],
        augment_on,
        cores,
    )
    if ok:
        rates = json.load(open(os.path.join(out, "summary.json"))).get("clips_per_s", {})
        row.update(rate=rates.get(str(FLAGS.epochs)), epoch_rates=rates, unit="clips/s")
    return emit(row)


def zoo_evaluate(gop: str, root: str, workdir: str, augment_on: str, cores: str) -> dict:
    report = os.path.join(workdir, f"evaluate_{gop}_{augment_on}_{cores}.json")
    row, ok = run_zoo(
        "zoo.evaluate",
        gop,
        [f"--data={root}", f"--output={report}", f"--max_videos={FLAGS.eval_videos}"],
        augment_on,
        cores,
    )
    if ok:
        result = json.load(open(report))
        row.update(rate=result["videos_per_s"], videos=result["videos"], unit="videos/s")
    return emit(row)


def compiled_step() -> list[dict]:
    from bench._steps import MODELS

    index = next(i for i, (_, variant, frames) in enumerate(MODELS) if variant == FLAGS.model)
    rows = []
    for mode in FLAGS.step_modes:
        cmd = [
            sys.executable,
            os.path.join(ROOT, "bench", "train_throughput.py"),
            f"--model={index}",
            f"--mode={mode}",
            f"--batch={FLAGS.batch_size}",
            "--steps=30",
            "--case",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=FLAGS.timeout)
        found = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
        if not found:
            rows.append(emit({"phase": "step", "mode": mode, "error": done.stderr[-2500:]}))
            continue
        result = json.loads(found[-1][len("RESULT ") :])
        rows.append(emit({"phase": "step", **result}))
    return rows


def main(argv) -> None:
    del argv
    workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="nl_e2e_")
    os.makedirs(workdir, exist_ok=True)
    # One compilation cache for every zoo run here (children inherit it).
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(workdir, "jax-cache"))
    print(f"host: {cpu_name()}, {CORES} cores; work folder {workdir}", flush=True)
    roots = {gop: os.path.join(workdir, f"gop_{gop}") for gop in FLAGS.gops}
    needed = set(FLAGS.gops) | ({"default"} if FLAGS.shards else set())
    if not all(glob.glob(os.path.join(workdir, f"gop_{g}", "*", "*.mp4")) for g in needed):
        started = time.perf_counter()
        write_dataset(workdir, FLAGS.videos, FLAGS.seconds, sorted(needed))
        print(
            f"encoded {FLAGS.videos} x {len(needed)} videos in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
    if FLAGS.shards:
        started = time.perf_counter()
        roots["shards"] = write_shard(workdir, FLAGS.videos, FLAGS.seconds, FLAGS.shards)
        print(f"frame shards ready in {time.perf_counter() - started:.0f} s", flush=True)
    rows = []
    for gop, root in roots.items():
        if "stages" in FLAGS.phases and gop != "shards":
            rows += stages(gop, root)
        if "input" in FLAGS.phases and gop != "shards":
            rows += pipeline_rate(gop, root)
        for augment_on in FLAGS.augment_on:
            for cores in FLAGS.cores:
                if "train" in FLAGS.phases:
                    rows.append(zoo_train(gop, root, workdir, augment_on, cores))
                if "evaluate" in FLAGS.phases:
                    rows.append(zoo_evaluate(gop, root, workdir, augment_on, cores))
    if "step" in FLAGS.phases:
        rows += compiled_step()
    print(f"\n{cpu_name()}, {CORES} cores; {FLAGS.model}, batch {FLAGS.batch_size}\n")
    print(
        "| phase | source | mode | augment on | cores | rate | unit |\n"
        "|---|---|---|---|---|---|---|"
    )
    for r in rows:
        rate = r.get("rate", r.get("per_core", r.get("clips_per_s", r.get("videos_per_s"))))
        print(
            f"| {r['phase']} | {r.get('gop', '')} | {r.get('mode', '')} | "
            f"{r.get('augment_on', '')} | {r.get('cores', '')} | "
            f"{r['error'].splitlines()[0] if 'error' in r else rate} | {r.get('unit', '')} |"
        )


if __name__ == "__main__":
    app.run(main)
