"""Reading checkpoints without running code from them.

Checkpoints are pickles, and unpickling can call any importable function
(``os.system`` included). `load_checkpoint` reads:

- Caffe2 ``.pkl`` files (Python 2 ``cPickle``, protocol 2: numpy arrays in a
  dict, read with ``encoding="latin1"``);
- PyTorch zip checkpoints (``torch.save`` since 1.6: ``archive/data.pkl`` plus
  one raw file per storage), without importing PyTorch;
- legacy (pre-zip) PyTorch pickles are refused with a message.

Only the callables these formats need are resolved (numpy array and dtype
reconstruction, ``OrderedDict``, PyTorch's tensor rebuild functions, which are
replaced by NumPy equivalents here). Classes from training frameworks that
checkpoints carry as metadata (mmengine's message hub, for example) become inert
placeholders that never run. Anything else is refused with `UnsafeCheckpointError`.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from typing import Any

import numpy as np


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The checkpoint asks to call something a weights file has no need for."""


class CheckpointFormatError(ValueError):
    """The file is not a checkpoint of a supported format."""


_NUMPY_CALLABLES = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.dtypes", None),  # numpy 2's dtype classes, e.g. Float32DType
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}
_PLAIN = {
    # Protocol-2 pickles written by Python 3 rebuild bytes with _codecs.encode.
    ("_codecs", "encode"): __import__("codecs").encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("__builtin__", "set"): set,
}
# Metadata classes of training frameworks: loaded as inert placeholders.
_INERT_PREFIXES = ("mmengine.", "mmcv.", "mmaction.", "fvcore.", "iopath.", "yacs.", "argparse.")

_TORCH_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _Inert:
    """Stands for a metadata object of another framework; holds its state, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<inert {type(self).__name__}>"


class _StorageType:
    def __init__(self, name: str):
        self.name = name


class _TorchStorage:
    def __init__(self, data: np.ndarray):
        self.data = data


def _rebuild_tensor(storage, offset, size, stride, *_args):
    """NumPy stand-in for ``torch._utils._rebuild_tensor_v2``."""
    data = storage.data
    if not size:
        return data[offset].copy()
    itemsize = data.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        data[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
    )
    return np.ascontiguousarray(view)


def _rebuild_parameter(tensor, *_args):
    return tensor


_TORCH_CALLABLES = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals."""

    def __init__(self, file, *, storages=None, source: str = "checkpoint", **kwargs):
        super().__init__(file, **kwargs)
        self._storages = storages
        self._source = source

    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_CALLABLES or (module, None) in _NUMPY_CALLABLES:
            return super().find_class(module, name)
        if (module, name) in _PLAIN and _PLAIN[(module, name)] is not None:
            return _PLAIN[(module, name)]
        if (module, name) in _TORCH_CALLABLES:
            return _TORCH_CALLABLES[(module, name)]
        if module == "torch" and name in _TORCH_DTYPES:
            return _StorageType(name)
        if module.startswith(_INERT_PREFIXES):
            return type(name, (_Inert,), {"__module__": module})
        raise UnsafeCheckpointError(
            f"Refusing to load {self._source}: it asks to call {module}.{name}, which a weights "
            "file never needs. The file may be malicious or not a checkpoint; it was not executed."
        )

    def persistent_load(self, pid):
        if self._storages is None:
            raise CheckpointFormatError(
                f"{self._source}: a persistent id outside a PyTorch zip checkpoint."
            )
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointFormatError(f"{self._source}: unsupported persistent id {pid!r}.")
        storage_type, key = pid[1], str(pid[2])
        name = storage_type.name if isinstance(storage_type, _StorageType) else str(storage_type)
        return self._storages(key, name)


def load_pickle(data: bytes, source: str = "checkpoint") -> Any:
    """Unpickles Caffe2 / plain pickles safely (Python 2 pickles included)."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=source, encoding="latin1").load()
    except (UnsafeCheckpointError, CheckpointFormatError):
        raise
    except Exception as exc:  # truncated or corrupt files end up here
        raise CheckpointFormatError(
            f"{source} is not a readable pickle ({type(exc).__name__}: {exc})."
        ) from exc


def load_torch_zip(path: str) -> Any:
    """Reads a ``torch.save`` zip checkpoint into NumPy arrays, without PyTorch."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise CheckpointFormatError(f"{path} is not a PyTorch zip checkpoint ({exc}).") from exc
    with archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise CheckpointFormatError(f"{path}: no data.pkl inside; not a PyTorch checkpoint.")
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = "little"
        if f"{prefix}byteorder" in names:
            byteorder = archive.read(f"{prefix}byteorder").decode().strip()
        cache: dict[str, _TorchStorage] = {}

        def storage(key: str, type_name: str) -> _TorchStorage:
            if key not in cache:
                member = f"{prefix}data/{key}"
                if member not in names:
                    raise CheckpointFormatError(
                        f"{path}: storage {key} is missing; truncated file?"
                    )
                dtype = _TORCH_DTYPES.get(type_name)
                if dtype is None:
                    raise CheckpointFormatError(f"{path}: unsupported storage type {type_name}.")
                raw = archive.read(member)
                if dtype == "bfloat16":
                    bits = np.frombuffer(raw, dtype="<u2" if byteorder == "little" else ">u2")
                    array = (bits.astype(np.uint32) << 16).view(np.float32)
                else:
                    array = np.frombuffer(
                        raw,
                        dtype=np.dtype(dtype).newbyteorder("<" if byteorder == "little" else ">"),
                    )
                cache[key] = _TorchStorage(array)
            return cache[key]

        try:
            data = archive.read(pkl[0])
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise CheckpointFormatError(f"{path}: corrupt zip member ({exc}).") from exc
        try:
            return RestrictedUnpickler(
                io.BytesIO(data), storages=storage, source=path, encoding="utf-8"
            ).load()
        except (UnsafeCheckpointError, CheckpointFormatError):
            raise
        except Exception as exc:
            raise CheckpointFormatError(
                f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})."
            ) from exc


def load_checkpoint(path: str) -> Any:
    """Loads a Caffe2 pickle or a PyTorch zip checkpoint, never executing code."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        return load_torch_zip(path)
    if head[:1] == b"\x80" or head[:1] in (b"(", b"}", b"]"):
        with open(path, "rb") as f:
            data = f.read()
        result = load_pickle(data, source=path)
        if (
            isinstance(result, int) and result == 0x1950A86A20F9469CFC6C
        ):  # torch legacy magic number
            raise CheckpointFormatError(
                f"{path} is a legacy (pre-1.6) PyTorch checkpoint; re-save it with torch.save in the zip format."
            )
        return result
    raise CheckpointFormatError(f"{path} is neither a pickle nor a PyTorch zip checkpoint.")
