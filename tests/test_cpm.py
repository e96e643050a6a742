"""CPM-LM end to end: Megatron model-parallel rank files (saved by torch.save in the release layout, each rank's
parts cut from a random global model exactly as Megatron partitions it) <-> transformers GPT2LMHeadModel.
Parity is checked against a numpy model-parallel forward on the per-rank tensors, never merged ones."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

import modelport
from reference import megatron_gpt2

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

TINY_CPM = {"n_embd": 32, "n_head": 4, "n_layer": 2, "n_positions": 64, "vocab_size": 96}
HEADS = {"n_head": TINY_CPM["n_head"]}  # what shapes cannot tell (CPM's default is 32)
ATOL = 1e-5
ITERATION = 1000


def global_cpm(config: dict = TINY_CPM, seed: int = 0) -> dict[str, np.ndarray]:
    """A whole (unpartitioned) Megatron GPT-2 in float32 under its `module` names: Megatron's master weights,
    query_key_value = [Q; K; V]."""
    rng = np.random.default_rng(seed)
    h, v, p = config["n_embd"], config["vocab_size"], config["n_positions"]

    def normal(*shape, scale=0.2):
        return rng.normal(0, scale, size=shape).astype(np.float32)

    t = {"word_embeddings.weight": normal(v, h), "position_embeddings.weight": normal(p, h)}

    def norm(name):
        t[f"{name}.weight"] = 1 + normal(h, scale=0.1)
        t[f"{name}.bias"] = normal(h, scale=0.1)

    for i in range(config["n_layer"]):
        layer = f"transformer.layers.{i}"
        norm(f"{layer}.input_layernorm")
        t[f"{layer}.attention.query_key_value.weight"] = normal(3 * h, h)
        t[f"{layer}.attention.query_key_value.bias"] = normal(3 * h)
        t[f"{layer}.attention.dense.weight"] = normal(h, h)
        t[f"{layer}.attention.dense.bias"] = normal(h)
        norm(f"{layer}.post_attention_layernorm")
        t[f"{layer}.mlp.dense_h_to_4h.weight"] = normal(4 * h, h)
        t[f"{layer}.mlp.dense_h_to_4h.bias"] = normal(4 * h)
        t[f"{layer}.mlp.dense_4h_to_h.weight"] = normal(h, 4 * h)
        t[f"{layer}.mlp.dense_4h_to_h.bias"] = normal(h)
    norm("transformer.final_layernorm")
    return t


def partition(whole: dict[str, np.ndarray], ranks: int) -> list[dict[str, np.ndarray]]:
    """Each rank's tensors as Megatron's mpu layers hold them."""
    parts = [{} for _ in range(ranks)]
    for name, value in whole.items():
        if name == "word_embeddings.weight" or "dense_h_to_4h" in name:  # vocab-/column-parallel: rows
            pieces = np.split(value, ranks, axis=0)
        elif "query_key_value" in name:  # ColumnParallelLinear(stride=3): rank r gets chunks r, r+R, r+2R
            chunks = np.split(value, 3 * ranks, axis=0)
            pieces = [np.concatenate(chunks[r::ranks], axis=0) for r in range(ranks)]
        elif name.endswith(("attention.dense.weight", "dense_4h_to_h.weight")):  # row-parallel: columns
            pieces = np.split(value, ranks, axis=1)
        else:  # layer norms, position embeddings, row-parallel biases
            pieces = [value] * ranks
        for part, piece in zip(parts, pieces):
            part[name] = np.ascontiguousarray(piece)
    return parts


def save_megatron(folder: Path, parts: list[dict[str, np.ndarray]], *, dtype=np.float16, zipped: bool = True,
                  iteration: int | None = ITERATION, extras: dict | None = None) -> Path:
    """The release layout: folder/latest_checkpointed_iteration.txt, folder/<iteration>/mp_rank_RR_model_states.pt."""
    tag = str(iteration if iteration is not None else "release")
    (folder / tag).mkdir(parents=True, exist_ok=True)
    (folder / "latest_checkpointed_iteration.txt").write_text(tag)
    for rank, tensors in enumerate(parts):
        module = OrderedDict((name, torch.from_numpy(value.astype(dtype)).clone()) for name, value in tensors.items())
        state = {"module": module, **({"iteration": iteration} if iteration is not None else {}), **(extras or {})}
        torch.save(state, folder / tag / f"mp_rank_{rank:02d}_model_states.pt", _use_new_zipfile_serialization=zipped)
    return folder


def make_megatron(folder: Path, ranks: int = 2, *, seed: int = 0, dtype=np.float16, zipped: bool = True,
                  **options) -> tuple[Path, list[dict[str, np.ndarray]]]:
    """A tiny CPM in the release layout and each rank's tensors (in the checkpoint's dtype)."""
    parts = partition(global_cpm(seed=seed), ranks)
    save_megatron(folder, parts, dtype=dtype, zipped=zipped, **options)
    return folder, [{name: value.astype(dtype) for name, value in part.items()} for part in parts]


def load_ranks(folder: Path) -> list[dict]:
    """Every rank file of a Megatron folder as torch.load reads it."""
    tag = (folder / "latest_checkpointed_iteration.txt").read_text().strip()
    files = sorted((folder / tag).glob("mp_rank_*_model_states.pt"))
    return [torch.load(file, map_location="cpu", weights_only=True) for file in files]


def sample_ids(length: int = 12, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, TINY_CPM["vocab_size"], size=(2, length))


def hf_logits(folder: Path, ids: np.ndarray) -> np.ndarray:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids)).logits.numpy()


def reference_logits(parts: list[dict[str, np.ndarray]], ids: np.ndarray) -> np.ndarray:
    return megatron_gpt2(parts, {**TINY_CPM, "layer_norm_epsilon": 1e-5}, ids)


def safetensors_tensors(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def assert_same_ranks(actual: list[dict], expected: list[dict]) -> None:
    assert len(actual) == len(expected)
    for back, original in zip(actual, expected):
        back, original = back["module"], original["module"]
        assert sorted(back) == sorted(original)
        for name, value in original.items():
            assert back[name].dtype == value.dtype and back[name].shape == value.shape, name
            assert back[name].numpy().tobytes() == value.numpy().tobytes(), name


# ------------------------------------------------------------------------------------------- Megatron -> HF


@pytest.mark.parametrize("ranks, dtype, zipped", [
    (1, np.float32, True), (2, np.float16, True), (2, np.float32, False), (4, np.float32, True), (4, np.float16, False),
])
def test_megatron_to_transformers_matches_model_parallel_reference(tmp_path, ranks, dtype, zipped):
    source, parts = make_megatron(tmp_path / "cpm", ranks, dtype=dtype, zipped=zipped)
    out = tmp_path / "hf"
    report = modelport.convert("cpm", source, "safetensors", out, config=HEADS)
    assert report.model_class == "GPT2LMHeadModel"
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["GPT2LMHeadModel"] and config["model_type"] == "gpt2"
    assert {k: config[k] for k in TINY_CPM} == TINY_CPM and config["n_inner"] == 4 * TINY_CPM["n_embd"]
    assert config["activation_function"] == "gelu_new" and config["layer_norm_epsilon"] == 1e-5
    assert config["bos_token_id"] == config["eos_token_id"] == 7
    assert config["dtype"] == ("float16" if dtype == np.float16 else "float32")
    assert "lm_head.weight" not in safetensors_tensors(out)  # tied to transformer.wte.weight
    ids = sample_ids()
    np.testing.assert_allclose(hf_logits(out, ids), reference_logits(parts, ids), atol=ATOL, rtol=0)


def test_concatenating_the_fused_qkv_blocks_fails_the_reference(tmp_path):
    """The parity test can fail: [q0;k0;v0;q1;k1;v1] loads without error and computes something else."""
    from safetensors.numpy import save_file

    source, parts = make_megatron(tmp_path / "cpm", 2, dtype=np.float32)
    out = tmp_path / "hf"
    modelport.convert("cpm", source, "safetensors", out, config=HEADS)
    tensors = safetensors_tensors(out)
    for i in range(TINY_CPM["n_layer"]):
        for kind in ("weight", "bias"):
            blocks = [part[f"transformer.layers.{i}.attention.query_key_value.{kind}"] for part in parts]
            tensors[f"transformer.h.{i}.attn.c_attn.{kind}"] = np.ascontiguousarray(np.concatenate(blocks, 0).T)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    ids = sample_ids()
    assert np.abs(hf_logits(out, ids) - reference_logits(parts, ids)).max() > 1000 * ATOL


def test_release_defaults_and_sources(tmp_path):
    """Without --config the release's 32 heads are assumed (and said); SRC may be the iteration folder or a rank
    file."""
    source, _ = make_megatron(tmp_path / "cpm", 2, dtype=np.float32)
    wide = {**TINY_CPM, "n_embd": 64}
    parts = partition(global_cpm(wide), 2)
    save_megatron(tmp_path / "wide", parts)
    report = modelport.convert("cpm", tmp_path / "wide", "safetensors", tmp_path / "out")
    assert any("assumed n_head=32" in note for note in report.notes)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["n_head"] == 32
    for src in (source / str(ITERATION), source / str(ITERATION) / "mp_rank_01_model_states.pt"):
        out = tmp_path / f"from-{src.name}"
        modelport.convert("cpm", src, "safetensors", out, config=HEADS)
        assert safetensors_tensors(out).keys() == safetensors_tensors(tmp_path / "out").keys()


def test_dtype_and_shards(tmp_path):
    source, parts = make_megatron(tmp_path / "cpm", 2)
    modelport.convert("cpm", source, "safetensors", tmp_path / "fp32", config=HEADS, dtype="float32",
                      max_shard_size="20KB")
    index = json.loads((tmp_path / "fp32" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    assert json.loads((tmp_path / "fp32" / "config.json").read_text())["dtype"] == "float32"
    assert all(v.dtype == np.float32 for v in safetensors_tensors(tmp_path / "fp32").values())
    ids = sample_ids()
    np.testing.assert_allclose(hf_logits(tmp_path / "fp32", ids), reference_logits(parts, ids), atol=ATOL, rtol=0)


def test_verify_and_inspect(tmp_path):
    source, _ = make_megatron(tmp_path / "cpm", 2, dtype=np.float32)
    modelport.convert("cpm", source, "safetensors", tmp_path / "hf", config=HEADS)
    (source / "megatron_args.json").write_text(json.dumps({"num_attention_heads": 4}))
    report = modelport.verify(source, tmp_path / "hf")
    assert report.ok and all(row["result"] == "bit-exact" for row in report.rows)
    assert {row["output"] for row in report.forward} >= {"logits"}
    result = modelport.inspect(source)
    assert result["format"] == "megatron" and result["arch"] == "cpm" and result["layout"] == "megatron"
    actions = {t["name"]: t["action"] for t in result["tensors"]}
    assert actions["mp_rank_01/transformer.layers.1.attention.query_key_value.weight"] == \
        "-> transformer.h.1.attn.c_attn.weight"
    assert "mp_rank_00/iteration" in result["not_weights"]
    assert result["dtypes"] == {"float32": result["parameters"]}  # replicated tensors count once


# ------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("ranks", [2, 4])
def test_megatron_hf_megatron_is_bit_exact(tmp_path, ranks):
    source, _ = make_megatron(tmp_path / "cpm", ranks)
    modelport.convert("cpm", source, "safetensors", tmp_path / "hf", config=HEADS)
    report = modelport.convert("cpm", tmp_path / "hf", "megatron", tmp_path / "back", ranks=ranks)
    assert (tmp_path / "back" / "latest_checkpointed_iteration.txt").read_text() == "release"
    assert {"latest_checkpointed_iteration.txt", "megatron_args.json"} <= set(report.files)
    back = load_ranks(tmp_path / "back")
    assert_same_ranks(back, load_ranks(source))
    assert all(rank["mp_world_size"] == ranks for rank in back)
    args = json.loads((tmp_path / "back" / "megatron_args.json").read_text())
    assert args == {"num_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "max_position_embeddings": 64,
                    "vocab_size": 96, "layernorm_epsilon": 1e-5}


def test_repartition_two_ranks_to_four(tmp_path):
    source, _ = make_megatron(tmp_path / "cpm", 2, dtype=np.float32)
    modelport.convert("cpm", source, "megatron", tmp_path / "four", config=HEADS, ranks=4)
    four = [{name: t.numpy() for name, t in rank["module"].items()} for rank in load_ranks(tmp_path / "four")]
    assert len(four) == 4
    expected = partition(global_cpm(), 4)
    for got, want in zip(four, expected):
        assert all(got[name].tobytes() == want[name].tobytes() for name in want)
    modelport.convert("cpm", tmp_path / "four", "megatron", tmp_path / "still-four", config=HEADS)  # keeps R
    assert_same_ranks(load_ranks(tmp_path / "still-four"), load_ranks(tmp_path / "four"))


def make_hf_cpm(folder: Path, seed: int = 0, **sizes) -> Path:
    """A GPT2LMHeadModel shaped like CPM, with random weights, saved by transformers; `sizes` override config
    fields."""
    import transformers

    torch.manual_seed(seed)
    config = transformers.GPT2Config(**{"activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
                                        "bos_token_id": 7, "eos_token_id": 7, **TINY_CPM, **sizes})
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # move the LayerNorms and biases off 1/0 so that a swap shows
        for name, param in model.named_parameters():
            if param.dim() == 1:
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(folder)
    return folder


def test_hf_megatron_hf_is_bit_exact_and_computes_the_same(tmp_path):
    source = make_hf_cpm(tmp_path / "hf")
    modelport.convert("cpm", source, "megatron", tmp_path / "megatron", ranks=2)
    ranks = load_ranks(tmp_path / "megatron")
    ids = sample_ids()
    parts = [{name: t.numpy() for name, t in rank["module"].items()} for rank in ranks]
    np.testing.assert_allclose(reference_logits(parts, ids), hf_logits(source, ids), atol=ATOL, rtol=0)
    modelport.convert("cpm", tmp_path / "megatron", "safetensors", tmp_path / "back")
    original, back = safetensors_tensors(source), safetensors_tensors(tmp_path / "back")
    assert sorted(back) == sorted(original)
    for name, value in original.items():
        assert back[name].dtype == value.dtype and back[name].tobytes() == value.tobytes(), name
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["n_head"] == 4 and config["eos_token_id"] == 7  # through megatron_args.json


def test_lone_deepspeed_rank_file_of_a_hf_model_is_plain_pytorch(tmp_path):
    """DeepSpeed names any model's weights mp_rank_00_model_states.pt: without Megatron's tracker it is no partition."""
    import transformers

    source = make_hf_cpm(tmp_path / "hf")
    state = transformers.GPT2LMHeadModel.from_pretrained(source).state_dict()
    (tmp_path / "run" / "global_step5").mkdir(parents=True)
    (tmp_path / "run" / "latest").write_text("global_step5")
    rank_file = tmp_path / "run" / "global_step5" / "mp_rank_00_model_states.pt"
    torch.save({"module": state, "global_steps": 5}, rank_file)
    config = json.loads((source / "config.json").read_text())
    modelport.convert("cpm", rank_file, "safetensors", tmp_path / "out", config=config)
    assert modelport.inspect(rank_file)["format"] == "pytorch"
    original, back = safetensors_tensors(source), safetensors_tensors(tmp_path / "out")
    assert all(back[name].tobytes() == value.tobytes() for name, value in original.items())


def test_hf_with_other_activation_is_refused_for_megatron(tmp_path):
    source = make_hf_cpm(tmp_path / "hf")
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "activation_function": "relu"}))
    with pytest.raises(modelport.ModelportError, match="activation_function 'relu'"):
        modelport.convert("cpm", source, "megatron", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_hub_copys_token_ids_are_refused_with_the_way_out(tmp_path):
    """The Hub copy of CPM-Generate declares GPT-2's bos/eos 50256, outside CPM's vocabulary: an error saying
    which ids to pass instead, and the conversion goes through with them."""
    source = make_hf_cpm(tmp_path / "hf")
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "bos_token_id": 50256, "eos_token_id": 50256}))
    with pytest.raises(modelport.ModelportError, match=r"bos_token_id < vocab_size \(bos_token_id=50256, .*"
                       r"pass --config FILE holding \{\"bos_token_id\": 7, \"eos_token_id\": 7\}"):
        modelport.convert("cpm", source, "megatron", tmp_path / "out")
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps({"bos_token_id": 7, "eos_token_id": 7}))
    modelport.convert("cpm", source, "megatron", tmp_path / "out", config=fixed)


# ------------------------------------------------------------------------------------------- tokenizer


CORPUS = ["我们在北京工作。", "今天天气很好，我想去公园。", "中国的发展很快。", "你好 世界",
          "他说：我爱学习。", "第一行\n第二行", "人工智能 改变 世界"]


def train_cpm_sentencepiece(path: Path) -> Path:
    """A tiny sentencepiece model laid out like CPM's chinese_vocab.model: <unk> <s> </s> ▃ <sep> <pad> <mask>
    <eod> first (so <eod> is 7)."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([line.replace(" ", "\u2582").replace("\n", "\u2583") for line in CORPUS] * 20),
        model_writer=model, vocab_size=70, model_type="unigram", character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, user_defined_symbols=["\u2583", "<sep>", "<pad>", "<mask>", "<eod>", "\u2582"],
        minloglevel=2, hard_vocab_limit=False)
    path.write_bytes(model.getvalue())
    return path


def cpm_generate_encode(model_file: Path, text: str) -> list[int]:
    """CPM-Generate's own tokenizer: jieba, then ' ' -> U+2582 and '\\n' -> U+2583, then sentencepiece."""
    import jieba
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    words = [word.translate(str.maketrans(" \n", "\u2582\u2583")) for word in jieba.cut(text, cut_all=False)]
    return processor.encode(" ".join(words))


def test_tokenizer_travels_and_matches_cpm_generate(tmp_path):
    from transformers import AutoTokenizer

    source, _ = make_megatron(tmp_path / "cpm", 2)
    model_file = train_cpm_sentencepiece(source / "chinese_vocab.model")
    out = tmp_path / "hf"
    report = modelport.convert("cpm", source, "safetensors", out, config=HEADS)
    assert {"spiece.model", "tokenization_cpm_jieba.py", "tokenizer_config.json"} <= set(report.files)
    tokenizer = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    text = "我们在北京工作。\n今天 天气很好  我想去公园。"  # (sentencepiece's NFKC turns a full-width comma into ',')
    ids = tokenizer(text)["input_ids"]
    assert ids == cpm_generate_encode(model_file, text)
    assert tokenizer.convert_tokens_to_ids("\u2582") in ids and tokenizer.convert_tokens_to_ids("\u2583") in ids
    assert tokenizer.decode(ids) == text
    assert tokenizer.eos_token == "<eod>" and tokenizer.eos_token_id == 7
    modelport.convert("cpm", out, "megatron", tmp_path / "back")  # and back beside the rank files
    assert (tmp_path / "back" / "chinese_vocab.model").read_bytes() == model_file.read_bytes()


def test_tokenizer_given_with_option_and_missing(tmp_path):
    source, _ = make_megatron(tmp_path / "cpm", 2)
    report = modelport.convert("cpm", source, "safetensors", tmp_path / "bare", config=HEADS)
    assert any("--tokenizer" in note for note in report.notes)
    model_file = train_cpm_sentencepiece(tmp_path / "chinese_vocab.model")
    modelport.convert("cpm", source, "safetensors", tmp_path / "with", config=HEADS, tokenizer=model_file)
    assert (tmp_path / "with" / "spiece.model").read_bytes() == model_file.read_bytes()


# ------------------------------------------------------------------------------------------- bert4keras


def test_bert4keras_tf1_port_converts_to_the_same_model(tmp_path):
    """bert4keras's TF1 port (separate q, k, v kernels [in, out]) gives the tensors the Megatron release gives."""
    pytest.importorskip("tensorflow")
    from conftest import tf_save

    whole = global_cpm()
    t = {"gpt/embeddings/word_embeddings": whole["word_embeddings.weight"],
         "gpt/embeddings/position_embeddings": whole["position_embeddings.weight"],
         "gpt/output/LayerNorm/gamma": whole["transformer.final_layernorm.weight"],
         "gpt/output/LayerNorm/beta": whole["transformer.final_layernorm.bias"]}
    for i in range(TINY_CPM["n_layer"]):
        m, b = f"transformer.layers.{i}", f"gpt/transformer/layer_{i}"
        for part, kernel, bias in zip(("query", "key", "value"),
                                      np.split(whole[f"{m}.attention.query_key_value.weight"], 3, axis=0),
                                      np.split(whole[f"{m}.attention.query_key_value.bias"], 3)):
            t[f"{b}/attention/self/{part}/kernel"], t[f"{b}/attention/self/{part}/bias"] = kernel.T, bias
        for tf_name, megatron in (("attention/output/dense", "attention.dense"),
                                  ("intermediate/dense", "mlp.dense_h_to_4h"), ("output/dense", "mlp.dense_4h_to_h")):
            t[f"{b}/{tf_name}/kernel"] = whole[f"{m}.{megatron}.weight"].T  # torch [out, in] -> Keras [in, out]
            t[f"{b}/{tf_name}/bias"] = whole[f"{m}.{megatron}.bias"]
        for tf_name, megatron in (("attention/input/LayerNorm", "input_layernorm"),
                                  ("input/LayerNorm", "post_attention_layernorm")):
            t[f"{b}/{tf_name}/gamma"] = whole[f"{m}.{megatron}.weight"]
            t[f"{b}/{tf_name}/beta"] = whole[f"{m}.{megatron}.bias"]
    (tmp_path / "tf").mkdir()
    tf_save(tmp_path / "tf" / "model.ckpt", {k: np.ascontiguousarray(v) for k, v in t.items()})
    (tmp_path / "tf" / "config.json").write_text(json.dumps({"num_attention_heads": 4, "hidden_act": "gelu"}))
    modelport.convert("cpm", tmp_path / "tf", "safetensors", tmp_path / "from-tf")
    save_megatron(tmp_path / "cpm", partition(whole, 2), dtype=np.float32)
    modelport.convert("cpm", tmp_path / "cpm", "safetensors", tmp_path / "from-megatron", config=HEADS)
    from_tf, from_megatron = safetensors_tensors(tmp_path / "from-tf"), safetensors_tensors(tmp_path / "from-megatron")
    assert sorted(from_tf) == sorted(from_megatron)
    assert all(from_tf[name].tobytes() == from_megatron[name].tobytes() for name in from_tf)
    ids = sample_ids()
    np.testing.assert_allclose(hf_logits(tmp_path / "from-tf", ids), reference_logits(partition(whole, 2), ids),
                               atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------- bad input


def test_missing_rank_file(tmp_path):
    source, _ = make_megatron(tmp_path / "cpm", 4)
    (source / str(ITERATION) / "mp_rank_02_model_states.pt").unlink()
    with pytest.raises(modelport.ModelportError, match=r"mp_rank_02_model_states\.pt: missing"):
        modelport.convert("cpm", source, "safetensors", tmp_path / "out", config=HEADS)


def test_missing_last_rank_is_caught_by_the_world_size(tmp_path):
    source, _ = make_megatron(tmp_path / "cpm", 2, extras={"mp_world_size": 2})
    (source / str(ITERATION) / "mp_rank_01_model_states.pt").unlink()
    with pytest.raises(modelport.ModelportError, match=r"mp_rank_00_model_states\.pt: saved by 2 model-parallel ranks"):
        modelport.convert("cpm", source, "safetensors", tmp_path / "out", config=HEADS)


def test_ranks_from_different_iterations(tmp_path):
    source, _ = make_megatron(tmp_path / "cpm", 2)
    make_megatron(tmp_path / "later", 2, seed=1, iteration=2000)
    later = tmp_path / "later" / "2000" / "mp_rank_01_model_states.pt"
    later.replace(source / str(ITERATION) / "mp_rank_01_model_states.pt")
    with pytest.raises(modelport.ModelportError, match=r"mp_rank_01_model_states\.pt: iteration 2000, but 1000"):
        modelport.convert("cpm", source, "safetensors", tmp_path / "out", config=HEADS)


def test_replicated_tensors_that_differ_are_an_error(tmp_path):
    """Without step counters, rank files of different checkpoints show in their replicated tensors."""
    parts = partition(global_cpm(), 2)
    parts[1]["transformer.layers.1.post_attention_layernorm.weight"] = parts[1][
        "transformer.layers.1.post_attention_layernorm.weight"] + 1
    save_megatron(tmp_path / "cpm", parts, iteration=None)
    with pytest.raises(modelport.ModelportError,
                       match=r"mp_rank_01/transformer.layers.1.post_attention_layernorm.weight differs from "
                             r"mp_rank_00/"):
        modelport.convert("cpm", tmp_path / "cpm", "safetensors", tmp_path / "out", config=HEADS)
    assert not (tmp_path / "out").exists()


def test_mismatched_shapes_between_ranks(tmp_path):
    parts = partition(global_cpm(), 2)
    parts[1]["transformer.layers.0.mlp.dense_4h_to_h.weight"] = parts[1][
        "transformer.layers.0.mlp.dense_4h_to_h.weight"][:, :-1].copy()
    save_megatron(tmp_path / "cpm", parts)
    with pytest.raises(modelport.ModelportError,
                       match=r"mp_rank_01_model_states\.pt: transformer.layers.0.mlp.dense_4h_to_h.weight is "
                             r"float16\[32, 63\], but float16\[32, 64\] in mp_rank_00_model_states\.pt"):
        modelport.convert("cpm", tmp_path / "cpm", "safetensors", tmp_path / "out", config=HEADS)


def test_ranks_that_do_not_divide_the_heads(tmp_path):
    source = make_hf_cpm(tmp_path / "hf")
    with pytest.raises(modelport.ModelportError, match="8 model-parallel ranks do not divide the 4 attention heads"):
        modelport.convert("cpm", source, "megatron", tmp_path / "out", ranks=8)
    odd = make_hf_cpm(tmp_path / "odd", vocab_size=95)
    with pytest.raises(modelport.ModelportError, match=r"--ranks 2 does not divide vocab_size \(95\)"):
        modelport.convert("cpm", odd, "megatron", tmp_path / "out", ranks=2)
    with pytest.raises(modelport.ModelportError, match="--to safetensors is not a model-parallel layout"):
        modelport.convert("cpm", source, "safetensors", tmp_path / "out", ranks=2)
    assert not (tmp_path / "out").exists()


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelport", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, COLUMNS="200"), timeout=300)


def test_cli_converts_both_ways_and_errors_in_one_line(tmp_path):
    source, parts = make_megatron(tmp_path / "cpm", 2, dtype=np.float32)
    (tmp_path / "heads.json").write_text(json.dumps(HEADS))
    result = run_cli("convert", "cpm", source, "--to", "safetensors", "-o", tmp_path / "hf", "--config",
                     tmp_path / "heads.json")
    assert result.returncode == 0, result.stderr
    assert "GPT2LMHeadModel" in result.stderr
    result = run_cli("convert", "cpm", tmp_path / "hf", "--to", "megatron", "--ranks", "4", "-o", tmp_path / "four")
    assert result.returncode == 0, result.stderr
    assert len(load_ranks(tmp_path / "four")) == 4
    (source / str(ITERATION) / "mp_rank_00_model_states.pt").unlink()
    result = run_cli("convert", "cpm", source, "-o", tmp_path / "out")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "mp_rank_00_model_states.pt: missing" in lines[0]
