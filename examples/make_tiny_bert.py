"""Writes examples/tiny_bert_tf1: a tiny BERT in Google's original TF1 release layout (bert_model.ckpt.*,
bert_config.json, vocab.txt, plus Adam slots and global_step as in a pretraining checkpoint), random weights.
Uses modelport's own TF1 writer, so TensorFlow is not needed: `python examples/make_tiny_bert.py`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from modelport.converters.base import TensorInfo
from modelport.converters.tf1 import TF1Writer

CONFIG = {"attention_probs_dropout_prob": 0.1, "directionality": "bidi", "hidden_act": "gelu",
          "hidden_dropout_prob": 0.1, "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 128,
          "max_position_embeddings": 128, "num_attention_heads": 4, "num_hidden_layers": 2, "type_vocab_size": 2,
          "vocab_size": 128}
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "a", "model", "port", "convert", "##s", "##ing", "##ed", "中", "文", "模", "型", "转", "换", "你", "好"]


def google_bert_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Every weight of Google's BERT release by its TF1 name, with its shape (kernels are [in, out])."""
    h, ff = config["hidden_size"], config["intermediate_size"]
    shapes: dict[str, tuple[int, ...]] = {
        "bert/embeddings/word_embeddings": (config["vocab_size"], h),
        "bert/embeddings/position_embeddings": (config["max_position_embeddings"], h),
        "bert/embeddings/token_type_embeddings": (config["type_vocab_size"], h),
    }

    def dense(name, n_in, n_out):
        shapes.update({f"{name}/kernel": (n_in, n_out), f"{name}/bias": (n_out,)})

    def norm(name):
        shapes.update({f"{name}/gamma": (h,), f"{name}/beta": (h,)})

    norm("bert/embeddings/LayerNorm")
    for i in range(config["num_hidden_layers"]):
        layer = f"bert/encoder/layer_{i}"
        for part in ("query", "key", "value"):
            dense(f"{layer}/attention/self/{part}", h, h)
        dense(f"{layer}/attention/output/dense", h, h)
        norm(f"{layer}/attention/output/LayerNorm")
        dense(f"{layer}/intermediate/dense", h, ff)
        dense(f"{layer}/output/dense", ff, h)
        norm(f"{layer}/output/LayerNorm")
    dense("bert/pooler/dense", h, h)
    dense("cls/predictions/transform/dense", h, h)
    norm("cls/predictions/transform/LayerNorm")
    shapes.update({"cls/predictions/output_bias": (config["vocab_size"],),
                   "cls/seq_relationship/output_weights": (2, h), "cls/seq_relationship/output_bias": (2,)})
    return shapes


def google_bert(config: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random weights (LayerNorm gammas around 1)."""
    return {name: ((1.0 if name.endswith("gamma") else 0.0) + rng.normal(0, 0.05, size=shape)).astype(np.float32)
            for name, shape in google_bert_shapes(config).items()}


def main(folder: Path = Path(__file__).parent / "tiny_bert_tf1") -> None:
    folder.mkdir(exist_ok=True)
    tensors = google_bert(CONFIG, np.random.default_rng(2018))
    for name, value in list(tensors.items()):
        tensors[f"{name}/adam_m"] = np.zeros_like(value)
        tensors[f"{name}/adam_v"] = np.zeros_like(value)
    tensors["global_step"] = np.array(1000, dtype=np.int64)
    writer = TF1Writer(folder, {n: TensorInfo(v.shape, v.dtype) for n, v in tensors.items()}, prefix="bert_model.ckpt")
    for name, value in tensors.items():
        writer.write(name, value)
    writer.close()
    (folder / "bert_config.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
    vocab = SPECIALS + WORDS + [f"[unused{i}]" for i in range(CONFIG["vocab_size"] - len(SPECIALS) - len(WORDS))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
