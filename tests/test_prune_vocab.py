"""prune-vocab: on text made only of kept tokens, the pruned model computes what the original computes (its
logits restricted to the kept ids), and the pruned tokenizer gives the renumbered ids."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import modelport
from conftest import TINY_BERT, make_tf1_bert, tf_load
from reference import google_bert, mesh_t5
from t5_checkpoints import (PIECES, corpus_lines, hf_t5_outputs, make_hf_t5, make_mesh_t5, mesh_reference_config)

pytest.importorskip("tensorflow")
pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

ATOL = 1e-5
SENTINELS = list(range(PIECES, PIECES + 100))


def renumber(ids, keep):
    new_id = {old: new for new, old in enumerate(keep)}
    return np.vectorize(new_id.__getitem__)(ids)


def kept_by_tokenizer(original, pruned) -> list[int]:
    """The original id of every id of the pruned tokenizer, through the tokens they name."""
    from transformers import AutoTokenizer

    before, after = AutoTokenizer.from_pretrained(original), AutoTokenizer.from_pretrained(pruned)
    return before.convert_tokens_to_ids(after.convert_ids_to_tokens(list(range(len(after)))))


def chinese_only(lines: list[str]) -> list[str]:
    return [" ".join(w for w in line.split() if not w.isascii()) for line in lines]


def test_chinese_only_mt5_keeps_its_outputs(tmp_path):
    import sentencepiece

    source = make_hf_t5(tmp_path / "mt5", "mt5")
    corpus = tmp_path / "zh.txt"
    corpus.write_text("\n".join(chinese_only(corpus_lines(seed=5, count=40))) + "\n")
    report = modelport.prune_vocab(source, corpus=corpus, out=tmp_path / "small")
    seen = {i for ids in sentencepiece.SentencePieceProcessor(model_file=str(source / "spiece.model")).encode(
        corpus.read_text().splitlines()) for i in ids}
    keep = sorted(seen | {0, 1, 2} | set(SENTINELS))
    assert kept_by_tokenizer(source, tmp_path / "small") == keep
    config = json.loads((tmp_path / "small" / "config.json").read_text())
    assert config["vocab_size"] == len(keep) < 200 and config["model_type"] == "mt5"
    assert report.parameters < sum(v.size for v in _safetensors(source).values())
    rng = np.random.default_rng(0)
    ids, decoder_ids = rng.choice(keep, size=(2, 12)), rng.choice(keep, size=(2, 9))
    original = hf_t5_outputs(source, ids, decoder_ids)
    pruned = hf_t5_outputs(tmp_path / "small", renumber(ids, keep), renumber(decoder_ids, keep))
    np.testing.assert_allclose(pruned["encoder_last_hidden_state"], original["encoder_last_hidden_state"], atol=ATOL)
    np.testing.assert_allclose(pruned["logits"], original["logits"][..., keep], atol=ATOL)
    assert not np.allclose(pruned["logits"], original["logits"][..., keep[1:] + keep[:1]], atol=ATOL)

    from transformers import AutoTokenizer

    text = corpus.read_text().splitlines()[0]
    before, after = AutoTokenizer.from_pretrained(source), AutoTokenizer.from_pretrained(tmp_path / "small")
    assert after(text)["input_ids"] == renumber(before(text)["input_ids"], keep).tolist()
    assert after.convert_tokens_to_ids("<extra_id_0>") == len(keep) - 1


def test_mesh_t5_keep_file_prunes_in_mesh_format(tmp_path):
    """A T5 v1.0 Mesh TF checkpoint (tied head, 100 extra ids after the pieces) pruned by a list of ids stays a
    Mesh TF checkpoint; the extra ids stay the last ids."""
    source = make_mesh_t5(tmp_path / "t5", gated=False, tied=True)
    keep_file = tmp_path / "keep.txt"
    keep_file.write_text("# ids to keep\n5, 7 9\n150 11\n")
    modelport.prune_vocab(source, keep=keep_file, out=tmp_path / "small")
    (index,) = (tmp_path / "small").glob("*.index")
    assert index.name == "model.ckpt-0.index" and (tmp_path / "small" / "sentencepiece.model").is_file()
    keep = [0, 1, 2, 5, 7, 9, 11, 150, *SENTINELS]
    original, pruned = tf_load(source / "model.ckpt-1000000"), tf_load(index.with_suffix(""))
    assert pruned["shared/embedding"].shape == (len(keep), 16)
    rng = np.random.default_rng(0)
    ids, decoder_ids = rng.choice(keep, size=(2, 12)), rng.choice(keep, size=(2, 9))
    expected = mesh_t5(original, mesh_reference_config(False), ids, decoder_ids)
    actual = mesh_t5(pruned, mesh_reference_config(False), renumber(ids, keep), renumber(decoder_ids, keep))
    np.testing.assert_allclose(actual["logits"], expected["logits"][..., keep], atol=ATOL)
    modelport.convert("t5", tmp_path / "small", "safetensors", tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())["extra_ids"] == 100
    np.testing.assert_allclose(hf_t5_outputs(tmp_path / "hf", renumber(ids, keep), renumber(decoder_ids, keep))["logits"],
                               expected["logits"][..., keep], atol=ATOL)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path / "hf").convert_tokens_to_ids("<extra_id_0>") == len(keep) - 1


def test_bert_corpus_prunes_embeddings_mlm_bias_and_vocab(tmp_path):
    source = make_tf1_bert(tmp_path / "bert")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Hello the models\n中文 world\n")
    modelport.prune_vocab(source, corpus=corpus, out=tmp_path / "small")
    vocab = (source / "vocab.txt").read_text().splitlines()
    kept_tokens = (tmp_path / "small" / "vocab.txt").read_text().splitlines()
    assert kept_tokens == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "model", "##s", "中", "文", "hello",
                           "world"]
    keep = [vocab.index(token) for token in kept_tokens]
    config = json.loads((tmp_path / "small" / "bert_config.json").read_text())
    assert config == {**TINY_BERT, "vocab_size": len(keep)}
    original, pruned = tf_load(source / "bert_model.ckpt"), tf_load(tmp_path / "small" / "bert_model.ckpt")
    assert pruned["cls/predictions/output_bias"].shape == (len(keep),)
    rng = np.random.default_rng(0)
    ids, segments = rng.choice(keep, size=(2, 10)), rng.integers(0, 2, size=(2, 10))
    expected = google_bert(original, TINY_BERT, ids, segments)
    actual = google_bert(pruned, config, renumber(ids, keep), segments)
    for key in ("sequence_output", "nsp_logits"):
        np.testing.assert_allclose(actual[key], expected[key], atol=ATOL)
    np.testing.assert_allclose(actual["mlm_logits"], expected["mlm_logits"][..., keep], atol=ATOL)


def test_bert_in_transformers_format_stays_there(tmp_path):
    from conftest import make_hf_bert

    source = make_hf_bert(tmp_path / "hf")
    keep_file = tmp_path / "keep.txt"
    keep_file.write_text("10 11 12 50")
    modelport.prune_vocab(source, keep=keep_file, out=tmp_path / "small")
    keep = [0, 1, 2, 3, 4, 10, 11, 12, 50]
    assert kept_by_tokenizer(source, tmp_path / "small") == keep
    tensors = _safetensors(tmp_path / "small")
    assert tensors["bert.embeddings.word_embeddings.weight"].shape[0] == tensors["cls.predictions.bias"].shape[0] == 9
    np.testing.assert_array_equal(tensors["cls.predictions.bias"], _safetensors(source)["cls.predictions.bias"][keep])
    record = json.loads((tmp_path / "small" / "modelport.json").read_text())
    assert record["vocabulary_pruning"] == {"tokens": 9, "description": "vocabulary pruned to 9 of 99 tokens (ids "
                                                                        "renumbered in order)"}


def test_errors(tmp_path):
    source = make_mesh_t5(tmp_path / "t5", gated=False, tied=True, vocabulary=False)
    keep = tmp_path / "keep.txt"
    keep.write_text("5 7")
    with pytest.raises(modelport.ModelportError, match="either --keep IDS_FILE or --corpus TEXT_FILE"):
        modelport.prune_vocab(source, out=tmp_path / "out")
    with pytest.raises(modelport.ModelportError, match="no tokenizer .* --tokenizer"):
        modelport.prune_vocab(source, keep=keep, out=tmp_path / "out")
    vocabulary = make_mesh_t5(tmp_path / "v", gated=False, tied=True) / "sentencepiece.model"
    keep.write_text("5 700")
    with pytest.raises(modelport.ModelportError, match="token id 700 is outside the model's 384 embedding rows"):
        modelport.prune_vocab(source, keep=keep, out=tmp_path / "out", tokenizer=vocabulary)
    keep.write_text("5 seven")
    with pytest.raises(modelport.ModelportError, match="'seven' is not a token id"):
        modelport.prune_vocab(source, keep=keep, out=tmp_path / "out", tokenizer=vocabulary)
    assert not (tmp_path / "out").exists()


def test_cli(tmp_path):
    source = make_tf1_bert(tmp_path / "bert")
    (tmp_path / "corpus.txt").write_text("hello world\n")
    command = [sys.executable, "-m", "modelport", "prune-vocab", str(source), "-o", str(tmp_path / "out")]
    result = subprocess.run(command + ["--corpus", str(tmp_path / "corpus.txt")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "vocabulary pruned to 7 of 99 tokens" in result.stderr
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        "error: prune-vocab needs either --keep IDS_FILE or --corpus TEXT_FILE"]


def _safetensors(folder):
    from safetensors.numpy import load_file

    return {k: v for file in sorted(folder.glob("*.safetensors")) for k, v in load_file(file).items()}


def test_albert_sentencepiece_prunes_model_heads_and_pieces_in_step(tmp_path):
    """Google's English ALBERT: the corpus is counted as AlbertTokenizer prepares text (spaces collapsed,
    lowercased), and the sentencepiece model keeps the same pieces as the embedding rows."""
    import sentencepiece
    from albert_checkpoints import TINY_ALBERT, make_tf1_albert
    from reference import google_albert

    source = make_tf1_albert(tmp_path / "albert")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Hello   World, the MODEL ports\nsentence order prediction\n")
    modelport.prune_vocab(source, corpus=corpus, out=tmp_path / "small")
    before = sentencepiece.SentencePieceProcessor(model_file=str(source / "30k-clean.model"))
    after = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "small" / "30k-clean.model"))
    lines = [" ".join(line.split()).lower() for line in corpus.read_text().splitlines()]
    keep = sorted({i for ids in before.encode(lines) for i in ids} | {0, 1, 2, 3, 4})  # + <pad> <unk> [CLS] ...
    assert [after.id_to_piece(i) for i in range(after.get_piece_size())] == [before.id_to_piece(i) for i in keep]
    assert after.encode(lines) == [renumber(ids, keep).tolist() for ids in before.encode(lines)]
    config = json.loads((tmp_path / "small" / "albert_config.json").read_text())
    assert config == {**TINY_ALBERT, "vocab_size": len(keep)}
    original = tf_load(source / "model.ckpt-best")
    pruned = tf_load(next((tmp_path / "small").glob("*.index")).with_suffix(""))
    rng = np.random.default_rng(0)
    ids, segments = rng.choice(keep, size=(2, 10)), rng.integers(0, 2, size=(2, 10))
    expected = google_albert(original, TINY_ALBERT, ids, segments)
    actual = google_albert(pruned, config, renumber(ids, keep), segments)
    for key in expected:
        if key == "mlm_logits":
            np.testing.assert_allclose(actual[key], expected[key][..., keep], atol=ATOL)
        else:
            np.testing.assert_allclose(actual[key], expected[key], atol=ATOL, err_msg=key)


def test_chinese_albert_wordpiece_prunes_in_step(tmp_path):
    from albert_checkpoints import TINY_ALBERT, make_tf1_albert
    from reference import google_albert

    source = make_tf1_albert(tmp_path / "albert_zh", tokenizer="wordpiece")
    keep_file = tmp_path / "keep.txt"
    keep_file.write_text("# ids to keep\n7, 8 40\n98\n")
    modelport.prune_vocab(source, keep=keep_file, out=tmp_path / "small")
    vocab = (source / "vocab_chinese.txt").read_text().splitlines()
    keep = sorted({7, 8, 40, 98} | {vocab.index(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")})
    assert (tmp_path / "small" / "vocab.txt").read_text().splitlines() == [vocab[i] for i in keep]
    config = json.loads((tmp_path / "small" / "albert_config.json").read_text())
    rng = np.random.default_rng(1)
    ids, segments = rng.choice(keep, size=(2, 10)), rng.integers(0, 2, size=(2, 10))
    expected = google_albert(tf_load(source / "model.ckpt-best"), TINY_ALBERT, ids, segments)
    actual = google_albert(tf_load(next((tmp_path / "small").glob("*.index")).with_suffix("")), config,
                           renumber(ids, keep), segments)
    np.testing.assert_allclose(actual["mlm_logits"], expected["mlm_logits"][..., keep], atol=ATOL)
    np.testing.assert_allclose(actual["sop_logits"], expected["sop_logits"], atol=ATOL)
