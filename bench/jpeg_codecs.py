"""JPEG encode and decode speed of the libjpeg-turbo codecs Python can call,
on one core, on 340x256 frames of a generated Kinetics-like video (what
`nonlocal_tf.data.jpeg` chooses from; TensorFlow's ops as the reference).

    python bench/jpeg_codecs.py --frames=150 --quality=90

Candidates: Pillow (links libjpeg-turbo), simplejpeg (libjpeg-turbo built
into its wheel), PyTurboJPEG (ctypes over the system's ``libturbojpeg``:
``--turbojpeg_lib`` names it where it is not installed) and TensorFlow's
``tf.io.encode_jpeg`` / ``decode_jpeg`` when TensorFlow is installed. Every
codec encodes the same frames (quality ``--quality``, 4:2:0 chroma as
TensorFlow writes); every decoder reads TensorFlow-style JPEGs written by
simplejpeg. Prints Markdown tables: ms per frame (best of ``--repeats``),
bytes per frame, PSNR against the decoded video frame, and how far each
decoder's pixels are from TensorFlow's ``INTEGER_FAST`` decode (what the
tf.data TFRecord path uses).
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FLAGS = flags.FLAGS
flags.DEFINE_integer("frames", 150, "Frames timed (from a generated 340x256 30 fps video).")
flags.DEFINE_integer("quality", 90, "JPEG quality (zoo.make_tfrecords' default).")
flags.DEFINE_integer("repeats", 15, "Timed passes of each codec, alternating; the best counts.")
flags.DEFINE_string("turbojpeg_lib", None, "Path of libturbojpeg.so for PyTurboJPEG.")


def frames_of_a_video(count: int) -> np.ndarray:
    from bench._videos import write_video
    from nonlocal_tf.data.decode import read_all_frames

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "v.mp4")
        write_video({"default": path}, seconds=count / 30 + 0.1, seed=0)
        return read_all_frames(path)[:count]


def codecs(quality: int, turbojpeg_lib: str | None) -> tuple[dict, dict]:
    """({name: encode(frame) -> bytes}, {name: decode(bytes) -> frame}), those importable."""
    import PIL.features
    from PIL import Image

    def pil_encode(frame):
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, "JPEG", quality=quality, subsampling="4:2:0")
        return buffer.getvalue()

    def pil_decode(jpeg):
        return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))

    pil = (
        f"Pillow {PIL.__version__} (libjpeg-turbo {PIL.features.version_feature('libjpeg_turbo')})"
    )
    encoders, decoders = {pil: pil_encode}, {pil: pil_decode}
    try:
        import simplejpeg

        name = f"simplejpeg {simplejpeg.__version__}"
        encoders[name] = lambda f: simplejpeg.encode_jpeg(f, quality, "RGB", "420", fastdct=False)
        encoders[name + " fastdct"] = lambda f: simplejpeg.encode_jpeg(
            f, quality, "RGB", "420", fastdct=True
        )
        decoders[name] = lambda j: simplejpeg.decode_jpeg(j, "RGB", fastdct=False)
        decoders[name + " fastdct"] = lambda j: simplejpeg.decode_jpeg(
            j, "RGB", fastdct=True, fastupsample=False
        )
        decoders[name + " fastdct fastupsample"] = lambda j: simplejpeg.decode_jpeg(
            j, "RGB", fastdct=True, fastupsample=True
        )
    except ImportError:
        print("simplejpeg: not installed")
    try:
        import turbojpeg

        tj = turbojpeg.TurboJPEG(turbojpeg_lib)
        name = "PyTurboJPEG (system libturbojpeg)"
        encoders[name] = lambda f: tj.encode(
            f, quality, turbojpeg.TJPF_RGB, turbojpeg.TJSAMP_420, turbojpeg.TJFLAG_ACCURATEDCT
        )
        decoders[name + " fastdct"] = lambda j: tj.decode(
            j, turbojpeg.TJPF_RGB, flags=turbojpeg.TJFLAG_FASTDCT
        )
    except (ImportError, RuntimeError, OSError) as exc:
        print(f"PyTurboJPEG: unavailable ({exc})".splitlines()[0])
    try:
        import tensorflow as tf

        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.threading.set_intra_op_parallelism_threads(1)
        name = f"TensorFlow {tf.__version__} (eager op)"
        encoders[name] = lambda f: tf.io.encode_jpeg(f, quality=quality).numpy()
        decoders[name + " INTEGER_FAST"] = lambda j: tf.io.decode_jpeg(
            j, channels=3, dct_method="INTEGER_FAST"
        ).numpy()
    except ImportError:
        print("TensorFlow: not installed (no reference decode)")
    return encoders, decoders


def best_ms(functions: dict, items: list, repeats: int) -> dict:
    """name -> ms per item of its best pass over ``items``; the passes of
    all ``functions`` alternate, so a busy machine slows each alike."""
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(repeats):
        for name, fn in functions.items():
            started = time.perf_counter()
            for item in items:
                fn(item)
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: 1e3 * seconds / len(items) for name, seconds in best.items()}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float(10 * np.log10(255**2 / mse))


def main(argv) -> None:
    del argv
    frames = frames_of_a_video(FLAGS.frames)
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core from here on
    encoders, decoders = codecs(FLAGS.quality, FLAGS.turbojpeg_lib)
    import simplejpeg

    def accurate(jpeg):  # what judges every encoder's bytes
        return simplejpeg.decode_jpeg(jpeg, "RGB", fastdct=False)

    print(f"{len(frames)} frames {frames.shape[2]}x{frames.shape[1]}, quality {FLAGS.quality}")
    print("\n| encoder | ms/frame | bytes/frame | PSNR dB (accurate decode) |\n|---|---|---|---|")
    times = best_ms(encoders, list(frames), FLAGS.repeats)
    for name, encode in encoders.items():
        encoded = [encode(f) for f in frames]
        decoded = np.stack([accurate(j) for j in encoded])
        size = np.mean([len(e) for e in encoded])
        print(f"| {name} | {times[name]:.3f} | {size:.0f} | {psnr(decoded, frames):.2f} |")
    # Every decoder reads the same bytes (4:2:0, as TensorFlow writes).
    jpegs = [simplejpeg.encode_jpeg(f, FLAGS.quality, "RGB", "420") for f in frames]
    reference = next((d for n, d in decoders.items() if n.endswith("INTEGER_FAST")), None)
    reference = None if reference is None else np.stack([reference(j) for j in jpegs]).astype(int)
    print(
        "\n| decoder | ms/frame | PSNR dB | vs TensorFlow INTEGER_FAST: max, share differing |"
        "\n|---|---|---|---|"
    )
    times = best_ms(decoders, jpegs, FLAGS.repeats)
    for name, decode in decoders.items():
        decoded = np.stack([decode(j) for j in jpegs])
        ms = times[name]
        versus = "n/a"
        if reference is not None:
            difference = np.abs(decoded.astype(int) - reference)
            versus = f"{difference.max()}, {np.mean(difference > 0):.4f}"
        print(f"| {name} | {ms:.3f} | {psnr(decoded, frames):.2f} | {versus} |")


if __name__ == "__main__":
    app.run(main)
