"""Benchmark modelport's BERT conversions against `dd` copying the same bytes and, when a Python with
transformers 4.x is given, against transformers' old TF-loading path. Prints one markdown table.

    python bench/bench_convert.py [--sizes base,large] [--cache DIR] [--peer-python PATH]

Synthetic checkpoints (random float32, Google's TF1 names, BERT-base 0.44 GB / BERT-large 1.34 GB) are
written once with modelport's streaming TF1 writer and cached. Each conversion runs in its own process
under /usr/bin/time -v (peak RSS, wall time), after a warm-up read so the page cache is equally warm and a
sync so earlier writes are flushed; the best of --repeat runs is reported (disk writes make single runs
vary by ±50 %).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from modelport.converters.base import TensorInfo
from modelport.converters.tf1 import TF1Writer

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
from make_tiny_bert import google_bert_shapes  # noqa: E402

SHAPES = {
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096},
}
COMMON = {"vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2, "hidden_act": "gelu",
          "attention_probs_dropout_prob": 0.1, "hidden_dropout_prob": 0.1, "initializer_range": 0.02}
PEER_SNIPPET = """
import sys, transformers
from transformers import BertConfig, BertForPreTraining, load_tf_weights_in_bert
config = BertConfig.from_json_file(sys.argv[1] + "/bert_config.json")
model = BertForPreTraining(config)
load_tf_weights_in_bert(model, config, sys.argv[1] + "/bert_model.ckpt")
model.save_pretrained(sys.argv[2])
"""


def make_checkpoint(folder: Path, config: dict) -> Path:
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


def timed(command: list[str], repeat: int = 1) -> tuple[float, float]:
    """(best wall seconds, largest peak RSS in MB) of `repeat` runs of a command under GNU time; dirty pages
    are flushed before each run, so no run pays for the previous one's writes."""
    runs = [_timed_once(command) for _ in range(repeat)]
    return min(wall for wall, _ in runs), max(rss for _, rss in runs)


def _timed_once(command: list[str]) -> tuple[float, float]:
    os.sync()
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", result.stderr)
    hours, minutes, seconds = (float(g) if g else 0.0 for g in wall.groups())
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return hours * 3600 + minutes * 60 + seconds, rss_kb / 1024


def warm(path: Path) -> None:
    for file in sorted(path.iterdir()) if path.is_dir() else [path]:
        with open(file, "rb") as handle:
            while handle.read(1 << 24):
                pass


def modelport_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "modelport", *args, "--quiet", "--overwrite"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="base,large")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "modelport-bench")
    parser.add_argument("--peer-python", help="a Python with transformers 4.x, torch and tensorflow")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the best wall time is reported")
    args = parser.parse_args()
    work = args.cache / "out"
    rows = []
    for size in args.sizes.split(","):
        config = {**COMMON, **SHAPES[size]}
        source = make_checkpoint(args.cache / f"bert-{size}-tf1", config)
        data = source / "bert_model.ckpt.data-00000-of-00001"
        gigabytes = data.stat().st_size / 1e9
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        warm(source)
        dd_wall, dd_rss = timed(["dd", f"if={data}", f"of={work / 'copy'}", "bs=16M", "status=none"], args.repeat)
        (work / "copy").unlink()
        rows.append((size, "dd bs=16M (the floor)", gigabytes, dd_wall, dd_rss))
        steps = [
            ("TF1 -> safetensors", source, modelport_command("convert", "bert", str(source), "--to", "safetensors",
                                                             "-o", str(work / "st"))),
            ("safetensors -> TF1", work / "st", modelport_command("convert", "bert", str(work / "st"), "--to", "tf",
                                                                  "-o", str(work / "tf"))),
            ("safetensors -> PyTorch", work / "st", modelport_command("convert", "bert", str(work / "st"), "--to",
                                                                      "pytorch", "-o", str(work / "pt"))),
            ("PyTorch -> safetensors", work / "pt", modelport_command("convert", "bert", str(work / "pt"), "--to",
                                                                      "safetensors", "-o", str(work / "st2"))),
            ("extend TF1 -> TF1 (4096 positions)", source, modelport_command("extend", str(source), "--positions",
                                                                             "4096", "-o", str(work / "long"))),
        ]
        for label, warmed, command in steps:
            warm(warmed)
            wall, rss = timed(command, args.repeat)
            rows.append((size, f"modelport {label}", gigabytes, wall, rss))
        if args.peer_python:
            warm(source)
            wall, rss = timed([args.peer_python, "-c", PEER_SNIPPET, str(source), str(work / "peer")])
            rows.append((size, "transformers 4.x load_tf_weights_in_bert + save_pretrained", gigabytes, wall, rss))
        shutil.rmtree(work, ignore_errors=True)
        print(f"\n{size}: {gigabytes:.2f} GB of float32", file=sys.stderr)
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"page cache warm, best of {args.repeat} runs\n")
    print("| model | conversion | size | wall | throughput | peak RSS | x dd |")
    print("|---|---|---|---|---|---|---|")
    dd_walls = {row[0]: row[3] for row in rows if row[1].startswith("dd")}
    for size, label, gigabytes, wall, rss in rows:
        print(f"| BERT-{size} | {label} | {gigabytes:.2f} GB | {wall:.2f} s | {gigabytes / wall:.2f} GB/s | "
              f"{rss:,.0f} MB | {wall / dd_walls[size]:.1f} |")
    if not args.peer_python:
        print("\n(transformers 4.x row skipped: pass --peer-python with a Python that has transformers<5)")


if __name__ == "__main__":
    main()
