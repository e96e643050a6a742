"""Benchmark modelport's BERT conversions against `dd` copying the same bytes and, when a Python with
transformers 4.x is given, against transformers' old TF-loading path. Prints one markdown table.

    python bench/bench_convert.py [--sizes base,large] [--cache DIR] [--peer-python PATH] [--repeat N]

Synthetic checkpoints (random float32, Google's TF1 names, BERT-base 0.44 GB / BERT-large 1.34 GB) are
written once with modelport's streaming TF1 writer and cached. Each conversion runs in its own process
under /usr/bin/time -v (peak RSS, wall time), with the input in the page cache; the best of --repeat runs is
reported. Before every run (dd's too) dirty pages are flushed and SETTLE_GB of memory is touched by a
throwaway process: on a virtual machine that hands freed memory back to its host (this project's does, within
seconds), whichever run first touches a page pays for it again, which made single runs vary by ±50 %.
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


def timed(command: list[str], output: Path, repeat: int = 1) -> tuple[float, float]:
    """(best wall seconds, largest peak RSS in MB) of `repeat` runs of a command under GNU time; before each
    run its output is removed and dirty pages are flushed (no run pays for an earlier one's files) and memory
    is settled (above)."""
    runs = [_timed_once(command, output) for _ in range(repeat)]
    return min(wall for wall, _ in runs), max(rss for _, rss in runs)


SETTLE_GB = 4
SETTLE = f"import numpy; numpy.ones({SETTLE_GB << 30} // 8)"
# children write their bytecode caches as an installed package has them (some shells turn that off)
CHILD_ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def _timed_once(command: list[str], output: Path) -> tuple[float, float]:
    shutil.rmtree(output, ignore_errors=True) if output.is_dir() else output.unlink(missing_ok=True)
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
        dd_wall, dd_rss = timed(["dd", f"if={data}", f"of={work / 'copy'}", "bs=16M", "status=none"], work / "copy",
                                args.repeat)
        (work / "copy").unlink()
        rows.append((size, "dd bs=16M (the floor)", gigabytes, dd_wall, dd_rss))
        st, tf, pt = work / "st", work / "tf", work / "pt"
        steps = [  # label, input, output, command arguments
            ("TF1 -> safetensors", source, st, ["convert", "bert", source, "--to", "safetensors"]),
            ("safetensors -> TF1", st, tf, ["convert", "bert", st, "--to", "tf"]),
            ("safetensors -> PyTorch", st, pt, ["convert", "bert", st, "--to", "pytorch"]),
            ("PyTorch -> safetensors", pt, work / "st2", ["convert", "bert", pt, "--to", "safetensors"]),
            ("extend TF1 -> TF1 (4096 positions)", source, work / "long", ["extend", source, "--positions", "4096"]),
        ]
        for label, read, written, arguments in steps:
            warm(read)
            wall, rss = timed(modelport_command(*map(str, arguments), "-o", str(written)), written, args.repeat)
            rows.append((size, f"modelport {label}", gigabytes, wall, rss))
        if args.peer_python:
            warm(source)
            wall, rss = timed([args.peer_python, "-c", PEER_SNIPPET, str(source), str(work / "peer")], work / "peer")
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
