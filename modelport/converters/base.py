"""What every format's reader and writer share: tensor metadata, dtype names, and the two interfaces.

Tensors travel as numpy arrays (bfloat16 via ml_dtypes), one at a time: readers hand out lazily read
arrays (memory-mapped where the format allows) and writers take them in the order they were announced.
"""

from __future__ import annotations

import json
import mmap
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

from modelport.errors import ModelportError

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)

# Canonical dtype names (the ones --dtype and config.json use) <-> numpy dtypes.
DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": BFLOAT16,
    "float64": np.dtype(np.float64),
    "int64": np.dtype(np.int64),
    "int32": np.dtype(np.int32),
    "int16": np.dtype(np.int16),
    "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8),
    "bool": np.dtype(np.bool_),
}


def is_floating(dtype: np.dtype) -> bool:
    return dtype.kind == "f" or dtype == BFLOAT16


def dtype_name(dtype: np.dtype) -> str:
    for name, known in DTYPES.items():
        if known == dtype:
            return name
    raise ModelportError(f"unsupported dtype {dtype}")


def raw_bytes(array: np.ndarray) -> memoryview:
    """The C-order bytes of an array without copying when it is already contiguous (any dtype, bf16 too)."""
    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


def map_array(fileno: int, offset: int, info: TensorInfo) -> np.ndarray:
    """A read-only array over one tensor's bytes in an open file, through a mapping of just those bytes:
    it is unmapped when the array is dropped, so resident memory stays near one tensor however large the
    file (a whole-file mapping would keep every page read so far resident)."""
    if info.nbytes == 0:
        empty = np.zeros(info.shape, info.dtype)
        empty.flags.writeable = False
        return empty
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    window = mmap.mmap(fileno, offset + info.nbytes - start, access=mmap.ACCESS_READ, offset=start)
    return np.frombuffer(window, info.dtype, info.numel, offset - start).reshape(info.shape)


class Reader:
    """A checkpoint opened for reading. Subclasses fill `infos` on open and implement `read`."""

    format: str = ""
    path: Path
    infos: dict[str, TensorInfo]
    extras: list[str]  # entries that are not tensors (string metadata, pickled scalars): reported, skipped

    def names(self) -> list[str]:
        return list(self.infos)

    def read(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def release(self, names: list[str]) -> None:
        """These tensors have been written: a reader that keeps their memory around may let it go."""

    def files(self) -> list[Path]:
        """The files holding the tensors (for checksums in conversion records)."""
        raise NotImplementedError

    def verified_files(self) -> dict[Path, str]:
        """Files whose every tensor `read` checks against checksums kept elsewhere in the checkpoint (file ->
        how): a conversion record identifies them by those checksums rather than by a sha256 of its own."""
        return {}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Writer:
    """A checkpoint being written into `out_dir`.

    Built with every tensor's name and TensorInfo in writing order (formats with a header need them up
    front); `write` is then called once per tensor in that order; `close` finishes the files and returns
    their names.
    """

    format: str = ""

    def __init__(self, out_dir: Path, specs: dict[str, TensorInfo], max_shard_size: int | None = None):
        self.out_dir = Path(out_dir)
        self.specs = specs
        self.max_shard_size = max_shard_size

    def write(self, name: str, array: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> list[str]:
        raise NotImplementedError

    def check(self, name: str, array: np.ndarray) -> None:
        """Refuse a tensor whose shape or dtype differs from what was announced."""
        spec = self.specs.get(name)
        if spec is None:
            raise ModelportError(f"internal: tensor {name} was not announced to the {self.format} writer")
        if tuple(array.shape) != spec.shape or array.dtype != spec.dtype:
            raise ModelportError(
                f"internal: tensor {name} is {array.dtype}{list(array.shape)}, "
                f"announced as {spec.dtype}{list(spec.shape)}"
            )


def shard_groups(specs: dict[str, TensorInfo], max_shard_size: int | None) -> list[list[str]]:
    """Split names, in order, into groups whose bytes stay under max_shard_size (a lone big tensor
    gets a shard of its own)."""
    groups: list[list[str]] = [[]]
    size = 0
    for name, info in specs.items():
        if max_shard_size and groups[-1] and size + info.nbytes > max_shard_size:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += info.nbytes
    return groups if groups[0] else []


def read_shard_index(index: Path) -> dict[str, Path]:
    """A sharded checkpoint's index (`weight_map`: tensor name -> shard file) as tensor name -> shard path,
    refusing shard names that leave the index's folder (checked by name, not by resolving: the Hugging Face
    cache links shards to blobs elsewhere) and shards that are missing."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelportError(f"{index}: not a valid index (expected JSON with a weight_map of tensor names to "
                             "shard files)") from None
    for shard in set(weight_map.values()):
        if Path(shard).name != shard or shard == ".." or "\\" in shard:
            raise ModelportError(f"{index}: shard {shard} lies outside the checkpoint folder")
        if not (index.parent / shard).is_file():
            raise ModelportError(f"{index}: shard {shard} is missing")
    return {name: index.parent / shard for name, shard in weight_map.items()}


def parse_size(text: str) -> int:
    """'5GB', '500MB', '10KiB', '1000' -> bytes (decimal units as transformers uses them, binary with 'i')."""
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
    raw = text.strip().upper().replace(" ", "")
    number = raw.rstrip("KMGTIB")
    unit = raw[len(number):]
    try:
        value = float(number)
    except ValueError:
        value = -1
    if unit not in units or value <= 0:
        raise ModelportError(f"cannot read size {text!r}: use a number with B, KB, MB, GB (or KiB, MiB, GiB)")
    return int(value * units[unit])
