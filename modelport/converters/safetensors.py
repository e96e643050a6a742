"""safetensors, read and written without the safetensors package: a memory-mapped reader that checks the
header before trusting it, and a writer that computes the header from shapes and then streams tensors."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from modelport.converters.base import BFLOAT16, Reader, TensorInfo, Writer, map_array, raw_bytes, read_shard_index, shard_groups
from modelport.errors import ModelportError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
MAX_HEADER_BYTES = 100 * 1000 * 1000  # the reference implementation's cap

DTYPE_CODES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": BFLOAT16,
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}


def dtype_code(dtype: np.dtype) -> str:
    for code, known in DTYPE_CODES.items():
        if known == dtype:
            return code
    raise ModelportError(f"safetensors cannot store dtype {dtype}")


def find_safetensors_files(path: Path) -> list[Path] | None:
    path = Path(path)
    if path.is_file():
        if path.name.endswith(".safetensors.index.json"):
            return sorted(set(read_shard_index(path).values()))
        return [path] if path.suffix == ".safetensors" else None
    if not path.is_dir():
        return None
    if (path / INDEX_NAME).is_file():
        return find_safetensors_files(path / INDEX_NAME)
    if (path / SINGLE_NAME).is_file():
        return [path / SINGLE_NAME]
    found = sorted(path.glob("*.safetensors"))
    return found or None


def parse_header(path: Path, handle: BinaryIO) -> tuple[dict[str, tuple[TensorInfo, int]], dict[str, str]]:
    """Validate a safetensors header: name -> (info, absolute byte offset), and the metadata."""
    size = os.fstat(handle.fileno()).st_size
    if size < 8:
        raise ModelportError(f"{path}: too short to be a safetensors file")
    (header_len,) = struct.unpack("<Q", handle.read(8))
    if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
        raise ModelportError(f"{path}: header length {header_len} runs past the file ({size} bytes): truncated or not safetensors")
    try:
        header = json.loads(handle.read(header_len).decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        raise ModelportError(f"{path}: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data_start = 8 + header_len
    entries: dict[str, tuple[TensorInfo, int]] = {}
    spans = []
    for name, entry in header.items():
        try:
            dtype = DTYPE_CODES[entry["dtype"]]
            shape = tuple(entry["shape"])
            begin, end = entry["data_offsets"]
            if not all(isinstance(d, int) and d >= 0 for d in (*shape, begin, end)):
                raise ValueError
        except KeyError as missing:
            raise ModelportError(f"{path}: tensor {name} has an unknown dtype or lacks {missing}")
        except (TypeError, ValueError):
            raise ModelportError(f"{path}: tensor {name} has a malformed entry {entry!r}"[:300])
        info = TensorInfo(shape, dtype)
        if end - begin != info.nbytes:
            raise ModelportError(f"{path}: tensor {name} spans {end - begin} bytes, its shape needs {info.nbytes}")
        spans.append((begin, end, name))
        entries[name] = (info, data_start + begin)
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            problem = "overlaps the previous tensor" if begin < position else "leaves a gap before it"
            raise ModelportError(f"{path}: tensor {name} {problem} (offset {begin}, expected {position})")
        position = end
    if data_start + position != size:
        raise ModelportError(f"{path}: tensors end at byte {data_start + position} but the file has {size}: truncated or padded")
    return entries, metadata


class SafetensorsReader(Reader):
    format = "safetensors"

    def __init__(self, path):
        self.path = Path(path)
        files = find_safetensors_files(self.path)
        if not files:
            raise ModelportError(f"{self.path}: no safetensors file there")
        self._files = files
        self.extras = []
        self._handles: list[BinaryIO] = []
        self._where: dict[str, tuple[BinaryIO, int]] = {}
        self.infos = {}
        self.metadata: dict[str, str] = {}
        for file in files:
            handle = open(file, "rb")
            self._handles.append(handle)
            entries, metadata = parse_header(file, handle)
            self.metadata.update(metadata)
            for name, (info, offset) in entries.items():
                if name in self.infos:
                    raise ModelportError(f"{file}: tensor {name} appears in more than one shard")
                self.infos[name] = info
                self._where[name] = (handle, offset)

    def read(self, name: str) -> np.ndarray:
        handle, offset = self._where[name]
        return map_array(handle.fileno(), offset, self.infos[name])

    def files(self) -> list[Path]:
        return list(self._files)

    def close(self) -> None:
        for handle in self._handles:  # arrays handed out keep their own mappings
            handle.close()
        self._handles.clear()


class SafetensorsWriter(Writer):
    format = "safetensors"

    def __init__(self, out_dir, specs, max_shard_size=None, metadata: dict[str, str] | None = None):
        super().__init__(out_dir, specs, max_shard_size)
        self.metadata = {"format": "pt", **(metadata or {})}
        groups = shard_groups(specs, max_shard_size)
        count = len(groups)
        self.file_names = [SINGLE_NAME] if count <= 1 else [
            f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
        self._pending = [(file, group) for file, group in zip(self.file_names, groups or [[]])]
        self._handle = None
        self._remaining: list[str] = []
        self.weight_map: dict[str, str] = {}

    def _open_next(self) -> None:
        file, group = self._pending.pop(0)
        header: dict[str, object] = {"__metadata__": self.metadata}
        offset = 0
        for name in group:
            info = self.specs[name]
            header[name] = {"dtype": dtype_code(info.dtype), "shape": list(info.shape),
                            "data_offsets": [offset, offset + info.nbytes]}
            offset += info.nbytes
            self.weight_map[name] = file
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)
        self._handle = open(self.out_dir / file, "wb")
        self._handle.write(struct.pack("<Q", len(encoded)) + encoded)
        self._remaining = list(group)

    def write(self, name: str, array: np.ndarray) -> None:
        self.check(name, array)
        while not self._remaining:
            self._finish_file()
            self._open_next()
        if self._remaining[0] != name:
            raise ModelportError(f"internal: {name} written out of order (expected {self._remaining[0]})")
        self._remaining.pop(0)
        self._handle.write(raw_bytes(array))  # little-endian hosts only, as torch

    def _finish_file(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def close(self) -> list[str]:
        while self._pending or self._remaining:
            if self._remaining:
                raise ModelportError(f"internal: tensors never written: {', '.join(self._remaining[:5])}")
            self._finish_file()
            self._open_next()
        self._finish_file()
        files = list(self.file_names)
        if len(files) > 1:
            total = sum(info.nbytes for info in self.specs.values())
            index = {"metadata": {"total_size": total}, "weight_map": self.weight_map}
            (self.out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
            files.append(INDEX_NAME)
        return files
