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

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Exact, streaming conversion of pretrained checkpoints.")
state = {"debug": False}


def say(message: str) -> None:
    typer.echo(message, err=True)


class Target(str, Enum):
    safetensors = "safetensors"
    pytorch = "pytorch"
    tf = "tf"


class DType(str, Enum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


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
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT (only once the new one is complete)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
):
    """Convert SRC (format detected) into a new folder OUT."""
    report = modelport.convert(arch, src, to.value, out, config=config, dtype=dtype.value if dtype else None,
                               max_shard_size=max_shard_size, overwrite=overwrite, allow_unmapped=allow_unmapped,
                               tokenizer=tokenizer, lowercase=lowercase, progress=not quiet and sys.stderr.isatty())
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
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Show format, architecture, layout, parameters and what a conversion does with every tensor."""
    result = modelport.inspect(src, arch)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    dtypes = ", ".join(f"{k} ({v:,})" for k, v in result["dtypes"].items())
    console.print(f"{result['path']}: {result['format']} checkpoint, {result['arch']} ({result['layout']} names), "
                  f"{result['parameters']:,} parameters; dtypes: {dtypes}", highlight=False)
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
):
    """Compare two checkpoints tensor by tensor through the mapping, then their forward outputs."""
    report = modelport.verify(src, out, arch=arch, forward=forward, tolerance=tolerance)
    from rich.console import Console
    from rich.table import Table

    table = Table("tensor / output", "result", "ok")
    for row in report.rows + report.forward:
        table.add_row(row.get("tensor") or row.get("output"), row["result"], "yes" if row["ok"] else "NO")
    Console().print(table)
    if not report.ok:
        say("error: the checkpoints differ")
        raise typer.Exit(1)


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
        sys.exit(130)
    except typer.TyperException as error:  # usage errors: unknown option, bad value
        say(f"error: {error.format_message() if hasattr(error, 'format_message') else error}")
        sys.exit(2)
    except Exception as error:  # a bug: still one line unless --debug
        if state["debug"]:
            raise
        say(f"error: internal error ({type(error).__name__}: {error}); rerun with --debug for the traceback")
        sys.exit(1)
    sys.exit(code or 0)
