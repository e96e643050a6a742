"""Tiny ALBERT checkpoints made by the original frameworks: Google's TF1 layout and brightmart's albert_zh
layout saved by TensorFlow under their variable names, and transformers folders saved by save_pretrained;
a sentencepiece model trained on the spot. Nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conftest import tf_save, vocabulary, with_optimizer_state

# Google's albert_config.json fields; 4 layers over 2 groups of 2 inner blocks, embeddings narrower than hidden.
TINY_ALBERT = {
    "attention_probs_dropout_prob": 0, "hidden_act": "gelu", "hidden_dropout_prob": 0, "embedding_size": 16,
    "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 37, "max_position_embeddings": 64,
    "num_attention_heads": 4, "num_hidden_layers": 4, "num_hidden_groups": 2, "net_structure_type": 0,
    "gap_size": 0, "num_memory_blocks": 0, "inner_group_num": 2, "down_scale_factor": 1, "type_vocab_size": 2,
    "vocab_size": 99,
}
# brightmart's albert_config_*.json (a BERT config plus embedding_size).
TINY_ALBERT_ZH = {
    "attention_probs_dropout_prob": 0.0, "directionality": "bidi", "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
    "hidden_size": 32, "embedding_size": 16, "initializer_range": 0.02, "intermediate_size": 37,
    "max_position_embeddings": 64, "num_attention_heads": 4, "num_hidden_layers": 3, "pooler_fc_size": 32,
    "pooler_num_attention_heads": 4, "pooler_num_fc_layers": 3, "pooler_size_per_head": 8,
    "pooler_type": "first_token_transform", "type_vocab_size": 2, "vocab_size": 99,
}
CORPUS = ["the model port converts checkpoints", "hello world this is albert",
          "a lite bert for self supervised learning", "sentence order prediction", "tokens and pieces and words"]


class Tensors:
    """Random float32 tensors by TF name; `scale` keeps wider tiny networks well conditioned in float32."""

    def __init__(self, seed: int, scale: float = 0.2):
        self.rng = np.random.default_rng(seed)
        self.scale = scale
        self.t: dict[str, np.ndarray] = {}

    def normal(self, *shape, scale=None):
        return self.rng.normal(0, scale or self.scale, size=shape).astype(np.float32)

    def add(self, name, *shape):
        self.t[name] = self.normal(*shape)

    def dense(self, name, n_in, n_out):
        self.add(f"{name}/kernel", n_in, n_out)
        self.add(f"{name}/bias", n_out)

    def norm(self, name, width):
        self.t[f"{name}/gamma"] = 1 + self.normal(width, scale=0.1)
        self.t[f"{name}/beta"] = self.normal(width, scale=0.1)

    def bert_layer(self, prefix, width, inner):
        """One BERT encoder block under `prefix`, by Google's names (albert_zh's shared block, ELECTRA's layers)."""
        for n in ("query", "key", "value"):
            self.dense(f"{prefix}/attention/self/{n}", width, width)
        self.dense(f"{prefix}/attention/output/dense", width, width)
        self.norm(f"{prefix}/attention/output/LayerNorm", width)
        self.dense(f"{prefix}/intermediate/dense", width, inner)
        self.dense(f"{prefix}/output/dense", inner, width)
        self.norm(f"{prefix}/output/LayerNorm", width)


def _embeddings_and_heads(tensors: Tensors, config: dict, width: int, transform: int, heads: bool) -> None:
    e, v = "bert/embeddings", config["vocab_size"]
    tensors.add(f"{e}/position_embeddings", config["max_position_embeddings"], width)
    tensors.add(f"{e}/token_type_embeddings", config["type_vocab_size"], width)
    tensors.norm(f"{e}/LayerNorm", width)
    h = config["hidden_size"]
    tensors.dense("bert/pooler/dense", h, h)
    if heads:
        tensors.dense("cls/predictions/transform/dense", h, transform)
        tensors.norm("cls/predictions/transform/LayerNorm", transform)
        tensors.add("cls/predictions/output_bias", v)
        tensors.add("cls/seq_relationship/output_weights", 2, h)
        tensors.add("cls/seq_relationship/output_bias", 2)


def google_albert_tensors(config: dict = TINY_ALBERT, seed: int = 0, heads: bool = True) -> dict[str, np.ndarray]:
    """Random tensors with Google ALBERT's TF1 names and shapes: each group's inner blocks stored once."""
    tensors = Tensors(seed)
    e, h, ff = config["embedding_size"], config["hidden_size"], config["intermediate_size"]
    tensors.add("bert/embeddings/word_embeddings", config["vocab_size"], e)
    _embeddings_and_heads(tensors, config, e, e, heads)
    if e != h:  # Google's modeling.py projects the embeddings only when they are narrower
        tensors.dense("bert/encoder/embedding_hidden_mapping_in", e, h)
    for group in range(config["num_hidden_groups"]):
        for inner in range(config["inner_group_num"]):
            p = f"bert/encoder/transformer/group_{group}/inner_group_{inner}"
            for n in ("query", "key", "value"):
                tensors.dense(f"{p}/attention_1/self/{n}", h, h)
            tensors.dense(f"{p}/attention_1/output/dense", h, h)
            tensors.norm(f"{p}/LayerNorm", h)
            tensors.dense(f"{p}/ffn_1/intermediate/dense", h, ff)
            tensors.dense(f"{p}/ffn_1/intermediate/output/dense", ff, h)
            tensors.norm(f"{p}/LayerNorm_1", h)
    return tensors.t


def albert_zh_tensors(config: dict = TINY_ALBERT_ZH, seed: int = 0, heads: bool = True) -> dict[str, np.ndarray]:
    """Random tensors with albert_zh's names: W, W2, embeddings at hidden width, one `layer_shared` block."""
    tensors = Tensors(seed)
    e, h, ff = config["embedding_size"], config["hidden_size"], config["intermediate_size"]
    tensors.add("bert/embeddings/word_embeddings", config["vocab_size"], e)
    tensors.add("bert/embeddings/word_embeddings_2", e, h)
    _embeddings_and_heads(tensors, config, h, h, heads)
    tensors.bert_layer("bert/encoder/layer_shared", h, ff)
    return tensors.t


def train_sentencepiece(prefix: Path) -> Path:
    """A tiny unigram model laid out like Google's 30k-clean.model: <pad> 0, <unk> 1, [CLS] 2, [SEP] 3, [MASK] 4."""
    import sentencepiece

    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20), model_prefix=str(prefix), vocab_size=50, pad_id=0, unk_id=1, bos_id=-1,
        eos_id=-1, control_symbols=["[CLS]", "[SEP]", "[MASK]"], character_coverage=1.0, minloglevel=2)
    return Path(f"{prefix}.model")


def make_tf1_albert(folder: Path, config: dict = TINY_ALBERT, *, seed: int = 0, optimizer: bool = True,
                    heads: bool = True, tokenizer: str = "sentencepiece") -> Path:
    """A Google-release-shaped folder: model.ckpt-best.*, albert_config.json, and 30k-clean.model (English
    releases) or vocab_chinese.txt (Chinese ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = google_albert_tensors(config, seed, heads)
    tf_save(folder / "model.ckpt-best", with_optimizer_state(tensors) if optimizer else tensors)
    (folder / "albert_config.json").write_text(json.dumps(config, indent=2))
    if tokenizer == "sentencepiece":
        train_sentencepiece(folder / "30k-clean")
    elif tokenizer == "wordpiece":
        (folder / "vocab_chinese.txt").write_text("\n".join(vocabulary(config["vocab_size"])) + "\n")
    return folder


def make_albert_zh(folder: Path, config: dict = TINY_ALBERT_ZH, *, seed: int = 0, heads: bool = True) -> Path:
    """An albert_zh-release-shaped folder: albert_model.ckpt.*, albert_config_tiny.json, vocab.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    tf_save(folder / "albert_model.ckpt", with_optimizer_state(albert_zh_tensors(config, seed, heads)))
    (folder / "albert_config_tiny.json").write_text(json.dumps(config, indent=2))
    (folder / "vocab.txt").write_text("\n".join(vocabulary(config["vocab_size"])) + "\n")
    return folder


def make_hf_albert(folder: Path, model_class: str = "AlbertForPreTraining", hidden_act: str = "gelu_new",
                   seed: int = 0, **sizes) -> Path:
    """A transformers ALBERT with random weights (LayerNorms moved off 1/0), saved by save_pretrained, with
    an AlbertTokenizer (spiece.model); `sizes` override config fields."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.AlbertConfig(**{**dict(vocab_size=99, embedding_size=16, hidden_size=32, num_hidden_layers=4,
                                                 num_hidden_groups=2, inner_group_num=2, num_attention_heads=4,
                                                 intermediate_size=37, max_position_embeddings=64,
                                                 hidden_act=hidden_act, initializer_range=0.2), **sizes})
    model = getattr(transformers, model_class)(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("predictions.bias"):
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(folder)
    train_sentencepiece(folder / "spiece")
    settings = {"tokenizer_class": "AlbertTokenizer", "do_lower_case": True, "keep_accents": False,
                "remove_space": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    return folder


def hf_albert_outputs(folder: Path, ids, segments) -> dict[str, np.ndarray]:
    """transformers' forward on an ALBERT folder (Auto classes, float32), named like the references' outputs."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

    config = AutoConfig.from_pretrained(folder)
    bare = config.architectures[0] == "AlbertModel"
    model = (AutoModel if bare else AutoModelForPreTraining).from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(segments),
                    output_hidden_states=True)
    result = {"sequence_output": out.hidden_states[-1].numpy()}
    if bare:
        result["pooled_output"] = out.pooler_output.numpy()
    else:
        result["mlm_logits"] = out.prediction_logits.numpy()
        result["sop_logits"] = out.sop_logits.numpy()
    return result
