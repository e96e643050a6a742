"""Tiny checkpoints made on the spot by the original frameworks: TF1 checkpoints saved by TensorFlow under
Google's variable names, Hugging Face folders saved by transformers. Nothing is downloaded."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KERAS_BACKEND", "torch")  # one Keras backend for KerasHub, whichever test imports first

import numpy as np
import pytest

TINY_BERT = {
    "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 32,
    "initializer_range": 0.02, "intermediate_size": 37, "max_position_embeddings": 64, "num_attention_heads": 4,
    "num_hidden_layers": 2, "type_vocab_size": 2, "vocab_size": 99,
}
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def vocabulary(size: int) -> list[str]:
    words = ["the", "a", "model", "port", "##s", "##ing", "中", "文", "hello", "world"]
    return (SPECIALS + words + [f"w{i}" for i in range(size)])[:size]


def google_bert_tensors(config: dict, seed: int = 0, heads: bool = True) -> dict[str, np.ndarray]:
    """Random tensors with Google BERT's TF1 names and shapes (kernels [in, out])."""
    rng = np.random.default_rng(seed)
    h, ff, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]

    def normal(*shape, scale=0.2):
        return rng.normal(0, scale, size=shape).astype(np.float32)

    t = {
        "bert/embeddings/word_embeddings": normal(v, h),
        "bert/embeddings/position_embeddings": normal(config["max_position_embeddings"], h),
        "bert/embeddings/token_type_embeddings": normal(config["type_vocab_size"], h),
    }

    def dense(name, n_in, n_out):
        t[f"{name}/kernel"] = normal(n_in, n_out)
        t[f"{name}/bias"] = normal(n_out)

    def norm(name):
        t[f"{name}/gamma"] = 1 + normal(h, scale=0.1)
        t[f"{name}/beta"] = normal(h, scale=0.1)

    norm("bert/embeddings/LayerNorm")
    for i in range(config["num_hidden_layers"]):
        p = f"bert/encoder/layer_{i}"
        for n in ("query", "key", "value"):
            dense(f"{p}/attention/self/{n}", h, h)
        dense(f"{p}/attention/output/dense", h, h)
        norm(f"{p}/attention/output/LayerNorm")
        dense(f"{p}/intermediate/dense", h, ff)
        dense(f"{p}/output/dense", ff, h)
        norm(f"{p}/output/LayerNorm")
    dense("bert/pooler/dense", h, h)
    if heads:
        dense("cls/predictions/transform/dense", h, h)
        norm("cls/predictions/transform/LayerNorm")
        t["cls/predictions/output_bias"] = normal(v)
        t["cls/seq_relationship/output_weights"] = normal(2, h)
        t["cls/seq_relationship/output_bias"] = normal(2)
    return t


def tf_save(prefix: Path, tensors: dict[str, np.ndarray]) -> None:
    """Save with TensorFlow's own SaveV2 op (what tf.compat.v1.train.Saver runs)."""
    import tensorflow as tf

    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])


def tf_load(prefix: Path) -> dict[str, np.ndarray]:
    """Every tensor of a TF1 checkpoint as TensorFlow reads it."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def with_optimizer_state(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    state = dict(tensors)
    for name, value in tensors.items():
        state[f"{name}/adam_m"] = np.zeros_like(value)
        state[f"{name}/adam_v"] = np.ones_like(value)
    state["global_step"] = np.array(1000, dtype=np.int64)
    return state


def make_tf1_bert(folder: Path, config: dict = TINY_BERT, *, seed: int = 0, optimizer: bool = True,
                  vocab: bool = True, heads: bool = True) -> Path:
    """A Google-release-shaped folder: bert_model.ckpt.*, bert_config.json, vocab.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = google_bert_tensors(config, seed, heads)
    tf_save(folder / "bert_model.ckpt", with_optimizer_state(tensors) if optimizer else tensors)
    (folder / "bert_config.json").write_text(json.dumps(config, indent=2))
    if vocab:
        (folder / "vocab.txt").write_text("\n".join(vocabulary(config["vocab_size"])) + "\n")
    return folder


def hf_bert_config(hidden_act: str = "gelu_new"):
    from transformers import BertConfig

    return BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=37, max_position_embeddings=64, hidden_act=hidden_act, initializer_range=0.2)


def make_hf_bert(folder: Path, model_class: str = "BertForPreTraining", hidden_act: str = "gelu_new",
                 seed: int = 0, **save_options) -> Path:
    """A transformers model with random weights, saved by save_pretrained, with its tokenizer."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = getattr(transformers, model_class)(hf_bert_config(hidden_act)).eval()
    with torch.no_grad():  # LayerNorms start at 1/0; move them so a swapped gamma/beta shows
        for name, param in model.named_parameters():
            if "LayerNorm" in name or name.endswith("predictions.bias"):
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(folder, **save_options)
    (folder / "vocab.txt").write_text("\n".join(vocabulary(99)) + "\n")
    transformers.BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    return folder


def assert_one_line_error(result, *fragments: str) -> None:
    """A CLI run that failed the way users should see it: one `error:` line naming the fragments, no traceback."""
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def tf1_bert(tmp_path) -> Path:
    return make_tf1_bert(tmp_path / "google_bert")


@pytest.fixture
def hf_bert(tmp_path) -> Path:
    return make_hf_bert(tmp_path / "hf_bert")


def sample_batch(config: dict, length: int = 12, seed: int = 1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, config["vocab_size"], size=(2, length))
    segments = rng.integers(0, config["type_vocab_size"], size=(2, length))
    return ids, segments


def hf_outputs(folder: Path, ids, segments) -> dict[str, np.ndarray]:
    """transformers' forward on an HF folder loaded with the Auto classes, in float32, named like the
    reference's outputs."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

    config = AutoConfig.from_pretrained(folder)
    has_heads = config.architectures[0] != "BertModel"
    loader = AutoModelForPreTraining if has_heads else AutoModel
    model = loader.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(segments),
                    output_hidden_states=True)
    result = {"sequence_output": out.hidden_states[-1].numpy()}
    if has_heads:
        result["mlm_logits"] = out.prediction_logits.numpy()
        result["nsp_logits"] = out.seq_relationship_logits.numpy()
    else:
        result["pooled_output"] = out.pooler_output.numpy()
    return result
