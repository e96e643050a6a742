"""TensorFlow 1 checkpoints (the V2 "tensor bundle" that tf.compat.v1.train.Saver writes), read and
written natively so that converting them needs no TensorFlow.

A checkpoint PREFIX is two kinds of file:
- PREFIX.index, an SSTable (LevelDB table format) mapping "" to a BundleHeaderProto and every tensor
  name to a BundleEntryProto (dtype, shape, data shard, offset, size, masked crc32c);
- PREFIX.data-0000S-of-0000N, the raw little-endian C-order bytes of the tensors.
The protobuf messages are tiny, so they are encoded and decoded by hand here.
"""

from __future__ import annotations

import codecs
import math
import os
import re
import struct
from pathlib import Path
from typing import BinaryIO, Iterator

import crc32c
import numpy as np

from modelport.converters.base import BFLOAT16, Reader, TensorInfo, Writer, map_array
from modelport.errors import ModelportError

# TensorFlow's DataType enum values for the dtypes modelport handles.
_TF_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.float32),
    2: np.dtype(np.float64),
    3: np.dtype(np.int32),
    4: np.dtype(np.uint8),
    5: np.dtype(np.int16),
    6: np.dtype(np.int8),
    9: np.dtype(np.int64),
    10: np.dtype(np.bool_),
    14: BFLOAT16,
    19: np.dtype(np.float16),
}
_TF_DTYPE_CODES = {dtype: code for code, dtype in _TF_DTYPES.items()}
_DT_STRING = 7

_TABLE_MAGIC = struct.pack("<Q", 0xDB4775248B80FB57)
_FOOTER_SIZE = 48  # two block handles zero-padded to 40 bytes, then the magic
_BLOCK_TRAILER_SIZE = 5  # compression type byte + masked crc32c
_BLOCK_SIZE = 4096  # LevelDB's default; TensorFlow itself uses 256 KiB
_RESTART_INTERVAL = 16
_WRITE_CHUNK = 16 << 20
_MAX_VARINT_BYTES = 10


class _BadIndex(Exception):
    """Something wrong inside an index file; the reader turns it into a ModelportError naming the file."""


def _masked_crc(data) -> int:
    """TensorFlow stores crc32c values rotated and offset ("masked") so that crcs of crcs stay useful."""
    return _mask(crc32c.crc32c(data))


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# --- protobuf wire format -------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode the varint at `pos`; returns (value, position after it)."""
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(buf):
            raise _BadIndex("truncated varint")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            return value, pos + i + 1
    raise _BadIndex("varint longer than 10 bytes")


def _field_varint(number: int, value: int) -> bytes:
    """A varint field, omitted when zero as proto3 does."""
    return _varint(number << 3) + _varint(value) if value else b""


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _field_fixed32(number: int, value: int) -> bytes:
    return _varint(number << 3 | 5) + struct.pack("<I", value)


def _parse_message(buf: bytes) -> dict[int, list[int | bytes]]:
    """Field number -> values in order (ints for varint and fixed fields, bytes for length-delimited)."""
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, pos = _read_varint(buf, pos)
        elif wire_type in (1, 5):
            width = 8 if wire_type == 1 else 4
            if pos + width > len(buf):
                raise _BadIndex("truncated protobuf field")
            value = int.from_bytes(buf[pos:pos + width], "little")
            pos += width
        elif wire_type == 2:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise _BadIndex("truncated protobuf field")
            value, pos = buf[pos:pos + length], pos + length
        else:
            raise _BadIndex(f"unsupported protobuf wire type {wire_type}")
        fields.setdefault(number, []).append(value)
    return fields


def _field(fields: dict[int, list[int | bytes]], number: int, kind: type, default):
    """The last value of a singular field (protobuf's rule), checked to have the expected wire kind."""
    values = fields.get(number)
    if not values:
        return default
    if not isinstance(values[-1], kind):
        raise _BadIndex(f"protobuf field {number} has the wrong wire type")
    return values[-1]


# --- slice keys (TensorFlow's OrderedCode) --------------------------------------------------------


def _code_number(value: int) -> bytes:
    """OrderedCode::WriteNumIncreasing: a length byte, then the value's big-endian bytes."""
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return bytes([len(raw)]) + raw


def _code_string(text: bytes) -> bytes:
    """OrderedCode::WriteString: 0x00 and 0xff escaped, then the terminator 0x00 0x01."""
    return re.sub(rb"[\x00\xff]", lambda byte: byte.group() + (b"\xff" if byte.group() == b"\x00" else b"\x00"),
                  text) + b"\x00\x01"


def _code_signed(value: int) -> bytes:
    """OrderedCode::WriteSignedNumIncreasing: n bytes of two's complement whose top n bits are flipped (n ones on
    a positive value), n the fewest that leave a sign bit and the value's magnitude 7n - 1 bits."""
    magnitude = ~value if value < 0 else value
    length = 1
    while magnitude >= 1 << (7 * length - 1):
        length += 1
    header = ((1 << length) - 1) << (7 * length)
    return ((value & ((1 << 8 * length) - 1)) ^ header).to_bytes(length, "big")


def _describe_slice(where: tuple[slice, ...] | list[slice]) -> str:
    return "[" + ", ".join(f"{s.start}:{s.stop}" for s in where) + "]"


def _slice_key(name: bytes, extents: list[tuple[int, int]]) -> bytes:
    """The index key a slice of a partitioned variable is saved under (checkpoint::EncodeTensorNameSlice);
    a length of -1 is a whole dimension."""
    key = _code_number(0) + _code_string(name) + _code_number(len(extents))
    return key + b"".join(_code_signed(start) + _code_signed(length) for start, length in extents)


# --- SSTable --------------------------------------------------------------------------------------


def _read_handle(buf: bytes, pos: int) -> tuple[tuple[int, int], int]:
    """A BlockHandle (offset, size) at `pos`; returns it and the position after it."""
    offset, pos = _read_varint(buf, pos)
    size, pos = _read_varint(buf, pos)
    return (offset, size), pos


def _encode_handle(handle: tuple[int, int]) -> bytes:
    return _varint(handle[0]) + _varint(handle[1])


def _read_block(table: bytes, handle: tuple[int, int]) -> bytes:
    """A block's contents, after checking that it lies before the footer and its crc matches."""
    offset, size = handle
    end = offset + size
    if end + _BLOCK_TRAILER_SIZE > len(table) - _FOOTER_SIZE:
        raise _BadIndex("block points past the end of the file (file truncated?)")
    (stored_crc,) = struct.unpack_from("<I", table, end + 1)
    if _masked_crc(table[offset:end + 1]) != stored_crc:
        raise _BadIndex(f"checksum mismatch in block at byte {offset} (file corrupt)")
    if table[end] != 0:
        raise _BadIndex("compressed blocks are not supported")
    return table[offset:end]


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """The (key, value) pairs of a block, undoing the prefix compression of keys."""
    if len(block) < 4:
        raise _BadIndex("block too short")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    entries_end = len(block) - 4 - 4 * num_restarts
    if entries_end < 0:
        raise _BadIndex("block restart array out of range")
    entries, key, pos = [], b"", 0
    while pos < entries_end:
        shared, pos = _read_varint(block, pos)
        non_shared, pos = _read_varint(block, pos)
        value_len, pos = _read_varint(block, pos)
        if shared > len(key) or pos + non_shared + value_len > entries_end:
            raise _BadIndex("block entry out of range")
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        entries.append((key, block[pos:pos + value_len]))
        pos += value_len
    return entries


def _read_table(table: bytes) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of an SSTable, in order, walking the index block to the data blocks."""
    if len(table) < _FOOTER_SIZE or table[-8:] != _TABLE_MAGIC:
        raise _BadIndex("not a TF1 checkpoint index (no SSTable magic number at the end)")
    footer = table[-_FOOTER_SIZE:-8]
    _metaindex, pos = _read_handle(footer, 0)
    index_handle, _ = _read_handle(footer, pos)
    entries = []
    for _last_key, handle_bytes in _block_entries(_read_block(table, index_handle)):
        entries += _block_entries(_read_block(table, _read_handle(handle_bytes, 0)[0]))
    for (key, _), (next_key, _) in zip(entries, entries[1:]):
        if next_key <= key:
            raise _BadIndex("keys out of order")
    return entries


def _build_block(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A block with prefix-compressed keys and a full key every _RESTART_INTERVAL entries."""
    out, restarts, previous = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        if i % _RESTART_INTERVAL == 0:
            restarts.append(len(out))
            shared = 0
        else:
            shared = len(os.path.commonprefix([previous, key]))
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        previous = key
    restarts = restarts or [0]
    return bytes(out) + struct.pack(f"<{len(restarts) + 1}I", *restarts, len(restarts))


def _append_block(table: bytearray, contents: bytes) -> tuple[int, int]:
    """Append a block and its trailer (uncompressed); returns its handle."""
    handle = (len(table), len(contents))
    table += contents + b"\0" + struct.pack("<I", _masked_crc(contents + b"\0"))
    return handle


def _build_table(entries: list[tuple[bytes, bytes]]) -> bytes:
    """An SSTable of sorted entries: ~_BLOCK_SIZE data blocks, an empty metaindex, the index, the footer."""
    groups, group, group_size = [], [], 0
    for key, value in entries:
        group.append((key, value))
        group_size += len(key) + len(value) + 8
        if group_size >= _BLOCK_SIZE:
            groups.append(group)
            group, group_size = [], 0
    if group:
        groups.append(group)
    table = bytearray()
    # A group's last key is a valid index key: >= every key in it and < every key after it.
    index = [(group[-1][0], _encode_handle(_append_block(table, _build_block(group)))) for group in groups]
    metaindex_handle = _append_block(table, _build_block([]))
    index_handle = _append_block(table, _build_block(index))
    footer = (_encode_handle(metaindex_handle) + _encode_handle(index_handle)).ljust(40, b"\0")
    return bytes(table + footer + _TABLE_MAGIC)


# --- locating a checkpoint ------------------------------------------------------------------------

_CHECKPOINT_FILE_SUFFIX = re.compile(r"\.(index|meta|data-\d{5}-of-\d{5})$")
_STATE_PATH = re.compile(r'^\s*model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"', re.MULTILINE)


def _has_index(prefix: Path) -> bool:
    return Path(f"{prefix}.index").is_file()


def _prefix_from_state_file(folder: Path) -> Path | None:
    """The checkpoint the `checkpoint` state file names, if it exists here. Saver writes absolute paths
    of the training machine, so a missing path is also looked for by its name inside `folder`."""
    state = folder / "checkpoint"
    if not state.is_file():
        return None
    match = _STATE_PATH.search(state.read_text(errors="replace"))
    if not match:
        return None
    named = Path(codecs.escape_decode(match.group(1).encode())[0].decode(errors="replace"))
    for candidate in (folder / named, folder / named.name):
        if _has_index(candidate):
            return candidate
    return None


def find_tf1_prefix(path: str | Path) -> Path | None:
    """The checkpoint prefix `path` designates (a prefix, one of its files, or a folder holding one),
    or None when there is no TF1 checkpoint there."""
    path = Path(path)
    if path.is_dir():
        prefix = _prefix_from_state_file(path)
        if prefix is not None:
            return prefix
        indexes = sorted(path.glob("*.index"))
        if len(indexes) > 1:
            names = ", ".join(index.name for index in indexes)
            raise ModelportError(
                f"{path}: several TF1 checkpoints ({names}) and no 'checkpoint' file choosing one; "
                f"pass a prefix such as {indexes[-1].with_suffix('')}"
            )
        return indexes[0].with_suffix("") if indexes else None
    prefix = Path(_CHECKPOINT_FILE_SUFFIX.sub("", str(path)))
    return prefix if _has_index(prefix) else None


# --- reader ---------------------------------------------------------------------------------------


class TF1Reader(Reader):
    """Reads a TF1 checkpoint: the whole index on open, each tensor from a memory-mapped data file."""

    format = "tf1"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        prefix = find_tf1_prefix(self.path)
        if prefix is None:
            raise ModelportError(f"{self.path}: no TF1 checkpoint here (expected PREFIX.index and PREFIX.data-* files)")
        self.prefix = prefix
        self.index_path = Path(f"{prefix}.index")
        self.infos: dict[str, TensorInfo] = {}
        self.extras: list[str] = []
        self._locations: dict[str, tuple[Path, int, int, int]] = {}  # name -> data file, offset, size, crc
        # A partitioned variable's slices: name -> (where in the variable, the slice's location) per slice
        self._slices: dict[str, list[tuple[tuple[slice, ...], tuple[Path, int, int, int]]]] = {}
        self._handles: dict[Path, BinaryIO] = {}
        try:
            table = self.index_path.read_bytes()
        except OSError as exc:
            raise ModelportError(f"{self.index_path}: cannot read ({exc.strerror})") from None
        try:
            self._parse_index(_read_table(table))
        except _BadIndex as exc:
            raise ModelportError(f"{self.index_path}: {exc}") from None
        self._open_data_files()

    def _parse_index(self, records: list[tuple[bytes, bytes]]) -> None:
        if not records or records[0][0] != b"":
            raise _BadIndex("no bundle header entry (not a TF1 checkpoint index)")
        header = _parse_message(records[0][1])
        num_shards = _field(header, 1, int, 0)
        if not 1 <= num_shards < 2**31:
            raise _BadIndex(f"bad number of data shards {num_shards}")
        if _field(header, 2, int, 0) != 0:
            raise _BadIndex("big-endian checkpoints are not supported")
        if _field(_parse_message(_field(header, 3, bytes, b"")), 2, int, 0) > 1:
            raise _BadIndex("checkpoint needs a newer reader (bundle min_consumer > 1)")
        slice_entries = {key: value for key, value in records[1:] if key.startswith(b"\0")}  # read by variable
        for key, value in records[1:]:
            if key.startswith(b"\0"):
                continue
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                raise _BadIndex(f"tensor name {key!r} is not UTF-8") from None
            self._parse_entry(name, _parse_message(value), num_shards, slice_entries)

    def _parse_entry(self, name: str, entry: dict, num_shards: int, slice_entries: dict[bytes, bytes]) -> None:
        code = _field(entry, 1, int, 0)
        if code == _DT_STRING:  # object-graph metadata of tf.train.Checkpoint/Keras, never a weight
            self.extras.append(name)
            return
        if code not in _TF_DTYPES:
            raise _BadIndex(f"tensor {name} has unsupported TensorFlow dtype code {code}")
        info = TensorInfo(self._parse_shape(name, entry), _TF_DTYPES[code])
        self.infos[name] = info
        if entry.get(7):
            self._slices[name] = [self._parse_slice(name, info, slice_proto, num_shards, slice_entries)
                                  for slice_proto in entry[7]]
            self._check_slices_cover(name, info)
        else:
            self._locations[name] = self._location(name, entry, info, num_shards)

    def _parse_shape(self, name: str, entry: dict) -> tuple[int, ...]:
        shape_fields = _parse_message(_field(entry, 2, bytes, b""))
        if _field(shape_fields, 3, int, 0):
            raise _BadIndex(f"tensor {name} has an unknown rank")
        dims = shape_fields.get(2, [])
        if not all(isinstance(dim, bytes) for dim in dims):
            raise _BadIndex(f"tensor {name} has a malformed shape")
        shape = tuple(_field(_parse_message(dim), 1, int, 0) for dim in dims)
        if any(dim >= 2**63 for dim in shape):
            raise _BadIndex(f"tensor {name} has a negative or unknown dimension")
        return shape

    def _location(self, name: str, entry: dict, info: TensorInfo, num_shards: int) -> tuple[Path, int, int, int]:
        """(data file, offset, size, crc) of a tensor's bytes, checked against its shape and dtype."""
        shard, offset, size = (_field(entry, number, int, 0) for number in (3, 4, 5))
        if size != info.nbytes:
            raise _BadIndex(f"tensor {name} has {size} bytes, which does not match its shape {list(info.shape)} "
                            f"and dtype {info.dtype}")
        if shard >= num_shards:
            raise _BadIndex(f"tensor {name} is in data shard {shard} of only {num_shards}")
        return Path(f"{self.prefix}.data-{shard:05d}-of-{num_shards:05d}"), offset, size, _field(entry, 6, int, 0)

    def _parse_slice(self, name: str, info: TensorInfo, slice_proto: bytes, num_shards: int,
                     slice_entries: dict[bytes, bytes]) -> tuple[tuple[slice, ...], tuple[Path, int, int, int]]:
        """One saved slice of a partitioned variable (tf.compat.v1's partitioners, Saver's slice specs): where it
        sits in the variable, and the location of its bytes, stored as a tensor of its own under a coded key."""
        if not isinstance(slice_proto, bytes):
            raise _BadIndex(f"tensor {name} has a malformed slice")
        extents = []
        for extent in _parse_message(slice_proto).get(1, []):
            if not isinstance(extent, bytes):
                raise _BadIndex(f"tensor {name} has a malformed slice")
            fields = _parse_message(extent)
            extents.append((_field(fields, 1, int, 0), _field(fields, 2, int, -1)))
        if len(extents) != len(info.shape):
            raise _BadIndex(f"tensor {name} has a slice of {len(extents)} dimensions for its {len(info.shape)}")
        where = []
        for (start, length), dim in zip(extents, info.shape):
            stop = dim if length == -1 else start + length
            if not 0 <= start < stop <= dim and not (start == 0 and stop == dim):
                raise _BadIndex(f"tensor {name} has a slice [{start}, {stop}) outside its dimension of {dim}")
            where.append(slice(start, stop))
        key = _slice_key(name.encode("utf-8"), extents)
        if key not in slice_entries:
            raise _BadIndex(f"tensor {name}: the slice {_describe_slice(where)} listed in its entry is missing")
        entry = _parse_message(slice_entries[key])
        slice_info = TensorInfo(tuple(s.stop - s.start for s in where), info.dtype)
        stored = TensorInfo(self._parse_shape(name, entry), _TF_DTYPES.get(_field(entry, 1, int, 0)))
        if stored != slice_info:
            raise _BadIndex(f"tensor {name}: the slice {_describe_slice(where)} does not have the variable's dtype "
                            "or the slice's shape")
        return tuple(where), self._location(f"{name}{_describe_slice(where)}", entry, slice_info, num_shards)

    def _check_slices_cover(self, name: str, info: TensorInfo) -> None:
        """The slices must tile the variable: no overlap (boxes pairwise disjoint) and nothing left out."""
        boxes = [where for where, _ in self._slices[name]]
        for i, first in enumerate(boxes):
            for second in boxes[i + 1:]:
                if all(a.start < b.stop and b.start < a.stop for a, b in zip(first, second)):
                    raise _BadIndex(f"tensor {name}: slices {_describe_slice(first)} and {_describe_slice(second)} "
                                    "overlap")
        covered = sum(math.prod(s.stop - s.start for s in box) for box in boxes)
        if covered != info.numel:
            raise _BadIndex(f"tensor {name}: its slices hold {covered} of its {info.numel} values")

    def _open_data_files(self) -> None:
        """Open every data file up front (readers serve several threads), failing on open, not halfway through
        a conversion, when one is missing or truncated."""
        needed: dict[Path, tuple[int, str]] = {}  # data file -> end of its last tensor, that tensor
        for name, (data_path, offset, size, _crc) in self._all_locations():
            if offset + size > needed.get(data_path, (-1, ""))[0]:
                needed[data_path] = (offset + size, name)
        for data_path, (end, name) in needed.items():
            try:
                self._handles[data_path] = open(data_path, "rb")
            except OSError:
                self.close()
                raise ModelportError(f"{data_path}: data file of checkpoint {self.prefix} is missing") from None
            length = os.fstat(self._handles[data_path].fileno()).st_size
            if length < end:
                self.close()
                raise ModelportError(
                    f"{data_path}: file is truncated ({length} bytes, tensor {name} ends at byte {end})"
                )

    def _all_locations(self) -> Iterator[tuple[str, tuple[Path, int, int, int]]]:
        """(name, location) of every stored tensor, a partitioned variable's slices included."""
        yield from self._locations.items()
        for name, slices in self._slices.items():
            yield from ((f"{name}{_describe_slice(where)}", location) for where, location in slices)

    def read(self, name: str) -> np.ndarray:
        """The tensor as a read-only array over the memory-mapped data file, after checking its crc; a
        partitioned variable is assembled from its slices (a copy)."""
        if name not in self.infos:
            raise ModelportError(f"{self.index_path}: no tensor named {name}")
        info = self.infos[name]
        if name not in self._slices:
            return self._read_location(name, info, self._locations[name])
        whole = np.empty(info.shape, info.dtype)
        for where, location in self._slices[name]:
            part = TensorInfo(tuple(s.stop - s.start for s in where), info.dtype)
            whole[where] = self._read_location(f"{name}{_describe_slice(where)}", part, location)
        whole.flags.writeable = False
        return whole

    def _read_location(self, name: str, info: TensorInfo, location: tuple[Path, int, int, int]) -> np.ndarray:
        data_path, offset, _size, crc = location
        array = map_array(self._handles[data_path].fileno(), offset, info)
        if _masked_crc(array) != crc:
            raise ModelportError(f"{data_path}: checksum mismatch for tensor {name} (file corrupt)")
        return array

    def files(self) -> list[Path]:
        return [self.index_path, *sorted({location[0] for _, location in self._all_locations()})]

    def verified_files(self) -> dict[Path, str]:
        return {path: f"crc32c of each tensor, in {self.index_path.name}" for path in self._handles}

    def close(self) -> None:
        """Close the data files; arrays already handed out keep their own mappings."""
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()


# --- writer ---------------------------------------------------------------------------------------


class TF1Writer(Writer):
    """Writes a single-shard TF1 checkpoint: tensor bytes stream to the data file as they come, and the
    small index is written on close."""

    format = "tf1"

    def __init__(self, out_dir, specs: dict[str, TensorInfo], max_shard_size: int | None = None,
                 prefix: str = "model.ckpt"):
        super().__init__(out_dir, specs, max_shard_size)
        for name, info in specs.items():
            if info.dtype not in _TF_DTYPE_CODES:
                raise ModelportError(f"tensor {name}: dtype {info.dtype} cannot be saved in a TF1 checkpoint")
            if not name:
                raise ModelportError("a TF1 checkpoint cannot hold a tensor with an empty name")
        self.prefix = prefix
        self.data_name = f"{prefix}.data-00000-of-00001"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._data = open(self.out_dir / self.data_name, "wb")
        self._offset = 0
        self._entries: dict[bytes, bytes] = {}  # name -> BundleEntryProto

    def write(self, name: str, array: np.ndarray) -> None:
        self.check(name, array)
        raw = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).reshape(-1).view(np.uint8)
        crc = 0
        for start in range(0, raw.size, _WRITE_CHUNK):
            chunk = raw[start:start + _WRITE_CHUNK]
            crc = crc32c.crc32c(chunk, crc)
            self._data.write(chunk)
        shape = b"".join(_field_bytes(2, _field_varint(1, dim)) for dim in array.shape)
        self._entries[name.encode("utf-8")] = (
            _field_varint(1, _TF_DTYPE_CODES[array.dtype])
            + _field_bytes(2, shape)
            + _field_varint(4, self._offset)
            + _field_varint(5, raw.size)
            + _field_fixed32(6, _mask(crc))
        )
        self._offset += raw.size

    def close(self) -> list[str]:
        self._data.close()
        missing = [name for name in self.specs if name.encode("utf-8") not in self._entries]
        if missing:
            raise ModelportError(f"internal: tensors announced but never written to the tf1 writer: {', '.join(missing)}")
        header = _field_varint(1, 1) + _field_bytes(3, _field_varint(1, 1))  # one shard, little endian, producer 1
        index_name = f"{self.prefix}.index"
        (self.out_dir / index_name).write_bytes(_build_table([(b"", header), *sorted(self._entries.items())]))
        (self.out_dir / "checkpoint").write_text(
            f'model_checkpoint_path: "{self.prefix}"\nall_model_checkpoint_paths: "{self.prefix}"\n'
        )
        return [index_name, self.data_name, "checkpoint"]
