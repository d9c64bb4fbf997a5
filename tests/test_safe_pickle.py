"""The checkpoint reader builds data only: crafted pickles and torch zips that try
to run code, reach other callables, or read outside a storage are refused."""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from nonlocal_tf.weights.safe_pickle import (
    CheckpointError,
    CheckpointFormatError,
    Inert,
    UnsafeCheckpointError,
    load_checkpoint,
    load_pickle,
)


# ----------------------------------------------------- a pickle assembler
def uni(text: str) -> bytes:  # SHORT_BINUNICODE / BINUNICODE
    data = text.encode()
    if len(data) < 256:
        return b"\x8c" + bytes([len(data)]) + data
    return b"X" + len(data).to_bytes(4, "little") + data


def num(value: int) -> bytes:  # LONG1: any size and sign
    size = max(1, (value.bit_length() + 8) // 8)
    return b"\x8a" + bytes([size]) + value.to_bytes(size, "little", signed=True)


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def tup(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def call(fn: bytes, *args: bytes) -> bytes:
    return fn + tup(*args) + b"R"


def program(body: bytes, protocol: int = 2) -> bytes:
    return b"\x80" + bytes([protocol]) + body + b"."


MARKER = "touch_{}".format


def os_payloads(marker: str) -> dict[str, bytes]:
    command = uni(f"touch {marker}")
    return {
        "reduce": program(call(glob("os", "system"), command)),
        "posix": program(call(glob("posix", "system"), command)),
        "stack_global": program(uni("os") + uni("system") + b"\x93" + tup(command) + b"R", 4),
        "builtins_eval": program(
            call(glob("builtins", "eval"), uni(f"__import__('os').system('touch {marker}')"))
        ),
        "getattr": program(call(call(glob("builtins", "getattr"), glob("os", "path"), uni("x")))),
        "issue_17": program(
            uni("numpy.dtypes")
            + uni("__builtins__.get")
            + b"\x93"
            + uni("eval")
            + b"\x85R"
            + uni(f"__import__('os').system('touch {marker}')")
            + b"\x85R",
            4,
        ),
        "dotted_name": program(
            uni("numpy") + uni("core.multiarray.os.system") + b"\x93" + tup(command) + b"R", 4
        ),
        "numpy_submodule": program(call(glob("numpy.dtypes", "os"))),
        "numpy_load": program(call(glob("numpy", "load"), uni("/etc/passwd"))),
        "inst": program(b"(" + command + b"i" + b"os\nsystem\n"),
        "obj": program(b"(" + glob("os", "system") + command + b"o"),
        "newobj": program(glob("subprocess", "Popen") + tup(command) + b"\x81"),
        "copyreg": program(
            call(
                glob("copy_reg", "_reconstructor"), glob("os", "system"), glob("builtins", "object")
            )
        ),
        "codecs_other": program(call(glob("_codecs", "encode"), uni("x"), uni("rot13"))),
        "inert_called_then_called": program(
            call(call(glob("mmengine.x", "Y")), command)  # the placeholder is not callable
        ),
        "storage_type_called": program(call(glob("torch", "FloatStorage"), num(10))),
        "ndarray_called": program(call(glob("numpy", "ndarray"), tup(num(3)))),
        "extension": program(b"\x82\x01"),
        "out_of_band": program(b"\x97", 5),
        "build_on_list": program(b"]" + b"}" + b"b"),
        "torch_rebuild_from_type": program(
            call(glob("torch._tensor", "_rebuild_from_type_v2"), glob("os", "system"))
        ),
    }


@pytest.mark.parametrize("attack", sorted(os_payloads("x")))
def test_attacks_are_refused_before_anything_runs(tmp_path, attack):
    marker = tmp_path / "pwned"
    data = os_payloads(str(marker))[attack]
    with pytest.raises(CheckpointError) as raised:
        load_pickle(data, "evil.pkl")
    assert "evil.pkl" in str(raised.value)
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(CheckpointError):
        load_checkpoint(str(path))
    path = tmp_path / "evil.pth"  # the same pickle as a torch zip's data.pkl
    path.write_bytes(torch_zip(data, {}))
    with pytest.raises(CheckpointError):
        load_checkpoint(str(path))
    assert not marker.exists()


def test_refusals_say_what_was_asked_for():
    with pytest.raises(UnsafeCheckpointError, match=r"os\.system"):
        load_pickle(os_payloads("x")["reduce"])
    with pytest.raises(UnsafeCheckpointError, match=r"numpy\.dtypes\.__builtins__\.get"):
        load_pickle(os_payloads("x")["issue_17"])
    with pytest.raises(UnsafeCheckpointError, match="EXT1"):
        load_pickle(os_payloads("x")["extension"])


def test_object_and_structured_arrays_are_refused():
    for value in (
        np.array([1, "a", None], dtype=object),
        np.zeros(2, dtype=[("a", "f4"), ("b", "i4")]),
        np.array(["ab", "c"]),
    ):
        for protocol in (2, 5):
            with pytest.raises(CheckpointError):
                load_pickle(pickle.dumps({"w": value}, protocol=protocol))


def descr(dtype: str) -> bytes:
    """``numpy.dtype(dtype)`` with its pickled state, as NumPy writes it."""
    state = tup(num(3), uni("<"), b"NNN", num(-1), num(-1), num(0))
    return call(glob("numpy", "dtype"), uni(dtype), b"\x89\x88") + state + b"b"


def array_pickle(shape, raw: bytes, dtype: str = "f4") -> bytes:
    """A Caffe2-style ndarray pickle whose state claims ``shape``."""
    empty = call(
        glob("numpy.core.multiarray", "_reconstruct"),
        glob("numpy", "ndarray"),
        tup(num(0)),
        b"C\x01b",
    )
    data = b"B" + len(raw).to_bytes(4, "little") + raw
    return program(empty + tup(num(1), tup(*map(num, shape)), descr(dtype), b"\x89", data) + b"b")


def test_array_sizes_are_checked_against_the_bytes():
    raw = np.arange(4, dtype=np.float32).tobytes()
    np.testing.assert_array_equal(load_pickle(array_pickle((2, 2), raw)), [[0, 1], [2, 3]])
    for shape in ((4096,), (2**40, 2**40), (-4, -1), (3,)):
        with pytest.raises(CheckpointFormatError, match="bytes"):
            load_pickle(array_pickle(shape, raw))
    for dtype in ("O", "V8", "U1", "M8"):
        with pytest.raises(UnsafeCheckpointError, match="dtype"):
            load_pickle(array_pickle((4,), raw, dtype=dtype))
    scalar = call(glob("numpy.core.multiarray", "scalar"), descr("f8"), b"C\x02\x00\x00")
    with pytest.raises(CheckpointFormatError, match="8 bytes"):
        load_pickle(program(scalar))


def test_plain_values_round_trip_in_every_protocol():
    value = {
        "w": np.arange(6, dtype=np.float32).reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "big_endian": np.arange(3, dtype=">i4"),
        "half": np.ones(3, np.float16),
        "flags": np.array([True, False]),
        "scalar": np.float64(0.25),
        "iter": 400001,
        "nested": [1, 2.5, (3, "x", None), b"raw", {"k": True}],
        "set": {1, 2},
        "ordered": collections.OrderedDict(a=1, b=2),
    }
    for protocol in range(6):
        got = load_pickle(pickle.dumps(value, protocol=protocol))
        assert got.keys() == value.keys()
        for key, want in value.items():
            if isinstance(want, np.ndarray):
                assert got[key].shape == want.shape and got[key].dtype.kind == want.dtype.kind
                np.testing.assert_array_equal(got[key], want)
            else:
                assert got[key] == want, (protocol, key)


def test_framework_metadata_becomes_inert():
    data = program(
        b"}"
        + uni("meta")
        + glob("mmengine.logging.message_hub", "MessageHub")
        + b")\x81"
        + b"}"
        + uni("log")
        + num(3)
        + b"s"
        + b"b"
        + b"s"
    )
    got = load_pickle(data)
    assert isinstance(got["meta"], Inert) and got["meta"].state == {"log": 3}


def test_deep_nesting_and_memo_reuse_do_not_crash():
    deep = b"\x80\x02" + b"(" * 100_000 + b"t" * 100_000 + b"."
    nested = load_pickle(deep)
    depth = 0
    while nested:
        nested, depth = nested[0], depth + 1
    assert depth == 99_999
    # one list referenced 10,000 times through the memo: references, not copies
    data = program(b"](" + b"]q\x00" + b"h\x00" * 10_000 + b"e")
    assert len(load_pickle(data)) == 10_001


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "neither"),
        (b"\x80\x02}q\x00(X\x01\x00\x00\x00a", "readable pickle"),  # truncated
        (b"\x80\x02h\x07.", "memo key 7"),
        (b"\x80\x02t.", "MARK"),
        (b"\x80\x02K\x01(K\x02.", "left on the stack"),
        (b"\x80\x02K\x00K\x01K\x02s.", "expected a dict"),
        (b"\x80\x02}]K\x01s.", "dict key"),
    ],
)
def test_malformed_pickles_are_format_errors(tmp_path, data, message):
    path = tmp_path / "bad.pkl"
    path.write_bytes(data)
    with pytest.raises(CheckpointFormatError, match=message):
        load_checkpoint(str(path))


# ---------------------------------------------------------- torch zip files
def torch_zip(data_pkl: bytes, storages: dict[str, bytes], compress: bool = False) -> bytes:
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", method) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        for key, raw in storages.items():
            archive.writestr(f"archive/data/{key}", raw)
    return buffer.getvalue()


def tensor_pickle(offset: int, size, stride, numel: int = 4, key: str = "0") -> bytes:
    storage = tup(uni("storage"), glob("torch", "FloatStorage"), uni(key), uni("cpu"), num(numel))
    args = (
        storage
        + b"Q"
        + num(offset)
        + tup(*map(num, size))
        + tup(*map(num, stride))
        + b"\x89"
        + call(glob("collections", "OrderedDict"))
    )
    return program(b"}" + uni("w") + call(glob("torch._utils", "_rebuild_tensor_v2"), args) + b"s")


def write_zip(tmp_path, data: bytes, name="x.pth") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


FOUR_FLOATS = np.arange(4, dtype="<f4").tobytes()


def test_tensor_views_inside_their_storage_load(tmp_path):
    cases = {
        ((2, 2), (2, 1), 0): [[0, 1], [2, 3]],
        ((2, 2), (1, 2), 0): [[0, 2], [1, 3]],  # transposed
        ((2,), (2,), 1): [1, 3],  # offset and stride
        ((3, 2), (0, 1), 2): [[2, 3]] * 3,  # expanded (stride 0)
        ((0, 5), (5, 1), 0): np.zeros((0, 5)),
        ((), (), 3): 3.0,
        ((1, 1), (2**62, 2**62), 0): [[0.0]],  # strides of size-1 dimensions are unused
    }
    for (size, stride, offset), want in cases.items():
        path = write_zip(
            tmp_path, torch_zip(tensor_pickle(offset, size, stride), {"0": FOUR_FLOATS})
        )
        got = load_checkpoint(path)["w"]
        np.testing.assert_array_equal(got, np.asarray(want, np.float32))
        assert got.shape == tuple(size)


@pytest.mark.parametrize(
    "offset, size, stride",
    [
        (0, (4096,), (1,)),  # reads past a 4-element storage (the heap read)
        (0, (2,), (2**30,)),
        (0, (2,), (-(2**28),)),
        (3, (2,), (-1,)),
        (-1, (1,), (1,)),
        (4, (1,), (1,)),
        (2**64, (1,), (1,)),
        (0, (2**40, 2**40), (1, 1)),
        (0, (-1,), (1,)),
        (0, (2**31,), (0,)),  # a huge expansion of a small storage
    ],
)
def test_tensor_views_outside_their_storage_are_refused(tmp_path, offset, size, stride):
    path = write_zip(tmp_path, torch_zip(tensor_pickle(offset, size, stride), {"0": FOUR_FLOATS}))
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "storages, kwargs, message",
    [
        ({}, {}, "missing"),
        ({"0": FOUR_FLOATS[:-1]}, {}, "whole number"),
        ({"0": FOUR_FLOATS}, {"numel": 9}, "not 9"),
        ({"0": FOUR_FLOATS}, {"key": "../../etc/passwd"}, "storage key"),
    ],
)
def test_bad_storages_are_format_errors(tmp_path, storages, kwargs, message):
    data = tensor_pickle(0, (4,), (1,), **kwargs)
    path = write_zip(tmp_path, torch_zip(data, storages))
    with pytest.raises(CheckpointFormatError, match=message):
        load_checkpoint(path)


def test_zip_bombs_and_broken_zips_are_refused(tmp_path):
    bomb = torch_zip(tensor_pickle(0, (4,), (1,)), {"0": b"\x00" * (120 << 20)}, compress=True)
    assert len(bomb) < 1 << 20
    with pytest.raises(UnsafeCheckpointError, match="expands"):
        load_checkpoint(write_zip(tmp_path, bomb))
    good = torch_zip(tensor_pickle(0, (4,), (1,)), {"0": FOUR_FLOATS})
    with pytest.raises(CheckpointFormatError, match="zip"):
        load_checkpoint(write_zip(tmp_path, good[: len(good) // 2], "cut.pth"))
    no_pickle = io.BytesIO()
    with zipfile.ZipFile(no_pickle, "w") as archive:
        archive.writestr("archive/other", b"x")
    with pytest.raises(CheckpointFormatError, match="no data.pkl"):
        load_checkpoint(write_zip(tmp_path, no_pickle.getvalue(), "empty.pth"))


def test_real_torch_checkpoints_load(tmp_path):
    torch = pytest.importorskip("torch")
    state = collections.OrderedDict(
        w=torch.arange(6.0).reshape(2, 3),
        t=torch.arange(6.0).reshape(2, 3).t(),
        strided=torch.arange(8.0)[1::3],
        bf16=torch.arange(3, dtype=torch.bfloat16),
        half=torch.ones(2, dtype=torch.float16),
        count=torch.tensor(7),
        param=torch.nn.Parameter(torch.ones(2)),
    )
    path = tmp_path / "real.pth"
    torch.save({"state_dict": state, "meta": {"epoch": 3}}, path)
    got = load_checkpoint(str(path))
    assert got["meta"] == {"epoch": 3}
    for key, tensor in state.items():
        np.testing.assert_array_equal(got["state_dict"][key], tensor.detach().float().numpy())
        assert got["state_dict"][key].shape == tuple(tensor.shape)


def test_unreadable_paths_are_format_errors(tmp_path):
    with pytest.raises(CheckpointFormatError, match="cannot be read"):
        load_checkpoint(str(tmp_path / "missing.pkl"))
    with pytest.raises(CheckpointFormatError, match="cannot be read"):
        load_checkpoint(str(tmp_path))
    assert not os.path.exists(tmp_path / "missing.pkl")
