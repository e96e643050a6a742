"""BERT: Google's TF1 release layout (also the Chinese BERT-wwm / RoBERTa-wwm releases) <-> transformers
BertForPreTraining and friends. Google's modeling.py computes GELU with the tanh approximation, which
transformers calls `gelu_new`; its bert_config.json says "gelu" for it."""

from __future__ import annotations

from modelport.mappings import google
from modelport.mappings.base import Mapping, ModelClass, PositionTable, Row, dense, layer_norm

LAYER = "bert.encoder.layer.{layer}"
TF_LAYER = "bert/encoder/layer_{layer}"

ROWS = [
    Row("bert.embeddings.word_embeddings.weight", shape=("vocab_size", "hidden_size"),
        tf1="bert/embeddings/word_embeddings"),
    Row("bert.embeddings.position_embeddings.weight", shape=("max_position_embeddings", "hidden_size"),
        tf1="bert/embeddings/position_embeddings"),
    Row("bert.embeddings.token_type_embeddings.weight", shape=("type_vocab_size", "hidden_size"),
        tf1="bert/embeddings/token_type_embeddings"),
    *layer_norm("bert.embeddings.LayerNorm", "bert/embeddings/LayerNorm", "hidden_size"),
    *dense(f"{LAYER}.attention.self.query", f"{TF_LAYER}/attention/self/query", "hidden_size", "hidden_size"),
    *dense(f"{LAYER}.attention.self.key", f"{TF_LAYER}/attention/self/key", "hidden_size", "hidden_size"),
    *dense(f"{LAYER}.attention.self.value", f"{TF_LAYER}/attention/self/value", "hidden_size", "hidden_size"),
    *dense(f"{LAYER}.attention.output.dense", f"{TF_LAYER}/attention/output/dense", "hidden_size", "hidden_size"),
    *layer_norm(f"{LAYER}.attention.output.LayerNorm", f"{TF_LAYER}/attention/output/LayerNorm", "hidden_size"),
    *dense(f"{LAYER}.intermediate.dense", f"{TF_LAYER}/intermediate/dense", "hidden_size", "intermediate_size"),
    *dense(f"{LAYER}.output.dense", f"{TF_LAYER}/output/dense", "intermediate_size", "hidden_size"),
    *layer_norm(f"{LAYER}.output.LayerNorm", f"{TF_LAYER}/output/LayerNorm", "hidden_size"),
    *dense("bert.pooler.dense", "bert/pooler/dense", "hidden_size", "hidden_size", part="pooler"),
    *dense("cls.predictions.transform.dense", "cls/predictions/transform/dense", "hidden_size", "hidden_size",
           part="mlm"),
    *layer_norm("cls.predictions.transform.LayerNorm", "cls/predictions/transform/LayerNorm", "hidden_size",
                part="mlm"),
    Row("cls.predictions.bias", shape=("vocab_size",), part="mlm", tf1="cls/predictions/output_bias"),
    # Already [out, in] in TF: a raw variable used with transpose_b, not a dense layer.
    Row("cls.seq_relationship.weight", shape=(2, "hidden_size"), part="nsp", tf1="cls/seq_relationship/output_weights"),
    Row("cls.seq_relationship.bias", shape=(2,), part="nsp", tf1="cls/seq_relationship/output_bias"),
]

GOOGLE_FIELDS = ["attention_probs_dropout_prob", "directionality", "hidden_act", "hidden_dropout_prob", "hidden_size",
                 "initializer_range", "intermediate_size", "max_position_embeddings", "num_attention_heads",
                 "num_hidden_layers", "pooler_fc_size", "pooler_num_attention_heads", "pooler_num_fc_layers",
                 "pooler_size_per_head", "pooler_type", "type_vocab_size", "vocab_size"]


def config_to_hf(scheme: str, raw: dict) -> dict:
    return dict(raw) if scheme == "hf" else google.config_to_hf("bert_config.json", raw)


def config_from_hf(scheme: str, hf: dict) -> tuple[dict, list[str]]:
    return google.config_from_hf(hf, GOOGLE_FIELDS, "bert_config.json", hf_default_activation="gelu")


MAPPING = Mapping(
    arch="bert",
    model_type="bert",
    rows=ROWS,
    classes=[
        ModelClass.of("BertForPreTraining", "base", "pooler", "mlm", "nsp"),
        ModelClass.of("BertForMaskedLM", "base", "mlm"),
        ModelClass.of("BertForNextSentencePrediction", "base", "pooler", "nsp"),
        ModelClass.of("BertModel", "base", "pooler", bare=True),
    ],
    base_prefix="bert.",
    counts={"layer": "num_hidden_layers"},
    tied={"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
          "cls.predictions.decoder.bias": "cls.predictions.bias"},
    buffers=["bert.embeddings.position_ids", "bert.embeddings.token_type_ids"],
    formats={"tf": ("tf1", "tf1"), "safetensors": ("safetensors", "hf"), "pytorch": ("pytorch", "hf")},
    config_files={"tf1": "bert_config.json", "hf": "config.json"},
    checkpoint_names={"tf1": "bert_model.ckpt"},
    config_to_hf=config_to_hf,
    config_from_hf=config_from_hf,
    defaults={"tf1": google.DEFAULTS},
    required_config=("num_attention_heads",),
    constraints=("hidden_size % num_attention_heads == 0",),
    tokenizer="wordpiece",
    positions=PositionTable("bert.embeddings.position_embeddings.weight", "max_position_embeddings"),
    vocab_tensors={"bert.embeddings.word_embeddings.weight": 0, "cls.predictions.bias": 0},
)
