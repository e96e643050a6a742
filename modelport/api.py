"""The Python API; every CLI command is a thin layer over one of these functions."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from modelport.converters import engine
from modelport.converters.base import dtype_name, parse_size
from modelport.converters.formats import detect_format, open_reader, writer_class
from modelport.converters.tokenizers import carry_tokenizer
from modelport.errors import ModelportError
from modelport.mappings import MAPPINGS, get_mapping

DEFAULT_SHARD_SIZE = "5GB"


@dataclass
class ConversionReport:
    out: Path
    model_class: str
    files: list[str]
    tensors: int
    parameters: int
    bytes: int
    seconds: float
    training_state: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def training_state_kinds(self) -> str:
        """'adam_m (46), adam_v (46), global_step (1)': the skipped tensors by kind."""
        kinds: dict[str, int] = {}
        for name in self.training_state:
            kind = re.split(r"/|(?=_slot_)", name)[-1]
            kinds[kind] = kinds.get(kind, 0) + 1
        return ", ".join(f"{kind} ({count})" for kind, count in kinds.items())

    def summary(self) -> str:
        line = (f"{self.tensors} tensors, {self.parameters:,} parameters ({self.model_class}) -> {self.out} "
                f"in {self.seconds:.1f} s")
        if self.training_state:
            line += f"; skipped {len(self.training_state)} optimizer/training-state tensors"
        if self.unmapped:
            line += f"; left out {len(self.unmapped)} unmapped tensors (--allow-unmapped)"
        return line


@contextlib.contextmanager
def atomic_directory(out: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary folder beside OUT, renamed to OUT only when everything in it is written."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise ModelportError(f"{out}: already exists (pass --overwrite to replace it)")
    if not out.parent.is_dir():
        raise ModelportError(f"{out.parent}: no such folder for the output")
    staging = out.parent / f".{out.name}.modelport-partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        if out.exists():
            retired = out.parent / f".{out.name}.modelport-old-{os.getpid()}"
            out.rename(retired)
            staging.rename(out)
            shutil.rmtree(retired) if retired.is_dir() else retired.unlink()
        else:
            staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def load_override(config: str | Path | dict | None) -> dict:
    if config is None:
        return {}
    return dict(config) if isinstance(config, dict) else engine.read_json(Path(config), "--config")


@contextlib.contextmanager
def progress_bar(total: int, description: str, enabled: bool):
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def convert(arch: str, src: str | Path, to: str = "safetensors", out: str | Path = "", *,
            config: str | Path | dict | None = None, dtype: str | None = None,
            max_shard_size: str | int = DEFAULT_SHARD_SIZE, overwrite: bool = False, allow_unmapped: bool = False,
            tokenizer: str | Path | None = None, lowercase: bool | None = None,
            progress: bool = False) -> ConversionReport:
    """Convert the checkpoint at SRC into a new folder OUT in the format `to`."""
    started = time.perf_counter()
    mapping = get_mapping(arch)
    if to not in mapping.formats:
        raise ModelportError(f"--to {to}: {mapping.arch} converts to {', '.join(mapping.formats)}")
    if not out:
        raise ModelportError("no output folder given (-o OUT)")
    target_format, target_scheme = mapping.formats[to]
    shard_bytes = parse_size(max_shard_size) if isinstance(max_shard_size, str) else max_shard_size
    out = Path(out)
    if out.exists() and not overwrite:
        raise ModelportError(f"{out}: already exists (pass --overwrite to replace it)")
    override = load_override(config)
    with open_reader(Path(src)) as reader:
        plan = engine.plan_source(mapping, reader)
        if plan.unknown and not allow_unmapped:
            raise ModelportError(f"{reader.path}: {len(plan.unknown)} tensors the {mapping.arch} mapping does not "
                                 f"know: {', '.join(plan.unknown[:8])}{' ...' if len(plan.unknown) > 8 else ''} "
                                 "(--allow-unmapped leaves them out)")
        shipped, _ = engine.source_config(plan)
        hf = engine.resolve_config(plan, shipped, override)
        model_class = engine.check_complete(plan, hf)
        engine.check_ties(plan)
        out_dtype = engine.output_dtype(plan, dtype)
        context = {"config": hf}
        steps, specs = engine.target_layout(plan, target_scheme, model_class, out_dtype, context)
        notes = [f"skipped {len(reader.extras)} entries that are not weights: {', '.join(reader.extras[:6])}"] \
            if reader.extras else []
        with atomic_directory(out, overwrite) as staging:
            writer_options = {"prefix": mapping.checkpoint_names[target_scheme]} if target_format == "tf1" else {}
            writer = writer_class(target_format)(staging, specs, shard_bytes, **writer_options)
            total = sum(info.nbytes for info in specs.values())
            with progress_bar(total, f"{mapping.arch} -> {to}", progress) as advance:
                engine.stream(plan, steps, writer, target_scheme, out_dtype, context, advance)
            files = writer.close()
            if target_scheme == "hf":
                written = engine.hf_config(mapping, hf, model_class, out_dtype)
            else:
                written, warnings = mapping.config_from_hf(target_scheme, hf)
                notes += warnings
            config_name = mapping.config_files[target_scheme]
            (staging / config_name).write_text(json.dumps(written, indent=2, ensure_ascii=False) + "\n")
            result = carry_tokenizer(mapping.tokenizer, engine.source_directory(reader),
                                     Path(tokenizer) if tokenizer else None, staging, target_scheme, hf, lowercase)
            notes += result.notes
            files += [config_name, *result.files]
    return ConversionReport(out=out, model_class=model_class.name, files=files, tensors=len(specs),
                            parameters=engine.parameter_count(plan), bytes=total,
                            seconds=time.perf_counter() - started, training_state=plan.training_state,
                            unmapped=plan.unknown, notes=notes)


def _plan_any(reader, arch: str | None) -> engine.Plan:
    """The plan for a given architecture, or for the one that explains most of the checkpoint."""
    if arch:
        return engine.plan_source(get_mapping(arch), reader)
    ranked = sorted(MAPPINGS.values(), key=lambda m: m.detect_scheme(reader.names())[1], reverse=True)
    return engine.plan_source(ranked[0], reader)


def inspect(src: str | Path, arch: str | None = None) -> dict:
    """What SRC holds: format, architecture and layout, and what a conversion does with every tensor."""
    with open_reader(Path(src)) as reader:
        plan = _plan_any(reader, arch)
        dtypes: dict[str, int] = {}
        tensors = []
        for name in reader.names():
            info = reader.infos[name]
            dtypes[dtype_name(info.dtype)] = dtypes.get(dtype_name(info.dtype), 0) + info.numel
            tensors.append({"name": name, "shape": list(info.shape), "dtype": dtype_name(info.dtype),
                            "action": plan.action(name)})
        return {"path": str(reader.path), "format": reader.format, "arch": plan.mapping.arch, "layout": plan.scheme,
                "parameters": engine.parameter_count(plan), "dtypes": dtypes,
                "training_state": len(plan.training_state), "unknown": plan.unknown,
                "not_weights": list(reader.extras), "tensors": tensors}


@dataclass
class VerifyReport:
    rows: list[dict]
    forward: list[dict]
    ok: bool


def _difference(a: np.ndarray, b: np.ndarray) -> tuple[str, float]:
    if a.shape != b.shape:
        return f"shape {list(a.shape)} vs {list(b.shape)}", float("inf")
    if a.dtype == b.dtype and a.tobytes() == b.tobytes():
        return "bit-exact", 0.0
    diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
    return f"max |diff| {diff:.3g}", diff


def verify(src: str | Path, out: str | Path, arch: str | None = None, forward: bool = True,
           tolerance: float = 0.0) -> VerifyReport:
    """Compare every tensor of two checkpoints through the mapping, then their forward outputs."""
    with open_reader(Path(src)) as first, open_reader(Path(out)) as second:
        plan_a = _plan_any(first, arch)
        plan_b = engine.plan_source(plan_a.mapping, second)
        configs = []
        for plan in (plan_a, plan_b):
            shipped, _ = engine.source_config(plan)
            configs.append(engine.resolve_config(plan, shipped, {}))
        rows, ok = [], True
        contexts = [{"config": c} for c in configs]
        for name in dict.fromkeys([*plan_a.tensors, *plan_b.tensors]):
            if name not in plan_a.tensors or name not in plan_b.tensors:
                where = "OUT" if name in plan_a.tensors else "SRC"
                rows.append({"tensor": name, "result": f"missing in {where}", "ok": False})
                ok = False
                continue
            result, diff = _difference(engine.build(plan_a, plan_a.tensors[name], contexts[0]),
                                       engine.build(plan_b, plan_b.tensors[name], contexts[1]))
            rows.append({"tensor": name, "result": result, "ok": diff <= tolerance})
            ok &= diff <= tolerance
        outputs = []
        if forward:
            from modelport.converters.runtime import forward_outputs
            results = [forward_outputs(plan, config) for plan, config in zip((plan_a, plan_b), configs)]
            if results[0] is not None and results[1] is not None:
                for key in results[0]:
                    result, diff = _difference(results[0][key], results[1][key])
                    passed = diff <= max(tolerance, 1e-5)
                    outputs.append({"output": key, "result": result, "ok": passed})
                    ok &= passed
        return VerifyReport(rows=rows, forward=outputs, ok=ok)
