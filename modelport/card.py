"""The model card (README.md) `modelport push` writes for a folder that has none: Hub metadata (library, tags),
the architecture, the conversion record from modelport.json, and how to load the pushed files."""

from __future__ import annotations

from dataclasses import dataclass

# A card that still starts with this line is modelport's own and is rewritten on every push (so it follows the
# record, e.g. a later `modelport verify`); deleting the line makes the card the user's, kept as it is.
MARKER = "<!-- modelport: generated model card; delete this line to keep your edits on the next push -->"


@dataclass
class CardFacts:
    """What validating the folder established, for the card."""

    arch: str
    model_class: str
    format: str  # file format: safetensors, pytorch, tf1
    layout: str  # naming scheme: hf, tf1, ...
    parameters: int
    architecture: dict  # the config fields the tensor shapes depend on
    checkpoint: str  # the file or prefix to load (tf1: the checkpoint prefix)
    tokenizer: bool
    tokenizer_code: bool = False  # tokenizer_config.json maps AutoTokenizer to code shipped in the repository


def is_generated(text: str) -> bool:
    return MARKER in text


def model_card(facts: CardFacts, record: dict | None, repo_id: str, revision: str | None) -> str:
    """README.md text: YAML metadata made with huggingface_hub's ModelCardData, then the Markdown body."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(library_name="transformers" if facts.layout == "hf" else None,
                         tags=["modelport", facts.arch, facts.format])
    body = "\n".join([MARKER, "", f"# {repo_id.split('/')[-1]}", "", _summary(facts, record), "",
                      "## How to load", "", *_loading(facts, repo_id, revision), "",
                      "## Architecture", "", *_architecture(facts), "",
                      "## Conversion record", "", *_record(record), ""])
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def _summary(facts: CardFacts, record: dict | None) -> str:
    made = (f", converted by [modelport](https://pypi.org/project/modelport/) {record.get('modelport', '')} from a "
            f"{record.get('source', {}).get('format', '?')} checkpoint" if record else "")
    return (f"`{facts.model_class}` weights ({facts.arch}, {facts.parameters:,} parameters) in {facts.format} "
            f"format with {facts.layout} tensor names{made}.")


def _loading(facts: CardFacts, repo_id: str, revision: str | None) -> list[str]:
    where = f'"{repo_id}"' + (f', revision="{revision}"' if revision else "")
    if facts.layout == "hf":
        lines = ["```python", f"from transformers import {'AutoTokenizer, ' if facts.tokenizer else ''}"
                 f"{facts.model_class}", "", f"model = {facts.model_class}.from_pretrained({where})"]
        if facts.tokenizer:
            remote = ", trust_remote_code=True" if facts.tokenizer_code else ""
            lines.append(f"tokenizer = AutoTokenizer.from_pretrained({where}{remote})")
        return lines + ["```"]
    download = ["from huggingface_hub import snapshot_download", "", f"folder = snapshot_download({where})"]
    if facts.format == "tf1":
        code = ["```python", "import tensorflow as tf", *download,
                f'checkpoint = tf.train.load_checkpoint(f"{{folder}}/{facts.checkpoint}")', "```"]
    else:
        code = ["```python", *download, "```"]
    return code + ["", "For transformers, convert the downloaded folder:", "", "```bash",
                   f"modelport convert {facts.arch} FOLDER --to safetensors -o {facts.arch}-hf", "```"]


def _architecture(facts: CardFacts) -> list[str]:
    rows = [f"| {name} | {value} |" for name, value in facts.architecture.items()]
    return [f"`{facts.model_class}` ({facts.arch}).", "", "| field | value |", "|---|---|", *rows]


def _record(record: dict | None) -> list[str]:
    if record is None:
        return ["This folder has no conversion record (modelport.json): it was not written by `modelport convert`."]
    source, output = record.get("source", {}), record.get("output", {})
    skipped = record.get("skipped", {})
    lines = [
        "| | |", "|---|---|",
        f"| modelport | {record.get('modelport', '?')} |",
        f"| converted | {record.get('date', '?')} |",
        f"| source | {source.get('format', '?')} checkpoint, {source.get('layout', '?')} tensor names |",
        f"| mapping | modelport `{record.get('arch', '?')}` -> `{record.get('model_class', '?')}` |",
        f"| output | {output.get('format', '?')}, {output.get('layout', '?')} tensor names, "
        f"{output.get('dtype', '?')} |",
        f"| training state left out | {skipped.get('training_state', 0)} tensors |",
    ]
    if skipped.get("unmapped"):
        lines.append(f"| unmapped tensors left out | {', '.join(skipped['unmapped'])} |")
    if source.get("part"):
        lines.append(f"| network | the {source['part']}"
                     + "".join(f", with the {other.get('part')} ({other.get('format')})"
                               for other in source.get("with", [])) + " |")
    for field, label in (("position_extension", "position extension"), ("vocabulary_pruning", "vocabulary")):
        change = record.get(field)
        if change:
            lines.append(f"| {label} | {change.get('description') or change} |")
    lines += ["", "Source files:", "", "| file | bytes | sha256 |", "|---|---|---|"]
    lines += [f"| {f.get('name')} | {f.get('bytes')} | {_identity(f)} |" for f in source.get("files", [])]
    lines += ["", *_verification(record.get("verify"))]
    return lines


def _identity(file: dict) -> str:
    """A source file's sha256, or (for a data file whose tensors carry checksums elsewhere) where those are."""
    return f"`{file['sha256']}`" if "sha256" in file else f"not hashed: {file.get('checked_by', '?')}"


def _verification(verify: dict | None) -> list[str]:
    if not verify:
        return ["Not verified: `modelport verify SOURCE FOLDER` compares every tensor and the forward outputs and "
                "adds its results here."]
    outcome = "passed" if verify.get("ok") else "FAILED"
    lines = [f"`modelport verify` against {verify.get('against')} ({verify.get('date')}): {outcome}; "
             f"{verify.get('bit_exact')} of {verify.get('tensors')} tensors bit-exact "
             f"(tolerance {verify.get('tolerance')})."]
    if verify.get("failed"):
        lines.append(f"Tensors that differ: {', '.join(verify['failed'])}.")
    if verify.get("forward"):
        lines += ["", "| forward output | result | ok |", "|---|---|---|"]
        lines += [f"| {row['output']} | {row['result']} | {'yes' if row['ok'] else 'no'} |"
                  for row in verify["forward"]]
    return lines
