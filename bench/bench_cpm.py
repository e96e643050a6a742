"""Benchmark modelport on a CPM-LM-2.6B-shaped Megatron checkpoint: the release layout with 2 model-parallel
rank files of float16 (2 x 2.6 GB), random values. Prints one markdown table.

    python bench/bench_cpm.py [--cache DIR] [--legacy] [--keep]

The checkpoint (32 layers, hidden 2560, 32 heads, vocab 30000, 1024 positions) is written once by torch.save,
one rank at a time, as DIR/cpm-2.6b-<zip|legacy>/80000/mp_rank_0R_model_states.pt, and cached. Each
conversion (Megatron -> safetensors, then safetensors -> Megatron) runs in its own process under
/usr/bin/time -v (wall time, peak RSS) after a warm-up read, with memory settled as in bench_convert.py. Outputs are deleted afterwards; the source too
unless --keep. Needs ~16 GB of disk.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_convert import timed, warm  # noqa: E402

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


def make_checkpoint(folder: Path, legacy: bool) -> Path:
    """torch.save per rank, as the release was written; replicated tensors are equal on every rank."""
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


def size_of(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "modelport-bench")
    parser.add_argument("--legacy", action="store_true", help="write the rank files in torch's pre-zip format")
    parser.add_argument("--keep", action="store_true", help="keep the generated checkpoint for the next run")
    args = parser.parse_args()
    kind = "legacy" if args.legacy else "zip"
    source = make_checkpoint(args.cache / f"cpm-2.6b-{kind}", args.legacy)
    work = args.cache / "cpm-out"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    command = [sys.executable, "-m", "modelport", "convert", "cpm", "--quiet", "--overwrite"]
    steps = [(f"Megatron ({kind}, 2 ranks) -> safetensors", source, work / "hf", [source]),
             ("safetensors -> Megatron (2 ranks)", work / "hf", work / "megatron", [work / "hf", "--to", "megatron"])]
    rows = []
    try:
        for label, read, written, arguments in steps:
            warm(read / ITERATION if (read / ITERATION).is_dir() else read)
            wall, rss = timed([*command, *map(str, arguments), "-o", str(written)], written)
            gigabytes = size_of(read)
            rows.append((label, gigabytes, wall, rss))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(source, ignore_errors=True)
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, "
          f"Python {platform.python_version()}; page cache warm\n")
    print("| CPM-LM 2.6B (float16) | size | wall | throughput | peak RSS |")
    print("|---|---|---|---|---|")
    for label, gigabytes, wall, rss in rows:
        print(f"| {label} | {gigabytes:.2f} GB | {wall:.1f} s | {gigabytes / wall:.2f} GB/s | {rss:,.0f} MB |")


if __name__ == "__main__":
    main()
