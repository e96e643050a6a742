"""Vocabulary pruning (bert4keras's keep_tokens): keep some token ids, drop the rest from every
vocabulary-indexed tensor (the mapping lists them and their vocabulary axis) while the tensors stream, and
write the tokenizer with the same ids, so that the kept ids become 0..n-1 in their old order."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelport.converters.base import TensorInfo
from modelport.converters.tokenizers import TokenizerResult, TokenVocabulary
from modelport.errors import ModelportError

CORPUS_BATCH = 1000  # lines encoded at a time


def read_ids(path: Path) -> list[int]:
    """Token ids from a text file: integers separated by whitespace or commas; `#` starts a comment."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ModelportError(f"{path}: cannot read the ids ({getattr(error, 'strerror', None) or error})") from None
    words = re.split(r"[\s,]+", re.sub(r"#[^\n]*", "", text).strip())
    bad = [w for w in words if w and not w.isdigit()]
    if bad:
        raise ModelportError(f"{path}: {bad[0]!r} is not a token id (the file lists integer ids)")
    return [int(w) for w in words if w]


def count_corpus(vocabulary: TokenVocabulary, path: Path, min_count: int) -> list[int]:
    """The ids the tokenizer produces at least `min_count` times on the corpus, one text a line."""
    if min_count < 1:
        raise ModelportError(f"--min-count {min_count}: must be at least 1")
    counts: Counter[int] = Counter()
    try:
        with open(path, encoding="utf-8") as corpus:
            batch = []
            for line in corpus:
                batch.append(line.rstrip("\n"))
                if len(batch) == CORPUS_BATCH:
                    counts.update(i for ids in vocabulary.encode(batch) for i in ids)
                    batch = []
            counts.update(i for ids in vocabulary.encode(batch) for i in ids)
    except (OSError, UnicodeDecodeError) as error:
        raise ModelportError(f"{path}: cannot read the corpus ({getattr(error, 'strerror', None) or error})") from None
    return [i for i, count in counts.items() if count >= min_count]


@dataclass
class Pruning:
    """The ids to keep (sorted, specials included) and the tokenizer that names them."""

    keep: list[int]
    vocabulary: TokenVocabulary

    @classmethod
    def choose(cls, vocabulary: TokenVocabulary, ids: list[int], config: dict) -> "Pruning":
        """`ids` plus what is always kept: the tokenizer's special tokens and sentinels, and the ids the config
        names (pad, eos, decoder start...)."""
        rows = config.get("vocab_size", vocabulary.size)
        named = {v for k, v in config.items() if k.endswith("_token_id") and isinstance(v, int) and 0 <= v < rows}
        outside = sorted(i for i in ids if i >= rows)
        if outside:
            raise ModelportError(f"token id {outside[0]} is outside the model's {rows} embedding rows")
        return cls(sorted(set(ids) | vocabulary.specials | named), vocabulary)

    def apply(self, plan, config: dict) -> tuple[dict, str]:
        """Plan every vocabulary-indexed tensor with the kept rows only (the writer is announced the smaller
        shape and `build` takes the rows), and the config with the smaller vocabulary and remapped token ids."""
        index = np.asarray(self.keep)
        fields = set()
        for name, axis in plan.mapping.vocab_tensors.items():
            planned = plan.tensors.get(name)
            if planned is None:
                continue
            if planned.rewrite is not None:
                raise ModelportError(f"{name}: cannot prune the vocabulary and rewrite that tensor otherwise at once")
            shape = list(planned.info.shape)
            if self.keep[-1] >= shape[axis]:
                raise ModelportError(f"token id {self.keep[-1]} is outside {name}'s {shape[axis]} rows")
            fields.add(planned.row.shape[axis])
            shape[axis] = len(self.keep)
            planned.info = TensorInfo(tuple(shape), planned.info.dtype)
            planned.rewrite = lambda array, axis=axis: np.take(array, index, axis=axis)
        if not fields:
            raise ModelportError(f"{plan.reader.path}: holds none of the vocabulary tensors of {plan.mapping.arch} "
                                 f"({', '.join(plan.mapping.vocab_tensors)})")
        new_id = {old: new for new, old in enumerate(self.keep)}
        pruned = {**config, **{f: len(self.keep) for f in fields}}
        pruned.update({k: new_id[v] for k, v in config.items()
                       if k.endswith("_token_id") and isinstance(v, int) and v in new_id})
        before = config.get(next(iter(fields)))
        return pruned, f"vocabulary pruned to {len(self.keep)} of {before} tokens (ids renumbered in order)"

    def write_tokenizer(self, out_dir: Path, scheme: str, config: dict) -> TokenizerResult:
        return self.vocabulary.write_pruned(self.keep, out_dir, scheme, config)
