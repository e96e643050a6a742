"""CPM-LM's tokenizer as TsinghuaAI's CPM-Generate runs it, for transformers' AutoTokenizer: jieba segments
the text, each word's spaces and newlines become U+2582 and U+2583, the words are joined by spaces and
encoded by sentencepiece; decoding drops the spaces and maps U+2582/U+2583 back.

modelport copies this file beside converted CPM weights (load with `trust_remote_code=True`): transformers
5's own CpmTokenizer no longer runs the jieba and U+2582/U+2583 steps, so its ids differ from the ones the
model was trained on. Needs jieba and sentencepiece.
"""

from __future__ import annotations

import logging
import os
import shutil

import jieba
import sentencepiece
from transformers import PreTrainedTokenizer

jieba.setLogLevel(logging.WARNING)

SPACE_AND_NEWLINE = str.maketrans(" \n", "\u2582\u2583")


class CpmJiebaTokenizer(PreTrainedTokenizer):
    vocab_files_names = {"vocab_file": "spiece.model"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file, **kwargs):
        self.vocab_file = vocab_file
        self.sp_model = sentencepiece.SentencePieceProcessor(model_file=vocab_file)
        super().__init__(**kwargs)

    def __getstate__(self):
        return {**self.__dict__, "sp_model": None}

    def __setstate__(self, state):
        self.__dict__ = state
        self.sp_model = sentencepiece.SentencePieceProcessor(model_file=self.vocab_file)

    @property
    def vocab_size(self) -> int:
        return self.sp_model.get_piece_size()

    def get_vocab(self) -> dict[str, int]:
        return {**{self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}, **self.added_tokens_encoder}

    def _tokenize(self, text: str) -> list[str]:
        words = " ".join(word.translate(SPACE_AND_NEWLINE) for word in jieba.cut(text, cut_all=False))
        return self.sp_model.encode(words, out_type=str)

    def _convert_token_to_id(self, token: str) -> int:
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index: int) -> str:
        return self.sp_model.id_to_piece(index)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self.sp_model.decode(tokens).replace(" ", "").replace("\u2582", " ").replace("\u2583", "\n")

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        target = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + "spiece.model")
        if os.path.abspath(self.vocab_file) != os.path.abspath(target):
            shutil.copyfile(self.vocab_file, target)
        return (target,)
