"""A CPM-LM-2.6B-shaped Megatron checkpoint for the benchmark: the release layout with 2 model-parallel rank
files of float16 (2 x 2.6 GB), random values, written by torch.save one rank at a time."""

from __future__ import annotations

import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

CPM = {"layers": 32, "hidden": 2560, "heads": 32, "vocab": 30000, "positions": 1024}
RANKS = 2
ITERATION = "80000"


def rank_shapes(rank_count: int) -> dict[str, tuple[tuple[int, ...], bool]]:
    """Each rank's tensor name -> (shape, replicated on every rank)."""
    h, part = CPM["hidden"], CPM["hidden"] // rank_count
    shapes = {"word_embeddings.weight": ((CPM["vocab"] // rank_count, h), False),
              "position_embeddings.weight": ((CPM["positions"], h), True)}
    for i in range(CPM["layers"]):
        p = f"transformer.layers.{i}"
        shapes.update({
            f"{p}.input_layernorm.weight": ((h,), True), f"{p}.input_layernorm.bias": ((h,), True),
            f"{p}.attention.query_key_value.weight": ((3 * part, h), False),
            f"{p}.attention.query_key_value.bias": ((3 * part,), False),
            f"{p}.attention.dense.weight": ((h, part), False), f"{p}.attention.dense.bias": ((h,), True),
            f"{p}.post_attention_layernorm.weight": ((h,), True), f"{p}.post_attention_layernorm.bias": ((h,), True),
            f"{p}.mlp.dense_h_to_4h.weight": ((4 * part, h), False),
            f"{p}.mlp.dense_h_to_4h.bias": ((4 * part,), False),
            f"{p}.mlp.dense_4h_to_h.weight": ((h, 4 * part), False), f"{p}.mlp.dense_4h_to_h.bias": ((h,), True),
        })
    shapes.update({"transformer.final_layernorm.weight": ((h,), True),
                   "transformer.final_layernorm.bias": ((h,), True)})
    return shapes


def make_cpm_checkpoint(folder: Path, legacy: bool = False) -> Path:
    """FOLDER/80000/mp_rank_0R_model_states.pt (zip, or torch's pre-zip pickles when `legacy`), as the release
    was written; replicated tensors are equal on every rank. Cached: an existing checkpoint is kept."""
    import torch

    if (folder / "latest_checkpointed_iteration.txt").is_file():
        return folder
    (folder / ITERATION).mkdir(parents=True, exist_ok=True)
    for rank in range(RANKS):
        module = OrderedDict()
        for name, (shape, replicated) in rank_shapes(RANKS).items():
            rng = np.random.default_rng(zlib.crc32(name.encode()) + (0 if replicated else 7919 * (rank + 1)))
            values = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)
            module[name] = torch.from_numpy(values)
        path = folder / ITERATION / f"mp_rank_{rank:02d}_model_states.pt"
        torch.save({"module": module, "iteration": int(ITERATION)}, path, _use_new_zipfile_serialization=not legacy)
        del module
    (folder / "latest_checkpointed_iteration.txt").write_text(ITERATION)
    return folder


def rank_files(folder: Path) -> list[Path]:
    return sorted((folder / ITERATION).glob("mp_rank_*_model_states.pt"))
