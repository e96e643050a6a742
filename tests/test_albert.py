"""ALBERT end to end: Google's TF1 layout <-> transformers (safetensors, PyTorch), and brightmart's albert_zh
read as its own network; checked by forward parity against independent references written from the
original code, and by bit-exact round trips."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import modelport
from albert_checkpoints import (TINY_ALBERT, TINY_ALBERT_ZH, google_albert_tensors,
                                hf_albert_outputs, make_albert_zh, make_hf_albert, make_tf1_albert)
from conftest import sample_batch, tf_load
from reference import albert_zh, google_albert
from test_cli import assert_one_line_error, run

pytest.importorskip("tensorflow")
pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

ATOL = 1e-5
TRAINING_STATE = ("adam_m", "adam_v")


def assert_close(actual: dict, expected: dict):
    for key, value in actual.items():
        np.testing.assert_allclose(value, expected[key], atol=ATOL, rtol=0, err_msg=key)


def weights(prefix) -> dict[str, np.ndarray]:
    return {k: v for k, v in tf_load(prefix).items() if not (k.endswith(TRAINING_STATE) or k == "global_step")}


def safetensors_tensors(folder):
    from safetensors.numpy import load_file

    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


@pytest.fixture
def tf1_albert(tmp_path):
    return make_tf1_albert(tmp_path / "albert_base")


@pytest.mark.parametrize("to", ["safetensors", "pytorch"])
def test_google_tf1_to_transformers_matches_reference(tf1_albert, tmp_path, to):
    out = tmp_path / "out"
    report = modelport.convert("albert", tf1_albert, to, out)
    assert report.model_class == "AlbertForPreTraining"
    assert len(report.training_state) == 2 * len(google_albert_tensors()) + 1
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_act"] == "gelu_new" and config["layer_norm_eps"] == 1e-12
    assert (config["num_hidden_layers"], config["num_hidden_groups"], config["inner_group_num"]) == (4, 2, 2)
    assert config["embedding_size"] == 16 and config["architectures"] == ["AlbertForPreTraining"]
    ids, segments = sample_batch(TINY_ALBERT)
    assert_close(hf_albert_outputs(out, ids, segments),
                 google_albert(tf_load(tf1_albert / "model.ckpt-best"), TINY_ALBERT, ids, segments))


def test_shared_layers_are_stored_once(tf1_albert, tmp_path):
    modelport.convert("albert", tf1_albert, "safetensors", tmp_path / "out")
    names = safetensors_tensors(tmp_path / "out")
    per_block = 16  # q, k, v, attention output, 2 LayerNorms, ffn, ffn_output: weight and bias each
    assert sum("albert_layer_groups" in n for n in names) == 2 * 2 * per_block  # groups x inner, not 4 layers
    assert "albert.encoder.albert_layer_groups.1.albert_layers.1.ffn_output.weight" in names


def _tampered(folder, target, change):
    from safetensors.numpy import save_file

    shutil.copytree(folder, target)
    tensors = safetensors_tensors(folder)
    change(tensors)
    save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})
    return target


def test_parity_catches_activation_kernel_and_group_mistakes(tf1_albert, tmp_path):
    """The parity test can fail: the erf GELU, an untransposed kernel or a swapped group move the outputs far
    beyond the tolerance."""
    out = tmp_path / "out"
    modelport.convert("albert", tf1_albert, "safetensors", out)
    ids, segments = sample_batch(TINY_ALBERT)
    tensors = tf_load(tf1_albert / "model.ckpt-best")
    expected = google_albert(tensors, TINY_ALBERT, ids, segments)
    assert_close(hf_albert_outputs(out, ids, segments), expected)
    wrong_activation = google_albert(tensors, dict(TINY_ALBERT, hidden_act="gelu_exact"), ids, segments)
    assert np.abs(wrong_activation["mlm_logits"] - expected["mlm_logits"]).max() > 10 * ATOL

    query = "albert.encoder.albert_layer_groups.0.albert_layers.1.attention.query.weight"
    untransposed = _tampered(out, tmp_path / "untransposed",
                             lambda t: t.update({query: np.ascontiguousarray(t[query].T)}))

    def swap_groups(t):
        for name in [n for n in t if ".albert_layer_groups.0." in n]:
            other = name.replace(".albert_layer_groups.0.", ".albert_layer_groups.1.")
            t[name], t[other] = t[other], t[name]

    swapped = _tampered(out, tmp_path / "swapped", swap_groups)
    for broken in (untransposed, swapped):
        actual = hf_albert_outputs(broken, ids, segments)
        assert np.abs(actual["sequence_output"] - expected["sequence_output"]).max() > 100 * ATOL, broken.name


@pytest.mark.parametrize("hidden_act, google_act", [("gelu_new", "gelu"), ("gelu", "gelu_exact")])
def test_transformers_to_google_tf1_matches(tmp_path, hidden_act, google_act):
    source = make_hf_albert(tmp_path / "hf", hidden_act=hidden_act)
    out = tmp_path / "tf"
    report = modelport.convert("albert", source, "tf", out)
    assert {"albert_config.json", "model.ckpt-best.index", "model.ckpt-best.data-00000-of-00001", "checkpoint",
            "30k-clean.model"} <= {p.name for p in out.iterdir()}
    albert_config = json.loads((out / "albert_config.json").read_text())
    assert albert_config["hidden_act"] == google_act
    assert any("gelu_exact" in n for n in report.notes) == (hidden_act == "gelu")
    assert (out / "30k-clean.model").read_bytes() == (source / "spiece.model").read_bytes()
    ids, segments = sample_batch(TINY_ALBERT)
    assert_close(hf_albert_outputs(source, ids, segments),
                 google_albert(tf_load(out / "model.ckpt-best"), albert_config, ids, segments))


@pytest.mark.parametrize("middle", ["safetensors", "pytorch"])
def test_tf1_round_trip_is_bit_exact(tf1_albert, tmp_path, middle):
    modelport.convert("albert", tf1_albert, middle, tmp_path / "hf")
    modelport.convert("albert", tmp_path / "hf", "tf", tmp_path / "back")
    original, back = weights(tf1_albert / "model.ckpt-best"), weights(tmp_path / "back" / "model.ckpt-best")
    assert sorted(back) == sorted(original)
    for name, value in original.items():
        assert back[name].dtype == value.dtype and back[name].tobytes() == value.tobytes(), name
    assert json.loads((tmp_path / "back" / "albert_config.json").read_text()) == TINY_ALBERT
    assert (tmp_path / "back" / "30k-clean.model").read_bytes() == (tf1_albert / "30k-clean.model").read_bytes()


@pytest.mark.parametrize("model_class", ["AlbertForPreTraining", "AlbertForMaskedLM", "AlbertModel"])
def test_hf_round_trip_is_bit_exact(tmp_path, model_class):
    source = make_hf_albert(tmp_path / "hf", model_class=model_class)
    modelport.convert("albert", source, "tf", tmp_path / "tf")
    report = modelport.convert("albert", tmp_path / "tf", "safetensors", tmp_path / "back")
    assert report.model_class == model_class
    original, back = safetensors_tensors(source), safetensors_tensors(tmp_path / "back")
    assert sorted(back) == sorted(original)
    for name, value in original.items():
        assert back[name].dtype == value.dtype and back[name].tobytes() == value.tobytes(), name
    original_config = json.loads((source / "config.json").read_text())
    back_config = json.loads((tmp_path / "back" / "config.json").read_text())
    for key in ("hidden_act", "hidden_size", "embedding_size", "num_attention_heads", "num_hidden_layers",
                "num_hidden_groups", "inner_group_num", "intermediate_size", "layer_norm_eps", "vocab_size"):
        assert back_config[key] == original_config[key], key


def test_sentencepiece_tokenizer_travels(tf1_albert, tmp_path):
    """30k-clean.model becomes transformers' AlbertTokenizer, which tokenizes as Google's code does (lowercased
    text through the sentencepiece model, between [CLS] and [SEP])."""
    import sentencepiece
    from transformers import AutoTokenizer

    modelport.convert("albert", tf1_albert, "safetensors", tmp_path / "out")
    assert json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())["tokenizer_class"] == "AlbertTokenizer"
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    pieces = sentencepiece.SentencePieceProcessor(model_file=str(tf1_albert / "30k-clean.model"))
    text = "Hello World, the Model ports checkpoints"
    expected = [pieces.piece_to_id("[CLS]"), *pieces.encode(text.lower()), pieces.piece_to_id("[SEP]")]
    assert tokenizer(text)["input_ids"] == expected
    assert (tmp_path / "out" / "spiece.model").read_bytes() == (tf1_albert / "30k-clean.model").read_bytes()


def test_chinese_release_vocabulary_travels(tmp_path):
    from transformers import AutoTokenizer

    source = make_tf1_albert(tmp_path / "albert_base_zh", tokenizer="wordpiece")
    modelport.convert("albert", source, "safetensors", tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("Hello 中文")["input_ids"])
    assert tokens == ["[CLS]", "hello", "中", "文", "[SEP]"]


def test_layer_count_is_required(tmp_path):
    """Shared layers make num_hidden_layers invisible in the tensors."""
    source = make_tf1_albert(tmp_path / "src", tokenizer="")
    (source / "albert_config.json").unlink()
    with pytest.raises(modelport.ModelportError, match="num_attention_heads, num_hidden_layers"):
        modelport.convert("albert", source, "safetensors", tmp_path / "out")
    modelport.convert("albert", source, "safetensors", tmp_path / "out",
                      config={"num_attention_heads": 4, "num_hidden_layers": 4})
    ids, segments = sample_batch(TINY_ALBERT)
    assert_close(hf_albert_outputs(tmp_path / "out", ids, segments),
                 google_albert(tf_load(source / "model.ckpt-best"), TINY_ALBERT, ids, segments))


@pytest.mark.parametrize("to", ["safetensors", "pytorch"])
def test_albert_zh_is_ported_exactly(tmp_path, to):
    """brightmart's network (W @ W2, then positions at hidden width, one shared block) as transformers'
    ALBERT with the product folded into the word embeddings and an identity projection."""
    source = make_albert_zh(tmp_path / "albert_tiny_zh")
    result = modelport.inspect(source)
    assert result["arch"] == "albert" and result["layout"] == "albert_zh"
    actions = {t["name"]: t["action"] for t in result["tensors"]}
    assert actions["bert/embeddings/word_embeddings_2"] == "-> albert.embeddings.word_embeddings.weight"
    assert actions["bert/encoder/layer_shared/output/LayerNorm/gamma"] == \
        "-> albert.encoder.albert_layer_groups.0.albert_layers.0.full_layer_layer_norm.weight"
    out = tmp_path / "out"
    assert modelport.convert("albert", source, to, out).model_class == "AlbertForPreTraining"
    config = json.loads((out / "config.json").read_text())
    assert config["embedding_size"] == config["hidden_size"] == 32 and config["num_hidden_layers"] == 3
    assert (config["num_hidden_groups"], config["inner_group_num"], config["hidden_act"]) == (1, 1, "gelu_new")
    ids, segments = sample_batch(TINY_ALBERT_ZH)
    assert_close(hf_albert_outputs(out, ids, segments),
                 albert_zh(tf_load(source / "albert_model.ckpt"), TINY_ALBERT_ZH, ids, segments))


def test_albert_zh_to_google_layout_is_the_same_network(tmp_path):
    """albert_zh's folded embeddings are as wide as the hidden states: Google's layout has no projection there
    (the identity albert_zh's port implies)."""
    source = make_albert_zh(tmp_path / "zh")
    modelport.convert("albert", source, "tf", tmp_path / "tf")
    google = weights(tmp_path / "tf" / "model.ckpt-best")
    assert not any("embedding_hidden_mapping_in" in name for name in google)
    ids, segments = sample_batch(TINY_ALBERT_ZH)
    config = json.loads((tmp_path / "tf" / "albert_config.json").read_text())
    assert_close(google_albert(google, config, ids, segments),
                 albert_zh(tf_load(source / "albert_model.ckpt"), TINY_ALBERT_ZH, ids, segments))


def test_albert_zh_is_read_never_written(tmp_path):
    source = make_albert_zh(tmp_path / "zh")
    assert_one_line_error(run("convert", "albert", source, "--to", "albert_zh", "-o", tmp_path / "out"),
                          "albert_zh layout cannot be written", "--to tf")
    assert not (tmp_path / "out").exists()
    assert "albert (albert_zh names)" in run("inspect", source).stdout


def test_verify_albert_zh_against_its_port(tmp_path):
    source = make_albert_zh(tmp_path / "zh")
    modelport.convert("albert", source, "safetensors", tmp_path / "out")
    report = modelport.verify(source, tmp_path / "out")
    assert report.ok and all(row["result"] == "bit-exact" for row in report.rows)
    assert {row["tensor"] for row in report.rows} >= {"albert.encoder.embedding_hidden_mapping_in.weight"}


def test_albert_zh_names_do_not_pass_for_bert(tmp_path):
    """Detection picks ALBERT for both layouts (BERT explains their embeddings and heads, not their encoders)."""
    assert modelport.inspect(make_albert_zh(tmp_path / "zh"))["arch"] == "albert"
    assert modelport.inspect(make_tf1_albert(tmp_path / "google", tokenizer=""))["arch"] == "albert"


def test_embeddings_as_wide_as_the_hidden_states_have_no_projection(tmp_path):
    """Google's modeling.py projects the embeddings only when they are narrower than the hidden states: a
    checkpoint with embedding_size == hidden_size has no embedding_hidden_mapping_in, which transformers' ALBERT
    (always projecting) gets as the identity."""
    config = {**TINY_ALBERT, "embedding_size": TINY_ALBERT["hidden_size"]}
    source = make_tf1_albert(tmp_path / "square", config)
    assert not any("embedding_hidden_mapping_in" in name for name in tf_load(source / "model.ckpt-best"))
    out = tmp_path / "out"
    modelport.convert("albert", source, "safetensors", out)
    tensors = safetensors_tensors(out)
    np.testing.assert_array_equal(tensors["albert.encoder.embedding_hidden_mapping_in.weight"], np.eye(32))
    np.testing.assert_array_equal(tensors["albert.encoder.embedding_hidden_mapping_in.bias"], np.zeros(32))
    ids, segments = sample_batch(config)
    assert_close(hf_albert_outputs(out, ids, segments),
                 google_albert(tf_load(source / "model.ckpt-best"), config, ids, segments))
    assert modelport.verify(source, out).ok


def test_without_a_projection_the_way_back_leaves_it_out_and_refuses_one_that_is_not_the_identity(tmp_path):
    """Writing Google's layout for embeddings as wide as the hidden states: the identity projection is left out
    (Google's code has none, so the round trip is bit-exact); any other projection would be ignored there,
    so the conversion refuses."""
    config = {**TINY_ALBERT, "embedding_size": TINY_ALBERT["hidden_size"]}
    source = make_tf1_albert(tmp_path / "square", config, optimizer=False)
    modelport.convert("albert", source, "safetensors", tmp_path / "hf")
    modelport.convert("albert", tmp_path / "hf", "tf", tmp_path / "back")
    original, back = tf_load(source / "model.ckpt-best"), weights(tmp_path / "back" / "model.ckpt-best")
    assert sorted(back) == sorted(original)
    assert all(np.array_equal(back[name], original[name]) for name in original)

    from safetensors.numpy import save_file

    tensors = safetensors_tensors(tmp_path / "hf")
    tensors["albert.encoder.embedding_hidden_mapping_in.weight"] = np.eye(32, dtype=np.float32)[::-1].copy()
    save_file(tensors, tmp_path / "hf" / "model.safetensors", metadata={"format": "pt"})
    result = run("convert", "albert", tmp_path / "hf", "--to", "tf", "-o", tmp_path / "refused")
    assert_one_line_error(result, "albert.encoder.embedding_hidden_mapping_in.weight: Google's ALBERT has no "
                          "embedding projection when embedding_size == hidden_size, and this model's is not the one")
    assert not (tmp_path / "refused").exists()
