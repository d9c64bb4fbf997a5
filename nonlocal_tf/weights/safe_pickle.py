"""Reading checkpoints without running code from them, by construction.

Checkpoints are pickles, and `pickle.load` calls whatever the file names
(``os.system`` included). This module never calls `pickle.load`: it walks the
opcodes itself (`pickletools.genops`, a parser) on a small stack machine that
can only build what a weights file holds:

- dicts (plain and ``OrderedDict``), lists, tuples, sets, strings, bytes,
  numbers, booleans and None;
- NumPy arrays, dtypes and scalars of numeric or boolean type, from their
  pickled bytes, with every size checked against the bytes present;
- PyTorch tensors of a ``torch.save`` zip checkpoint (without PyTorch), whose
  offset, sizes and strides are checked against their storage before any view
  is made;
- placeholders for the metadata classes of training frameworks (mmengine's
  message hub and the like), which hold their state and run nothing.

A name in the pickle is looked up as an exact ``(module, name)`` pair in the
tables below; nothing is imported and no attribute is resolved, so there is
no way to reach any other callable. Anything else is refused with
`UnsafeCheckpointError`; a malformed file with `CheckpointFormatError`.
Formats read: Caffe2 ``.pkl`` (Python 2 ``cPickle``, protocol 2), plain pickles
of NumPy arrays (protocols 0-5, in-band buffers), and ``torch.save`` zip files
(PyTorch >= 1.6). Legacy (pre-zip) PyTorch files are refused with a message.
"""

from __future__ import annotations

import collections
import math
import pickletools
import re
import zipfile
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint could not be read safely (base class)."""


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint asks for something a weights file has no need for."""


class CheckpointFormatError(CheckpointError):
    """The file is not a well-formed checkpoint of a supported format."""


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# Metadata classes of training frameworks, loaded as inert placeholders.
_INERT_MODULES = ("mmengine", "mmcv", "mmaction", "fvcore", "iopath", "yacs", "argparse")
_MAX_EXPANDED_ELEMENTS = 1 << 26  # zero-stride tensors may repeat storage, up to this
_DTYPE_SPEC = re.compile(r"^[<>|=]?(\?|b1|[iu][1248]|f[248]|c(8|16))$")
_TORCH_STORAGES = {
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


# ------------------------------------------------------------ placeholders
class Inert:
    """Stands for a metadata object of another framework; holds its state,
    runs nothing. ``kind`` is the ``module.name`` the checkpoint gave."""

    def __init__(self, kind: str, args: tuple = ()):
        self.kind, self.args, self.state = kind, args, None

    def __repr__(self):
        return f"<inert {self.kind}>"


class _InertClass:
    def __init__(self, kind: str):
        self.kind = kind


class _Marker:
    """A name the machine knows but that builds nothing on its own."""

    def __init__(self, name: str):
        self.name = name


_NDARRAY = _Marker("numpy.ndarray")


class _TorchStorage:
    def __init__(self, data: np.ndarray):
        self.data = data


class _StorageType(_Marker):
    pass


# --------------------------------------------------------------- builders
def _fail(source: str, message: str) -> CheckpointFormatError:
    return CheckpointFormatError(f"{source}: {message}")


def _int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointFormatError(f"{what} must be an int, got {type(value).__name__}")
    return value


def _int_tuple(value, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple | list):
        raise CheckpointFormatError(f"{what} must be a tuple of ints, got {type(value).__name__}")
    return tuple(_int(v, what) for v in value)


def _raw_bytes(value, what: str) -> bytes:
    """Array bytes: ``bytes``, or a Python 2 ``str`` read as latin-1."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError as exc:
            raise CheckpointFormatError(f"{what}: not latin-1 bytes") from exc
    raise CheckpointFormatError(f"{what} must be bytes, got {type(value).__name__}")


def _numeric_dtype(dtype, what: str) -> np.dtype:
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or dtype.fields:
        raise UnsafeCheckpointError(f"{what}: only numeric or boolean dtypes, got {dtype!r}")
    return dtype


def _make_dtype(spec, align=False, copy=True, *_rest):
    """``numpy.dtype(spec, align, copy)`` for numeric specs only, always a new
    object (BUILD then sets its byte order, never that of NumPy's cached ones)."""
    if isinstance(spec, bytes):
        spec = spec.decode("latin-1")
    if not isinstance(spec, str) or not _DTYPE_SPEC.match(spec):
        raise UnsafeCheckpointError(f"dtype {spec!r} refused: only numeric or boolean dtypes")
    return np.dtype(spec, bool(align), True)


def _set_dtype_state(dtype: np.dtype, state) -> None:
    """The dtype's pickled state ``(version, byteorder, None, None, None, elsize,
    alignment, flags)``, with no sub-arrays, fields or object flags."""
    if not (isinstance(state, tuple) and len(state) in (8, 9)):
        raise CheckpointFormatError(f"unexpected dtype state {state!r}")
    version, order, subarray, names, fields = state[:5]
    if order not in ("<", ">", "|", "=") or subarray is not None or names is not None:
        raise UnsafeCheckpointError(f"dtype state {state!r} refused: structured or sub-array")
    if fields is not None or not all(isinstance(v, int) for v in state[5:8]):
        raise UnsafeCheckpointError(f"dtype state {state!r} refused")
    if state[7] != 0 or state[5] not in (-1, dtype.itemsize):  # flags: object references
        raise UnsafeCheckpointError(f"dtype state {state!r} refused")
    dtype.__setstate__((_int(version, "dtype version"), order, None, None, None, *state[5:8]))


def _reconstruct(cls, shape, typecode, *_rest):
    """``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')``: an empty
    array that BUILD then fills."""
    if cls is not _NDARRAY:
        raise UnsafeCheckpointError("_reconstruct of something other than numpy.ndarray")
    _int_tuple(shape, "_reconstruct shape")
    return np.ndarray((0,), np.uint8)


def _set_array_state(array: np.ndarray, state) -> None:
    """ndarray state ``(version, shape, dtype, is_fortran, raw bytes)``, sizes checked."""
    if not (isinstance(state, tuple) and len(state) in (4, 5)):
        raise CheckpointFormatError(f"unexpected ndarray state of length {len(state)}")
    version, shape, dtype, fortran = (1, *state[:3]) if len(state) == 4 else state[:4]
    shape = _int_tuple(shape, "array shape")
    dtype = _numeric_dtype(dtype, "array")
    raw = _raw_bytes(state[-1], "array data")
    count = math.prod(shape)
    if min(shape, default=0) < 0 or count * dtype.itemsize != len(raw):
        raise CheckpointFormatError(
            f"an array of shape {shape} and dtype {dtype} needs {count * dtype.itemsize} "
            f"bytes, the file holds {len(raw)}"
        )
    array.__setstate__((_int(version, "array version"), shape, dtype, bool(fortran), raw))


def _scalar(dtype, data=None):
    """``numpy.core.multiarray.scalar(dtype, bytes)``."""
    dtype = _numeric_dtype(dtype, "scalar")
    raw = _raw_bytes(data, "scalar data")
    if len(raw) != dtype.itemsize:
        raise CheckpointFormatError(
            f"a {dtype} scalar needs {dtype.itemsize} bytes, got {len(raw)}"
        )
    return np.frombuffer(raw, dtype, count=1)[0]


def _frombuffer(buffer, dtype, shape, order="C"):
    """``numpy._core.numeric._frombuffer`` (NumPy arrays pickled with protocol 5)."""
    dtype = _numeric_dtype(dtype, "array")
    raw = _raw_bytes(buffer, "array buffer")
    shape = _int_tuple(shape, "array shape")
    if min(shape, default=0) < 0 or math.prod(shape) * dtype.itemsize != len(raw):
        raise CheckpointFormatError(
            f"array buffer of {len(raw)} bytes does not fit {shape} {dtype}"
        )
    if order not in ("C", "F"):
        raise CheckpointFormatError(f"array order {order!r}")
    return np.frombuffer(raw, dtype).reshape(shape, order=order).copy(order=order)


def _encode(text, encoding="latin-1"):
    """``_codecs.encode(str, 'latin1')``: how Python 3 writes bytes in protocol 2."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpointError(f"_codecs.encode with {encoding!r} refused")
    return _raw_bytes(text, "encoded bytes")


def _ordered_dict(items=()):
    if isinstance(items, dict):
        items = list(items.items())
    if not isinstance(items, list | tuple):
        raise CheckpointFormatError("OrderedDict from something other than pairs")
    out = collections.OrderedDict()
    for pair in items:
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise CheckpointFormatError("OrderedDict item is not a pair")
        out[_key(pair[0])] = pair[1]
    return out


def _rebuild_tensor(storage, offset, size, stride, *_rest):
    """``torch._utils._rebuild_tensor_v2`` on a storage read from the zip, as a
    NumPy array. Sizes, strides and offset are checked against the storage
    before the view is made: negative values, reads past its end and
    overflowing products are refused."""
    if not isinstance(storage, _TorchStorage):
        raise CheckpointFormatError("tensor rebuilt from something other than a storage")
    offset = _int(offset, "tensor offset")
    size, stride = _int_tuple(size, "tensor size"), _int_tuple(stride, "tensor stride")
    data = storage.data
    if len(size) != len(stride):
        raise CheckpointFormatError(f"tensor size {size} and stride {stride} differ in length")
    if offset < 0 or min(size, default=0) < 0 or min(stride, default=0) < 0:
        raise UnsafeCheckpointError(
            f"tensor with negative offset, size or stride refused ({offset}, {size}, {stride})"
        )
    count = math.prod(size)
    if count == 0:
        return np.zeros(size, data.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= data.size:
        raise UnsafeCheckpointError(
            f"tensor (offset {offset}, size {size}, stride {stride}) reads element {last} "
            f"of a storage of {data.size}: refused"
        )
    if count > max(data.size, _MAX_EXPANDED_ELEMENTS):
        raise UnsafeCheckpointError(
            f"tensor of {count} elements repeats a storage of {data.size}: refused"
        )
    item = data.dtype.itemsize
    strides = tuple(s * item if n > 1 else 0 for n, s in zip(size, stride, strict=True))
    view = np.lib.stride_tricks.as_strided(data[offset:], size, strides, writeable=False)
    return np.array(view)


def _rebuild_parameter(data, *_rest):
    if not isinstance(data, np.ndarray):
        raise CheckpointFormatError("a parameter that is not a tensor")
    return data


def _torch_size(dims=()):
    return _int_tuple(dims, "torch.Size")


_CALLABLES: dict[tuple[str, str], Any] = {
    **{
        (module, name): fn
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name, fn in (("_reconstruct", _reconstruct), ("scalar", _scalar))
    },
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _make_dtype,
    ("_codecs", "encode"): _encode,
    ("collections", "OrderedDict"): _ordered_dict,
    ("builtins", "set"): lambda items=(): set(map(_key, _sequence(items))),
    ("builtins", "frozenset"): lambda items=(): frozenset(map(_key, _sequence(items))),
    ("__builtin__", "set"): lambda items=(): set(map(_key, _sequence(items))),
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): _torch_size,
    **{("torch", name): _StorageType(name) for name in _TORCH_STORAGES},
}


_FUNCTIONS = tuple(fn for fn in _CALLABLES.values() if not isinstance(fn, _Marker))


def _sequence(items):
    if not isinstance(items, list | tuple | set | frozenset):
        raise CheckpointFormatError("a set built from something other than a sequence")
    return items


_KEY_TYPES = (str, int, float, bytes, bool, type(None))


def _key(value):
    """Dict keys and set items: plain values or tuples of them (hashing runs no code)."""
    if isinstance(value, _KEY_TYPES) or (
        isinstance(value, tuple) and all(isinstance(v, _KEY_TYPES) for v in value)
    ):
        return value
    raise CheckpointFormatError(f"a dict key of type {type(value).__name__}")


def _resolve(module: str, name: str):
    """The exact ``(module, name)`` pair's stand-in; no import, no attribute lookup."""
    found = _CALLABLES.get((module, name))
    if found is not None:
        return found
    if _MODULE.match(module) and _IDENTIFIER.match(name) and module.split(".")[0] in _INERT_MODULES:
        return _InertClass(f"{module}.{name}")
    raise UnsafeCheckpointError(
        f"it asks for {module}.{name}, which a weights file never needs. The file may be "
        "malicious or not a checkpoint; nothing in it was run"
    )


# ---------------------------------------------------------------- machine
_VALUE_OPS = {  # opcodes whose argument is the value pushed (Python 2 str read as latin-1)
    *("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT"),
    *("STRING", "BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8"),
    *("UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"),
}
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_EMPTY = {"EMPTY_LIST": list, "EMPTY_TUPLE": tuple, "EMPTY_DICT": dict, "EMPTY_SET": set}


class _Machine:
    """Runs pickle opcodes on a stack, building only the values above. Opcodes
    it has no rule for (extension registry, out-of-band buffers) are refused."""

    def __init__(self, storages: Callable[[Any], _TorchStorage] | None):
        self.storages = storages
        self.stack: list = []
        self.marks: list[list] = []
        self.memo: dict[int, Any] = {}

    def pop(self):
        if not self.stack:
            raise CheckpointFormatError("stack underflow")
        return self.stack.pop()

    def top(self, kind=object):
        if not self.stack:
            raise CheckpointFormatError("stack underflow")
        if not isinstance(self.stack[-1], kind):
            raise CheckpointFormatError(f"expected a {kind.__name__} on the stack")
        return self.stack[-1]

    def pop_mark(self) -> list:
        if not self.marks:
            raise CheckpointFormatError("MARK expected")
        items, self.stack = self.stack, self.marks.pop()
        return items

    def run(self, data: bytes) -> Any:
        for opcode, arg, _pos in pickletools.genops(data):
            name = opcode.name
            if name == "STOP":
                result = self.pop()
                if self.stack or self.marks:
                    raise CheckpointFormatError("data left on the stack at STOP")
                return result
            if name in _VALUE_OPS:
                self.stack.append(arg)
            elif name in _CONSTANTS:
                self.stack.append(_CONSTANTS[name])
            elif name in _EMPTY:
                self.stack.append(_EMPTY[name]())
            else:
                handler = getattr(self, "op_" + name, None)
                if handler is None:
                    raise UnsafeCheckpointError(f"pickle opcode {name} refused")
                handler(arg)
        raise CheckpointFormatError("pickle ended before STOP")

    def op_PROTO(self, arg):
        if not 0 <= arg <= 5:
            raise CheckpointFormatError(f"pickle protocol {arg}")

    def op_FRAME(self, _):
        pass

    def op_BYTEARRAY8(self, arg):
        self.stack.append(bytes(arg))

    # containers
    def op_MARK(self, _):
        self.marks.append(self.stack)
        self.stack = []

    def op_LIST(self, _):
        items = self.pop_mark()
        self.stack.append(items)

    def op_TUPLE(self, _):
        items = tuple(self.pop_mark())
        self.stack.append(items)

    def op_TUPLE1(self, _):
        self.stack.append((self.pop(),))

    def op_TUPLE2(self, _):
        b, a = self.pop(), self.pop()
        self.stack.append((a, b))

    def op_TUPLE3(self, _):
        c, b, a = self.pop(), self.pop(), self.pop()
        self.stack.append((a, b, c))

    def op_DICT(self, _):
        items = self.pop_mark()
        self.stack.append(_fill({}, items))

    def op_FROZENSET(self, _):
        items = frozenset(map(_key, self.pop_mark()))
        self.stack.append(items)

    def op_APPEND(self, _):
        value = self.pop()
        self.top(list).append(value)

    def op_APPENDS(self, _):
        items = self.pop_mark()
        self.top(list).extend(items)

    def op_SETITEM(self, _):
        value, key = self.pop(), self.pop()
        _fill(self.top(dict), [key, value])

    def op_SETITEMS(self, _):
        items = self.pop_mark()
        _fill(self.top(dict), items)

    def op_ADDITEMS(self, _):
        items = self.pop_mark()
        self.top(set).update(map(_key, items))

    def op_POP(self, _):
        if self.stack:
            self.stack.pop()
        else:
            self.pop_mark()

    def op_POP_MARK(self, _):
        self.pop_mark()

    def op_DUP(self, _):
        self.stack.append(self.top())

    # memo
    def op_GET(self, arg):
        if arg not in self.memo:
            raise CheckpointFormatError(f"memo key {arg} not defined")
        self.stack.append(self.memo[arg])

    op_BINGET = op_LONG_BINGET = op_GET

    def op_PUT(self, arg):
        self.memo[_int(arg, "memo key")] = self.top()

    op_BINPUT = op_LONG_BINPUT = op_PUT

    def op_MEMOIZE(self, _):
        self.memo[len(self.memo)] = self.top()

    # names, calls and objects
    def op_GLOBAL(self, arg):
        module, _, name = arg.partition(" ")
        self.stack.append(_resolve(module, name))

    def op_STACK_GLOBAL(self, _):
        name, module = self.pop(), self.pop()
        if not (isinstance(module, str) and isinstance(name, str)):
            raise CheckpointFormatError("STACK_GLOBAL needs two strings")
        self.stack.append(_resolve(module, name))

    def op_REDUCE(self, _):
        args, fn = self.pop(), self.pop()
        if not isinstance(args, tuple):
            raise CheckpointFormatError("call arguments are not a tuple")
        if isinstance(fn, _InertClass):
            self.stack.append(Inert(fn.kind, args))
            return
        if not any(fn is known for known in _FUNCTIONS):
            raise UnsafeCheckpointError(f"calling {getattr(fn, 'name', type(fn).__name__)} refused")
        try:
            self.stack.append(fn(*args))
        except TypeError as exc:  # wrong argument count for the stand-in
            raise CheckpointFormatError(f"bad arguments ({exc})") from exc

    def op_NEWOBJ(self, _):
        args, cls = self.pop(), self.pop()
        self.stack.append(_new(cls, args))

    def op_NEWOBJ_EX(self, _):
        _kwargs, args, cls = self.pop(), self.pop(), self.pop()
        self.stack.append(_new(cls, args))

    def op_OBJ(self, _):
        items = self.pop_mark()
        if not items:
            raise CheckpointFormatError("OBJ without a class")
        self.stack.append(_new(items[0], tuple(items[1:])))

    def op_INST(self, arg):
        module, _, name = arg.partition(" ")
        args = tuple(self.pop_mark())
        self.stack.append(_new(_resolve(module, name), args))

    def op_BUILD(self, _):
        state, target = self.pop(), self.top()
        if isinstance(target, np.ndarray):
            _set_array_state(target, state)
        elif isinstance(target, np.dtype):
            _set_dtype_state(target, state)
        elif isinstance(target, Inert):
            target.state = state
        elif not isinstance(target, dict):  # a dict's attributes (PyTorch's ``_metadata``): dropped
            raise UnsafeCheckpointError(f"setting the state of a {type(target).__name__} refused")

    def op_BINPERSID(self, _):
        self.op_PERSID(self.pop())

    def op_PERSID(self, pid):
        if self.storages is None:
            raise CheckpointFormatError("a persistent id outside a PyTorch zip checkpoint")
        self.stack.append(self.storages(pid))


def _fill(target: dict, items: list) -> dict:
    if len(items) % 2:
        raise CheckpointFormatError("odd number of dict items")
    for i in range(0, len(items), 2):
        target[_key(items[i])] = items[i + 1]
    return target


def _new(cls, args):
    """``cls.__new__(cls, *args)``: only placeholders and empty OrderedDicts."""
    if isinstance(cls, _InertClass):
        return Inert(cls.kind, tuple(args) if isinstance(args, list | tuple) else ())
    if cls is _ordered_dict:
        return collections.OrderedDict()
    raise UnsafeCheckpointError(
        f"creating an instance of {getattr(cls, 'name', type(cls).__name__)} refused"
    )


def _run(data: bytes, source: str, storages=None) -> Any:
    try:
        return _Machine(storages).run(data)
    except CheckpointError as exc:
        message = str(exc)
        if not message.startswith(source):
            message = f"{source}: {message}"
        raise type(exc)(message) from None
    except (ValueError, KeyError, IndexError, EOFError, UnicodeError, OverflowError) as exc:
        raise CheckpointFormatError(
            f"{source} is not a readable pickle ({type(exc).__name__}: {exc})."
        ) from None


def load_pickle(data: bytes, source: str = "checkpoint") -> Any:
    """Reads a Caffe2 / plain pickle (Python 2 pickles included) without running it."""
    return _run(data, source)


def _zip_storages(archive: zipfile.ZipFile, prefix: str, source: str):
    """The persistent-load function of a zip checkpoint: each storage read once,
    its byte length checked against its type and element count."""
    names = set(archive.namelist())
    byteorder = "little"
    if f"{prefix}byteorder" in names:
        byteorder = archive.read(f"{prefix}byteorder").decode(errors="replace").strip()
    if byteorder not in ("little", "big"):
        raise _fail(source, f"byte order {byteorder!r}")
    endian = "<" if byteorder == "little" else ">"
    cache: dict[str, _TorchStorage] = {}

    def storage(pid) -> _TorchStorage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointFormatError(f"unsupported persistent id {pid!r}")
        kind, key, _location, numel = pid[1:]
        if not isinstance(kind, _StorageType):
            raise UnsafeCheckpointError(f"storage type {kind!r} refused")
        if not (isinstance(key, str) and _IDENTIFIER.match("k" + key)):
            raise CheckpointFormatError(f"storage key {key!r}")
        if key not in cache:
            member = f"{prefix}data/{key}"
            if member not in names:
                raise CheckpointFormatError(f"storage {key} is missing; truncated file?")
            raw = archive.read(member)
            dtype = _TORCH_STORAGES[kind.name]
            if dtype == "bfloat16":
                bits = _frombytes(raw, np.dtype(endian + "u2"), key)
                array = (bits.astype(np.uint32) << 16).view(np.float32)
            else:
                array = _frombytes(raw, np.dtype(dtype).newbyteorder(endian), key)
            cache[key] = _TorchStorage(array)
        data = cache[key].data
        if isinstance(numel, int) and not isinstance(numel, bool) and numel != data.size:
            raise CheckpointFormatError(f"storage {key} holds {data.size} elements, not {numel}")
        return cache[key]

    return storage


def _frombytes(raw: bytes, dtype: np.dtype, key: str) -> np.ndarray:
    if len(raw) % dtype.itemsize:
        raise CheckpointFormatError(
            f"storage {key}: {len(raw)} bytes is not a whole number of {dtype}"
        )
    return np.frombuffer(raw, dtype).astype(dtype.newbyteorder("="))


def load_torch_zip(path: str) -> Any:
    """Reads a ``torch.save`` zip checkpoint into NumPy arrays, without PyTorch."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():  # a member that inflates far beyond its size
                if info.file_size > 100 * max(info.compress_size, 1 << 20):
                    raise UnsafeCheckpointError(
                        f"{path}: member {info.filename} expands to {info.file_size} bytes: refused"
                    )
            pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if not pkl:
                raise _fail(path, "no data.pkl inside; not a PyTorch checkpoint.")
            prefix = pkl[0][: -len("data.pkl")]
            data = archive.read(pkl[0])
            return _run(data, path, _zip_storages(archive, prefix, path))
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        NotImplementedError,  # an unsupported compression method
        RuntimeError,  # an encrypted member
        OSError,
        EOFError,
    ) as exc:
        raise _fail(path, f"not a readable PyTorch zip checkpoint ({exc}).") from None


_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def load_checkpoint(path: str) -> Any:
    """Loads a Caffe2 pickle or a PyTorch zip checkpoint, never running code from it.

    Raises:
        UnsafeCheckpointError: the file asks for a callable or object that a
            weights file does not need, or a tensor view outside its storage.
        CheckpointFormatError: anything else that is not a readable checkpoint.
    """
    path = str(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            if head.startswith(b"PK"):
                data = None
            elif head[:1] == b"\x80" or head[:1] in (b"(", b"}", b"]"):
                f.seek(0)
                data = f.read()
            else:
                raise _fail(path, "neither a pickle nor a PyTorch zip checkpoint.")
    except OSError as exc:
        raise _fail(path, f"cannot be read ({exc.strerror or exc}).") from None
    if data is None:
        return load_torch_zip(path)
    result = load_pickle(data, source=path)
    if isinstance(result, int) and result == _TORCH_LEGACY_MAGIC:
        raise _fail(
            path,
            "a legacy (pre-1.6) PyTorch checkpoint; re-save it with torch.save in the zip format.",
        )
    return result


__all__ = [
    "CheckpointError",
    "CheckpointFormatError",
    "Inert",
    "UnsafeCheckpointError",
    "load_checkpoint",
    "load_pickle",
    "load_torch_zip",
]
