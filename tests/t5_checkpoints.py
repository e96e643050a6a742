"""Tiny T5-family checkpoints made on the spot by the original tools: Mesh TensorFlow variable names (with
Adafactor slots and global_step) saved by TensorFlow's SaveV2, transformers models saved by save_pretrained,
and sentencepiece models trained by sentencepiece. Nothing is downloaded."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from conftest import tf_save

# Deliberately unlike the defaults: d_kv * num_heads != d_model, unequal stacks, 16 relative buckets.
SIZES = {"vocab_size": 384, "d_model": 16, "num_heads": 4, "d_kv": 8, "d_ff": 24, "num_layers": 2,
         "num_decoder_layers": 3, "relative_attention_num_buckets": 16}
PIECES = 200  # learned pieces of the tiny sentencepiece models
MESH_PREFIX = "model.ckpt-1000000"  # the releases' checkpoint name
GATED = ["gelu", "linear"]  # gin's DenseReluDense.activation for T5 v1.1 / mT5
LATIN = "abcdefghijklmnopqrstuvwxyz"
CHINESE = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可里后小么心多天而能好都"


def corpus_lines(seed: int = 0, count: int = 2000) -> list[str]:
    rng = np.random.default_rng(seed)
    words = ["".join(rng.choice(list(LATIN), rng.integers(2, 7))) for _ in range(80)]
    words += ["".join(rng.choice(list(CHINESE), rng.integers(1, 4))) for _ in range(80)]
    return [" ".join(rng.choice(words, 10)) for _ in range(count)]


def train_sentencepiece(path: Path, sentinels_inside: bool = False) -> Path:
    """A unigram model with <pad>=0, </s>=1, <unk>=2 as T5's. With `sentinels_inside` its last 100 pieces are
    <extra_id_99> ... <extra_id_0> (user-defined), as mT5's mc4.250000.100extra model holds its sentinels."""
    import sentencepiece
    from sentencepiece import sentencepiece_model_pb2

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_lines()), model_writer=model, vocab_size=PIECES, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, minloglevel=2)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    if sentinels_inside:
        for i in reversed(range(100)):
            proto.pieces.add(piece=f"<extra_id_{i}>", score=0.0, type=sentencepiece_model_pb2.ModelProto.SentencePiece.USER_DEFINED)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(proto.SerializeToString())
    return path


def mesh_t5_tensors(gated: bool, tied: bool, rms: bool = False, seed: int = 0, sizes: dict = SIZES) -> dict:
    """Random tensors under Mesh TF's names and layouts: kernels [in, out], bias [heads, buckets]."""
    rng = np.random.default_rng(seed)
    h, inner, ff = sizes["d_model"], sizes["num_heads"] * sizes["d_kv"], sizes["d_ff"]

    def normal(*shape, scale=0.2):
        return rng.normal(0, scale, size=shape).astype(np.float32)

    t = {"shared/embedding": normal(sizes["vocab_size"], h, scale=0.5)}
    norm_name = "rms_norm" if rms else "layer_norm"
    stacks = {"encoder": (sizes["num_layers"], ["SelfAttention", "DenseReluDense"]),
              "decoder": (sizes["num_decoder_layers"], ["SelfAttention", "EncDecAttention", "DenseReluDense"])}
    for stack, (layers, sublayers) in stacks.items():
        for block in range(layers):
            for index, kind in enumerate(sublayers):
                prefix = f"{stack}/block_{block:03d}/layer_{index:03d}"
                t[f"{prefix}/{norm_name}/scale"] = 1 + normal(h, scale=0.1)
                if kind == "DenseReluDense":
                    for name in (("wi_0", "wi_1") if gated else ("wi",)):
                        t[f"{prefix}/{kind}/{name}/kernel"] = normal(h, ff)
                    t[f"{prefix}/{kind}/wo/kernel"] = normal(ff, h)
                else:
                    for name in "qkv":
                        t[f"{prefix}/{kind}/{name}"] = normal(h, inner)
                    t[f"{prefix}/{kind}/o"] = normal(inner, h)
        t[f"{stack}/block_000/layer_000/SelfAttention/relative_attention_bias"] = normal(
            sizes["num_heads"], sizes["relative_attention_num_buckets"], scale=0.5)
        t[f"{stack}/rms_norm/scale" if rms else f"{stack}/final_layer_norm/scale"] = 1 + normal(h, scale=0.1)
    if not tied:
        t["decoder/logits/kernel"] = normal(h, sizes["vocab_size"])
    return t


def with_adafactor_state(tensors: dict) -> dict:
    """Adafactor's slots as Mesh TF saves them: factored row/column moments of matrices, full ones of vectors."""
    state = dict(tensors)
    for name, value in tensors.items():
        if value.ndim == 2:
            state[f"{name}_slot_vr"] = np.ones(value.shape[0], np.float32)
            state[f"{name}_slot_vc"] = np.ones(value.shape[1], np.float32)
        else:
            state[f"{name}_slot_v"] = np.ones_like(value)
    state["global_step"] = np.array(1000000, dtype=np.int64)
    return state


def gin_text(gated: bool, tied: bool, sizes: dict = SIZES) -> str:
    """An operative_config.gin as Mesh TF writes it (the bindings that matter, with its comments, imports,
    macros and continued lines)."""
    activation = "['gelu', 'linear']" if gated else "'relu'"
    return f"""import mesh_tensorflow.optimize
import mesh_tensorflow.transformer.transformer_layers
import t5.models.mesh_transformer

# Macros:
# ==============================================================================
d_ff = {sizes['d_ff']}
d_kv = {sizes['d_kv']}
d_model = {sizes['d_model']}
dropout_rate = 0.0
MIXTURE_NAME = 'mc4'
num_heads = {sizes['num_heads']}
num_layers = {sizes['num_layers']}

# Parameters for decoder/DenseReluDense:
# ==============================================================================
decoder/DenseReluDense.activation = {activation}
decoder/DenseReluDense.dropout_rate = %dropout_rate
decoder/DenseReluDense.hidden_size = %d_ff
encoder/DenseReluDense.activation = {activation}
encoder/DenseReluDense.hidden_size = %d_ff

# Parameters for decoder/LayerStack:
# ==============================================================================
decoder/LayerStack.sublayers_final = \\
    [@transformer.sublayer_legacy_final_rms_norm, @transformer.sublayer_dropout]

# Parameters for make_layer_stack:
# ==============================================================================
decoder/make_layer_stack.layers = \\
    [@mesh_tensorflow.transformer.transformer_layers.SelfAttention,
     @mesh_tensorflow.transformer.transformer_layers.EncDecAttention,
     @mesh_tensorflow.transformer.transformer_layers.DenseReluDense]
decoder/make_layer_stack.num_layers = {sizes['num_decoder_layers']}
encoder/make_layer_stack.num_layers = %num_layers
run.sequence_length = {{'inputs': 1024, 'targets': 256}}

# Parameters for SelfAttention:
# ==============================================================================
decoder/SelfAttention.key_value_size = %d_kv
decoder/SelfAttention.num_heads = %num_heads
decoder/SelfAttention.relative_attention_num_buckets = {sizes['relative_attention_num_buckets']}
encoder/SelfAttention.key_value_size = %d_kv
encoder/SelfAttention.num_heads = %num_heads
encoder/SelfAttention.relative_attention_num_buckets = {sizes['relative_attention_num_buckets']}
sublayer_rms_norm.epsilon = 1e-06

# Parameters for decoder/Unitransformer:
# ==============================================================================
decoder/Unitransformer.d_model = %d_model
decoder/Unitransformer.shared_embedding_and_softmax_weights = {tied}
"""


def make_mesh_t5(folder: Path, *, gated: bool = True, tied: bool = False, rms: bool = False, gin: bool = True,
                 vocabulary: bool = True, seed: int = 0, tensors: dict | None = None) -> Path:
    """A release-shaped folder: model.ckpt-1000000.*, operative_config.gin, sentencepiece.model (mT5-like
    with the sentinels inside for the gated models, T5-like with 100 extra ids for the plain ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = tensors if tensors is not None else mesh_t5_tensors(gated, tied, rms, seed)
    tf_save(folder / MESH_PREFIX, with_adafactor_state(tensors))
    if gin:
        (folder / "operative_config.gin").write_text(gin_text(gated, tied))
    if vocabulary:
        train_sentencepiece(folder / "sentencepiece.model", sentinels_inside=gated)
    return folder


def mesh_reference_config(gated: bool) -> dict:
    return {"num_heads": SIZES["num_heads"], "activation": GATED if gated else "relu"}


def make_hf_t5(folder: Path, model_type: str = "mt5", *, gated: bool = True, tied: bool = False,
               seed: int = 0, **sizes) -> Path:
    """A transformers model with random weights saved by save_pretrained, with the spiece.model and
    tokenizer_config.json Hub repositories carry; `sizes` override SIZES."""
    import torch
    import transformers

    torch.manual_seed(seed)
    fields = dict(SIZES, **sizes, feed_forward_proj="gated-gelu" if gated else "relu", tie_word_embeddings=tied)
    config_class, model_class = (("MT5Config", "MT5ForConditionalGeneration") if model_type == "mt5"
                                 else ("T5Config", "T5ForConditionalGeneration"))
    model = getattr(transformers, model_class)(getattr(transformers, config_class)(**fields)).eval()
    with torch.no_grad():  # norms start at 1 and the bias small: move them so that mistakes show
        for name, param in model.named_parameters():
            if "layer_norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
            elif "relative_attention_bias" in name:
                param.normal_(0, 0.5)
    if not tied:  # transformers 5 builds the head tied; an untied model owns its own
        model.lm_head.weight = torch.nn.Parameter(torch.randn(SIZES["vocab_size"], SIZES["d_model"]) * 0.2)
    model.save_pretrained(folder)
    train_sentencepiece(folder / "spiece.model", sentinels_inside=gated)
    settings = {"tokenizer_class": "T5Tokenizer", "extra_ids": 0 if gated else 100, "eos_token": "</s>",
                "unk_token": "<unk>", "pad_token": "<pad>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    return folder


def sample_ids(seed: int = 1, length: int = 12, rows: int = SIZES["vocab_size"]):
    """Encoder and decoder ids (teacher forcing), shorter than 16 so that no relative distance lands on a
    float32 bucket boundary."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, rows, size=(2, length)), rng.integers(0, rows, size=(2, length - 3))


def hf_t5_outputs(folder: Path, ids, decoder_ids) -> dict[str, np.ndarray]:
    """transformers' forward (Auto classes, float32), named like the reference's outputs."""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), decoder_input_ids=torch.from_numpy(decoder_ids))
    return {"encoder_last_hidden_state": out.encoder_last_hidden_state.numpy(), "logits": out.logits.numpy()}
