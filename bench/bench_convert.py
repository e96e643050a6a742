"""Benchmark modelport's conversions against `dd` copying the same bytes and, in a Python with transformers 4.x
(--peer-python, or this one when it has it), against transformers' old TF-loading path. Prints one markdown table.

    python bench/bench_convert.py [--models base,large,cpm] [--cache DIR] [--peer-python PATH] [--repeat N]
                                  [--legacy]

Synthetic checkpoints, written once and cached: BERT-base (0.44 GB) and BERT-large (1.34 GB) as TF1 bundles of
random float32 under Google's names, written by modelport's streaming TF1 writer; CPM-LM-2.6B (5.2 GB, only
when asked for: it needs ~16 GB of disk) as Megatron's two float16 rank files, written by torch.save (pre-zip
pickles with --legacy). Each conversion runs in its own process under /usr/bin/time -v (peak RSS, wall time),
with its input in the page cache; the best of --repeat runs is reported. Before every run (dd's too) its
output is removed, dirty pages are flushed and SETTLE_GB of memory is touched by a throwaway process: on a
virtual machine that hands freed memory back to its host (this project's does, within seconds), whichever run
first touches a page pays for it again, which made single runs vary by ±50 %.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelport.converters.base import TensorInfo
from modelport.converters.tf1 import TF1Writer

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
from make_tiny_bert import google_bert_shapes  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from cpm_checkpoint import make_cpm_checkpoint, rank_files  # noqa: E402

BERT_SHAPES = {
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096},
}
BERT_COMMON = {"vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2, "hidden_act": "gelu",
               "attention_probs_dropout_prob": 0.1, "hidden_dropout_prob": 0.1, "initializer_range": 0.02}
PEER_SNIPPET = """
import sys, transformers
from transformers import BertConfig, BertForPreTraining, load_tf_weights_in_bert
config = BertConfig.from_json_file(sys.argv[1] + "/bert_config.json")
model = BertForPreTraining(config)
load_tf_weights_in_bert(model, config, sys.argv[1] + "/bert_model.ckpt")
model.save_pretrained(sys.argv[2])
"""
SETTLE_GB = 4
SETTLE = f"import numpy; numpy.ones({SETTLE_GB << 30} // 8)"
# children write their bytecode caches as an installed package has them (some shells turn that off)
CHILD_ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


@dataclass
class Model:
    label: str
    source: Path
    data_files: list[Path]  # what dd copies: the tensor data
    steps: list[tuple[str, Path, Path, list]]  # label, input, output, modelport arguments (-o added)
    peer: bool  # whether transformers 4.x's path applies


def make_bert_checkpoint(folder: Path, config: dict) -> Path:
    """Written tensor by tensor: the generator never holds the model either."""
    if (folder / "bert_config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    specs = {name: TensorInfo(shape, np.dtype(np.float32)) for name, shape in google_bert_shapes(config).items()}
    writer = TF1Writer(folder, specs, prefix="bert_model.ckpt")
    for name, info in specs.items():
        writer.write(name, rng.standard_normal(info.shape, dtype=np.float32) * 0.02)
    writer.close()
    (folder / "bert_config.json").write_text(json.dumps(config, indent=2))
    return folder


def bert(size: str, cache: Path, work: Path) -> Model:
    source = make_bert_checkpoint(cache / f"bert-{size}-tf1", {**BERT_COMMON, **BERT_SHAPES[size]})
    st, tf, pt = work / "st", work / "tf", work / "pt"
    return Model(f"BERT-{size}", source, [source / "bert_model.ckpt.data-00000-of-00001"], [
        ("TF1 -> safetensors", source, st, ["convert", "bert", source, "--to", "safetensors"]),
        ("safetensors -> TF1", st, tf, ["convert", "bert", st, "--to", "tf"]),
        ("safetensors -> PyTorch", st, pt, ["convert", "bert", st, "--to", "pytorch"]),
        ("PyTorch -> safetensors", pt, work / "st2", ["convert", "bert", pt, "--to", "safetensors"]),
        ("extend TF1 -> TF1 (4096 positions)", source, work / "long", ["extend", source, "--positions", "4096"]),
    ], peer=True)


def cpm(cache: Path, work: Path, legacy: bool) -> Model:
    kind = "legacy" if legacy else "zip"
    source = make_cpm_checkpoint(cache / f"cpm-2.6b-{kind}", legacy)
    hf = work / "hf"
    return Model("CPM-2.6B (fp16)", source, rank_files(source), [
        (f"Megatron ({kind}, 2 ranks) -> safetensors", source, hf, ["convert", "cpm", source]),
        ("safetensors -> Megatron (2 ranks)", hf, work / "megatron", ["convert", "cpm", hf, "--to", "megatron"]),
    ], peer=False)


def timed(command: list[str], output: Path, repeat: int = 1) -> tuple[float, float]:
    """(best wall seconds, largest peak RSS in MB) of `repeat` runs of a command under GNU time; before each
    run its output is removed and dirty pages are flushed (no run pays for an earlier one's files) and memory
    is settled (above)."""
    runs = [_timed_once(command, output) for _ in range(repeat)]
    return min(wall for wall, _ in runs), max(rss for _, rss in runs)


def _timed_once(command: list[str], output: Path) -> tuple[float, float]:
    shutil.rmtree(output, ignore_errors=True)
    os.sync()
    subprocess.run([sys.executable, "-c", SETTLE], check=True)
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, env=CHILD_ENV)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", result.stderr)
    hours, minutes, seconds = (float(g) if g else 0.0 for g in wall.groups())
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return hours * 3600 + minutes * 60 + seconds, rss_kb / 1024


def warm(path: Path) -> None:
    for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
        with open(file, "rb") as handle:
            while handle.read(1 << 24):
                pass


def peer_here() -> str | None:
    """This Python, when it can run transformers 4.x's TF-loading path itself (found without importing)."""
    try:
        version = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return None
    found = all(importlib.util.find_spec(name) for name in ("tensorflow", "torch"))
    return sys.executable if found and version.startswith("4.") else None


def dd_command(files: list[Path], folder: Path) -> list[str]:
    """One command copying every data file into FOLDER with dd bs=16M."""
    copies = " && ".join(f"dd if={file} of={folder / file.name} bs=16M status=none" for file in files)
    return ["sh", "-c", f"mkdir -p {folder} && {copies}"]


def modelport_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "modelport", *args, "--quiet", "--overwrite"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="base,large", help="base, large (BERT) and cpm (needs ~16 GB of disk)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "modelport-bench")
    parser.add_argument("--peer-python", default=peer_here(),
                        help="a Python with transformers 4.x, torch and tensorflow (default: this one, if it has them)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the best wall time is reported")
    parser.add_argument("--legacy", action="store_true", help="write CPM's rank files in torch's pre-zip format")
    args = parser.parse_args()
    work = args.cache / "out"
    rows = []
    for name in args.models.split(","):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        model = cpm(args.cache, work, args.legacy) if name == "cpm" else bert(name, args.cache, work)
        gigabytes = sum(file.stat().st_size for file in model.data_files) / 1e9
        warm(model.source)
        dd_wall, dd_rss = timed(dd_command(model.data_files, work / "copy"), work / "copy", args.repeat)
        shutil.rmtree(work / "copy")
        rows.append((model.label, "dd bs=16M (the floor)", gigabytes, dd_wall, dd_rss, dd_wall))
        for label, read, written, arguments in model.steps:
            warm(read)
            wall, rss = timed(modelport_command(*map(str, arguments), "-o", str(written)), written, args.repeat)
            rows.append((model.label, f"modelport {label}", gigabytes, wall, rss, dd_wall))
        if args.peer_python and model.peer:
            warm(model.source)
            wall, rss = timed([args.peer_python, "-c", PEER_SNIPPET, str(model.source), str(work / "peer")],
                              work / "peer")
            rows.append((model.label, "transformers 4.x load_tf_weights_in_bert + save_pretrained", gigabytes,
                         wall, rss, dd_wall))
        shutil.rmtree(work, ignore_errors=True)
        print(f"{model.label}: {gigabytes:.2f} GB of tensor data", file=sys.stderr)
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, Python "
          f"{platform.python_version()}; page cache warm, best of {args.repeat} runs\n")
    print("| model | conversion | size | wall | throughput | peak RSS | x dd |")
    print("|---|---|---|---|---|---|---|")
    for label, conversion, gigabytes, wall, rss, dd_wall in rows:
        print(f"| {label} | {conversion} | {gigabytes:.2f} GB | {wall:.2f} s | {gigabytes / wall:.2f} GB/s | "
              f"{rss:,.0f} MB | {wall / dd_wall:.1f} |")
    if args.peer_python is None:
        print("\n(transformers 4.x rows skipped: pass --peer-python with a Python that has transformers<5)")


if __name__ == "__main__":
    main()
