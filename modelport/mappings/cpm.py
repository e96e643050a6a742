"""CPM-LM (TsinghuaAI's 2.6B Chinese GPT-2, released as CPM-Generate): Megatron-LM model-parallel rank files
<-> transformers GPT2LMHeadModel; also bert4keras's TF1 port of it (`gpt/...` names) as a source.

Megatron's GPT-2 is GPT-2 with the tanh GELU (transformers' `gelu_new`), LayerNorm eps 1e-5 and the LM head
tied to the word embeddings. Megatron's linear weights are [out, in]; GPT-2's Conv1D weights are [in, out].
Each rank holds a part of every tensor (see mappings/parallel.py for how the parts make the whole).
"""

from __future__ import annotations

from modelport.errors import ModelportError
from modelport.mappings import keras
from modelport.mappings.base import TRANSPOSE, KerasHub, Mapping, MergeAxes, ModelClass, PositionTable, Row, add_scheme
from modelport.mappings.parallel import REPLICATED, Concat, MergeFusedQKV

RANK_PREFIX = "mp_rank_{rank:02}/"
LAYER = "transformer.h.{layer}"
MEGATRON_LAYER = RANK_PREFIX + "transformer.layers.{layer}"
BERT4KERAS_LAYER = "gpt/transformer/layer_{layer}"
H5_LAYER = "transformer/h_._{layer}"  # transformers 4.x's TFGPT2MainLayer (tf_model.h5), Conv1D kernels [in, out]
H5_BIAS = {"keras_h5": [MergeAxes(0, 1, -1)]}  # its Conv1D biases are [1, n]

VOCAB_PARALLEL = Concat(0, "vocab_size")
COLUMN_PARALLEL_FFN = Concat(0, "n_inner")  # dense_h_to_4h: rows cut
ROW_PARALLEL_ATTENTION = Concat(1, "n_embd")  # attention.dense: columns cut
ROW_PARALLEL_FFN = Concat(1, "n_inner")  # dense_4h_to_h: columns cut
FUSED_QKV = MergeFusedQKV("n_head")


def layer_norm(hf: str, megatron: str, bert4keras: str, h5: str) -> list[Row]:
    return [Row(f"{hf}.{hf_name}", shape=("n_embd",), megatron=f"{megatron}.{hf_name}", ops={"megatron": [REPLICATED]},
                tf1=f"{bert4keras}/{tf_name}", keras_h5=f"{h5}/{tf_name}")
            for hf_name, tf_name in (("weight", "gamma"), ("bias", "beta"))]


ROWS = [
    Row("transformer.wte.weight", shape=("vocab_size", "n_embd"), megatron=RANK_PREFIX + "word_embeddings.weight",
        ops={"megatron": [VOCAB_PARALLEL]}, tf1="gpt/embeddings/word_embeddings",
        keras_h5="transformer/wte/embeddings"),
    Row("transformer.wpe.weight", shape=("n_positions", "n_embd"), megatron=RANK_PREFIX + "position_embeddings.weight",
        ops={"megatron": [REPLICATED]}, tf1="gpt/embeddings/position_embeddings",
        keras_h5="transformer/wpe/embeddings"),
    *layer_norm(f"{LAYER}.ln_1", f"{MEGATRON_LAYER}.input_layernorm", f"{BERT4KERAS_LAYER}/attention/input/LayerNorm",
                f"{H5_LAYER}/ln_1"),
    Row(f"{LAYER}.attn.c_attn.weight", shape=("n_embd", "3*n_embd"),
        megatron=f"{MEGATRON_LAYER}.attention.query_key_value.weight",
        tf1=tuple(f"{BERT4KERAS_LAYER}/attention/self/{part}/kernel" for part in ("query", "key", "value")),
        keras_h5=f"{H5_LAYER}/attn/c_attn/weight",
        ops={"megatron": [FUSED_QKV, TRANSPOSE], "tf1": [Concat(1, "3*n_embd", parts=3)]}),
    Row(f"{LAYER}.attn.c_attn.bias", shape=("3*n_embd",), megatron=f"{MEGATRON_LAYER}.attention.query_key_value.bias",
        tf1=tuple(f"{BERT4KERAS_LAYER}/attention/self/{part}/bias" for part in ("query", "key", "value")),
        keras_h5=f"{H5_LAYER}/attn/c_attn/bias",
        ops={"megatron": [FUSED_QKV], "tf1": [Concat(0, "3*n_embd", parts=3)], **H5_BIAS}),
    Row(f"{LAYER}.attn.c_proj.weight", shape=("n_embd", "n_embd"), megatron=f"{MEGATRON_LAYER}.attention.dense.weight",
        ops={"megatron": [ROW_PARALLEL_ATTENTION, TRANSPOSE]}, tf1=f"{BERT4KERAS_LAYER}/attention/output/dense/kernel",
        keras_h5=f"{H5_LAYER}/attn/c_proj/weight"),
    Row(f"{LAYER}.attn.c_proj.bias", shape=("n_embd",), megatron=f"{MEGATRON_LAYER}.attention.dense.bias",
        ops={"megatron": [REPLICATED], **H5_BIAS}, tf1=f"{BERT4KERAS_LAYER}/attention/output/dense/bias",
        keras_h5=f"{H5_LAYER}/attn/c_proj/bias"),
    *layer_norm(f"{LAYER}.ln_2", f"{MEGATRON_LAYER}.post_attention_layernorm", f"{BERT4KERAS_LAYER}/input/LayerNorm",
                f"{H5_LAYER}/ln_2"),
    Row(f"{LAYER}.mlp.c_fc.weight", shape=("n_embd", "n_inner"), megatron=f"{MEGATRON_LAYER}.mlp.dense_h_to_4h.weight",
        ops={"megatron": [COLUMN_PARALLEL_FFN, TRANSPOSE]}, tf1=f"{BERT4KERAS_LAYER}/intermediate/dense/kernel",
        keras_h5=f"{H5_LAYER}/mlp/c_fc/weight"),
    Row(f"{LAYER}.mlp.c_fc.bias", shape=("n_inner",), megatron=f"{MEGATRON_LAYER}.mlp.dense_h_to_4h.bias",
        ops={"megatron": [COLUMN_PARALLEL_FFN], **H5_BIAS}, tf1=f"{BERT4KERAS_LAYER}/intermediate/dense/bias",
        keras_h5=f"{H5_LAYER}/mlp/c_fc/bias"),
    Row(f"{LAYER}.mlp.c_proj.weight", shape=("n_inner", "n_embd"),
        megatron=f"{MEGATRON_LAYER}.mlp.dense_4h_to_h.weight", ops={"megatron": [ROW_PARALLEL_FFN, TRANSPOSE]},
        tf1=f"{BERT4KERAS_LAYER}/output/dense/kernel", keras_h5=f"{H5_LAYER}/mlp/c_proj/weight"),
    Row(f"{LAYER}.mlp.c_proj.bias", shape=("n_embd",), megatron=f"{MEGATRON_LAYER}.mlp.dense_4h_to_h.bias",
        ops={"megatron": [REPLICATED], **H5_BIAS}, tf1=f"{BERT4KERAS_LAYER}/output/dense/bias",
        keras_h5=f"{H5_LAYER}/mlp/c_proj/bias"),
    *layer_norm("transformer.ln_f", RANK_PREFIX + "transformer.final_layernorm", "gpt/output/LayerNorm",
                "transformer/ln_f"),
]

# KerasHub's GPT2Backbone (a preset's model.weights.h5): its LM head (GPT2CausalLM) is the token embedding, as
# CPM's is; it hard-codes the tanh GELU and LayerNorm epsilon 1e-5, as CPM's Megatron code does.
add_scheme(ROWS, "keras", {
    "transformer.wte.weight": "layers/reversible_embedding/vars/0",
    "transformer.wpe.weight": "layers/position_embedding/vars/0",
    **keras.gpt2_decoder(LAYER, "layers/transformer_decoder{layer:_}"),
    "transformer.ln_f.weight": "layers/layer_normalization/vars/0",
    "transformer.ln_f.bias": "layers/layer_normalization/vars/1",
})
KERAS = KerasHub(backbone="keras_hub.src.models.gpt2.gpt2_backbone.GPT2Backbone",
                 exact="modelport.keras_exact.ExactGPT2Backbone",
                 tokenizer="keras_hub.src.tokenizers.sentence_piece_tokenizer.SentencePieceTokenizer",
                 inputs={"token_ids": "input_ids", "padding_mask": "attention_mask"},
                 outputs={"sequence_output": "last_hidden_state"})

EOD = 7  # `<eod>` in CPM's chinese_vocab.model: the document separator, GPT-2's <|endoftext|>
OUTSIDE_VOCABULARY = (f"the Hub copy of CPM-Generate declares GPT-2's 50256; CPM's own end token is <eod>, id {EOD}: "
                      f'pass --config FILE holding {{"bos_token_id": {EOD}, "eos_token_id": {EOD}}}')
# What CPM's Megatron code hard-codes or its scripts pass (--num-attention-heads 32); it ships no config file.
CPM_DEFAULTS = {"n_head": 32, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
                "bos_token_id": EOD, "eos_token_id": EOD}
# megatron_args.json, which modelport writes beside a Megatron output: Megatron's argument -> GPT-2 field.
MEGATRON_ARGS = {"num_layers": "n_layer", "hidden_size": "n_embd", "num_attention_heads": "n_head",
                 "max_position_embeddings": "n_positions", "vocab_size": "vocab_size",
                 "layernorm_epsilon": "layer_norm_epsilon"}
# bert4keras's BERT-style config.json field -> GPT-2 field (its hidden_act is bert4keras's, not CPM's).
BERT4KERAS_FIELDS = {"num_hidden_layers": "n_layer", "hidden_size": "n_embd", "num_attention_heads": "n_head",
                     "max_position_embeddings": "n_positions", "vocab_size": "vocab_size",
                     "intermediate_size": "n_inner"}
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")  # transformers' names for Megatron's GELU


def config_to_hf(scheme: str, raw: dict) -> dict:
    if scheme == "hf":
        return dict(raw)
    if scheme == "keras":  # a preset has no place for the token ids: CPM's
        return {**keras.config_to_hf(keras.GPT2_FIELDS, raw, exact=keras.GPT2_DEFAULTS), "bos_token_id": EOD,
                "eos_token_id": EOD}
    fields = MEGATRON_ARGS if scheme == "megatron" else BERT4KERAS_FIELDS
    return {hf: raw[name] for name, hf in fields.items() if raw.get(name) is not None}


def token_warnings(hf: dict, where: str) -> list[str]:
    return [f"{token} {hf[token]} has no place in {where}; converting back assumes CPM's <eod> ({EOD})"
            for token in ("bos_token_id", "eos_token_id") if hf.get(token) not in (None, EOD)]


def config_from_hf(scheme: str, hf: dict) -> tuple[dict, list[str]]:
    """megatron_args.json, or a KerasHub GPT2Backbone's arguments; refuses what Megatron's GPT-2 cannot
    compute."""
    if not hf.get("scale_attn_weights", True) or hf.get("scale_attn_by_inverse_layer_idx", False):
        raise ModelportError("the model scales attention scores other than by 1/sqrt(head size), which "
                             f"{'KerasHub' if scheme == 'keras' else 'Megatron'}'s GPT-2 hard-codes")
    if scheme == "keras":  # transformers' GPT-2 leaves n_inner unset for 4 * n_embd
        arguments = keras.config_from_hf(keras.GPT2_FIELDS, {**hf, "n_inner": hf.get("n_inner") or 4 * hf["n_embd"]})
        return arguments, token_warnings(hf, "a KerasHub preset")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in TANH_GELUS:
        raise ModelportError(f"activation_function {activation!r} has no counterpart in Megatron's GPT-2, which "
                             "hard-codes the tanh GELU (gelu_new)")
    raw = {name: hf[field] for name, field in MEGATRON_ARGS.items() if hf.get(field) is not None}
    warnings = []
    if hf.get("n_inner") not in (None, 4 * hf["n_embd"]):
        warnings.append(f"n_inner is {hf['n_inner']}; Megatron's GPT-2 hard-codes 4 * hidden_size")
    return raw, warnings + token_warnings(hf, "megatron_args.json")


MAPPING = Mapping(
    arch="cpm",
    model_type="gpt2",
    rows=ROWS,
    classes=[ModelClass.of("GPT2LMHeadModel", "base")],
    base_prefix="transformer.",
    counts={"layer": "n_layer"},
    tied={"lm_head.weight": "transformer.wte.weight"},
    buffers=["transformer.h.{layer}.attn.bias", "transformer.h.{layer}.attn.masked_bias"],
    formats={"safetensors": ("safetensors", "hf"), "pytorch": ("pytorch", "hf"), "megatron": ("megatron", "megatron"),
             "keras-h5": ("keras_h5", "keras_h5"), "keras": ("keras", "keras")},
    config_files={"hf": "config.json", "megatron": "megatron_args.json", "tf1": "config.json", "keras": "config.json"},
    config_to_hf=config_to_hf,
    config_from_hf=config_from_hf,
    required_config=("n_head",),
    constraints=("n_embd % n_head == 0", "bos_token_id < vocab_size", "eos_token_id < vocab_size"),
    constraint_hints=dict.fromkeys(("bos_token_id < vocab_size", "eos_token_id < vocab_size"), OUTSIDE_VOCABULARY),
    tokenizer="cpm",
    positions=PositionTable("transformer.wpe.weight", "n_positions", aliases=("n_ctx",)),
    defaults={"megatron": CPM_DEFAULTS, "tf1": CPM_DEFAULTS, "keras": keras.GPT2_DEFAULTS},
    ranks=2,
    keras=KERAS,
)
