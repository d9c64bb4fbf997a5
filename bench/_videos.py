"""Kinetics-like videos for the input benchmarks: H.264 at 30 fps, a smooth
textured background panning, moving discs and mild sensor noise (random noise
alone is a worst case for codecs), encoded with libx264's defaults (keyframe
interval 250, B-frames) and, from the same frames, with short GOPs."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np


def write_video(paths: dict[str, str], seconds: float, seed: int, size=(256, 340)) -> None:
    """One video per ``{gop: path}`` from the same frames; ``gop`` is the
    keyframe interval (``"default"``: libx264's own, 250)."""
    import av

    height, width = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    coarse = rng.uniform(0, 255, (height // 36 + 3, width // 36 + 4, 3))
    background = np.kron(coarse, np.ones((36, 36, 1)))[: height + 32, : width + 64]
    shapes = rng.uniform(0, 1, (4, 5))
    containers = {gop: av.open(path, "w") for gop, path in paths.items()}
    streams = {}
    for gop, container in containers.items():
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if gop != "default":
            stream.options = {"g": str(gop), "keyint_min": str(gop)}
        streams[gop] = stream
    for t in range(int(seconds * 30)):
        shift = int(t * 0.5) % 64
        image = background[(t // 4) % 32 : (t // 4) % 32 + height, shift : shift + width].copy()
        for sy, sx, vy, vx, c in shapes:
            cy, cx = (sy * height + vy * 4 * t) % height, (sx * width + vx * 6 * t) % width
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < 900] = 255 * c
        image += rng.normal(0, 3, image.shape)
        frame = av.VideoFrame.from_ndarray(np.clip(image, 0, 255).astype(np.uint8), format="rgb24")
        for gop, stream in streams.items():
            for packet in stream.encode(frame):
                containers[gop].mux(packet)
    for gop, stream in streams.items():
        for packet in stream.encode():
            containers[gop].mux(packet)
        containers[gop].close()


def write_dataset(
    folder: str, count: int, seconds: float, gops=("default",), classes: int = 4, workers=None
) -> dict[str, str]:
    """``count`` videos in ``folder/<gop>/class<k>/v<i>.mp4`` for each GOP,
    encoded in parallel; returns ``{gop: folder}``."""
    roots = {gop: os.path.join(folder, f"gop_{gop}") for gop in gops}
    jobs = []
    for i in range(count):
        paths = {}
        for gop, root in roots.items():
            label = os.path.join(root, f"class{i % classes}")
            os.makedirs(label, exist_ok=True)
            paths[gop] = os.path.join(label, f"v{i:04d}.mp4")
        jobs.append(paths)
    with ProcessPoolExecutor(workers or len(os.sched_getaffinity(0))) as pool:
        list(pool.map(write_video, jobs, [seconds] * count, range(count)))
    return roots


def write_shard(folder: str, count: int, seconds: float, shards: int = 1) -> str:
    """``count`` such videos (made once in ``folder``) as frame shards,
    JPEG quality 90 (`nonlocal_tf.data.shards`, no TensorFlow), written in
    parallel, one process per shard; the glob of their paths."""
    import glob

    from nonlocal_tf.data import shards as shard_io

    pattern = os.path.join(folder, f"train-*-of-{shards:05d}.tfrecord")
    paths = [pattern.replace("*", f"{k:05d}") for k in range(shards)]
    if not all(os.path.exists(p + ".index") for p in paths):
        videos = os.path.join(folder, "gop_default")
        if not os.path.isdir(videos):
            write_dataset(folder, count, seconds)
        found = sorted(glob.glob(os.path.join(videos, "*", "*.mp4")))[:count]
        items = [(p, [i % 4], [f"class{i % 4}"], os.path.basename(p)) for i, p in enumerate(found)]
        with ProcessPoolExecutor(min(shards, len(os.sched_getaffinity(0)))) as pool:
            list(
                pool.map(
                    shard_io.write_shard,
                    paths,
                    [items[k::shards] for k in range(shards)],
                    [shard_io.Conversion(quality=90)] * shards,
                )
            )
    return pattern if shards > 1 else paths[0]
