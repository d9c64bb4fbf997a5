"""The fastest settings for the current Keras backend and device, as measured:
the one home of every "auto".

`VideoResNet(conv_implementation="auto")`, `NonLocalBlock(implementation="auto")`
and the zoo's `fit` set-ups (`zoo.train`, `zoo.demo`, the notebooks) ask here. Each answer is a measurement
recorded in ``bench/RESULTS.md`` ("Defaults per backend and device", from
``bench/conv_paths.py`` and ``bench/train_throughput.py``), except TensorFlow
on a GPU, which the project's GPU machines cannot run: there the answers are
what Keras users expect (the backend's own 3D convolutions, XLA as Keras's
``jit_compile="auto"`` decides), unmeasured.

Only the active backend's framework is imported, when a function is called.
"""

from __future__ import annotations

import functools
import os

import keras


@functools.cache
def accelerator() -> str:
    """``"gpu"``, ``"tpu"`` or ``"cpu"``: where the backend puts new tensors."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return {"cuda": "gpu", "rocm": "gpu"}.get(jax.default_backend(), jax.default_backend())
    if backend == "tensorflow":
        import tensorflow as tf

        return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    if backend == "torch":
        import torch

        device = os.environ.get("KERAS_TORCH_DEVICE")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return "gpu" if device.startswith("cuda") else "cpu"
    return "cpu"


@functools.cache
def onednn_enabled() -> bool:
    """Whether TensorFlow runs its CPU kernels through oneDNN: on by default only
    on CPUs with AVX-512 VNNI / BF16 or AMX (not on AMD EPYC without AVX-512),
    or as ``TF_ENABLE_ONEDNN_OPTS`` says."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # a TensorFlow without the probe: assume the plain kernels
        return False
    return bool(_pywrap_util_port.IsMklEnabled())


def conv_implementation() -> str:
    """What ``conv_implementation="auto"`` means here: ``"folded"`` or ``"native"``.

    Training step of the demo model on 2 CPU cores and of I3D-NL5 R50 8x8 on
    an H100 (``bench/RESULTS.md``):

    - JAX, CPU and GPU: folded (XLA lays 3D convolutions out badly, both devices).
    - TensorFlow, CPU with oneDNN: native (oneDNN's 3D convolutions; the
      folded graph is slower there without XLA). Without oneDNN: folded
      (TensorFlow's plain 3D convolution kernels are several times slower).
    - TensorFlow, GPU: native (unmeasured; cuDNN's NDHWC 3D convolutions).
    - PyTorch: native (the layers call PyTorch's 3D ops on a channels-last
      view, without copies), on CPU and GPU.

    ``NONLOCAL_TF_CONV_IMPLEMENTATION=folded|native`` overrides the choice
    (the test suite runs both paths on every machine with it).
    """
    forced = os.environ.get("NONLOCAL_TF_CONV_IMPLEMENTATION")
    if forced:
        if forced not in ("folded", "native"):
            raise ValueError(
                "NONLOCAL_TF_CONV_IMPLEMENTATION must be 'folded' or 'native'. "
                f"Received: {forced!r}"
            )
        return forced
    backend = keras.backend.backend()
    if backend == "jax":
        return "folded"
    if backend == "tensorflow":
        if accelerator() == "cpu" and not onednn_enabled():
            return "folded"
        return "native"
    return "native"


def native_pool_dtype(dtype) -> str:
    """The dtype the backend's own 3D max pool runs in for inputs of ``dtype``:
    ``dtype`` itself, except float16 on TensorFlow on a CPU, whose MaxPool3D
    has no float16 kernel (``NotFoundError: Could not find device for node
    MaxPool3D[T=DT_HALF]``, TF 2.21, with oneDNN on or off): float32 there, which
    gives the same maxima (every float16 is a float32). `VideoMaxPooling3D`
    asks here on its native path; the folded one runs in every dtype."""
    dtype = keras.backend.standardize_dtype(dtype)
    if dtype == "float16" and keras.backend.backend() == "tensorflow" and accelerator() == "cpu":
        return "float32"
    return dtype


def jit_compile() -> bool | str:
    """The ``jit_compile`` for `Model.compile` that trains fastest here.

    - JAX: True (un-jitted JAX is 5-6x slower on CPU).
    - TensorFlow, CPU: False (Keras's own choice on CPU-only machines). With
      oneDNN the native graph without XLA finishes a few-hundred-step run
      first (XLA's compilation costs 7 s per model for 5-13 % per step); without
      oneDNN the folded graph was as fast with and without XLA on an AMD EPYC.
    - TensorFlow, GPU: ``"auto"`` (Keras's choice: XLA where the model
      supports it), unmeasured.
    - PyTorch: False (eager; ``torch.compile`` was slower per step on CPU and
      GPU, took 1-1.5 minutes to compile on CPU, and failed inside Inductor
      on I3D-NL5 on CPU).
    """
    backend = keras.backend.backend()
    if backend == "jax":
        return True
    if backend == "tensorflow":
        return "auto" if accelerator() == "gpu" else False
    return False


def cuda_graphs() -> bool:
    """Whether `models.LeanFunctional` replays its training and predict steps
    as CUDA graphs (`nonlocal_tf.models.cuda_graphs`): on the PyTorch backend
    on a GPU, where the eager step is bound by the host issuing several
    hundred Keras layer calls. One H200, bf16, batch 16 at 224
    (``bench/RESULTS.md``, each pair from one run): I3D-NL5 R50 8x8 through
    `fit` 86.1 -> 285.1 clips/s; the recorded steps alone, I3D-NL5 / C2D
    training 101.3 -> 304.7 / 136.1 -> 428.1 clips/s, 30-view test at 256
    18.5 -> 28.1 / 21.4 -> 39.8 videos/s. Models compiled with ``jit_compile=True`` (``torch.compile``)
    are left as they are. ``NONLOCAL_TF_CUDA_GRAPHS=0|1`` overrides."""
    forced = os.environ.get("NONLOCAL_TF_CUDA_GRAPHS")
    if forced:
        if forced not in ("0", "1"):
            raise ValueError(f"NONLOCAL_TF_CUDA_GRAPHS must be '0' or '1'. Received: {forced!r}")
        return forced == "1"
    return keras.backend.backend() == "torch" and accelerator() == "gpu"


def cudnn_benchmark() -> bool:
    """Whether PyTorch may time cuDNN's algorithms for each new convolution
    shape (``torch.backends.cudnn.benchmark``): on a GPU, yes. Without it
    cuDNN runs some 3D convolutions with its generic implicit-GEMM kernel;
    with it, I3D-NL5 R50 8x8 eager training on one H200 went 92.7 -> 101.3
    clips/s. Set by `models.LeanFunctional` when it makes its step functions
    on the PyTorch backend."""
    return keras.backend.backend() == "torch" and accelerator() == "gpu"


def input_engine() -> str:
    """What reads video files and shards for ``engine="auto"`` (`nonlocal_tf.data.sources`):
    ``"tf_data"`` or ``"grain"``.

    - TensorFlow backend: tf.data (its graph, `tf.distribute` input contexts).
    - JAX and PyTorch, or no TensorFlow installed: Grain worker processes,
      which need no TensorFlow. The tf.data engine decodes in threads of one
      process. Same 24 H.264 videos, 2 cores of an Intel Xeon (``bench/RESULTS.md``,
      "The two engines on the same videos"): train 8x8 clips/s, tf.data 45.4 on
      one core and 48.3 on two, Grain 56.8 with one worker (two threads, its
      default there) and 70.7 with two workers; 30-view test videos/s, tf.data
      11.8 on two cores, Grain 11.6 and 16.0. More cores were not compared (the GPU hosts
      have no TensorFlow).

    TFRecord shards go the same way: Grain reads them through their index
    (`nonlocal_tf.data.shards`), tf.data in its graph; a tf.data service always
    serves them with tf.data.
    ``NONLOCAL_TF_INPUT_ENGINE=tf_data|grain`` overrides.
    """
    forced = os.environ.get("NONLOCAL_TF_INPUT_ENGINE")
    if forced:
        if forced not in ("tf_data", "grain"):
            raise ValueError(
                f"NONLOCAL_TF_INPUT_ENGINE must be 'tf_data' or 'grain'. Received: {forced!r}"
            )
        return forced
    if keras.backend.backend() == "tensorflow":
        return "tf_data"
    return "tf_data" if _importable("tensorflow") and not _importable("grain") else "grain"


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules (blocked)
        return False


def fused_attention_available(head_size: int, dtype) -> bool:
    """Whether `keras.ops.dot_product_attention` runs a flash (memory-efficient)
    kernel here: JAX and PyTorch on a GPU, float16 / bfloat16, head size <= 256."""
    if head_size > 256:
        return False
    if keras.backend.standardize_dtype(dtype) not in ("float16", "bfloat16"):
        return False
    return keras.backend.backend() in ("jax", "torch") and accelerator() == "gpu"


def attention_implementation(
    instantiation: str, num_queries: int | None, head_size: int, dtype, chunk_size: int
) -> str:
    """What `NonLocalBlock(implementation="auto")` computes the pairwise term with.

    - Dot product: ``"reassociated"``, ``theta (phi^T g) / N'`` (exact, never
      forms the N x N' matrix).
    - Embedded Gaussian where a flash kernel exists (`fused_attention_available`):
      ``"fused"``, as fast as the materialised matrix or faster (3.0x at 100k
      queries) and 56x smaller there, on an H100 (`bench/nonlocal_block.py`,
      README).
    - Otherwise ``"naive"`` up to ``chunk_size`` static queries (fastest there)
      and ``"chunked"`` beyond (exact, one ``chunk_size x N'`` block at a time:
      2.6 GiB instead of out of memory at 100k queries on 2 CPU cores).
    """
    if instantiation == "dot_product":
        return "reassociated"
    if instantiation == "embedded_gaussian" and fused_attention_available(head_size, dtype):
        return "fused"
    if num_queries is not None and num_queries <= chunk_size:
        return "naive"
    return "chunked"
