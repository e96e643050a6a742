"""Tiny ELECTRA checkpoints made by the original frameworks: Google's pretraining layout (discriminator and
generator in one file) saved by TensorFlow under its variable names with the hparams.json of
run_pretraining.py, and transformers folders saved by save_pretrained. Nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from albert_checkpoints import Tensors
from conftest import tf_save, vocabulary, with_optimizer_state

# run_pretraining.py --hparams: a discriminator of hidden 128 (2 heads = 128 // 64), embeddings of 32, and a
# generator of half its hidden size (64, 1 head), as Google's get_generator_config derives it.
TINY_HPARAMS = {"model_size": "small", "vocab_size": 99, "embedding_size": 32, "generator_hidden_size": 0.5,
                "model_hparam_overrides": {"hidden_size": 128, "num_hidden_layers": 2, "intermediate_size": 256,
                                           "max_position_embeddings": 64}}
# Each network's sizes as Google's code builds them from TINY_HPARAMS (for the references).
DISCRIMINATOR = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 256,
                 "embedding_size": 32, "vocab_size": 99, "max_position_embeddings": 64, "type_vocab_size": 2,
                 "hidden_act": "gelu"}
GENERATOR = {**DISCRIMINATOR, "hidden_size": 64, "num_attention_heads": 1, "intermediate_size": 256}


def _encoder(tensors: Tensors, scope: str, config: dict) -> None:
    h, ff, e = config["hidden_size"], config["intermediate_size"], config["embedding_size"]
    if e != h:
        tensors.dense(f"{scope}/embeddings_project", e, h)
    for i in range(config["num_hidden_layers"]):
        tensors.bert_layer(f"{scope}/encoder/layer_{i}", h, ff)


def google_electra_tensors(disc: dict = DISCRIMINATOR, gen: dict | None = GENERATOR, seed: int = 0,
                           heads: bool = True) -> dict[str, np.ndarray]:
    """Random tensors with Google ELECTRA's names: shared `electra/embeddings`, the discriminator under
    `electra/` and `discriminator_predictions/`, the generator under `generator/` and `generator_predictions/`."""
    tensors = Tensors(seed, scale=0.1)
    e, v = disc["embedding_size"], disc["vocab_size"]
    tensors.add("electra/embeddings/word_embeddings", v, e)
    tensors.add("electra/embeddings/position_embeddings", disc["max_position_embeddings"], e)
    tensors.add("electra/embeddings/token_type_embeddings", disc["type_vocab_size"], e)
    tensors.norm("electra/embeddings/LayerNorm", e)
    _encoder(tensors, "electra", disc)
    if heads:
        tensors.dense("discriminator_predictions/dense", disc["hidden_size"], disc["hidden_size"])
        tensors.dense("discriminator_predictions/dense_1", disc["hidden_size"], 1)
    if gen is not None:
        _encoder(tensors, "generator", gen)
        tensors.dense("generator_predictions/dense", gen["hidden_size"], e)
        tensors.norm("generator_predictions/LayerNorm", e)
        tensors.add("generator_predictions/output_bias", v)
    return tensors.t


def make_tf1_electra(folder: Path, *, hparams: dict | None = TINY_HPARAMS, disc: dict = DISCRIMINATOR,
                     gen: dict | None = GENERATOR, seed: int = 0, heads: bool = True) -> Path:
    """A Google-shaped folder: model.ckpt.* (with optimizer state, global_step and the generator's sampling
    temperature), vocab.txt, and the hparams.json the run used (releases ship none: hparams=None)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = with_optimizer_state(google_electra_tensors(disc, gen, seed, heads))
    state["temperature"] = np.array(1.0, dtype=np.float32)
    tf_save(folder / "model.ckpt", state)
    if hparams is not None:
        (folder / "hparams.json").write_text(json.dumps(hparams, indent=2))
    (folder / "vocab.txt").write_text("\n".join(vocabulary(disc["vocab_size"])) + "\n")
    return folder


def hf_electra_configs():
    from transformers import ElectraConfig

    common = dict(vocab_size=99, embedding_size=32, num_hidden_layers=2, max_position_embeddings=64,
                  initializer_range=0.1)
    return (ElectraConfig(hidden_size=128, num_attention_heads=2, intermediate_size=256, **common),
            ElectraConfig(hidden_size=64, num_attention_heads=1, intermediate_size=256, **common))


def make_hf_electra(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A transformers discriminator (ElectraForPreTraining) and generator (ElectraForMaskedLM) with random
    weights and the same embeddings (as Google's tied pretraining leaves them), each saved by
    save_pretrained with a BertTokenizer."""
    import torch
    import transformers

    torch.manual_seed(seed)
    disc_config, gen_config = hf_electra_configs()
    disc = transformers.ElectraForPreTraining(disc_config).eval()
    gen = transformers.ElectraForMaskedLM(gen_config).eval()
    with torch.no_grad():
        for model in (disc, gen):
            for name, param in model.named_parameters():
                if "LayerNorm" in name or name.endswith("generator_lm_head.bias"):
                    param.add_(torch.randn_like(param) * 0.1)
        for name, param in gen.electra.embeddings.named_parameters():
            param.copy_(dict(disc.electra.embeddings.named_parameters())[name])
    folders = folder / "discriminator", folder / "generator"
    for model, path in zip((disc, gen), folders):
        model.save_pretrained(path)
        (path / "vocab.txt").write_text("\n".join(vocabulary(99)) + "\n")
        transformers.BertTokenizer(str(path / "vocab.txt"), do_lower_case=True).save_pretrained(path)
    return folders


def hf_electra_outputs(folder: Path, ids, segments) -> dict[str, np.ndarray]:
    """transformers' forward on an ELECTRA folder, with the class its config.json names (float32)."""
    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(folder)
    name = config.architectures[0]
    model = getattr(transformers, name).from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(segments),
                    output_hidden_states=True)
    result = {"sequence_output": out.hidden_states[-1].numpy()}
    if name == "ElectraForPreTraining":
        result["discriminator_logits"] = out.logits.numpy()
    elif name == "ElectraForMaskedLM":
        result["mlm_logits"] = out.logits.numpy()
    return result
