"""BERT end to end: Google TF1 <-> transformers (safetensors, PyTorch), checked by forward parity against an
independent reference and by bit-exact round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

import modelport
from conftest import (TINY_BERT, google_bert_tensors, hf_outputs, make_hf_bert, make_tf1_bert, sample_batch,
                      tf_load)
from reference import google_bert

pytest.importorskip("tensorflow")
pytest.importorskip("transformers")

ATOL = 1e-5


def reference_outputs(prefix, config, ids, segments):
    return google_bert(tf_load(prefix), config, ids, segments)


def assert_close(actual: dict, expected: dict):
    for key, value in actual.items():
        np.testing.assert_allclose(value, expected[key], atol=ATOL, rtol=0, err_msg=key)


@pytest.mark.parametrize("to", ["safetensors", "pytorch"])
def test_google_tf1_to_transformers_matches_reference(tf1_bert, tmp_path, to):
    out = tmp_path / "out"
    report = modelport.convert("bert", tf1_bert, to, out)
    assert report.model_class == "BertForPreTraining"
    assert len(report.training_state) == 2 * len(google_bert_tensors(TINY_BERT)) + 1  # adam_m/v + global_step
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_act"] == "gelu_new" and config["layer_norm_eps"] == 1e-12
    assert config["model_type"] == "bert" and config["architectures"] == ["BertForPreTraining"]
    assert config["dtype"] == "float32"
    ids, segments = sample_batch(TINY_BERT)
    assert_close(hf_outputs(out, ids, segments), reference_outputs(tf1_bert / "bert_model.ckpt", TINY_BERT, ids, segments))


def test_reference_detects_wrong_activation(tf1_bert, tmp_path):
    """The parity test can fail: the erf GELU moves outputs far beyond the tolerance."""
    modelport.convert("bert", tf1_bert, "safetensors", tmp_path / "out")
    ids, segments = sample_batch(TINY_BERT)
    wrong = dict(TINY_BERT, hidden_act="gelu_exact")
    expected = reference_outputs(tf1_bert / "bert_model.ckpt", wrong, ids, segments)
    actual = hf_outputs(tmp_path / "out", ids, segments)
    assert np.abs(actual["mlm_logits"] - expected["mlm_logits"]).max() > 100 * ATOL


@pytest.mark.parametrize("hidden_act, google_act", [("gelu_new", "gelu"), ("gelu", "gelu_exact")])
def test_transformers_to_google_tf1_matches(tmp_path, hidden_act, google_act):
    source = make_hf_bert(tmp_path / "hf", hidden_act=hidden_act)
    out = tmp_path / "tf"
    report = modelport.convert("bert", source, "tf", out)
    assert sorted(p.name for p in out.iterdir()) == [
        "bert_config.json", "bert_model.ckpt.data-00000-of-00001", "bert_model.ckpt.index", "checkpoint",
        "modelport.json", "vocab.txt"]
    bert_config = json.loads((out / "bert_config.json").read_text())
    assert bert_config["hidden_act"] == google_act
    assert any("gelu_exact" in n for n in report.notes) == (hidden_act == "gelu")
    ids, segments = sample_batch(TINY_BERT)
    assert_close(hf_outputs(source, ids, segments), reference_outputs(out / "bert_model.ckpt", bert_config, ids, segments))


@pytest.mark.parametrize("middle", ["safetensors", "pytorch"])
def test_tf1_round_trip_is_bit_exact(tf1_bert, tmp_path, middle):
    modelport.convert("bert", tf1_bert, middle, tmp_path / "hf")
    modelport.convert("bert", tmp_path / "hf", "tf", tmp_path / "back")
    original = {k: v for k, v in tf_load(tf1_bert / "bert_model.ckpt").items()
                if not (k.endswith(("adam_m", "adam_v")) or k == "global_step")}
    back = tf_load(tmp_path / "back" / "bert_model.ckpt")
    assert sorted(back) == sorted(original)
    for name, value in original.items():
        assert back[name].dtype == value.dtype and back[name].tobytes() == value.tobytes(), name
    assert json.loads((tmp_path / "back" / "bert_config.json").read_text()) == TINY_BERT
    assert (tmp_path / "back" / "vocab.txt").read_text() == (tf1_bert / "vocab.txt").read_text()


def safetensors_tensors(folder):
    from safetensors.numpy import load_file

    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


@pytest.mark.parametrize("model_class", ["BertForPreTraining", "BertModel"])
def test_hf_round_trip_is_bit_exact(tmp_path, model_class):
    source = make_hf_bert(tmp_path / "hf", model_class=model_class)
    modelport.convert("bert", source, "tf", tmp_path / "tf")
    modelport.convert("bert", tmp_path / "tf", "safetensors", tmp_path / "back")
    original, back = safetensors_tensors(source), safetensors_tensors(tmp_path / "back")
    assert sorted(back) == sorted(original)
    for name, value in original.items():
        assert back[name].dtype == value.dtype and back[name].tobytes() == value.tobytes(), name
    original_config = json.loads((source / "config.json").read_text())
    back_config = json.loads((tmp_path / "back" / "config.json").read_text())
    for key in ("architectures", "hidden_act", "hidden_size", "num_attention_heads", "layer_norm_eps", "vocab_size",
                "intermediate_size", "max_position_embeddings", "type_vocab_size", "num_hidden_layers"):
        assert back_config[key] == original_config[key], key


def test_pytorch_bin_with_tied_decoder_converts(tmp_path):
    """Older save_pretrained wrote pytorch_model.bin holding the tied decoder weight and position_ids."""
    import torch
    import transformers

    source = make_hf_bert(tmp_path / "hf")
    model = transformers.BertForPreTraining.from_pretrained(source)
    state = dict(model.state_dict())
    state["bert.embeddings.position_ids"] = torch.arange(64)[None]
    for file in source.glob("*.safetensors"):
        file.unlink()
    torch.save(state, source / "pytorch_model.bin")
    out = tmp_path / "tf"
    modelport.convert("bert", source, "tf", out)
    ids, segments = sample_batch(TINY_BERT)
    bert_config = json.loads((out / "bert_config.json").read_text())
    assert_close(hf_outputs(source, ids, segments), reference_outputs(out / "bert_model.ckpt", bert_config, ids, segments))


def test_untied_decoder_is_an_error(tmp_path):
    import torch
    import transformers

    source = make_hf_bert(tmp_path / "hf")
    state = dict(transformers.BertForPreTraining.from_pretrained(source).state_dict())
    state["cls.predictions.decoder.weight"] = state["cls.predictions.decoder.weight"] + 1
    for file in source.glob("*.safetensors"):
        file.unlink()
    torch.save(state, source / "pytorch_model.bin")
    with pytest.raises(modelport.ModelportError, match="untied"):
        modelport.convert("bert", source, "tf", tmp_path / "tf")
    assert not (tmp_path / "tf").exists()


def test_sharded_safetensors_both_ways(tf1_bert, tmp_path):
    report = modelport.convert("bert", tf1_bert, "safetensors", tmp_path / "sharded", max_shard_size="20KB")
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert index["metadata"]["total_size"] == report.bytes
    ids, segments = sample_batch(TINY_BERT)
    assert_close(hf_outputs(tmp_path / "sharded", ids, segments),
                 reference_outputs(tf1_bert / "bert_model.ckpt", TINY_BERT, ids, segments))
    modelport.convert("bert", tmp_path / "sharded", "tf", tmp_path / "back")
    back = tf_load(tmp_path / "back" / "bert_model.ckpt")
    original = tf_load(tf1_bert / "bert_model.ckpt")
    assert all(back[k].tobytes() == original[k].tobytes() for k in back)


def test_sharded_pytorch_output_loads(tf1_bert, tmp_path):
    modelport.convert("bert", tf1_bert, "pytorch", tmp_path / "bin", max_shard_size="20KB")
    assert (tmp_path / "bin" / "pytorch_model.bin.index.json").is_file()
    ids, segments = sample_batch(TINY_BERT)
    assert_close(hf_outputs(tmp_path / "bin", ids, segments),
                 reference_outputs(tf1_bert / "bert_model.ckpt", TINY_BERT, ids, segments))


@pytest.mark.parametrize("dtype, torch_name", [("float16", "float16"), ("bfloat16", "bfloat16")])
def test_dtype_cast(tf1_bert, tmp_path, dtype, torch_name):
    import torch
    from transformers import AutoModelForPreTraining

    modelport.convert("bert", tf1_bert, "safetensors", tmp_path / "out", dtype=dtype)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == dtype
    model = AutoModelForPreTraining.from_pretrained(tmp_path / "out", dtype="auto")
    assert model.dtype == getattr(torch, torch_name)
    expected = tf_load(tf1_bert / "bert_model.ckpt")["bert/embeddings/word_embeddings"]
    actual = model.bert.embeddings.word_embeddings.weight.detach().float().numpy()
    np.testing.assert_array_equal(actual, torch.from_numpy(expected).to(getattr(torch, torch_name)).float().numpy())


def test_tokenizer_travels(tf1_bert, tmp_path):
    from transformers import AutoTokenizer

    modelport.convert("bert", tf1_bert, "safetensors", tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("Hello the models 中文")["input_ids"])
    assert tokens == ["[CLS]", "hello", "the", "model", "##s", "中", "文", "[SEP]"]


def test_cased_vocabulary_is_not_lowercased(tmp_path):
    from transformers import AutoTokenizer

    source = make_tf1_bert(tmp_path / "cased")
    vocab = (source / "vocab.txt").read_text().replace("hello", "Hello")
    (source / "vocab.txt").write_text(vocab)
    modelport.convert("bert", source, "safetensors", tmp_path / "out")
    assert json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())["do_lower_case"] is False
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tokenizer.convert_ids_to_tokens(tokenizer("Hello")["input_ids"]) == ["[CLS]", "Hello", "[SEP]"]
    modelport.convert("bert", source, "safetensors", tmp_path / "forced", lowercase=True)
    assert json.loads((tmp_path / "forced" / "tokenizer_config.json").read_text())["do_lower_case"] is True


def test_missing_vocab_still_converts_and_says_so(tmp_path):
    source = make_tf1_bert(tmp_path / "novocab", vocab=False)
    report = modelport.convert("bert", source, "safetensors", tmp_path / "out")
    assert any("--tokenizer" in note for note in report.notes)
    assert not (tmp_path / "out" / "vocab.txt").exists()
    modelport.convert("bert", source, "safetensors", tmp_path / "with", tokenizer=make_tf1_bert(tmp_path / "v") / "vocab.txt")
    assert (tmp_path / "with" / "tokenizer_config.json").is_file()


def test_heads_absent_gives_bert_model(tmp_path):
    source = make_tf1_bert(tmp_path / "bare", heads=False)
    modelport.convert("bert", source, "safetensors", tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == ["BertModel"]
    assert "embeddings.word_embeddings.weight" in safetensors_tensors(tmp_path / "out")
    ids, segments = sample_batch(TINY_BERT)
    assert_close(hf_outputs(tmp_path / "out", ids, segments),
                 reference_outputs(source / "bert_model.ckpt", TINY_BERT, ids, segments))


def test_partial_config_override(tmp_path):
    source = make_tf1_bert(tmp_path / "src")
    (source / "bert_config.json").unlink()
    with pytest.raises(modelport.ModelportError, match="num_attention_heads"):
        modelport.convert("bert", source, "safetensors", tmp_path / "out")
    override = {"num_attention_heads": 4, "hidden_act": "gelu_new"}
    modelport.convert("bert", source, "safetensors", tmp_path / "out", config=override)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["vocab_size"] == 99 and config["num_hidden_layers"] == 2 and config["num_attention_heads"] == 4
    ids, segments = sample_batch(TINY_BERT)
    assert_close(hf_outputs(tmp_path / "out", ids, segments),
                 reference_outputs(source / "bert_model.ckpt", TINY_BERT, ids, segments))


def test_verify_passes_and_catches_tampering(tf1_bert, tmp_path):
    modelport.convert("bert", tf1_bert, "safetensors", tmp_path / "out")
    report = modelport.verify(tf1_bert, tmp_path / "out")
    assert report.ok and all(row["result"] == "bit-exact" for row in report.rows)
    assert {row["output"] for row in report.forward} >= {"prediction_logits", "seq_relationship_logits"}
    from safetensors.numpy import load_file, save_file

    tensors = load_file(tmp_path / "out" / "model.safetensors")
    tensors["bert.encoder.layer.1.attention.self.key.weight"][0, 0] += 1e-3
    save_file(tensors, tmp_path / "out" / "model.safetensors", metadata={"format": "pt"})
    report = modelport.verify(tf1_bert, tmp_path / "out")
    assert not report.ok
    bad = [row for row in report.rows if not row["ok"]]
    assert [row["tensor"] for row in bad] == ["bert.encoder.layer.1.attention.self.key.weight"]


def test_inspect_reports_every_tensor(tf1_bert):
    result = modelport.inspect(tf1_bert)
    assert result["format"] == "tf1" and result["arch"] == "bert" and result["layout"] == "tf1"
    actions = {t["name"]: t["action"] for t in result["tensors"]}
    assert actions["bert/encoder/layer_1/attention/self/query/kernel"] == "-> bert.encoder.layer.1.attention.self.query.weight"
    assert actions["global_step"] == "skipped (training state)"
    assert actions["bert/pooler/dense/kernel/adam_m"] == "skipped (training state)"
    assert result["parameters"] == sum(v.size for v in google_bert_tensors(TINY_BERT).values())


def test_partitioned_word_embeddings_convert(tmp_path):
    """A checkpoint trained with a partitioner (Saver writes the embedding table in slices) converts like any
    other: the reader assembles the slices."""
    import tensorflow as tf

    tensors = google_bert_tensors(TINY_BERT)
    table = tensors.pop("bert/embeddings/word_embeddings")
    rows = [0, 40, 70, table.shape[0]]
    names = [*sorted(tensors), *["bert/embeddings/word_embeddings"] * 3]
    specs = [""] * len(tensors) + [f"{table.shape[0]} {table.shape[1]} {start},{stop - start}:-"
                                   for start, stop in zip(rows, rows[1:])]
    values = [tensors[n] for n in sorted(tensors)] + [table[start:stop] for start, stop in zip(rows, rows[1:])]
    source = tmp_path / "partitioned"
    source.mkdir()
    tf.raw_ops.SaveV2(prefix=str(source / "bert_model.ckpt"), tensor_names=names, shape_and_slices=specs,
                      tensors=[tf.constant(v) for v in values])
    (source / "bert_config.json").write_text(json.dumps(TINY_BERT))
    modelport.convert("bert", source, "safetensors", tmp_path / "out")
    ids, segments = sample_batch(TINY_BERT)
    assert_close(hf_outputs(tmp_path / "out", ids, segments),
                 google_bert({**tensors, "bert/embeddings/word_embeddings": table}, TINY_BERT, ids, segments))
