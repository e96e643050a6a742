"""T5 v1.0, T5 v1.1 and mT5 end to end: Mesh TensorFlow TF1 <-> transformers, checked against an independent
numpy reference of Mesh TF's Bitransformer (on Mesh TF names) and by bit-exact round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

import modelport
from conftest import tf_load
from modelport.converters.configs import parse_gin
from modelport.mappings.t5 import config_from_gin
from reference import mesh_t5
from t5_checkpoints import (GATED, PIECES, SIZES, hf_t5_outputs, make_hf_t5, make_mesh_t5,
                            mesh_reference_config, mesh_t5_tensors, sample_ids)

pytest.importorskip("tensorflow")
pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

ATOL = 1e-5


@pytest.fixture(scope="module")
def mesh_mt5(tmp_path_factory):
    """mT5 / T5 v1.1: gated GELU FFN, separate LM head."""
    return make_mesh_t5(tmp_path_factory.mktemp("mesh") / "mt5")


@pytest.fixture(scope="module")
def mesh_t5_v10(tmp_path_factory):
    """T5 v1.0: ReLU FFN, head tied to the embedding."""
    return make_mesh_t5(tmp_path_factory.mktemp("mesh") / "t5", gated=False, tied=True)


def mesh_tensors(folder):
    (index,) = folder.glob("*.index")
    return tf_load(index.with_suffix(""))


def weights(tensors: dict) -> dict:
    return {k: v for k, v in tensors.items() if "_slot_" not in k and k != "global_step"}


def reference_outputs(folder, gated, ids, decoder_ids, **changes):
    return mesh_t5(mesh_tensors(folder), {**mesh_reference_config(gated), **changes}, ids, decoder_ids)


def assert_close(actual: dict, expected: dict):
    for key, value in expected.items():
        np.testing.assert_allclose(actual[key], value, atol=ATOL, rtol=0, err_msg=key)


def safetensors_tensors(folder):
    from safetensors.numpy import load_file

    return {k: v for file in sorted(folder.glob("*.safetensors")) for k, v in load_file(file).items()}


@pytest.mark.parametrize("to", ["safetensors", "pytorch"])
def test_mesh_mt5_to_transformers_matches_reference(mesh_mt5, tmp_path, to):
    report = modelport.convert("mt5", mesh_mt5, to, tmp_path / "out")
    assert report.model_class == "MT5ForConditionalGeneration"
    tensors = mesh_t5_tensors(gated=True, tied=False)
    assert len(report.training_state) == sum(2 if v.ndim == 2 else 1 for v in tensors.values()) + 1
    assert {"_slot_vc", "_slot_vr", "_slot_v", "global_step"} <= set(report.training_state_kinds().replace(
        ",", " ").split())
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "mt5" and config["architectures"] == ["MT5ForConditionalGeneration"]
    assert config["feed_forward_proj"] == "gated-gelu" and config["tie_word_embeddings"] is False
    assert {k: config[k] for k in SIZES} == SIZES
    ids, decoder_ids = sample_ids()
    assert_close(hf_t5_outputs(tmp_path / "out", ids, decoder_ids),
                 reference_outputs(mesh_mt5, True, ids, decoder_ids))


def test_mesh_t5_v10_tied_head_matches_reference(mesh_t5_v10, tmp_path):
    report = modelport.convert("t5", mesh_t5_v10, "safetensors", tmp_path / "out")
    assert report.model_class == "T5ForConditionalGeneration"
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["feed_forward_proj"] == "relu" and config["tie_word_embeddings"] is True
    assert "lm_head.weight" not in safetensors_tensors(tmp_path / "out")
    ids, decoder_ids = sample_ids()
    assert_close(hf_t5_outputs(tmp_path / "out", ids, decoder_ids),
                 reference_outputs(mesh_t5_v10, False, ids, decoder_ids))


def test_rms_norm_naming_converts(tmp_path):
    """Newer gin configs name the norms rms_norm (final one `encoder/rms_norm/scale`): the same tensors."""
    source = make_mesh_t5(tmp_path / "rms", rms=True, vocabulary=False)
    assert modelport.inspect(source)["layout"] == "mesh_tf_rms"
    modelport.convert("t5", source, "safetensors", tmp_path / "out")
    ids, decoder_ids = sample_ids()
    assert_close(hf_t5_outputs(tmp_path / "out", ids, decoder_ids), reference_outputs(source, True, ids, decoder_ids))
    modelport.convert("t5", tmp_path / "out", "tf", tmp_path / "back")  # written back under the releases' names
    back = mesh_tensors(tmp_path / "back")
    renamed = {k.replace("/rms_norm/", "/layer_norm/").replace("encoder/layer_norm", "encoder/final_layer_norm")
                .replace("decoder/layer_norm", "decoder/final_layer_norm"): v for k, v in weights(mesh_tensors(source)).items()}
    assert sorted(back) == sorted(renamed)
    assert all(back[k].tobytes() == v.tobytes() for k, v in renamed.items())
    modelport.convert("t5", tmp_path / "out", "tf-rms", tmp_path / "rms-back")  # or under the source's own names
    original, rms_back = weights(mesh_tensors(source)), mesh_tensors(tmp_path / "rms-back")
    assert sorted(rms_back) == sorted(original)
    assert all(rms_back[k].tobytes() == v.tobytes() for k, v in original.items())
    assert "sublayer_rms_norm" in (tmp_path / "rms-back" / "operative_config.gin").read_text()
    assert modelport.inspect(tmp_path / "rms-back")["layout"] == "mesh_tf_rms"


def test_parity_catches_layout_mistakes(mesh_mt5, mesh_t5_v10, tmp_path):
    """The reference sees a wrong activation, a relative bias reshaped instead of transposed, swapped q/k and
    a tied head without its d_model^-0.5 scaling."""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    modelport.convert("mt5", mesh_mt5, "safetensors", tmp_path / "mt5")
    ids, decoder_ids = sample_ids()
    expected = reference_outputs(mesh_mt5, True, ids, decoder_ids)
    wrong = reference_outputs(mesh_mt5, True, ids, decoder_ids, activation=["relu", "linear"])
    assert np.abs(wrong["logits"] - expected["logits"]).max() > 100 * ATOL

    def corrupted_logits(folder, corrupt, **load_options):
        model = AutoModelForSeq2SeqLM.from_pretrained(folder, dtype=torch.float32, **load_options).eval()
        with torch.no_grad():
            corrupt(model)
            return model(input_ids=torch.from_numpy(ids), decoder_input_ids=torch.from_numpy(decoder_ids)).logits.numpy()

    raw_bias = mesh_tensors(mesh_mt5)["encoder/block_000/layer_000/SelfAttention/relative_attention_bias"]

    def reshaped_bias(model):
        model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.copy_(
            torch.from_numpy(raw_bias.reshape(raw_bias.shape[::-1])))

    def swapped_qk(model):
        attention = model.decoder.block[1].layer[0].SelfAttention
        q = attention.q.weight.clone()
        attention.q.weight.copy_(attention.k.weight)
        attention.k.weight.copy_(q)

    for corrupt in (reshaped_bias, swapped_qk):
        assert np.abs(corrupted_logits(tmp_path / "mt5", corrupt) - expected["logits"]).max() > 100 * ATOL

    modelport.convert("t5", mesh_t5_v10, "safetensors", tmp_path / "t5")
    expected = reference_outputs(mesh_t5_v10, False, ids, decoder_ids)
    unscaled = corrupted_logits(tmp_path / "t5", lambda model: None, tie_word_embeddings=False)
    assert np.abs(unscaled - expected["logits"]).max() > 100 * ATOL


@pytest.mark.parametrize("fixture", ["mesh_mt5", "mesh_t5_v10"])
def test_mesh_round_trip_is_bit_exact(fixture, request, tmp_path):
    source = request.getfixturevalue(fixture)
    arch = "mt5" if fixture == "mesh_mt5" else "t5"
    modelport.convert(arch, source, "pytorch", tmp_path / "hf")
    modelport.convert(arch, tmp_path / "hf", "tf", tmp_path / "back")
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == [
        "checkpoint", "model.ckpt-0.data-00000-of-00001", "model.ckpt-0.index", "modelport.json",
        "operative_config.gin", "sentencepiece.model"]
    original, back = weights(mesh_tensors(source)), mesh_tensors(tmp_path / "back")
    assert sorted(back) == sorted(original)
    for name, value in original.items():
        assert back[name].dtype == value.dtype and back[name].tobytes() == value.tobytes(), name
    assert (tmp_path / "back" / "sentencepiece.model").read_bytes() == (source / "sentencepiece.model").read_bytes()
    modelport.convert(arch, tmp_path / "back", "safetensors", tmp_path / "again")
    first = json.loads((tmp_path / "hf" / "config.json").read_text())
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert {k: v for k, v in again.items() if k != "dropout_rate"} == {k: v for k, v in first.items()
                                                                       if k != "dropout_rate"}
    for name in ("spiece.model", "tokenizer_config.json"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "hf" / name).read_bytes()


@pytest.mark.parametrize("model_type, gated, tied", [("mt5", True, False), ("t5", False, True), ("t5", True, False)])
def test_transformers_to_mesh_matches_reference_and_round_trips(tmp_path, model_type, gated, tied):
    source = make_hf_t5(tmp_path / "hf", model_type, gated=gated, tied=tied)
    modelport.convert(model_type, source, "tf", tmp_path / "mesh")
    gin = parse_gin((tmp_path / "mesh" / "operative_config.gin").read_text())
    assert gin["decoder/Unitransformer.shared_embedding_and_softmax_weights"] is tied
    assert gin["encoder/DenseReluDense.activation"] == (GATED if gated else "relu")
    assert ("decoder/logits/kernel" in mesh_tensors(tmp_path / "mesh")) is not tied
    ids, decoder_ids = sample_ids()
    assert_close(hf_t5_outputs(source, ids, decoder_ids), reference_outputs(tmp_path / "mesh", gated, ids, decoder_ids))
    modelport.convert(model_type, tmp_path / "mesh", "safetensors", tmp_path / "back")
    original, back = safetensors_tensors(source), safetensors_tensors(tmp_path / "back")
    assert sorted(back) == sorted(original)
    assert all(back[k].dtype == v.dtype and back[k].tobytes() == v.tobytes() for k, v in original.items())
    original_config = json.loads((source / "config.json").read_text())
    back_config = json.loads((tmp_path / "back" / "config.json").read_text())
    for key in ("architectures", "model_type", "feed_forward_proj", "layer_norm_epsilon", *SIZES):
        assert back_config[key] == original_config[key], key
    assert json.loads((tmp_path / "back" / "tokenizer_config.json").read_text())["extra_ids"] == (0 if gated else 100)


def test_config_from_shapes_alone(tmp_path):
    """No operative_config.gin: num_heads from the relative attention bias [heads, buckets], d_kv from q's
    width over num_heads, the FFN kind and the head from the tensors present."""
    source = make_mesh_t5(tmp_path / "nogin", gin=False, vocabulary=False)
    modelport.convert("mt5", source, "safetensors", tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert {k: config[k] for k in SIZES} == SIZES
    assert config["feed_forward_proj"] == "gated-gelu" and config["tie_word_embeddings"] is False
    ids, decoder_ids = sample_ids()
    assert_close(hf_t5_outputs(tmp_path / "out", ids, decoder_ids), reference_outputs(source, True, ids, decoder_ids))


def test_num_heads_nowhere_fails_saying_so(tmp_path):
    tensors = {k: v for k, v in mesh_t5_tensors(gated=True, tied=False).items() if "relative_attention_bias" not in k}
    source = make_mesh_t5(tmp_path / "src", gin=False, vocabulary=False, tensors=tensors)
    with pytest.raises(modelport.ModelportError, match=r"num_heads cannot be read .* --config"):
        modelport.convert("mt5", source, "safetensors", tmp_path / "out")


def test_config_contradicting_shapes_is_an_error(mesh_mt5, tmp_path):
    with pytest.raises(modelport.ModelportError, match="has shape .* but the config implies"):
        modelport.convert("mt5", mesh_mt5, "safetensors", tmp_path / "out", config={"num_heads": 2})
    assert not (tmp_path / "out").exists()


def test_config_from_a_real_operative_config():
    """Lines as Mesh TF writes them (module paths, scopes, macros, continued lists, dicts, references)."""
    text = """import mesh_tensorflow.transformer.transformer_layers

# Macros:
# ==============================================================================
d_ff = 2048
d_kv = 64
d_model = 512
dropout_rate = 0.0
num_heads = 8
num_layers = 6

decoder/DenseReluDense.activation = 'relu'
encoder/DenseReluDense.activation = 'relu'
decoder/LayerStack.norm_epsilon = None
decoder/LayerStack.sublayers_final = \\
[@transformer.sublayer_rms_norm, @transformer.sublayer_dropout]
decoder/make_layer_stack.layers = \\
[@mesh_tensorflow.transformer.transformer_layers.SelfAttention,
@mesh_tensorflow.transformer.transformer_layers.EncDecAttention,
@mesh_tensorflow.transformer.transformer_layers.DenseReluDense]
decoder/make_layer_stack.num_layers = %num_layers
encoder/make_layer_stack.num_layers = 32
run.batch_size = ('tokens_per_batch', 65536)
run.sequence_length = {'inputs': 512, 'targets': 128}
encoder/SelfAttention.relative_attention_num_buckets = 32
sublayer_rms_norm.epsilon = 1e-06
decoder/Unitransformer.shared_embedding_and_softmax_weights = True
"""
    bindings = parse_gin(text)
    assert bindings["run.sequence_length"] == {"inputs": 512, "targets": 128}
    assert bindings["decoder/LayerStack.sublayers_final"] == ["@transformer.sublayer_rms_norm",
                                                              "@transformer.sublayer_dropout"]
    config = config_from_gin(bindings)
    assert config["num_layers"] == 32 and config["num_decoder_layers"] == 6
    assert (config["d_model"], config["d_ff"], config["d_kv"], config["num_heads"]) == (512, 2048, 64, 8)
    assert config["feed_forward_proj"] == "relu" and config["tie_word_embeddings"] is True
    assert config["layer_norm_epsilon"] == 1e-6 and config["relative_attention_num_buckets"] == 32


@pytest.mark.parametrize("fixture, extra_ids", [("mesh_mt5", 0), ("mesh_t5_v10", 100)])
def test_tokenizer_ids_line_up_with_the_embedding(fixture, extra_ids, request, tmp_path):
    """mT5's model holds its sentinels (extra_ids 0); T5 appends 100 after its pieces: <extra_id_0> is the last
    id either way, and both fit the 384 embedding rows."""
    import sentencepiece
    from transformers import AutoTokenizer

    source = request.getfixturevalue(fixture)
    modelport.convert("t5", source, "safetensors", tmp_path / "out")
    assert json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())["extra_ids"] == extra_ids
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    processor = sentencepiece.SentencePieceProcessor(model_file=str(source / "sentencepiece.model"))
    text = "的一 是不 abc 中大来"
    assert tokenizer(text)["input_ids"] == processor.encode(text) + [1]
    assert len(tokenizer) == PIECES + 100 <= SIZES["vocab_size"]
    assert tokenizer.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_99>"]) == [PIECES + 99, PIECES]


def test_head_saved_twice_in_a_pytorch_pickle_is_a_tie(tmp_path):
    """PyTorch pickles of tied T5 models hold lm_head.weight (equal to shared.weight) and the embed_tokens:
    still a tied head, whose decoder output Mesh TF scales."""
    import torch
    from transformers import T5ForConditionalGeneration

    source = make_hf_t5(tmp_path / "hf", "t5", gated=False, tied=True)
    state = T5ForConditionalGeneration.from_pretrained(source).state_dict()
    assert {"lm_head.weight", "encoder.embed_tokens.weight"} <= set(state)
    for file in source.glob("*.safetensors"):
        file.unlink()
    torch.save(dict(state), source / "pytorch_model.bin")
    modelport.convert("t5", source, "tf", tmp_path / "mesh")
    assert "decoder/logits/kernel" not in mesh_tensors(tmp_path / "mesh")
    ids, decoder_ids = sample_ids()
    assert_close(hf_t5_outputs(source, ids, decoder_ids), reference_outputs(tmp_path / "mesh", False, ids, decoder_ids))


def test_mt5_refuses_a_tied_head(mesh_t5_v10, tmp_path):
    """transformers' MT5 never scales the decoder output, so a tied head converts as t5 only."""
    with pytest.raises(modelport.ModelportError, match="match no transformers class"):
        modelport.convert("mt5", mesh_t5_v10, "safetensors", tmp_path / "out")


def test_verify_runs_both_and_catches_tampering(mesh_mt5, tmp_path):
    modelport.convert("mt5", mesh_mt5, "safetensors", tmp_path / "out")
    report = modelport.verify(mesh_mt5, tmp_path / "out")
    assert report.ok and {row["output"] for row in report.forward} >= {"logits", "encoder_last_hidden_state"}
    from safetensors.numpy import load_file, save_file

    tensors = load_file(tmp_path / "out" / "model.safetensors")
    tensors["decoder.block.2.layer.1.EncDecAttention.v.weight"][0, 0] += 1e-3
    save_file(tensors, tmp_path / "out" / "model.safetensors", metadata={"format": "pt"})
    report = modelport.verify(mesh_mt5, tmp_path / "out")
    assert not report.ok
    assert [row["tensor"] for row in report.rows if not row["ok"]] == ["decoder.block.2.layer.1.EncDecAttention.v.weight"]


def test_inspect_names_every_mesh_tensor(mesh_mt5):
    result = modelport.inspect(mesh_mt5)
    assert result["format"] == "tf1" and result["layout"] == "mesh_tf"
    actions = {t["name"]: t["action"] for t in result["tensors"]}
    assert actions["encoder/block_001/layer_000/SelfAttention/q"] == "-> encoder.block.1.layer.0.SelfAttention.q.weight"
    assert actions["decoder/block_002/layer_002/DenseReluDense/wi_1/kernel"] == \
        "-> decoder.block.2.layer.2.DenseReluDense.wi_1.weight"
    assert actions["decoder/logits/kernel"] == "-> lm_head.weight"
    assert actions["shared/embedding_slot_vc"] == actions["global_step"] == "skipped (training state)"


def test_cli_reports_adafactor_slots(mesh_mt5, tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "modelport", "convert", "mt5", str(mesh_mt5), "-o", str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "skipped training state:" in result.stderr and "_slot_vc" in result.stderr and "global_step (1)" in result.stderr
    assert "MT5ForConditionalGeneration" in result.stderr


def test_missing_sentencepiece_model_is_noted(tmp_path):
    source = make_hf_t5(tmp_path / "hf", "mt5")
    (source / "spiece.model").unlink()
    (source / "tokenizer.json").write_text("{}")
    report = modelport.convert("mt5", source, "tf", tmp_path / "mesh")
    assert any("only tokenizer.json" in note and "--tokenizer" in note for note in report.notes)
    assert not (tmp_path / "mesh" / "sentencepiece.model").exists()
