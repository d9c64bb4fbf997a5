"""Hardware decoding (NVDEC through PyNvVideoCodec) against PyAV on the host's
cores, on the same videos and the same official frame indices.

    python bench/nvdec.py --videos=/tmp/e2e/gop_default --threads=1,4,8

For each train clip (8x8: 8 frames, every 8th, from a random start) and each
30-view test video (10 clips of 8 frames), PyNvVideoCodec's ``SimpleDecoder``
decodes the indices (its own demuxing and seeking, not checked here beyond the
frames it returns) to RGB on the GPU; the frames are taken as one
PyTorch CUDA tensor and the stream synchronised, so a rate counts frames that
are ready for the model's resize and crop. Threads each hold one decoder
(reconfigured per video). A first check compares NVDEC's frames with PyAV's at
the same indices (and at the next index, which a reordering slip would match):
the mean absolute difference in uint8 levels.

Needs the NVIDIA driver's video libraries (libnvcuvid; Docker:
``NVIDIA_DRIVER_CAPABILITIES`` with ``video``); says so and exits 2 without them.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FLAGS = flags.FLAGS
flags.DEFINE_string("videos", None, "Folder per class of videos.", required=True)
flags.DEFINE_list("threads", ["1", "4", "8"], "Decoding threads (one decoder each).")
flags.DEFINE_list("processes", [], "Also: this many processes, each with --process_threads.")
flags.DEFINE_integer("process_threads", 4, "Decoding threads in each process.")
flags.DEFINE_integer("clips", 200, "Train clips timed per setting (test videos: a fifth).")
flags.DEFINE_string("label", "", "Written into each row (e.g. the GOP).")


def emit(row: dict) -> None:
    print(json.dumps(row), flush=True)


def frames_on_gpu(decoder, indices):
    import torch

    frames = decoder.get_batch_frames_by_index([int(i) for i in indices])
    tensors = [torch.from_dlpack(f) for f in frames]
    out = torch.stack(tensors)
    torch.cuda.synchronize()
    return out


def check(nvc, path: str) -> dict:
    import numpy as np

    from nonlocal_tf.data import decode

    decoder = nvc.SimpleDecoder(
        path, gpu_id=0, use_device_memory=True, output_color_type=nvc.OutputColorType.RGB
    )
    count = len(decoder)
    wanted = np.array([0, 7, count // 2, count // 2 + 1, count - 9])
    gpu = frames_on_gpu(decoder, wanted).cpu().numpy().astype(np.float32)
    host = decode.read_frames(path, lambda n: np.concatenate([wanted, wanted + 1]), False)
    host = host.astype(np.float32)
    same = np.abs(gpu - host[: len(wanted)]).mean()
    next_one = np.abs(gpu - host[len(wanted) :]).mean()
    return {
        "check": os.path.basename(path),
        "frames": count,
        "shape": list(gpu.shape),
        "mean_abs_diff_same_index": round(float(same), 3),
        "mean_abs_diff_next_index": round(float(next_one), 3),
    }


def rate(nvc, paths, mode: str, threads: int, count: int, label: str = "") -> dict:
    import numpy as np

    from nonlocal_tf import data
    from nonlocal_tf.data import sampling

    spec = data.KINETICS_8X8
    recipe = data.MODES[mode]
    lock = threading.Lock()
    next_item = [0]
    done = [0]
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        decoder = None
        try:
            while True:
                with lock:
                    k = next_item[0]
                    next_item[0] += 1
                if k >= count:
                    return
                path = paths[k % len(paths)]
                if decoder is None:
                    decoder = nvc.SimpleDecoder(
                        path,
                        gpu_id=0,
                        use_device_memory=True,
                        output_color_type=nvc.OutputColorType.RGB,
                    )
                else:
                    decoder.reconfigure_decoder(path)
                indices = sampling.indices(recipe, len(decoder), spec, rng)
                frames_on_gpu(decoder, np.unique(indices))
                with lock:
                    done[0] += 1
        except Exception as exc:  # noqa: BLE001 - reported in the row
            errors.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=work, args=(s,)) for s in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    row = {
        "decoder": "nvdec",
        "label": label,
        "mode": mode,
        "threads": threads,
        "items": done[0],
        "seconds": round(elapsed, 2),
        "rate": round(done[0] / elapsed, 2),
        "unit": "clips/s" if mode == "train" else "30-view videos/s",
    }
    if errors:
        row["errors"] = errors[:3]
    return row


def _in_process(paths, mode, threads, count, label) -> dict:
    import PyNvVideoCodec as nvc

    rate(nvc, paths, mode, 1, 2)
    started = time.time()
    row = rate(nvc, paths, mode, threads, count, label)
    return {**row, "started": started, "ended": time.time()}


def in_processes(paths, mode: str, processes: int, threads: int, count: int) -> dict:
    """``processes`` processes of ``threads`` threads, ``count`` items in all,
    timed from when the first starts decoding (its decoders made) to when the
    last ends."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        jobs = [
            pool.submit(_in_process, paths, mode, threads, count // processes, FLAGS.label)
            for _ in range(processes)
        ]
        rows = [job.result() for job in jobs]
    items = sum(r["items"] for r in rows)
    seconds = round(max(r["ended"] for r in rows) - min(r["started"] for r in rows), 2)
    return {
        "decoder": "nvdec",
        "label": FLAGS.label,
        "mode": mode,
        "processes": processes,
        "threads": threads,
        "items": items,
        "seconds": seconds,
        "rate": round(items / seconds, 2),
        "unit": rows[0]["unit"],
        **({"errors": rows[0]["errors"]} if "errors" in rows[0] else {}),
    }


def main(argv) -> None:
    del argv
    try:
        import PyNvVideoCodec as nvc
    except Exception as exc:  # noqa: BLE001 - any failure to load is the answer
        print(
            f"nvdec: PyNvVideoCodec cannot load here: {type(exc).__name__}: {exc}".splitlines()[0]
        )
        sys.exit(2)
    from nonlocal_tf import data

    paths = list(data.read_directory(FLAGS.videos).paths)
    emit(check(nvc, paths[0]))
    for mode, count in (("train", FLAGS.clips), ("test", max(FLAGS.clips // 5, 4))):
        rate(nvc, paths, mode, 1, 3)  # sessions created, first use paid
        for threads in (int(t) for t in FLAGS.threads):
            emit(rate(nvc, paths, mode, threads, count, FLAGS.label))
        for processes in (int(p) for p in FLAGS.processes):
            emit(in_processes(paths, mode, processes, FLAGS.process_threads, count))


if __name__ == "__main__":
    app.run(main)
