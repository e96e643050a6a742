"""Megatron-LM model-parallel checkpoints as Megatron + DeepSpeed save them (TsinghuaAI's CPM-LM release):
DIR/latest_checkpointed_iteration.txt names the iteration, and DIR/<iteration>/mp_rank_RR_model_states.pt
holds rank RR's part of every tensor under the key `module`.

Tensor names carry their rank as a prefix (`mp_rank_00/word_embeddings.weight`) so that a mapping says, per
tensor, how the ranks' parts make the whole one. Each rank file is read by the PyTorch reader (memory-mapped
when it is a zip checkpoint) and written by its streaming zip writer, all ranks' files open at once.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from modelport.converters.base import Reader, TensorInfo, Writer, dtype_name
from modelport.converters.pytorch import PyTorchReader, _writing, _ZipCheckpoint
from modelport.errors import ModelportError

TRACKER = "latest_checkpointed_iteration.txt"
RANK_FILE = re.compile(r"mp_rank_(\d{2})_model_states\.pt")
RELEASE = "release"  # Megatron's iteration name for a checkpoint that is not a training state
SAME_ON_EVERY_RANK = ("iteration", "global_steps")  # Megatron's and DeepSpeed's step counters


def rank_file_name(rank: int) -> str:
    return f"mp_rank_{rank:02d}_model_states.pt"


def split_name(name: str) -> tuple[int, str]:
    """'mp_rank_01/word_embeddings.weight' -> (1, 'word_embeddings.weight')."""
    prefix, inner = name.split("/", 1)
    return int(prefix[len("mp_rank_"):]), inner


# ---------------------------------------------------------------------------------------------- finding


def find_megatron_files(path) -> list[Path] | None:
    """The rank files, in rank order, of DIR (through its tracker file), of an iteration folder, or of the
    folder holding a given rank file; None when `path` is none of these. A lone mp_rank_00 file given outside
    a Megatron tracker's folder is DeepSpeed's name for any model's weights: the PyTorch reader takes it."""
    path = Path(path)
    if path.is_file():
        files = _rank_files(path.parent) if RANK_FILE.fullmatch(path.name) else None
        if files == [path] and not (path.parent.parent / TRACKER).is_file():
            return None
        return files
    if not path.is_dir():
        return None
    tracker = path / TRACKER
    if not tracker.is_file():
        return _rank_files(path)
    try:
        iteration = tracker.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ModelportError(f"{tracker}: cannot read the iteration ({error})") from None
    folder = path / iteration
    if not iteration or "/" in iteration or not folder.is_dir():
        raise ModelportError(f"{tracker}: names iteration {iteration!r}, but {path} has no such folder")
    files = _rank_files(folder)
    if files is None:
        raise ModelportError(f"{folder}: no mp_rank_RR_model_states.pt files")
    return files


def _rank_files(folder: Path) -> list[Path] | None:
    found = {int(m.group(1)): p for p in folder.iterdir() if (m := RANK_FILE.fullmatch(p.name)) and p.is_file()}
    if not found:
        return None
    missing = [rank for rank in range(max(found) + 1) if rank not in found]
    if missing:
        present = ", ".join(f"{rank:02d}" for rank in sorted(found))
        raise ModelportError(f"{folder / rank_file_name(missing[0])}: missing (the folder has ranks {present})")
    return [found[rank] for rank in range(len(found))]


# ---------------------------------------------------------------------------------------------- reading


class MegatronReader(Reader):
    """Every rank file of one iteration; each must hold the same tensors with the same shapes (Megatron cuts
    evenly) and the same step counters."""

    format = "megatron"

    def __init__(self, path):
        self.path = Path(path)
        files = find_megatron_files(self.path)
        if not files:
            raise ModelportError(f"{self.path}: no Megatron checkpoint ({TRACKER} or mp_rank_RR_model_states.pt)")
        self._files = files
        self._ranks: list[PyTorchReader] = []
        self.infos: dict[str, TensorInfo] = {}
        self.extras: list[str] = []
        try:
            for rank, file in enumerate(files):
                reader = PyTorchReader(file)
                self._ranks.append(reader)
                self._check_like_rank_0(file, reader)
                prefix = f"mp_rank_{rank:02d}/"
                self.infos.update({prefix + name: info for name, info in reader.infos.items()})
                self.extras += [prefix + extra for extra in reader.extras]
        except BaseException:
            self.close()
            raise

    def _check_like_rank_0(self, file: Path, reader: PyTorchReader) -> None:
        first, first_file = self._ranks[0], self._files[0].name
        for name in first.infos.keys() - reader.infos.keys():
            raise ModelportError(f"{file}: lacks {name}, which {first_file} holds")
        for name in reader.infos.keys() - first.infos.keys():
            raise ModelportError(f"{file}: holds {name}, which {first_file} lacks")
        for name, info in reader.infos.items():
            expected = first.infos[name]
            if info != expected:
                raise ModelportError(f"{file}: {name} is {dtype_name(info.dtype)}{list(info.shape)}, but "
                                     f"{dtype_name(expected.dtype)}{list(expected.shape)} in {first_file} "
                                     "(Megatron cuts every tensor into equal parts)")
        for key in SAME_ON_EVERY_RANK:
            if key in reader.scalars and key in first.scalars and reader.scalars[key] != first.scalars[key]:
                raise ModelportError(f"{file}: {key} {reader.scalars[key]}, but {first.scalars[key]} in {first_file}: "
                                     "rank files from different checkpoints")
        world = reader.scalars.get("mp_world_size")
        if isinstance(world, int) and world != len(self._files):
            raise ModelportError(f"{file}: saved by {world} model-parallel ranks (mp_world_size), but "
                                 f"{file.parent} holds {len(self._files)} rank files")

    def read(self, name: str) -> np.ndarray:
        rank, inner = split_name(name)
        return self._ranks[rank].read(inner)

    def release(self, names: list[str]) -> None:
        for name in names:
            rank, inner = split_name(name)
            self._ranks[rank].release([inner])

    def files(self) -> list[Path]:
        return list(self._files)

    def close(self) -> None:
        for reader in self._ranks:
            reader.close()


# ---------------------------------------------------------------------------------------------- writing


class MegatronWriter(Writer):
    """The release layout for the ranks the tensor names carry: DIR/latest_checkpointed_iteration.txt saying
    "release", and DIR/release/mp_rank_RR_model_states.pt holding {"module": state dict, "mp_world_size": R}
    in torch.save's zip layout. Every tensor goes to its rank's file as it arrives (max_shard_size does not
    apply: one file per rank is the layout)."""

    format = "megatron"

    def __init__(self, out_dir, specs: dict[str, TensorInfo], max_shard_size: int | None = None):
        super().__init__(out_dir, specs, max_shard_size)
        ranks = 1 + max((split_name(name)[0] for name in specs), default=0)
        folder = self.out_dir / RELEASE
        with _writing(folder):
            folder.mkdir(parents=True, exist_ok=True)
            self._files = [_ZipCheckpoint(folder / rank_file_name(rank)) for rank in range(ranks)]
        self._expected = iter(specs)

    def write(self, name: str, array: np.ndarray) -> None:
        self.check(name, array)
        expected = next(self._expected, None)
        if name != expected:
            raise ModelportError(f"internal: the {self.format} writer got tensor {name} while expecting {expected}")
        rank, inner = split_name(name)
        file = self._files[rank]
        with _writing(file.path):
            file.add_tensor(inner, array)

    def close(self) -> list[str]:
        unwritten = list(self._expected)
        if unwritten:
            raise ModelportError(f"internal: {len(unwritten)} tensors were never written, first {unwritten[0]}")
        ranks = len(self._files)
        for file in self._files:
            with _writing(file.path):
                file.finish(lambda state_dict: {"module": state_dict, "mp_world_size": ranks})
        with _writing(self.out_dir / TRACKER):
            (self.out_dir / TRACKER).write_text(RELEASE)
        return [TRACKER, *(f"{RELEASE}/{file.path.name}" for file in self._files)]
