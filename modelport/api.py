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

from modelport.converters import engine, keras_preset
from modelport.converters.base import dtype_name, parse_size
from modelport.converters.configs import write_config
from modelport.converters.formats import open_reader, writer_class
from modelport.converters.positions import DEFAULT_ALPHA
from modelport.converters.pruning import Pruning, count_corpus, read_ids
from modelport.converters.tokenizers import carry_tokenizer, open_vocabulary
from modelport.errors import ModelportError
from modelport.mappings import MAPPINGS, get_mapping
from modelport.mappings.base import CANONICAL, FILLED, RANK, files_scheme
from modelport.record import SourceDigests, conversion_record, record_verification, write_record

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


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_directory(out: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary folder beside OUT, renamed to OUT only when everything in it is written. Leftovers of
    killed runs (their process gone) are removed first; a failed write keeps nothing."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise ModelportError(f"{out}: already exists (pass --overwrite to replace it)")
    if not out.parent.is_dir():
        raise ModelportError(f"{out.parent}: no such folder for the output")
    for leftover in out.parent.glob(f".{out.name}.modelport-*-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)
    staging = out.parent / f".{out.name}.modelport-partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
        yield staging
        if out.exists():
            retired = out.parent / f".{out.name}.modelport-old-{os.getpid()}"
            out.rename(retired)
            staging.rename(out)
            shutil.rmtree(retired) if retired.is_dir() else retired.unlink()
        else:
            staging.rename(out)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelportError(f"{out}: cannot write ({error.strerror or error}); nothing was kept") from error
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
            positions: int | None = None, method: str = "hierarchical", alpha: float = DEFAULT_ALPHA,
            ranks: int | None = None, prune: Pruning | None = None, part: str | None = None,
            with_parts: dict[str, str | Path] | None = None, progress: bool = False, strict: bool = False,
            exact: bool = False) -> ConversionReport:
    """Convert the checkpoint at SRC into a new folder OUT in the format `to`; with `positions`, its learned
    position table is extended to that many positions by `method` (see converters/positions.py). `ranks` is
    the model-parallel size of a partitioned output (--to megatron; default: the source's, else the
    release's). `prune` keeps only some token ids (see prune_vocab). For a checkpoint holding several
    networks (ELECTRA), `part` picks the one to convert (default: the one SRC holds alone, else the main one)
    and `with_parts` ({part: path}) adds others, written into the same checkpoint. For a KerasHub preset
    (--to keras) whose backbone computes something the model does not (KerasHub's BERT hard-codes the tanh
    GELU), `strict` refuses instead of noting the deviation, and `exact` writes modelport's backbone subclass
    that computes the model's (see converters/keras_preset.py)."""
    started = time.perf_counter()
    mapping = get_mapping(arch)
    target_format, target_scheme = _target(mapping, to, ranks, strict, exact)
    if not out:
        raise ModelportError("no output folder given (-o OUT)")
    shard_bytes = parse_size(max_shard_size) if isinstance(max_shard_size, str) else max_shard_size
    out = Path(out)
    if out.exists() and not overwrite:
        raise ModelportError(f"{out}: already exists (pass --overwrite to replace it)")
    override = load_override(config)
    with open_reader(Path(src)) as reader, contextlib.ExitStack() as stack:
        mapping = engine.select_part(mapping, reader, part)
        plan = engine.plan_source(mapping, reader)
        _refuse_unknown(plan, allow_unmapped)
        shipped, shipped_path = engine.source_config(plan)
        hf = engine.resolve_config(plan, shipped, override)
        model_class = engine.check_complete(plan, hf)
        engine.check_ties(plan)
        notes = []
        assumed = [f"{name}={value}" for name, value in mapping.defaults.get(plan.scheme, {}).items()
                   if name in mapping.required_config and name not in {**shipped, **override}]
        if assumed:
            notes.append(f"assumed {', '.join(assumed)} (the {mapping.arch} release's; --config FILE overrides)")
        hf, changes = _changes(plan, hf, positions, method, alpha, prune)
        notes += [change["description"] for change in changes.values()]
        out_dtype = engine.output_dtype(plan, dtype)
        context = {"config": hf, "ranks": ranks or plan.ranks or mapping.ranks}
        if target_format == "keras":
            keras_preset.check_layout(mapping, hf, plan.parts)
        steps, specs = engine.target_layout(plan, target_scheme, model_class, out_dtype, context)
        others = _other_parts(stack, mapping, with_parts or {}, target_scheme, out_dtype, context, allow_unmapped)
        jobs, specs = engine.combine([(plan, steps, specs, context), *others])
        side_scheme = files_scheme(target_scheme)
        written, warnings = _output_config(plan, hf, model_class, out_dtype, target_format, target_scheme, others,
                                           exact)
        notes += warnings + _left_behind(plan, target_scheme, to, with_parts or {})
        readers = [reader, *(other.reader for other, _, _, _ in others)]
        sources = reader.files() + ([shipped_path] if shipped_path else []) + [
            file for other in readers[1:] for file in other.files()]
        verified = {path: how for each in readers for path, how in each.verified_files().items()}
        with atomic_directory(out, overwrite) as staging, SourceDigests(sources, verified) as digests:
            writer = _writer(target_format, target_scheme, mapping, model_class, staging, specs, shard_bytes)
            total = sum(info.nbytes for info in specs.values())
            with progress_bar(total, f"{mapping.arch} -> {to}", progress) as advance:
                for job_plan, job_steps, job_context in jobs:
                    engine.stream(job_plan, job_steps, writer, target_scheme, out_dtype, job_context, advance)
            files = writer.close()
            config_name = mapping.config_files[side_scheme]
            write_config(staging / config_name, written)
            result = prune.write_tokenizer(staging, side_scheme, hf) if prune else carry_tokenizer(
                mapping.tokenizer, engine.source_directory(reader), Path(tokenizer) if tokenizer else None, staging,
                side_scheme, hf, lowercase)
            notes += result.notes
            files += [config_name, *result.files]
            if target_format == "keras":
                files += keras_preset.write_tokenizer(staging, mapping, result.settings, result.keras_tokenizer) \
                    if result.settings else []
                files += keras_preset.write_task(staging, mapping, written, exact, plan.parts)
                notes += _keras_deviation(plan, hf, staging, strict, exact)
            files.append(write_record(staging, conversion_record(plan, model_class.name, target_format, target_scheme,
                                                                 dtype_name(out_dtype), digests.result(),
                                                                 [other for other, _, _, _ in others], changes)))
    plans = [plan, *(other for other, _, _, _ in others)]
    return ConversionReport(out=out, model_class=model_class.name, files=files, tensors=len(specs),
                            parameters=sum(engine.parameter_count(p) for p in plans), bytes=total,
                            seconds=time.perf_counter() - started,
                            training_state=[n for p in plans for n in p.training_state],
                            unmapped=[n for p in plans for n in p.unknown], notes=notes)


def _changes(plan: engine.Plan, hf: dict, positions: int | None, method: str, alpha: float,
             prune: Pruning | None) -> tuple[dict, dict]:
    """Plan what the conversion changes beyond the layout (a longer position table, a pruned vocabulary): the
    config saying so, and each change for the record (with a `description` for the notes)."""
    changes = {}
    if positions is not None:
        hf, extension = engine.extend_positions(plan, hf, positions, method, alpha)
        changes["position_extension"] = {"positions": positions, "method": method, "alpha": alpha,
                                         "description": extension}
    if prune is not None:
        hf, pruning = prune.apply(plan, hf)
        changes["vocabulary_pruning"] = {"tokens": len(prune.keep), "description": pruning}
    return hf, changes


def _writer(target_format: str, target_scheme: str, mapping, model_class, staging: Path,
            specs: dict, shard_bytes: int | None):
    """The writer of the output format, with what that format needs to know beyond the tensors."""
    options = {}
    if target_format == "tf1":
        options = {"prefix": mapping.checkpoint_names[target_scheme]}
    elif target_format == "keras_h5":
        options = {"model_class": model_class.name, "copies": mapping.h5_copies}
    return writer_class(target_format)(staging, specs, shard_bytes, **options)


def _target(mapping, to: str, ranks: int | None, strict: bool, exact: bool) -> tuple[str, str]:
    """(file format, naming scheme) of `--to`, refusing options that do not apply to it."""
    if to not in mapping.formats:
        raise ModelportError(f"--to {to}: {mapping.arch} converts to {', '.join(mapping.formats)}")
    target_format, target_scheme = mapping.formats[to]
    if (strict or exact) and target_format != "keras":
        raise ModelportError(f"--{'strict' if strict else 'exact'} applies to --to keras (KerasHub presets)")
    if ranks is not None and ranks < 1:
        raise ModelportError(f"--ranks {ranks}: a model needs at least 1 rank")
    if ranks is not None and not any(RANK in pattern.variables for row in mapping.rows
                                     for pattern in row.names.get(target_scheme, ())):
        raise ModelportError(f"--ranks: --to {to} is not a model-parallel layout")
    return target_format, target_scheme


def _output_config(plan: engine.Plan, hf: dict, model_class, dtype: np.dtype, target_format: str,
                   target_scheme: str, others: list[tuple], exact: bool) -> tuple[dict, list[str]]:
    """The config file the output carries (config.json, or the original code's own), and warnings for what the
    original code would compute differently."""
    mapping = plan.mapping
    warnings: list[str] = []
    if files_scheme(target_scheme) == CANONICAL:
        written = engine.hf_config(mapping, hf, model_class, dtype)
    elif others:
        written, warnings = mapping.merge_configs(target_scheme, {
            mapping.variant: hf, **{other.mapping.variant: c["config"] for other, _, _, c in others}})
    else:
        written, warnings = mapping.config_from_hf(target_scheme, hf)
    if target_format == "keras":
        written = keras_preset.preset_config(mapping, written, hf, dtype, exact)
    return written, warnings


def _left_behind(plan: engine.Plan, target_scheme: str, to: str, with_parts: dict) -> list[str]:
    """Notes on what the source holds that the output does not, and on what the output holds that the source
    did not."""
    mapping, notes = plan.mapping, []
    left_out = sorted(set(mapping.omitted.get(target_scheme, ())) & plan.parts)
    if left_out:
        notes.append(f"left out the {', '.join(left_out)} part(s): --to {to} has no place for them")
    notes += list(dict.fromkeys(filler.note for filler in mapping.fillers.get(target_scheme, ())))
    filled = [source for source, kind, _ in plan.aliases if kind == FILLED]
    if filled:
        notes.append(f"left out {', '.join(filled)}, which the {plan.scheme} layout holds and the {mapping.arch} "
                     "model lacks")
    notes += [f"left out the {variant}'s tensors (--part {variant} converts it)"
              for variant in dict.fromkeys(v for _, v in plan.elsewhere) if variant not in with_parts]
    extras = plan.reader.extras
    if extras:
        notes.append(f"skipped {len(extras)} entries that are not weights: {', '.join(extras[:6])}")
    return notes


def _keras_deviation(plan: engine.Plan, hf: dict, preset: Path, strict: bool, exact: bool) -> list[str]:
    """What KerasHub's backbone (and the task's head, when written) computes differently from the model, with the
    deviation measured on the preset just written; an error with --strict, nothing with --exact (modelport's
    backbone and task compute the model's)."""
    notes = []
    for what, fixed, measure in keras_preset.checks(plan.mapping, plan.parts):
        found = keras_preset.differences(fixed, hf)
        if not found or exact:
            continue
        measured = measure(plan, hf, preset)
        message = keras_preset.describe(what, found) + (
            f": on a fixed input its outputs differ from the model's by up to {measured:.2g}" if measured is not None
            else " (the deviation was not measured: that needs keras-hub, torch and transformers)")
        if strict:
            raise ModelportError(f"{message}; --exact writes modelport's KerasHub classes, which compute the model's")
        notes.append(f"{message} (--exact writes modelport's KerasHub classes, which compute the model's; --strict "
                     "refuses)")
    return notes


def _refuse_unknown(plan: engine.Plan, allow_unmapped: bool) -> None:
    if plan.unknown and not allow_unmapped:
        raise ModelportError(f"{plan.reader.path}: {len(plan.unknown)} tensors the {plan.mapping.arch} mapping does "
                             f"not know: {', '.join(plan.unknown[:8])}{' ...' if len(plan.unknown) > 8 else ''} "
                             "(--allow-unmapped leaves them out)")


def _other_parts(stack: contextlib.ExitStack, mapping, with_parts: dict[str, str | Path], scheme: str,
                 dtype: np.dtype, context: dict, allow_unmapped: bool) -> list[tuple]:
    """The networks given beside SRC (--with generator=DIR), each planned as (plan, steps, specs, context)
    to be written into the same checkpoint."""
    if with_parts and (not mapping.merge_configs or files_scheme(scheme) in (CANONICAL, "keras")):
        raise ModelportError(f"--with: {mapping.arch} has no parts that one checkpoint holds together"
                             if not mapping.merge_configs else
                             "--with: one transformers folder or KerasHub preset holds one network; --to tf writes "
                             "parts together")
    others = []
    for variant, path in with_parts.items():
        if variant == mapping.variant:
            raise ModelportError(f"--with {variant}: SRC is the {variant} already")
        reader = stack.enter_context(open_reader(Path(path)))
        plan = engine.plan_source(engine.select_part(mapping, reader, variant), reader)
        _refuse_unknown(plan, allow_unmapped)
        shipped, _ = engine.source_config(plan)
        config = engine.resolve_config(plan, shipped, {})
        model_class = engine.check_complete(plan, config)
        engine.check_ties(plan)
        part_context = {**context, "config": config}
        others.append((plan, *engine.target_layout(plan, scheme, model_class, dtype, part_context), part_context))
    return others


def _plan_any(reader, arch: str | None, part: str | None = None) -> engine.Plan:
    """The plan for a given architecture, or for the one that explains most of the checkpoint; for a
    checkpoint holding several networks, of `part` (see engine.select_part)."""
    if arch:
        return engine.plan_source(engine.select_part(get_mapping(arch), reader, part), reader)
    declared = _declared_model_type(reader)
    ranked = sorted(MAPPINGS.values(), key=lambda m: (m.detect_scheme(reader.names())[1], m.model_type == declared),
                    reverse=True)
    return engine.plan_source(engine.select_part(ranked[0], reader, part), reader)


def _declared_model_type(reader) -> str | None:
    """The model_type of an HF config.json beside the checkpoint: it tells apart architectures that share their
    tensor names (t5 and mt5)."""
    path = engine.source_directory(reader) / "config.json"
    try:
        declared = json.loads(path.read_text(encoding="utf-8")).get("model_type") if path.is_file() else None
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return None
    return declared if isinstance(declared, str) else None


def _same_format(plan: engine.Plan) -> str:
    """The `to` value that writes what the source is: its file format and naming scheme, else its file format."""
    formats = plan.mapping.formats
    exact = [to for to, written in formats.items() if written == (plan.reader.format, plan.scheme)]
    loose = [to for to, (file_format, _) in formats.items() if file_format == plan.reader.format]
    if not exact + loose:
        raise ModelportError(f"{plan.reader.path}: modelport writes {plan.mapping.arch} only as "
                             f"{', '.join(formats)}, not {plan.reader.format}: pass --to")
    return (exact + loose)[0]


def extend(src: str | Path, positions: int, method: str = "hierarchical", alpha: float = DEFAULT_ALPHA,
           to: str | None = None, out: str | Path = "", *, arch: str | None = None, **options) -> ConversionReport:
    """A copy of SRC whose learned position table has `positions` positions, in SRC's own format unless `to`
    says otherwise. The architecture is detected unless given; `options` are convert's (overwrite, dtype, ...)."""
    with open_reader(Path(src)) as reader:
        plan = _plan_any(reader, arch)
        target = to or _same_format(plan)
    return convert(plan.mapping.arch, src, target, out, positions=positions, method=method, alpha=alpha, **options)


def prune_vocab(src: str | Path, keep: str | Path | None = None, corpus: str | Path | None = None, min_count: int = 1,
                out: str | Path = "", *, arch: str | None = None, to: str | None = None,
                tokenizer: str | Path | None = None, lowercase: bool | None = None,
                config: str | Path | dict | None = None, **options) -> ConversionReport:
    """A copy of SRC that keeps only some token ids: those KEEP lists (a file of ids), or those its tokenizer
    produces at least `min_count` times on CORPUS (a text file), always with the special tokens and sentinels.
    Embedding rows, LM head rows and biases and the tokenizer are pruned alike and the kept ids renumbered in
    order; in SRC's own format unless `to` says otherwise. `options` are convert's (overwrite, dtype, ...)."""
    if (keep is None) == (corpus is None):
        raise ModelportError("prune-vocab needs either --keep IDS_FILE or --corpus TEXT_FILE")
    with open_reader(Path(src)) as reader:
        plan = _plan_any(reader, arch)
        target = to or _same_format(plan)
        shipped, _ = engine.source_config(plan)
        hf = engine.resolve_config(plan, shipped, load_override(config))
        vocabulary = open_vocabulary(plan.mapping.tokenizer, engine.source_directory(reader),
                                     Path(tokenizer) if tokenizer else None, hf, lowercase)
    ids = read_ids(Path(keep)) if keep is not None else count_corpus(vocabulary, Path(corpus), min_count)
    return convert(plan.mapping.arch, src, target, out, config=config, tokenizer=tokenizer, lowercase=lowercase,
                   prune=Pruning.choose(vocabulary, ids, hf), **options)


def inspect(src: str | Path, arch: str | None = None, part: str | None = None) -> dict:
    """What SRC holds: format, architecture, layout and parts (the networks of a checkpoint holding
    several), and what a conversion (of `part`) does with every tensor."""
    with open_reader(Path(src)) as reader:
        plan = _plan_any(reader, arch, part)
        dtypes: dict[str, int] = {}  # the model's parameters by dtype (not training state, replicas once)
        for planned in plan.tensors.values():
            dtypes[dtype_name(planned.info.dtype)] = dtypes.get(dtype_name(planned.info.dtype), 0) + planned.info.numel
        tensors = [{"name": name, "shape": list(info.shape), "dtype": dtype_name(info.dtype), "action": plan.action(name)}
                   for name, info in reader.infos.items()]
        return {"path": str(reader.path), "format": reader.format, "arch": plan.mapping.arch, "layout": plan.scheme,
                "parts": plan.mapping.held_variants(plan.mapping.explainers(reader.names())),
                "part": plan.mapping.variant,
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
           tolerance: float = 0.0, part: str | None = None) -> VerifyReport:
    """Compare every tensor of two checkpoints through the mapping, then their forward outputs. The results
    are added to OUT's conversion record (modelport.json) when it has one, for its model card."""
    with open_reader(Path(src)) as first, open_reader(Path(out)) as second:
        plan_a = _plan_any(first, arch, part)
        plan_b = engine.plan_source(engine.select_part(plan_a.mapping, second, plan_a.mapping.variant or None), second)
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
        record_verification(Path(out), Path(src), rows, outputs, ok, tolerance)
        return VerifyReport(rows=rows, forward=outputs, ok=ok)
