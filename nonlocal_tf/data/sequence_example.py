"""One video as a ``tf.train.SequenceExample``, written and read in its
protobuf wire format, without TensorFlow or its generated classes.

The keys (TF Model Garden's video classification and DMVR): context
``clip/label/index`` (int64 list), ``clip/label/text`` (bytes list),
``clip/media_id`` (bytes); sequence feature list ``image/encoded``, one JPEG
per frame. `nonlocal_tf.data.tfrecord` parses the same records with
TensorFlow's ops.

The messages involved (``tensorflow/core/example/{example,feature}.proto``),
with their field numbers, are all this module knows of protobuf::

    SequenceExample {1: Features context, 2: FeatureLists feature_lists}
    Features        {1: map<string, Feature> feature}
    FeatureLists    {1: map<string, FeatureList> feature_list}
    map entry       {1: string key, 2: value}
    FeatureList     {1: repeated Feature feature}
    Feature         {oneof 1: BytesList, 2: FloatList, 3: Int64List}
    BytesList       {1: repeated bytes value}
    Int64List       {1: repeated int64 value (packed)}

A message field is a key varint ``(number << 3) | wire type``, then for wire
type 2 (length-delimited) a varint length and that many bytes. Written by
hand rather than with the ``protobuf`` package's dynamic messages because
the shard index needs where each JPEG lies inside the record (`locate`),
which no protobuf runtime reports; both directions are small.
"""

from __future__ import annotations

import dataclasses
import os

IMAGE_KEY = "image/encoded"
LABEL_INDEX_KEY = "clip/label/index"
LABEL_TEXT_KEY = "clip/label/text"
MEDIA_ID_KEY = "clip/media_id"

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5  # the wire types a reader can meet


class RecordError(ValueError):
    """A record that is not a SequenceExample of frames (the reason in a few words)."""


# ---------------------------------------------------------------- writing
def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64: two's complement, ten bytes
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return _varint(number << 3 | _LENGTH) + _varint(len(payload)) + payload


def _bytes_feature(values: list[bytes]) -> bytes:
    return _field(1, b"".join(_field(1, v) for v in values))  # Feature.bytes_list


def _int64_feature(values: list[int]) -> bytes:
    return _field(3, _field(1, b"".join(_varint(int(v)) for v in values)))  # packed


def _map_entry(key: str, value: bytes) -> bytes:
    return _field(1, _field(1, key.encode()) + _field(2, value))


def encode(
    jpeg_frames: list[bytes], labels: list[int], label_texts: list[str], media_id: str
) -> bytes:
    """One video as a serialised SequenceExample (what
    ``tf.train.SequenceExample.SerializeToString`` gives, up to field order).
    Names are written as the file system's bytes (``os.fsencode``)."""
    context = (
        _map_entry(LABEL_INDEX_KEY, _int64_feature(labels))
        + _map_entry(LABEL_TEXT_KEY, _bytes_feature([os.fsencode(t) for t in label_texts]))
        + _map_entry(MEDIA_ID_KEY, _bytes_feature([os.fsencode(media_id)]))
    )
    frames = b"".join(_field(1, _bytes_feature([jpeg])) for jpeg in jpeg_frames)
    return _field(1, context) + _field(2, _map_entry(IMAGE_KEY, frames))


# ---------------------------------------------------------------- reading
@dataclasses.dataclass
class Located:
    """Where a record's parts are: each frame's JPEG as ``(offset, length)``
    in the record, its labels and media id."""

    frames: list[tuple[int, int]]
    labels: list[int]
    media_id: bytes


def _read_varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise RecordError("malformed varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: memoryview, start: int, end: int):
    """``(number, wire type, value or (start, end) of a payload)`` of each
    field of the message in ``data[start:end]``."""
    pos = start
    while pos < end:
        key, pos = _read_varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _read_varint(data, pos, end)
            yield number, wire, value
            continue
        if wire == _LENGTH:
            length, pos = _read_varint(data, pos, end)
            size = length
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
        else:
            raise RecordError(f"unknown wire type {wire}")
        if pos + size > end:
            raise RecordError("a field runs past its message")
        yield number, wire, (pos, pos + size)
        pos += size


def _map(data: memoryview, start: int, end: int) -> dict[bytes, tuple[int, int]]:
    """The entries of a ``map<string, message>`` field's message: key ->
    span of the value (the last entry of a key wins, as in protobuf)."""
    entries = {}
    for number, wire, span in _fields(data, start, end):
        if number != 1 or wire != _LENGTH:
            continue
        key, value = b"", (span[0], span[0])  # absent: default (empty) key and value
        for n, w, part in _fields(data, *span):
            if w != _LENGTH:
                continue
            if n == 1:
                key = bytes(data[part[0] : part[1]])
            elif n == 2:
                value = part
        entries[key] = value
    return entries


def _bytes_values(data: memoryview, start: int, end: int) -> list[tuple[int, int]]:
    """Spans of a Feature's bytes_list values (empty for another kind)."""
    spans = []
    for number, wire, span in _fields(data, start, end):
        if number == 1 and wire == _LENGTH:
            spans += [part for n, w, part in _fields(data, *span) if n == 1 and w == _LENGTH]
    return spans


def _int64_values(data: memoryview, start: int, end: int) -> list[int]:
    """A Feature's int64_list values, packed or not (empty for another kind)."""
    values = []
    for number, wire, span in _fields(data, start, end):
        if number != 3 or wire != _LENGTH:
            continue
        for n, w, part in _fields(data, *span):
            if n != 1:
                continue
            if w == _VARINT:
                values.append(part)
            elif w == _LENGTH:  # packed
                pos = part[0]
                while pos < part[1]:
                    value, pos = _read_varint(data, pos, part[1])
                    values.append(value)
    return [v - (1 << 64) if v >= 1 << 63 else v for v in values]


def locate(record: bytes | memoryview) -> Located:
    """Where the frames of a serialised SequenceExample are, without copying
    them; `RecordError` if it is not one, or has no ``image/encoded`` frames
    of one JPEG each."""
    data = memoryview(record)
    context = features = (0, 0)
    for number, wire, span in _fields(data, 0, len(data)):
        if wire == _LENGTH and number == 1:
            context = span
        elif wire == _LENGTH and number == 2:
            features = span
    feature = _map(data, *context)
    labels = _int64_values(data, *feature.get(LABEL_INDEX_KEY.encode(), (0, 0)))
    media = _bytes_values(data, *feature.get(MEDIA_ID_KEY.encode(), (0, 0)))
    image = _map(data, *features).get(IMAGE_KEY.encode())
    if image is None:
        raise RecordError(f"no {IMAGE_KEY} feature list")
    frames = []
    for number, wire, span in _fields(data, *image):
        if number == 1 and wire == _LENGTH:
            values = _bytes_values(data, *span)
            if len(values) != 1:
                raise RecordError(f"a frame with {len(values)} images")
            frames.append((values[0][0], values[0][1] - values[0][0]))
    if not frames:
        raise RecordError("no frames")
    media_id = bytes(data[media[0][0] : media[0][1]]) if media else b""
    return Located(frames, labels, media_id)
