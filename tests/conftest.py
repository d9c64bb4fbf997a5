"""Test configuration: every test body runs on the backend named by KERAS_BACKEND."""

import os
import tempfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# On JAX most of a test's time is XLA compiling one small program per new shape (each
# weight shape's initializer, each op of a model called eagerly), 0.1-0.3 s apiece. The
# tests share one persistent compilation cache (both pytest workers, and the JAX
# command-line runs they start, inherit it), and LLVM compiles those programs without
# its optimisation passes (XLA's own passes still run; every tolerance unchanged). The
# JAX pass of `make test` took 9:32 without these, 6:09 with them and a cold cache (2 cores).
# Benchmarks and users get the defaults: this file is only the tests'.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"nonlocal_tf-tests-jax-cache-{os.getuid()}"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import keras  # noqa: E402


@pytest.fixture(autouse=True)
def _reset_keras_state():
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")


def pytest_generate_tests(metafunc):
    """``conv_path``: a test runs on both paths `runtime.conv_implementation`
    can pick on TensorFlow, where "auto" depends on the CPU (the folded one
    without oneDNN's AVX-512 kernels, such as AMD EPYC); the choice is forced
    for the process and its subprocesses. On JAX and PyTorch "auto" is one
    path on every CPU (both forms stay covered by the tests that name them):
    "auto" alone."""
    if "conv_path" in metafunc.fixturenames:
        backend = os.environ.get("KERAS_BACKEND", "tensorflow")
        paths = ["folded", "native"] if backend == "tensorflow" else ["auto"]
        metafunc.parametrize("conv_path", paths, indirect=True)


@pytest.fixture
def conv_path(request, monkeypatch):
    if request.param != "auto":
        monkeypatch.setenv("NONLOCAL_TF_CONV_IMPLEMENTATION", request.param)
    return request.param


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty weights cache (``$NONLOCAL_TF_HOME``), online."""
    root = tmp_path / "cache"
    monkeypatch.setenv("NONLOCAL_TF_HOME", str(root))
    monkeypatch.delenv("NONLOCAL_TF_OFFLINE", raising=False)
    return root


@pytest.fixture(scope="module")
def video_tree(tmp_path_factory):
    """Three class folders of four short videos: what the zoo commands' tests train on."""
    from tests.videos import write_video

    root = tmp_path_factory.mktemp("train_videos")
    for label in ("a", "b", "c"):
        os.makedirs(root / label)
        for i in range(4):
            write_video(root / label / f"{i}.mp4", num_frames=40, height=48, width=64)
    return root
