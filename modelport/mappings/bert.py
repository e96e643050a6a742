"""BERT: Google's TF1 release layout (also the Chinese BERT-wwm / RoBERTa-wwm releases) <-> transformers
BertForPreTraining and friends. Google's modeling.py computes GELU with the tanh approximation, which
transformers calls `gelu_new`; its bert_config.json says "gelu" for it."""

from __future__ import annotations

from modelport.mappings import google, keras
from modelport.mappings.base import (TRANSPOSE, KerasHub, KerasTask, Mapping, ModelClass, PositionTable, Row,
                                     add_scheme, dense, layer_norm)

LAYER = "bert.encoder.layer.{layer}"
TF_LAYER = "bert/encoder/layer_{layer}"
H5_LAYER = "bert/encoder/layer_._{layer}"  # transformers 4.x's TFBertMainLayer, as tf_model.h5 names it


def layer(sublayer: str) -> dict[str, str]:
    """An encoder sublayer in Google's TF1 names and in transformers' TF names (tf_model.h5)."""
    return {"tf1": f"{TF_LAYER}/{sublayer}", "keras_h5": f"{H5_LAYER}/{sublayer}"}


def same(name: str) -> dict[str, str]:
    return {"tf1": name, "keras_h5": name}


ROWS = [
    Row("bert.embeddings.word_embeddings.weight", shape=("vocab_size", "hidden_size"),
        tf1="bert/embeddings/word_embeddings", keras_h5="bert/embeddings/word_embeddings/weight"),
    Row("bert.embeddings.position_embeddings.weight", shape=("max_position_embeddings", "hidden_size"),
        tf1="bert/embeddings/position_embeddings", keras_h5="bert/embeddings/position_embeddings/embeddings"),
    Row("bert.embeddings.token_type_embeddings.weight", shape=("type_vocab_size", "hidden_size"),
        tf1="bert/embeddings/token_type_embeddings", keras_h5="bert/embeddings/token_type_embeddings/embeddings"),
    *layer_norm("bert.embeddings.LayerNorm", same("bert/embeddings/LayerNorm"), "hidden_size"),
    *dense(f"{LAYER}.attention.self.query", layer("attention/self/query"), "hidden_size", "hidden_size"),
    *dense(f"{LAYER}.attention.self.key", layer("attention/self/key"), "hidden_size", "hidden_size"),
    *dense(f"{LAYER}.attention.self.value", layer("attention/self/value"), "hidden_size", "hidden_size"),
    *dense(f"{LAYER}.attention.output.dense", layer("attention/output/dense"), "hidden_size", "hidden_size"),
    *layer_norm(f"{LAYER}.attention.output.LayerNorm", layer("attention/output/LayerNorm"), "hidden_size"),
    *dense(f"{LAYER}.intermediate.dense", layer("intermediate/dense"), "hidden_size", "intermediate_size"),
    *dense(f"{LAYER}.output.dense", layer("output/dense"), "intermediate_size", "hidden_size"),
    *layer_norm(f"{LAYER}.output.LayerNorm", layer("output/LayerNorm"), "hidden_size"),
    *dense("bert.pooler.dense", same("bert/pooler/dense"), "hidden_size", "hidden_size", part="pooler"),
    # transformers' TF heads are the layers `mlm___cls` and `nsp___cls` (its loader reads both as `cls`).
    *dense("cls.predictions.transform.dense", {"tf1": "cls/predictions/transform/dense",
                                               "keras_h5": "mlm___cls/predictions/transform/dense"},
           "hidden_size", "hidden_size", part="mlm"),
    *layer_norm("cls.predictions.transform.LayerNorm", {"tf1": "cls/predictions/transform/LayerNorm",
                                                        "keras_h5": "mlm___cls/predictions/transform/LayerNorm"},
                "hidden_size", part="mlm"),
    Row("cls.predictions.bias", shape=("vocab_size",), part="mlm", tf1="cls/predictions/output_bias",
        keras_h5="mlm___cls/predictions/bias"),
    # Already [out, in] in Google's TF: a raw variable used with transpose_b, not a dense layer (transformers'
    # TF head is one: [in, out]).
    Row("cls.seq_relationship.weight", shape=(2, "hidden_size"), part="nsp", tf1="cls/seq_relationship/output_weights",
        keras_h5="nsp___cls/seq_relationship/kernel", ops={"keras_h5": [TRANSPOSE]}),
    Row("cls.seq_relationship.bias", shape=(2,), part="nsp", tf1="cls/seq_relationship/output_bias",
        keras_h5="nsp___cls/seq_relationship/bias"),
]

# KerasHub's BertBackbone (a preset's model.weights.h5): it hard-codes the tanh GELU and LayerNorm epsilon 1e-12.
# The MLM head is BertMaskedLM's (task.weights.h5), whose decoder is the token embedding, as BERT's is tied; its
# head hard-codes the erf GELU and LayerNorm epsilon 1e-5. The NSP head has no place.
add_scheme(ROWS, "keras", {
    "bert.embeddings.word_embeddings.weight": "layers/reversible_embedding/vars/0",
    "bert.embeddings.position_embeddings.weight": "layers/position_embedding/vars/0",
    "bert.embeddings.token_type_embeddings.weight": "layers/embedding/vars/0",
    "bert.embeddings.LayerNorm.weight": "layers/layer_normalization/vars/0",
    "bert.embeddings.LayerNorm.bias": "layers/layer_normalization/vars/1",
    **keras.transformer_encoder(LAYER, "layers/transformer_encoder{layer:_}"),
    "bert.pooler.dense.weight": ("layers/dense/vars/0", [TRANSPOSE]),
    "bert.pooler.dense.bias": "layers/dense/vars/1",
    "cls.predictions.transform.dense.weight": ("task/layers/masked_lm_head/_intermediate_dense/vars/0", [TRANSPOSE]),
    "cls.predictions.transform.dense.bias": "task/layers/masked_lm_head/_intermediate_dense/vars/1",
    "cls.predictions.transform.LayerNorm.weight": "task/layers/masked_lm_head/_intermediate_layer_norm/vars/0",
    "cls.predictions.transform.LayerNorm.bias": "task/layers/masked_lm_head/_intermediate_layer_norm/vars/1",
    "cls.predictions.bias": "task/layers/masked_lm_head/vars/0",
})
KERAS = KerasHub(backbone="keras_hub.src.models.bert.bert_backbone.BertBackbone",
                 exact="modelport.keras_exact.ExactBertBackbone",
                 tokenizer="keras_hub.src.models.bert.bert_tokenizer.BertTokenizer",
                 inputs={"token_ids": "input_ids", "segment_ids": "token_type_ids", "padding_mask": "attention_mask"},
                 outputs={"sequence_output": "last_hidden_state", "pooled_output": "pooler_output"},
                 parts=("base", "pooler"),
                 task=KerasTask(task="keras_hub.src.models.bert.bert_masked_lm.BertMaskedLM",
                                exact="modelport.keras_exact.ExactBertMaskedLM",
                                preprocessor="keras_hub.src.models.bert.bert_masked_lm_preprocessor."
                                             "BertMaskedLMPreprocessor",
                                part="mlm", defaults={"hidden_act": "gelu", "layer_norm_eps": 1e-5},
                                output=("prediction_logits", "logits")))

GOOGLE_FIELDS = ["attention_probs_dropout_prob", "directionality", "hidden_act", "hidden_dropout_prob", "hidden_size",
                 "initializer_range", "intermediate_size", "max_position_embeddings", "num_attention_heads",
                 "num_hidden_layers", "pooler_fc_size", "pooler_num_attention_heads", "pooler_num_fc_layers",
                 "pooler_size_per_head", "pooler_type", "type_vocab_size", "vocab_size"]


def config_to_hf(scheme: str, raw: dict) -> dict:
    if scheme == "keras":
        return keras.config_to_hf(keras.ENCODER_FIELDS, raw)
    return dict(raw) if scheme == "hf" else google.config_to_hf("bert_config.json", raw)


def config_from_hf(scheme: str, hf: dict) -> tuple[dict, list[str]]:
    if scheme == "keras":
        return keras.config_from_hf(keras.ENCODER_FIELDS, hf), []
    return google.config_from_hf(hf, GOOGLE_FIELDS, "bert_config.json", hf_default_activation="gelu")


MAPPING = Mapping(
    arch="bert",
    model_type="bert",
    rows=ROWS,
    classes=[
        ModelClass.of("BertForPreTraining", "base", "pooler", "mlm", "nsp"),
        # A KerasHub BertMaskedLM preset also holds the pooler, which transformers' BertForMaskedLM ignores.
        ModelClass.of("BertForMaskedLM", "base", "mlm", optional=["pooler"]),
        ModelClass.of("BertForNextSentencePrediction", "base", "pooler", "nsp"),
        ModelClass.of("BertModel", "base", "pooler", bare=True),
    ],
    base_prefix="bert.",
    counts={"layer": "num_hidden_layers"},
    tied={"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
          "cls.predictions.decoder.bias": "cls.predictions.bias"},
    buffers=["bert.embeddings.position_ids", "bert.embeddings.token_type_ids"],
    formats={"tf": ("tf1", "tf1"), "safetensors": ("safetensors", "hf"), "pytorch": ("pytorch", "hf"),
             "keras-h5": ("keras_h5", "keras_h5"), "keras": ("keras", "keras")},
    config_files={"tf1": "bert_config.json", "hf": "config.json", "keras": "config.json"},
    checkpoint_names={"tf1": "bert_model.ckpt"},
    config_to_hf=config_to_hf,
    config_from_hf=config_from_hf,
    defaults={"tf1": google.DEFAULTS, "keras": keras.ENCODER_DEFAULTS},
    required_config=("num_attention_heads",),
    constraints=("hidden_size % num_attention_heads == 0",),
    tokenizer="wordpiece",
    positions=PositionTable("bert.embeddings.position_embeddings.weight", "max_position_embeddings"),
    vocab_tensors={"bert.embeddings.word_embeddings.weight": 0, "cls.predictions.bias": 0},
    h5_copies={"mlm___cls": "bert/embeddings/"},
    keras=KERAS,
    omitted={"keras": ("nsp",)},
)
