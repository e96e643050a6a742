"""Tokenizer files travel with the weights. A mapping names its tokenizer kind; each kind knows where
its files live in a source folder and what to write for a target scheme."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from modelport.errors import ModelportError

BERT_SPECIALS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                 "mask_token": "[MASK]"}


@dataclass
class TokenizerResult:
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _wordpiece_vocab(path: Path) -> list[str]:
    if path.name == "tokenizer.json":
        try:
            vocab = json.loads(path.read_text())["model"]["vocab"]
            return [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ModelportError(f"{path}: not a WordPiece tokenizer.json")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ModelportError(f"{path}: cannot read the vocabulary ({error})")


def _find(explicit: Path | None, source_dir: Path, names: list[str]) -> Path | None:
    if explicit is not None:
        if explicit.is_file():
            return explicit
        found = next((explicit / n for n in names if (explicit / n).is_file()), None)
        if found is None:
            raise ModelportError(f"{explicit}: --tokenizer holds none of {', '.join(names)}")
        return found
    return next((source_dir / n for n in names if (source_dir / n).is_file()), None)


def infer_lowercase(vocab: list[str]) -> bool:
    """An uncased vocabulary has no upper-case letters outside its [BRACKETED] special tokens."""
    return not any(ch.isupper() for token in vocab if not re.fullmatch(r"\[[^\]]*\]", token) for ch in token)


def wordpiece(source_dir: Path, explicit: Path | None, out_dir: Path, scheme: str, config: dict,
              lowercase: bool | None) -> TokenizerResult:
    found = _find(explicit, source_dir, ["vocab.txt", "tokenizer.json"])
    if found is None:
        return TokenizerResult(notes=[f"no tokenizer: {source_dir} has no vocab.txt (releases often keep it "
                                      "elsewhere): the output has weights and config only; pass --tokenizer PATH "
                                      "to add it"])
    vocab = _wordpiece_vocab(found)
    vocab_size = config.get("vocab_size")
    if vocab_size is not None and len(vocab) > vocab_size:
        raise ModelportError(f"{found}: {len(vocab)} tokens, but the model has only {vocab_size} embedding rows")
    result = TokenizerResult()
    if lowercase is None:
        tokenizer_config = found.parent / "tokenizer_config.json"
        stored = json.loads(tokenizer_config.read_text()).get("do_lower_case") if tokenizer_config.is_file() else None
        lowercase = stored if isinstance(stored, bool) else infer_lowercase(vocab)
    (out_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    result.files.append("vocab.txt")
    if scheme == "hf":
        settings = {"tokenizer_class": "BertTokenizer", "do_lower_case": lowercase,
                    "model_max_length": config.get("max_position_embeddings", 512), **BERT_SPECIALS}
        (out_dir / "tokenizer_config.json").write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
        (out_dir / "special_tokens_map.json").write_text(json.dumps(BERT_SPECIALS, indent=2) + "\n")
        result.files += ["tokenizer_config.json", "special_tokens_map.json"]
    if vocab_size is not None and len(vocab) < vocab_size:
        result.notes.append(f"the vocabulary has {len(vocab)} tokens for {vocab_size} embedding rows (padded rows)")
    return result


KINDS = {"wordpiece": wordpiece}


def carry_tokenizer(kind: str, source_dir: Path, explicit: Path | None, out_dir: Path, scheme: str, config: dict,
                    lowercase: bool | None) -> TokenizerResult:
    if not kind:
        return TokenizerResult()
    return KINDS[kind](source_dir, explicit, out_dir, scheme, config, lowercase)
