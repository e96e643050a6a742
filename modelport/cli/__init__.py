"""The `modelport` command: a thin typer layer over modelport's Python API. Errors are one line on stderr."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

import modelport
from modelport.errors import ModelportError
from modelport.push import preflight

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Exact, streaming conversion of pretrained checkpoints.")
state = {"debug": False}
INTERRUPTED = 130


def say(message: str) -> None:
    typer.echo(message, err=True)


class Target(str, Enum):
    safetensors = "safetensors"
    pytorch = "pytorch"
    tf = "tf"
    tf_rms = "tf-rms"
    megatron = "megatron"
    albert_zh = "albert_zh"
    keras_h5 = "keras-h5"
    keras = "keras"


class DType(str, Enum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


class Method(str, Enum):
    hierarchical = "hierarchical"
    copy = "copy"
    interpolate = "interpolate"


POSITIONS_HELP = "Extend the learned position table to N positions."
METHOD_HELP = ("hierarchical (Su Jianlin; up to n^2 positions) and copy (Longformer) keep every output for inputs "
               "of at most n tokens; interpolate changes them.")
ALPHA_HELP = "The hierarchical method's alpha, in (0, 1)."
PART_HELP = ("Of a checkpoint holding several networks (electra: discriminator, generator), the one to use "
             "(default: the one it holds alone, else the discriminator).")
STRICT_HELP = ("--to keras: refuse when KerasHub's backbone computes something the model does not (its BERT "
               "family's tanh GELU for an erf-GELU model, T5's largest bucketed distance) instead of noting the "
               "measured deviation.")
EXACT_HELP = ("--to keras: write modelport's subclass of the backbone, which takes what KerasHub's hard-codes "
              "(activation, LayerNorm epsilon, T5's largest distance) from the config (loads after `import "
              "modelport`).")
WITH_HELP = "PART=DIR: add that part's checkpoint, written into the same output (e.g. --with generator=DIR)."


def parse_parts(values: list[str]) -> dict[str, Path]:
    parts = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ModelportError(f"--with {value}: expected PART=DIR, e.g. --with generator=electra-generator/")
        parts[name] = Path(path)
    return parts


PUSH_TO_HELP = ("Then publish OUT to this Hugging Face Hub repository, as `modelport push OUT REPO_ID` does "
                "(token from HF_TOKEN or the stored login).")


@app.callback()
def options(debug: bool = typer.Option(False, "--debug", help="Show tracebacks.")):
    state["debug"] = debug


@app.command()
def convert(
    arch: str = typer.Argument(..., help=f"Architecture: {', '.join(modelport.architectures())}."),
    src: Path = typer.Argument(..., help="Checkpoint: a folder, a TF1 prefix or a weights file."),
    to: Target = typer.Option(Target.safetensors, "--to", help="Output format."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (must not exist unless --overwrite)."),
    config: Optional[Path] = typer.Option(None, "--config", help="HF-style config.json (may be partial) whose fields win."),
    dtype: Optional[DType] = typer.Option(None, "--dtype", help="Cast floating-point tensors (default: keep)."),
    max_shard_size: str = typer.Option(modelport.api.DEFAULT_SHARD_SIZE, "--max-shard-size", help="e.g. 5GB, 500MB."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="Tokenizer files, when not beside SRC."),
    lowercase: Optional[bool] = typer.Option(None, "--lowercase/--no-lowercase", help="Default: from the vocabulary."),
    allow_unmapped: bool = typer.Option(False, "--allow-unmapped", help="Leave out tensors the mapping does not know."),
    positions: Optional[int] = typer.Option(None, "--positions", metavar="N", help=POSITIONS_HELP),
    method: Method = typer.Option(Method.hierarchical, "--method", help=METHOD_HELP),
    alpha: float = typer.Option(modelport.api.DEFAULT_ALPHA, "--alpha", help=ALPHA_HELP),
    ranks: Optional[int] = typer.Option(None, "--ranks", metavar="R", min=1, help="Model-parallel ranks of a "
                                        "--to megatron output (default: the source's, else the release's)."),
    part: Optional[str] = typer.Option(None, "--part", help=PART_HELP),
    with_parts: list[str] = typer.Option([], "--with", metavar="PART=DIR", help=WITH_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT (only once the new one is complete)."),
    push_to: Optional[str] = typer.Option(None, "--push-to", metavar="REPO_ID", help=PUSH_TO_HELP),
    strict: bool = typer.Option(False, "--strict", help=STRICT_HELP),
    exact: bool = typer.Option(False, "--exact", help=EXACT_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
):
    """Convert SRC (format detected) into a new folder OUT."""
    if push_to:
        preflight(push_to)
    report = modelport.convert(arch, src, to.value, out, config=config, dtype=dtype.value if dtype else None,
                               max_shard_size=max_shard_size, overwrite=overwrite, allow_unmapped=allow_unmapped,
                               tokenizer=tokenizer, lowercase=lowercase, positions=positions, method=method.value,
                               alpha=alpha, ranks=ranks, part=part, with_parts=parse_parts(with_parts),
                               progress=not quiet and sys.stderr.isatty(), strict=strict, exact=exact)
    tell(report, quiet)
    if push_to:
        publish(report.out, push_to, quiet)


@app.command()
def extend(
    src: Path = typer.Argument(..., help="Checkpoint: a folder, a TF1 prefix or a weights file."),
    positions: int = typer.Option(..., "--positions", metavar="N", help="The new number of positions."),
    method: Method = typer.Option(Method.hierarchical, "--method", help=METHOD_HELP),
    alpha: float = typer.Option(modelport.api.DEFAULT_ALPHA, "--alpha", help=ALPHA_HELP),
    to: Optional[Target] = typer.Option(None, "--to", help="Output format (default: the format of SRC)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (must not exist unless --overwrite)."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Architecture (default: detected)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT (only once the new one is complete)."),
    push_to: Optional[str] = typer.Option(None, "--push-to", metavar="REPO_ID", help=PUSH_TO_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
):
    """Extend the learned absolute position table of SRC to N positions, without retraining, into OUT."""
    if push_to:
        preflight(push_to)
    report = modelport.extend(src, positions, method.value, alpha, to.value if to else None, out, arch=arch,
                              overwrite=overwrite, progress=not quiet and sys.stderr.isatty())
    tell(report, quiet)
    if push_to:
        publish(report.out, push_to, quiet)


@app.command("prune-vocab")
def prune_vocab(
    src: Path = typer.Argument(..., help="Checkpoint: a folder, a TF1 prefix or a weights file."),
    keep: Optional[Path] = typer.Option(None, "--keep", metavar="IDS_FILE", help="Token ids to keep (integers)."),
    corpus: Optional[Path] = typer.Option(None, "--corpus", metavar="TEXT_FILE",
                                          help="Keep the ids the tokenizer produces on this text."),
    min_count: int = typer.Option(1, "--min-count", metavar="K", help="With --corpus: ids seen at least K times."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (must not exist unless --overwrite)."),
    to: Optional[Target] = typer.Option(None, "--to", help="Output format (default: the format of SRC)."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Architecture (default: detected)."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="Tokenizer files, when not beside SRC."),
    lowercase: Optional[bool] = typer.Option(None, "--lowercase/--no-lowercase", help="Default: from the vocabulary."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT (only once the new one is complete)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
):
    """Keep only some token ids (special tokens and sentinels always): embeddings, LM head and tokenizer alike."""
    report = modelport.prune_vocab(src, keep, corpus, min_count, out, arch=arch, to=to.value if to else None,
                                   tokenizer=tokenizer, lowercase=lowercase, overwrite=overwrite,
                                   progress=not quiet and sys.stderr.isatty())
    tell(report, quiet)


def tell(report: modelport.api.ConversionReport, quiet: bool) -> None:
    """A conversion's notes, then (unless quiet) what was skipped and the summary line."""
    for note in report.notes:
        say(f"note: {note}")
    if not quiet:
        if report.training_state:
            say(f"skipped training state: {report.training_state_kinds()}")
        say(report.summary())


@app.command()
def inspect(
    src: Path = typer.Argument(..., help="Checkpoint to describe."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Architecture (default: detected)."),
    part: Optional[str] = typer.Option(None, "--part", help=PART_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Show format, architecture, layout, parts, parameters and what a conversion does with every tensor."""
    result = modelport.inspect(src, arch, part)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    dtypes = ", ".join(f"{k} ({v:,})" for k, v in result["dtypes"].items())
    console.print(f"{result['path']}: {result['format']} checkpoint, {result['arch']} ({result['layout']} names), "
                  f"{result['parameters']:,} parameters; dtypes: {dtypes}", highlight=False)
    if result["parts"]:
        console.print(f"parts: {', '.join(result['parts'])}; the table shows the {result['part']} (--part)",
                      highlight=False)
    table = Table("tensor", "shape", "dtype", "conversion")
    for tensor in result["tensors"]:
        table.add_row(tensor["name"], str(tensor["shape"]), tensor["dtype"], tensor["action"])
    console.print(table)


@app.command()
def verify(
    src: Path = typer.Argument(..., help="The original checkpoint."),
    out: Path = typer.Argument(..., help="The converted checkpoint."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Architecture (default: detected)."),
    tolerance: float = typer.Option(0.0, "--tolerance", help="Largest tensor difference accepted (0: bit-exact)."),
    forward: bool = typer.Option(True, "--forward/--no-forward", help="Also compare transformers' outputs."),
    part: Optional[str] = typer.Option(None, "--part", help=PART_HELP),
):
    """Compare two checkpoints tensor by tensor through the mapping, then their forward outputs."""
    report = modelport.verify(src, out, arch=arch, forward=forward, tolerance=tolerance, part=part)
    from rich.console import Console
    from rich.table import Table

    table = Table("tensor / output", "result", "ok")
    for row in report.rows + report.forward:
        table.add_row(row.get("tensor") or row.get("output"), row["result"], "yes" if row["ok"] else "NO")
    Console().print(table)
    if not report.ok:
        say("error: the checkpoints differ")
        raise typer.Exit(1)


@app.command()
def push(
    folder: Path = typer.Argument(..., help="The checkpoint folder to publish (e.g. a convert output)."),
    repo_id: str = typer.Argument(..., help="Hub repository, e.g. your-name/bert-base-chinese."),
    private: bool = typer.Option(False, "--private", help="Create the repository private (an existing one keeps "
                                 "its visibility)."),
    revision: Optional[str] = typer.Option(None, "--revision", metavar="BRANCH", help="Branch to commit to, "
                                           "created if missing (default: main)."),
    create_pr: bool = typer.Option(False, "--create-pr", help="Open a pull request against main instead of "
                                   "committing."),
    commit_message: Optional[str] = typer.Option(None, "--commit-message", metavar="MSG", help="Commit title."),
    token: Optional[str] = typer.Option(None, "--token", help="Hub token (default: HF_TOKEN, then the stored "
                                        "login); HF_TOKEN keeps it out of the process list."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be uploaded, and where; send nothing."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or summary."),
):
    """Check FOLDER (weights, config, tokenizer), add a model card, and upload it to the Hugging Face Hub."""
    result = modelport.push(folder, repo_id, private=private, revision=revision, create_pr=create_pr,
                            commit_message=commit_message, token=token, dry_run=dry_run,
                            progress=not quiet and sys.stderr.isatty())
    for note in result.notes:
        say(f"note: {note}")
    if dry_run:
        typer.echo(result.listing())
    elif not quiet:
        say(result.summary())


def publish(out: Path, repo_id: str, quiet: bool) -> None:
    """`--push-to`: push a folder just written; a failure says the folder is there and how to retry."""
    try:
        result = modelport.push(out, repo_id, progress=not quiet and sys.stderr.isatty())
    except ModelportError as error:
        raise ModelportError(f"{out} is written, but the push failed: {error} (retry: modelport push {out} "
                             f"{repo_id})") from error
    if not quiet:
        say(result.summary())


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except ModelportError as error:
        if state["debug"]:
            raise
        say(f"error: {error}")
        sys.exit(1)
    except (KeyboardInterrupt, typer.Abort):
        say("error: interrupted; nothing was written to the output")
        sys.exit(INTERRUPTED)
    except typer.TyperException as error:  # usage errors: unknown option, bad value
        say(f"error: {error.format_message() if hasattr(error, 'format_message') else error}")
        sys.exit(2)
    except Exception as error:  # a bug: still one line unless --debug
        if state["debug"]:
            raise
        say(f"error: internal error ({type(error).__name__}: {error}); rerun with --debug for the traceback")
        sys.exit(1)
    if code == INTERRUPTED:  # typer turns Ctrl-C into this exit code
        say("error: interrupted; nothing was written to the output")
    sys.exit(code or 0)
