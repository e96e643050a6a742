"""PyTorch pickle checkpoints: .bin/.pt/.pth/.ckpt files, optionally sharded by pytorch_model.bin.index.json.

Reading goes through torch.load(weights_only=True, mmap=True): a downloaded checkpoint must never run code,
and a 5 GB shard must not be copied into RAM. torch.load cannot map legacy (pre-zip) files, which older
releases are (Megatron's among them): those are read by the same weights-only unpickler, with every storage
mapped where it lies in the file. Writing streams each tensor straight into the zip layout that
torch.save produces, so the model is never gathered in memory; it needs no torch at all (its pickle names
torch's classes and functions as text), which spares a conversion to PyTorch the second torch takes to import.
"""

from __future__ import annotations

import ctypes
import functools
import io
import json
import mmap
import os
import pickle
import struct
import warnings
import zipfile
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelport.converters.base import BFLOAT16, DTYPES, Reader, TensorInfo, Writer, dtype_name, read_shard_index, shard_groups
from modelport.errors import ModelportError

SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
SINGLE_FILE = "pytorch_model.bin"
INDEX_FILE = "pytorch_model.bin.index.json"
INDEX_SUFFIX = ".index.json"
# Keys under which training frameworks (DeepSpeed, Lightning, ...) nest the state dict.
WRAPPER_KEYS = ("state_dict", "model", "module")
ZIP_MAGIC = b"PK\x03\x04"  # what torch itself checks to tell a zip checkpoint from a legacy pickle
LEGACY_MAGIC, LEGACY_PROTOCOL = 0x1950A86A20F9469CFC6C, 1001  # torch.serialization's, opening legacy files
ALIGNMENT = 64  # torch.save aligns every record's data to 64 bytes, which mmap loading relies on
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # a fixed timestamp keeps the output byte-reproducible
LOCAL_HEADER_SIZE = 30
EXTRA_FIELD_HEAD = 4  # id and length of the padding field
# Sizes field zipfile adds to a local header written with force_zip64, which data records always use so
# that the header size (hence the padding) does not depend on zipfile's own choice of zip64.
ZIP64_EXTRA_SIZE = 20
# The legacy storage class torch.save names for each dtype in data.pkl (and weights_only accepts).
STORAGE_TYPES = {
    "float32": "FloatStorage",
    "float16": "HalfStorage",
    "bfloat16": "BFloat16Storage",
    "float64": "DoubleStorage",
    "int64": "LongStorage",
    "int32": "IntStorage",
    "int16": "ShortStorage",
    "int8": "CharStorage",
    "uint8": "ByteStorage",
    "bool": "BoolStorage",
}


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ModelportError("reading or writing PyTorch checkpoints needs torch: pip install torch") from None
    return torch


def _first_line(text: str) -> str:
    """The first sentence of a (often multi-paragraph) torch message, to keep errors on one line."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line.split(". ")[0]


# ---------------------------------------------------------------------------------------------- finding


def find_pytorch_files(path) -> list[Path] | None:
    """The checkpoint files at `path` (a file, a folder, or a sharded index), or None if it holds none."""
    located = _locate(Path(path))
    return located[0] if located else None


def _locate(path: Path) -> tuple[list[Path], dict[str, Path]] | None:
    """Checkpoint files at `path` and, when sharded, the index's tensor name -> shard file."""
    if path.is_dir():
        if (path / INDEX_FILE).is_file():
            return _locate(path / INDEX_FILE)
        if (path / SINGLE_FILE).is_file():
            return [path / SINGLE_FILE], {}
        return None
    if not path.is_file():
        return None
    if path.name.endswith(INDEX_SUFFIX) and Path(path.name[: -len(INDEX_SUFFIX)]).suffix.lower() in SUFFIXES:
        weight_map = read_shard_index(path)
        return list(dict.fromkeys(weight_map.values())), weight_map
    if path.suffix.lower() in SUFFIXES:
        return [path], {}
    return None


# ---------------------------------------------------------------------------------------------- reading


def _is_zip(file: Path) -> bool:
    with open(file, "rb") as stream:
        return stream.read(len(ZIP_MAGIC)) == ZIP_MAGIC


_MADV_DONTNEED = 4


def _release_pages(tensor) -> None:
    """Drop a memory-mapped tensor's pages from the resident set. With mmap=True every page read so far would
    stay resident and peak memory would grow with the checkpoint. MADV_DONTNEED unmaps them from this process
    only: the file's pages stay in the page cache (MADV_PAGEOUT would evict them, so the next read of the
    file goes to disk), and a later touch maps them again from the unmodified file."""
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    page = mmap.PAGESIZE
    aligned = start - start % page
    if end > aligned:
        _libc().madvise(ctypes.c_void_p(aligned), ctypes.c_size_t(end - aligned), _MADV_DONTNEED)


@functools.lru_cache(maxsize=1)
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _load(torch, file: Path):
    """torch.load(weights_only=True, mmap=True), or its legacy-format counterpart: never runs code from the
    file, and leaves the tensors' bytes in it (memory-mapped)."""
    try:
        with warnings.catch_warnings():  # torch's warnings about odd files would break the one-line error
            warnings.simplefilter("ignore")
            if _is_zip(file):
                return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            return _load_legacy(torch, file)
    except ModelportError:
        raise
    except Exception as error:
        message = str(error)
        # torch.load's refusal wraps the unpickler's reason in a paragraph; the unpickler's own names a GLOBAL
        if isinstance(error, pickle.UnpicklingError) and (message.startswith("Weights only load failed")
                                                          or "GLOBAL" in message):
            # torch's reason follows its boilerplate paragraph, sometimes after a "Please file an issue" line.
            reasons = [line for line in message.splitlines()[1:] if line.strip()]
            reasons = [line for line in reasons if not line.startswith(("Please file an issue", "Check the"))]
            reason = _first_line(reasons[0] if reasons else message)
            raise ModelportError(f"{file}: refused to unpickle: it would execute code ({reason})") from None
        raise ModelportError(
            f"{file}: cannot load as a PyTorch checkpoint ({type(error).__name__}: {_first_line(message)})"
        ) from None


def _load_legacy(torch, file: Path):
    """A legacy torch.save file: pickles of the magic number, the protocol, system info, the object (whose
    storages are persistent ids) and the storage keys, then each storage as its element count (int64) and raw
    bytes. The object is unpickled twice by torch's weights-only unpickler: first over storages without data
    (meta), to learn each storage's dtype and so where the next one starts; then over the file's bytes, mapped."""
    from torch import _weights_only_unpickler as restricted

    with open(file, "rb") as stream:
        if restricted.load(stream) != LEGACY_MAGIC or restricted.load(stream) != LEGACY_PROTOCOL:
            raise ModelportError(f"{file}: not a PyTorch checkpoint (neither a zip file nor a legacy torch.save "
                                 "file)")
        restricted.load(stream)  # system info: byte order and type sizes of the saving machine
        start = stream.tell()
        storages: dict[str, tuple[object, int]] = {}  # key -> dtype, element count

        def describe(saved_id):
            _, storage_type, key, _location, numel, _view = saved_id
            storages[key] = storage_type.dtype, numel
            size = numel * torch._utils._element_size(storage_type.dtype)
            return torch.storage.TypedStorage(wrap_storage=torch.UntypedStorage(size, device="meta"),
                                              dtype=storage_type.dtype, _internal=True)

        _unpickle(restricted, stream, describe)
        keys = restricted.load(stream)
        position, length = stream.tell(), os.fstat(stream.fileno()).st_size
        where: dict[str, tuple[int, int]] = {}  # key -> (offset of its bytes, their count)
        for key in keys:
            stream.seek(position)
            header = stream.read(8)
            if len(header) < 8 or key not in storages or int.from_bytes(header, "little") != storages[key][1]:
                raise ModelportError(f"{file}: truncated or damaged legacy checkpoint (storage {key})")
            dtype, numel = storages[key]
            size = numel * torch._utils._element_size(dtype)
            where[key] = (position + 8, size)
            position += 8 + size
        if position > length:
            raise ModelportError(f"{file}: file is truncated ({length} bytes, its storages end at byte {position})")
        mapped = np.memmap(file, dtype=np.uint8, mode="r")

        def in_file(saved_id):
            _, storage_type, key, _location, _numel, view = saved_id
            offset, size = where[key]
            storage = torch.frombuffer(mapped, dtype=torch.uint8, count=size, offset=offset).untyped_storage() \
                if size else torch.UntypedStorage(0)
            if view is not None:  # a storage view (torch < 0.4): the slice of its root storage it names
                _, view_offset, view_numel = view
                element = torch._utils._element_size(storage_type.dtype)
                storage = storage[view_offset * element:(view_offset + view_numel) * element]
            return torch.storage.TypedStorage(wrap_storage=storage, dtype=storage_type.dtype, _internal=True)

        stream.seek(start)
        return _unpickle(restricted, stream, in_file)


def _unpickle(restricted, stream, persistent_load):
    unpickler = restricted.Unpickler(stream, encoding="utf-8")  # torch.load's default encoding
    unpickler.persistent_load = persistent_load
    return unpickler.load()


def _flatten(torch, tree: dict, prefix: str = "") -> tuple[dict, list[str]]:
    """Tensors of nested dicts under '.'-joined names, and the names of the entries that are not tensors."""
    tensors, extras = {}, []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            tensors[name] = value
        elif isinstance(value, dict):
            inner_tensors, inner_extras = _flatten(torch, value, f"{name}.")
            tensors.update(inner_tensors)
            extras += inner_extras
        else:
            extras.append(name)
    return tensors, extras


def _state_dict(torch, loaded, file: Path) -> tuple[dict, list[str]]:
    """The tensors of a loaded checkpoint, unwrapping {"module": state_dict, "iteration": 5} and the like,
    and the names of everything left aside."""
    if not isinstance(loaded, dict):
        raise ModelportError(f"{file}: holds a {type(loaded).__name__}, not a state dict")
    if not any(isinstance(value, torch.Tensor) for value in loaded.values()):
        for key in WRAPPER_KEYS:
            if isinstance(loaded.get(key), dict):
                tensors, extras = _flatten(torch, loaded[key])
                if tensors:
                    return tensors, [str(other) for other in loaded if other != key] + extras
    return _flatten(torch, loaded)


class PyTorchReader(Reader):
    """A PyTorch checkpoint, memory-mapped: every shard stays loaded, which costs address space, not RAM."""

    format = "pytorch"

    def __init__(self, path):
        self.path = Path(path)
        located = _locate(self.path)
        if located is None:
            raise ModelportError(
                f"{self.path}: no PyTorch checkpoint (a .bin/.pt/.pth/.ckpt file, {SINGLE_FILE} or {INDEX_FILE})"
            )
        self._files, weight_map = located
        torch = _import_torch()
        dtype_names = {getattr(torch, name): name for name in DTYPES}
        self._tensors = {}
        self.infos: dict[str, TensorInfo] = {}
        self.extras: list[str] = []
        self.scalars: dict[str, int | float | str] = {}  # top-level numbers and strings: `iteration`, `mp_world_size`
        for file in self._files:
            loaded = _load(torch, file)
            tensors, extras = _state_dict(torch, loaded, file)
            self.scalars.update({key: value for key, value in loaded.items()
                                 if isinstance(key, str) and isinstance(value, (int, float, str))})
            for name, tensor in tensors.items():
                if tensor.dtype not in dtype_names:
                    raise ModelportError(f"{file}: tensor {name} has unsupported dtype {tensor.dtype}")
                self.infos[name] = TensorInfo(tuple(tensor.shape), DTYPES[dtype_names[tensor.dtype]])
            self._tensors.update(tensors)
            self.extras += extras
        for name, shard in weight_map.items():
            if name not in self._tensors:
                raise ModelportError(f"{shard}: tensor {name}, listed in the index, is missing from this shard")

    def read(self, name: str) -> np.ndarray:
        """The tensor as a read-only numpy view of the mapped file (a copy only when it is not contiguous); a
        legacy file's mapping is read-only, where a write would crash rather than raise."""
        torch = _import_torch()
        tensor = self._tensors[name].detach().contiguous()
        if tensor.dtype == torch.bfloat16:
            array = tensor.view(torch.int16).numpy().view(BFLOAT16)  # numpy() refuses bfloat16
        else:
            array = tensor.numpy()
        array.flags.writeable = False
        return array

    def release(self, names: list[str]) -> None:
        for name in names:
            _release_pages(self._tensors[name])

    def files(self) -> list[Path]:
        return list(self._files)

    def close(self) -> None:
        self._tensors = {}


# ---------------------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class _TorchName:
    """One of torch's functions or classes, as data.pkl refers to it: by module and name (pickle's GLOBAL)."""

    module: str
    name: str


# One object per name, as pickle memoizes by identity: torch.save's data.pkl names each only once.
REBUILD_TENSOR = _TorchName("torch._utils", "_rebuild_tensor_v2")
STORAGE_NAMES = {dtype: _TorchName("torch", storage) for dtype, storage in STORAGE_TYPES.items()}


@dataclass(frozen=True)
class _StorageRef:
    """Stands for a data/<key> record in data.pkl; pickled by persistent id, as torch.save does."""

    storage_type: _TorchName
    key: str
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """Stands for a tensor in data.pkl; pickled as the torch._utils._rebuild_tensor_v2 call torch.save emits."""

    storage: _StorageRef
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class _StateDictPickler(pickle._Pickler):
    """Pickles placeholders exactly as torch.save pickles tensors, so torch.load(weights_only=True) accepts them.
    Python's own pickler, not the C one: only it lets a name be written without importing what it names."""

    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, stream):
        super().__init__(stream, protocol=2)  # torch.save's default protocol

    def save_torch_name(self, obj: _TorchName) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    def save_tensor(self, obj: _TensorRef) -> None:
        """As pickle saves a __reduce__ result: the function, its arguments, REDUCE."""
        self.save(REBUILD_TENSOR)
        self.save((obj.storage, 0, obj.shape, obj.stride, False, OrderedDict()))
        self.write(pickle.REDUCE)
        self.memoize(obj)

    dispatch[_TorchName] = save_torch_name
    dispatch[_TensorRef] = save_tensor

    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            return ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
        return None


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major strides in elements, as torch computes them (a 0-length dimension counts as 1)."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


@contextmanager
def _writing(path: Path):
    try:
        yield
    except OSError as error:
        raise ModelportError(f"{path}: cannot write ({error.strerror or error})") from None


class _ZipCheckpoint:
    """One output file in torch.save's zip layout, filled record by record.

    Records sit under a folder named after the file (as torch.save does): byteorder, then data/0, data/1, ...
    (one per tensor, data aligned to 64 bytes by padding the local header's extra field), and at the end
    data.pkl and version. torch's .format_version record is left out on purpose: it promises miniz's
    data descriptors, which torch may use to compute record offsets, and Python's zipfile does not write them.
    """

    def __init__(self, path: Path):
        self.path = path
        self.folder = path.stem
        self.tensors: OrderedDict[str, _TensorRef] = OrderedDict()
        self.stream = open(path, "wb")
        self.zip = zipfile.ZipFile(self.stream, "w", zipfile.ZIP_STORED)
        self._add_record("byteorder", b"little")

    def _add_record(self, name: str, data: bytes) -> None:
        self.zip.writestr(zipfile.ZipInfo(f"{self.folder}/{name}", ZIP_DATE), data)

    def add_tensor(self, name: str, array: np.ndarray) -> None:
        key = str(len(self.tensors))
        data = memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
        record = zipfile.ZipInfo(f"{self.folder}/data/{key}", ZIP_DATE)
        record.file_size = data.nbytes
        # The header is written where the stream stands; pad its extra field ("FB" + length + "Z"s, as
        # torch does) so that the data after it starts on a 64-byte boundary.
        header_size = LOCAL_HEADER_SIZE + len(record.filename.encode()) + EXTRA_FIELD_HEAD + ZIP64_EXTRA_SIZE
        padding = -(self.stream.tell() + header_size) % ALIGNMENT
        record.extra = b"FB" + struct.pack("<H", padding) + b"Z" * padding
        with self.zip.open(record, "w", force_zip64=True) as entry:
            entry.write(data)
        shape = tuple(array.shape)
        storage = _StorageRef(STORAGE_NAMES[dtype_name(array.dtype)], key, int(array.size))
        self.tensors[name] = _TensorRef(storage, shape, _contiguous_strides(shape))

    def finish(self, wrap=None) -> None:
        """`wrap` builds the pickled object around the state dict (Megatron's {"module": ...}); default: itself."""
        pickled = io.BytesIO()
        _StateDictPickler(pickled).dump(wrap(self.tensors) if wrap else self.tensors)
        self._add_record("data.pkl", pickled.getvalue())
        self._add_record("version", b"3\n")
        self.zip.close()
        self.stream.close()


class PyTorchWriter(Writer):
    """Writes pytorch_model.bin, or shards pytorch_model-0000i-of-0000n.bin plus pytorch_model.bin.index.json
    as transformers names them; each tensor goes to disk as it arrives."""

    format = "pytorch"

    def __init__(self, out_dir, specs: dict[str, TensorInfo], max_shard_size: int | None = None):
        super().__init__(out_dir, specs, max_shard_size)
        groups = shard_groups(specs, max_shard_size)
        if len(groups) > 1:
            self._file_names = [f"pytorch_model-{i:05d}-of-{len(groups):05d}.bin" for i in range(1, len(groups) + 1)]
        else:
            self._file_names = [SINGLE_FILE]
        self._file_of = {name: file_name for group, file_name in zip(groups, self._file_names) for name in group}
        self._expected = iter(specs)
        self._current: _ZipCheckpoint | None = None
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def write(self, name: str, array: np.ndarray) -> None:
        self.check(name, array)
        expected = next(self._expected, None)
        if name != expected:
            raise ModelportError(f"internal: the {self.format} writer got tensor {name} while expecting {expected}")
        path = self.out_dir / self._file_of[name]
        if self._current is not None and self._current.path != path:
            self._finish_current()
        with _writing(path):
            if self._current is None:
                self._current = _ZipCheckpoint(path)
            self._current.add_tensor(name, array)

    def _finish_current(self) -> None:
        if self._current is not None:
            with _writing(self._current.path):
                self._current.finish()
            self._current = None

    def close(self) -> list[str]:
        unwritten = list(self._expected)
        if unwritten:
            raise ModelportError(f"internal: {len(unwritten)} tensors were never written, first {unwritten[0]}")
        if self._current is None:  # no tensors at all: still write an (empty) checkpoint
            with _writing(self.out_dir / SINGLE_FILE):
                self._current = _ZipCheckpoint(self.out_dir / SINGLE_FILE)
        self._finish_current()
        if len(self._file_names) == 1:
            return list(self._file_names)
        index = {
            "metadata": {"total_size": sum(info.nbytes for info in self.specs.values())},
            "weight_map": self._file_of,
        }
        with _writing(self.out_dir / INDEX_FILE):
            (self.out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        return [*self._file_names, INDEX_FILE]
