"""ALBERT: Google's TF1 release layout <-> transformers AlbertForPreTraining and friends, plus brightmart's
Chinese ALBERT (albert_zh), read as its own naming scheme.

Google's layers are shared: group G's inner block I is stored once (`group_G/inner_group_I`) and layer i
runs group i // (num_hidden_layers / num_hidden_groups), in both codes; the indices map directly. Its GELU
is the tanh form (transformers' `gelu_new`), albert_config.json calls it "gelu".

albert_zh is a different network: word embeddings W [vocab, E] times W2 [E, hidden], THEN positions,
token types and the LayerNorm at hidden width, and one BERT-style block `bert/encoder/layer_shared` for every
layer. transformers' ALBERT adds positions at width E, so the exact port folds W @ W2 into a [vocab, hidden]
table (embedding_size = hidden) with an identity embedding_hidden_mapping_in; the MLM decoder, W2ᵀ then Wᵀ
in albert_zh, is the same product. A product cannot be split back, so albert_zh is read, never written.
"""

from __future__ import annotations

import numpy as np

from modelport.mappings.base import (TRANSPOSE, Constant, Copies, KerasHub, Mapping, ModelClass, PositionTable,
                                     Product, Row, add_scheme, dense, layer_norm)
from modelport.mappings import google, keras

GOOGLE, ZH, H5 = "tf1", "albert_zh", "keras_h5"
LAYER = "albert.encoder.albert_layer_groups.{group}.albert_layers.{inner}"
TF_LAYER = "bert/encoder/transformer/group_{group}/inner_group_{inner}"
ZH_LAYER = "bert/encoder/layer_shared"
H5_LAYER = "albert/encoder/albert_layer_groups_._{group}/albert_layers_._{inner}"

NOT_WRITABLE = ("the albert_zh layout cannot be written: its word embeddings are the product of two factors "
                "(W @ W2), which cannot be split back; --to tf writes the same network in Google's ALBERT layout")
# Google's modeling.py projects the embeddings only when they are narrower than the hidden states; a checkpoint
# whose embeddings are as wide has no embedding_hidden_mapping_in, which is the identity for transformers.
SQUARE = "embedding_size == hidden_size"
NO_PROJECTION = "Google's ALBERT has no embedding projection when embedding_size == hidden_size"


def both(google: str, zh: str, keras_h5: str | None = None) -> dict[str, str]:
    """A tensor's names in Google's layout, albert_zh's and transformers' TF weights (tf_model.h5)."""
    return {GOOGLE: google, ZH: zh, **({H5: keras_h5} if keras_h5 else {})}


EMBEDDINGS = "bert/embeddings"
ROWS = [
    Row("albert.embeddings.word_embeddings.weight", shape=("vocab_size", "embedding_size"),
        ops={ZH: [Product(NOT_WRITABLE)]},
        tf1=f"{EMBEDDINGS}/word_embeddings",
        albert_zh=(f"{EMBEDDINGS}/word_embeddings", f"{EMBEDDINGS}/word_embeddings_2"),
        keras_h5="albert/embeddings/word_embeddings/weight"),
    Row("albert.embeddings.position_embeddings.weight", shape=("max_position_embeddings", "embedding_size"),
        **both(f"{EMBEDDINGS}/position_embeddings", f"{EMBEDDINGS}/position_embeddings",
               "albert/embeddings/position_embeddings/embeddings")),
    Row("albert.embeddings.token_type_embeddings.weight", shape=("type_vocab_size", "embedding_size"),
        **both(f"{EMBEDDINGS}/token_type_embeddings", f"{EMBEDDINGS}/token_type_embeddings",
               "albert/embeddings/token_type_embeddings/embeddings")),
    *layer_norm("albert.embeddings.LayerNorm", both(f"{EMBEDDINGS}/LayerNorm", f"{EMBEDDINGS}/LayerNorm",
                                                    "albert/embeddings/LayerNorm"), "embedding_size"),
    Row("albert.encoder.embedding_hidden_mapping_in.weight", shape=("hidden_size", "embedding_size"),
        ops={GOOGLE: [TRANSPOSE], H5: [TRANSPOSE],
             ZH: [Constant(lambda shape: np.eye(*shape), "hidden_size", "embedding_size", reason=NOT_WRITABLE)]},
        absent={GOOGLE: (SQUARE, [Constant(lambda shape: np.eye(*shape), "hidden_size", "embedding_size",
                                           reason=NO_PROJECTION)])},
        tf1="bert/encoder/embedding_hidden_mapping_in/kernel", albert_zh=(),
        keras_h5="albert/encoder/embedding_hidden_mapping_in/kernel"),
    Row("albert.encoder.embedding_hidden_mapping_in.bias", shape=("hidden_size",),
        ops={ZH: [Constant(np.zeros, "hidden_size", reason=NOT_WRITABLE)]},
        absent={GOOGLE: (SQUARE, [Constant(np.zeros, "hidden_size", reason=NO_PROJECTION)])},
        tf1="bert/encoder/embedding_hidden_mapping_in/bias", albert_zh=(),
        keras_h5="albert/encoder/embedding_hidden_mapping_in/bias"),
    *dense(f"{LAYER}.attention.query", both(f"{TF_LAYER}/attention_1/self/query", f"{ZH_LAYER}/attention/self/query",
                                             f"{H5_LAYER}/attention/query"),
           "hidden_size", "hidden_size"),
    *dense(f"{LAYER}.attention.key", both(f"{TF_LAYER}/attention_1/self/key", f"{ZH_LAYER}/attention/self/key",
                                           f"{H5_LAYER}/attention/key"),
           "hidden_size", "hidden_size"),
    *dense(f"{LAYER}.attention.value", both(f"{TF_LAYER}/attention_1/self/value", f"{ZH_LAYER}/attention/self/value",
                                             f"{H5_LAYER}/attention/value"),
           "hidden_size", "hidden_size"),
    *dense(f"{LAYER}.attention.dense", both(f"{TF_LAYER}/attention_1/output/dense",
                                            f"{ZH_LAYER}/attention/output/dense", f"{H5_LAYER}/attention/dense"),
           "hidden_size", "hidden_size"),
    *layer_norm(f"{LAYER}.attention.LayerNorm", both(f"{TF_LAYER}/LayerNorm", f"{ZH_LAYER}/attention/output/LayerNorm",
                                                                  f"{H5_LAYER}/attention/LayerNorm"),
                "hidden_size"),
    *dense(f"{LAYER}.ffn", both(f"{TF_LAYER}/ffn_1/intermediate/dense", f"{ZH_LAYER}/intermediate/dense",
                                f"{H5_LAYER}/ffn"),
           "hidden_size", "intermediate_size"),
    *dense(f"{LAYER}.ffn_output", both(f"{TF_LAYER}/ffn_1/intermediate/output/dense", f"{ZH_LAYER}/output/dense",
                                      f"{H5_LAYER}/ffn_output"),
           "intermediate_size", "hidden_size"),
    *layer_norm(f"{LAYER}.full_layer_layer_norm", both(f"{TF_LAYER}/LayerNorm_1", f"{ZH_LAYER}/output/LayerNorm",
                                                           f"{H5_LAYER}/full_layer_layer_norm"),
                "hidden_size"),
    *dense("albert.pooler", both("bert/pooler/dense", "bert/pooler/dense", "albert/pooler"), "hidden_size",
           "hidden_size",
           part="pooler"),
    *dense("predictions.dense", both("cls/predictions/transform/dense", "cls/predictions/transform/dense",
                                     "predictions/dense"),
           "hidden_size", "embedding_size", part="mlm"),
    *layer_norm("predictions.LayerNorm",
                both("cls/predictions/transform/LayerNorm", "cls/predictions/transform/LayerNorm",
                     "predictions/LayerNorm"), "embedding_size",
                part="mlm"),
    # transformers' TF head keeps the bias twice and computes with `decoder/bias`.
    Row("predictions.bias", shape=("vocab_size",), part="mlm", ops={H5: [Copies(2)]},
        **both("cls/predictions/output_bias", "cls/predictions/output_bias"),
        keras_h5=("predictions/decoder/bias", "predictions/bias")),
    # The sentence-order head: a raw [2, hidden] variable used with transpose_b, already [out, in].
    Row("sop_classifier.classifier.weight", shape=(2, "hidden_size"), part="sop", ops={H5: [TRANSPOSE]},
        **both("cls/seq_relationship/output_weights", "cls/seq_relationship/output_weights",
               "sop_classifier/classifier/kernel")),
    Row("sop_classifier.classifier.bias", shape=(2,), part="sop",
        **both("cls/seq_relationship/output_bias", "cls/seq_relationship/output_bias",
               "sop_classifier/classifier/bias")),
]

# KerasHub's AlbertBackbone (a preset's model.weights.h5): no pretraining heads; the tanh GELU and LayerNorm
# epsilon 1e-12 hard-coded, as in Google's code. It names its TransformerEncoders in creation order, group by
# group: with one inner layer per group (every release), encoder G is group G.
add_scheme(ROWS, "keras", {
    "albert.embeddings.word_embeddings.weight": "layers/reversible_embedding/vars/0",
    "albert.embeddings.position_embeddings.weight": "layers/position_embedding/vars/0",
    "albert.embeddings.token_type_embeddings.weight": "layers/embedding/vars/0",
    "albert.embeddings.LayerNorm.weight": "layers/layer_normalization/vars/0",
    "albert.embeddings.LayerNorm.bias": "layers/layer_normalization/vars/1",
    "albert.encoder.embedding_hidden_mapping_in.weight": ("layers/dense/vars/0", [TRANSPOSE]),
    "albert.encoder.embedding_hidden_mapping_in.bias": "layers/dense/vars/1",
    **keras.transformer_encoder(LAYER, "layers/transformer_encoder{group:_}", sublayers=keras.ALBERT_SUBLAYERS),
    "albert.pooler.weight": ("layers/dense_1/vars/0", [TRANSPOSE]),
    "albert.pooler.bias": "layers/dense_1/vars/1",
})
KERAS = KerasHub(backbone="keras_hub.src.models.albert.albert_backbone.AlbertBackbone",
                 exact="modelport.keras_exact.ExactAlbertBackbone",
                 tokenizer="keras_hub.src.models.albert.albert_tokenizer.AlbertTokenizer",
                 inputs={"token_ids": "input_ids", "segment_ids": "token_type_ids", "padding_mask": "attention_mask"},
                 outputs={"sequence_output": "last_hidden_state", "pooled_output": "pooler_output"},
                 constraints=("inner_group_num == 1",),
                 parts=("base", "pooler"))

GOOGLE_FIELDS = ["attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob", "embedding_size", "hidden_size",
                 "initializer_range", "intermediate_size", "max_position_embeddings", "num_attention_heads",
                 "num_hidden_layers", "num_hidden_groups", "net_structure_type", "gap_size", "num_memory_blocks",
                 "inner_group_num", "down_scale_factor", "type_vocab_size", "vocab_size"]
CONFIG_FILES = {GOOGLE: "albert_config.json", ZH: "albert_config*.json", "hf": "config.json", "keras": "config.json"}


def config_to_hf(scheme: str, raw: dict) -> dict:
    if scheme == "hf":
        return dict(raw)
    if scheme == "keras":
        return keras.config_to_hf(keras.ALBERT_FIELDS, raw)
    hf = google.config_to_hf(CONFIG_FILES[scheme], raw)
    if scheme == ZH:
        hf.pop("embedding_size", None)  # the folded table is hidden_size wide: shapes say so
    return hf


def config_from_hf(scheme: str, hf: dict) -> tuple[dict, list[str]]:
    if scheme == "keras":
        return keras.config_from_hf(keras.ALBERT_FIELDS, hf), []
    return google.config_from_hf(hf, GOOGLE_FIELDS, "albert_config.json", hf_default_activation="gelu_new")


MAPPING = Mapping(
    arch="albert",
    model_type="albert",
    rows=ROWS,
    classes=[
        ModelClass.of("AlbertForPreTraining", "base", "pooler", "mlm", "sop"),
        ModelClass.of("AlbertForMaskedLM", "base", "mlm"),
        ModelClass.of("AlbertModel", "base", "pooler", bare=True),
    ],
    base_prefix="albert.",
    counts={"group": "num_hidden_groups", "inner": "inner_group_num"},
    tied={"predictions.decoder.weight": "albert.embeddings.word_embeddings.weight",
          "predictions.decoder.bias": "predictions.bias"},
    buffers=["albert.embeddings.position_ids", "albert.embeddings.token_type_ids"],
    formats={"tf": ("tf1", GOOGLE), "safetensors": ("safetensors", "hf"), "pytorch": ("pytorch", "hf"),
             "albert_zh": ("tf1", ZH), "keras-h5": (H5, H5), "keras": ("keras", "keras")},
    config_files=CONFIG_FILES,
    checkpoint_names={GOOGLE: "model.ckpt-best", ZH: "albert_model.ckpt"},
    config_to_hf=config_to_hf,
    config_from_hf=config_from_hf,
    defaults={GOOGLE: google.DEFAULTS, ZH: google.DEFAULTS, "keras": keras.ENCODER_DEFAULTS},
    required_config=("num_attention_heads", "num_hidden_layers"),
    constraints=("hidden_size % num_attention_heads == 0",),
    tokenizer="albert",
    positions=PositionTable("albert.embeddings.position_embeddings.weight", "max_position_embeddings"),
    vocab_tensors={"albert.embeddings.word_embeddings.weight": 0, "predictions.bias": 0},
    h5_copies={"predictions": "albert/embeddings/"},
    keras=KERAS,
    omitted={"keras": ("mlm", "sop")},
)
