"""Tokenizer files travel with the weights. A mapping names its tokenizer kind; each kind knows where
its files live in a source folder and what to write for a target scheme."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from modelport.converters.sentencepiece_model import T5_SENTINELS, SentencePieceModel, t5_extra_ids
from modelport.errors import ModelportError

BERT_SPECIALS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                 "mask_token": "[MASK]"}


@dataclass
class TokenizerResult:
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # a KerasHub tokenizer's arguments (its tokenizer.json)
    keras_tokenizer: str = ""  # the KerasHub tokenizer class reading these files, when not the architecture's


def _wordpiece_vocab(path: Path) -> list[str]:
    if path.name == "tokenizer.json":
        try:
            vocab = json.loads(path.read_text())["model"]["vocab"]
            return [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ModelportError(f"{path}: not a WordPiece tokenizer.json")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ModelportError(f"{path}: cannot read the vocabulary ({error})")


def _find(explicit: Path | None, source_dir: Path, names: list[str]) -> Path | None:
    if explicit is not None:
        if explicit.is_file():
            return explicit
        found = next((explicit / n for n in names if (explicit / n).is_file()), None)
        if found is None:
            raise ModelportError(f"{explicit}: --tokenizer holds none of {', '.join(names)}")
        return found
    return next((source_dir / n for n in names if (source_dir / n).is_file()), None)


def infer_lowercase(vocab: list[str]) -> bool:
    """An uncased vocabulary has no upper-case letters outside its [BRACKETED] special tokens."""
    return not any(ch.isupper() for token in vocab if not re.fullmatch(r"\[[^\]]*\]", token) for ch in token)


def _stored_setting(found: Path, key: str):
    """A setting of the tokenizer_config.json beside a tokenizer file, if there is one."""
    settings = found.parent / "tokenizer_config.json"
    if not settings.is_file():
        return None
    try:
        return json.loads(settings.read_text(encoding="utf-8")).get(key)
    except (ValueError, UnicodeDecodeError, AttributeError):
        raise ModelportError(f"{settings}: not a JSON object") from None


def decide_lowercase(found: Path, vocab: list[str], lowercase: bool | None) -> bool:
    """--lowercase/--no-lowercase, else the source's tokenizer_config.json, else what the vocabulary looks like."""
    if lowercase is not None:
        return lowercase
    stored = _stored_setting(found, "do_lower_case")
    if stored is None and found.as_posix().endswith(KERAS_VOCABULARY):  # a KerasHub preset's
        stored = _keras_setting(found.parent.parent.parent, "lowercase")
    return stored if isinstance(stored, bool) else infer_lowercase(vocab)


def _keras_setting(preset: Path, key: str):
    """An argument of the tokenizer a KerasHub preset's tokenizer.json describes, if there is one."""
    try:
        return json.loads((preset / "tokenizer.json").read_text(encoding="utf-8"))["config"].get(key)
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        return None


KERAS_VOCABULARY = "assets/tokenizer/vocabulary.txt"  # a KerasHub preset's vocabulary
KERAS_SENTENCEPIECE = "assets/tokenizer/vocabulary.spm"  # a KerasHub preset's sentencepiece model
# A KerasHub SentencePieceTokenizer's arguments (its model is the asset above).
KERAS_SENTENCEPIECE_SETTINGS = {"proto": None, "sequence_length": None, "add_bos": False, "add_eos": False}
# A KerasHub WordPieceTokenizer's arguments as its save_to_preset writes them (its vocabulary is the asset above).
KERAS_WORDPIECE_SETTINGS = {"vocabulary": None, "sequence_length": None, "split": True, "suffix_indicator": "##",
                            "oov_token": BERT_SPECIALS["unk_token"], "special_tokens": None,
                            "special_tokens_in_strings": False}
KERAS_BERT_TOKENIZER = "keras_hub.src.models.bert.bert_tokenizer.BertTokenizer"


def write_keras_sentencepiece(out_dir: Path, model: bytes, tokenizer: str = "") -> TokenizerResult:
    """A sentencepiece model as a KerasHub preset's tokenizer asset (`tokenizer`: its KerasHub class, when not
    the architecture's)."""
    (out_dir / KERAS_SENTENCEPIECE).parent.mkdir(parents=True, exist_ok=True)
    (out_dir / KERAS_SENTENCEPIECE).write_bytes(model)
    return TokenizerResult(files=[KERAS_SENTENCEPIECE], settings=dict(KERAS_SENTENCEPIECE_SETTINGS),
                           keras_tokenizer=tokenizer)
WORDPIECE_NAMES = ["vocab.txt", KERAS_VOCABULARY, "tokenizer.json"]


def wordpiece(source_dir: Path, explicit: Path | None, out_dir: Path, scheme: str, config: dict,
              lowercase: bool | None) -> TokenizerResult:
    found = _find(explicit, source_dir, WORDPIECE_NAMES)
    if found is None:
        return TokenizerResult(notes=[f"no tokenizer: {source_dir} has no vocab.txt (releases often keep it "
                                      "elsewhere): the output has weights and config only; pass --tokenizer PATH "
                                      "to add it"])
    vocab = _wordpiece_vocab(found)
    vocab_size = config.get("vocab_size")
    if vocab_size is not None and len(vocab) > vocab_size:
        raise ModelportError(f"{found}: {len(vocab)} tokens, but the model has only {vocab_size} embedding rows")
    result = TokenizerResult()
    lowercase = decide_lowercase(found, vocab, lowercase)
    if scheme == "keras":  # KerasHub's WordPiece tokenizers: uncased ones strip accents, as transformers' do
        (out_dir / KERAS_VOCABULARY).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / KERAS_VOCABULARY).write_text("\n".join(vocab) + "\n", encoding="utf-8")
        result = TokenizerResult(files=[KERAS_VOCABULARY], settings={**KERAS_WORDPIECE_SETTINGS, "lowercase": lowercase,
                                                                     "strip_accents": lowercase})
    else:
        (out_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        result.files.append("vocab.txt")
    if scheme == "hf":
        settings = {"tokenizer_class": "BertTokenizer", "do_lower_case": lowercase,
                    "model_max_length": config.get("max_position_embeddings", 512), **BERT_SPECIALS}
        (out_dir / "tokenizer_config.json").write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
        (out_dir / "special_tokens_map.json").write_text(json.dumps(BERT_SPECIALS, indent=2) + "\n")
        result.files += ["tokenizer_config.json", "special_tokens_map.json"]
    if vocab_size is not None and len(vocab) < vocab_size:
        result.notes.append(f"the vocabulary has {len(vocab)} tokens for {vocab_size} embedding rows (padded rows)")
    return result


CPM_MODEL_NAMES = ["chinese_vocab.model", "spiece.model"]  # CPM-Generate's name, then transformers'
CPM_TOKENIZER_CODE = "tokenization_cpm_jieba.py"
CPM_SPECIALS = {"unk_token": "<unk>", "bos_token": "<eod>", "eos_token": "<eod>", "pad_token": "<pad>",
                "sep_token": "<sep>", "mask_token": "<mask>"}


def cpm_sentencepiece(source_dir: Path, explicit: Path | None, out_dir: Path, scheme: str, config: dict,
                      lowercase: bool | None) -> TokenizerResult:
    """CPM's sentencepiece model. For transformers it travels with tokenization_cpm_jieba.py (loaded with
    trust_remote_code=True), which runs CPM's jieba and U+2582/U+2583 steps: transformers 5's CpmTokenizer
    no longer does, and no built-in tokenizer can."""
    found = _find(explicit, source_dir, CPM_MODEL_NAMES + [KERAS_SENTENCEPIECE])
    if found is None:
        return TokenizerResult(notes=[f"no tokenizer: {source_dir} has no chinese_vocab.model (CPM-Generate keeps it "
                                      "in bpe_3w_new/): the output has weights and config only; pass --tokenizer "
                                      "PATH to add it"])
    try:
        import sentencepiece
    except ImportError:
        raise ModelportError("carrying CPM's tokenizer needs sentencepiece: pip install sentencepiece") from None
    model = found.read_bytes()
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(model)
    except (RuntimeError, ValueError):
        raise ModelportError(f"{found}: not a sentencepiece model") from None
    pieces, vocab_size = processor.get_piece_size(), config.get("vocab_size")
    if vocab_size is not None and pieces > vocab_size:
        raise ModelportError(f"{found}: {pieces} pieces, but the model has only {vocab_size} embedding rows")
    specials = {key: piece for key, piece in CPM_SPECIALS.items()
                if processor.id_to_piece(processor.piece_to_id(piece)) == piece}
    result = TokenizerResult()
    for key in ("bos_token", "eos_token"):
        piece, stated = CPM_SPECIALS[key], config.get(f"{key}_id")
        if stated is not None and (key not in specials or stated != processor.piece_to_id(piece)):
            where = f"at {processor.piece_to_id(piece)}" if key in specials else "nowhere"
            result.notes.append(f"the config's {key}_id is {stated}, but {found.name} has {piece} {where}")
    if scheme == "keras":
        keras = write_keras_sentencepiece(out_dir, model)
        keras.notes = result.notes + [
            "KerasHub has no tokenizer for CPM: the preset's is KerasHub's SentencePieceTokenizer over CPM's "
            "sentencepiece model, which does not run CPM's jieba word segmentation nor turn spaces and newlines "
            "into U+2582 and U+2583: give it text prepared so (words joined by spaces), as "
            f"{CPM_TOKENIZER_CODE} does"]
        return keras
    if scheme != "hf":
        (out_dir / CPM_MODEL_NAMES[0]).write_bytes(model)
        result.files.append(CPM_MODEL_NAMES[0])
        return result
    (out_dir / "spiece.model").write_bytes(model)
    (out_dir / CPM_TOKENIZER_CODE).write_bytes((Path(__file__).parent / CPM_TOKENIZER_CODE).read_bytes())
    settings = {"tokenizer_class": "CpmJiebaTokenizer",
                "auto_map": {"AutoTokenizer": [f"{CPM_TOKENIZER_CODE[:-3]}.CpmJiebaTokenizer", None]},
                "model_max_length": config.get("n_positions", 1024), "clean_up_tokenization_spaces": False, **specials}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")
    result.files += ["spiece.model", CPM_TOKENIZER_CODE, "tokenizer_config.json", "special_tokens_map.json"]
    return result


T5_MODEL_NAMES = ["spiece.model", "sentencepiece.model"]  # transformers' name, then Mesh TF vocabularies'
T5_SPECIALS = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
T5_MAX_LENGTH = 512


def _t5_extra_ids(found: Path, pieces: int, rows: int | None) -> int:
    """How many sentinel ids follow the pieces: the source's tokenizer_config.json says, else the rows tell."""
    stored = _stored_setting(found, "extra_ids")
    extra = stored if isinstance(stored, int) and not isinstance(stored, bool) else t5_extra_ids(pieces, rows)
    if rows is not None and pieces + extra > rows:
        raise ModelportError(f"{found}: {pieces} pieces and {extra} sentinel ids, but the model has only {rows} "
                             "embedding rows")
    return extra


def _write_t5_tokenizer(out_dir: Path, scheme: str, model: bytes, extra_ids: int) -> list[str]:
    """transformers' T5Tokenizer files (the model, and extra_ids so that <extra_id_0> is the last id), or the
    sentencepiece.model Mesh TF vocabularies hold."""
    if scheme != "hf":
        (out_dir / T5_MODEL_NAMES[1]).write_bytes(model)
        return [T5_MODEL_NAMES[1]]
    (out_dir / "spiece.model").write_bytes(model)
    settings = {"tokenizer_class": "T5Tokenizer", "extra_ids": extra_ids, "model_max_length": T5_MAX_LENGTH,
                **T5_SPECIALS}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(T5_SPECIALS, indent=2) + "\n")
    return ["spiece.model", "tokenizer_config.json", "special_tokens_map.json"]


def t5_sentencepiece(source_dir: Path, explicit: Path | None, out_dir: Path, scheme: str, config: dict,
                     lowercase: bool | None) -> TokenizerResult:
    """T5's and mT5's sentencepiece model. T5 appends 100 sentinel ids after its pieces (32000 + 100 of 32128
    rows); mT5's model holds them (250100 pieces of 250112 rows): ids match the embedding rows either way."""
    found = _find(explicit, source_dir, T5_MODEL_NAMES + [KERAS_SENTENCEPIECE])
    if found is None:
        where = ("has only tokenizer.json (transformers 5 saves no spiece.model)" if (source_dir / "tokenizer.json")
                 .is_file() else "has no spiece.model or sentencepiece.model (Mesh TF releases keep it in a "
                 "vocabulary folder)")
        return TokenizerResult(notes=[f"no tokenizer: {source_dir} {where}: the output has weights and config "
                                      "only; pass --tokenizer PATH (the sentencepiece model) to add it"])
    pieces, rows = len(SentencePieceModel(found)), config.get("vocab_size")
    extra_ids = _t5_extra_ids(found, pieces, rows)
    if scheme == "keras":
        result = write_keras_sentencepiece(out_dir, found.read_bytes())
        if extra_ids:
            result.notes.append(f"KerasHub's T5Tokenizer knows the sentencepiece model's {pieces} pieces only, not "
                                f"the {extra_ids} sentinel ids transformers' T5Tokenizer appends (<extra_id_0> is id "
                                f"{pieces + extra_ids - 1} there)")
        return result
    result = TokenizerResult(files=_write_t5_tokenizer(out_dir, scheme, found.read_bytes(), extra_ids))
    if rows is not None and pieces + extra_ids < rows:
        result.notes.append(f"the tokenizer has {pieces} pieces and {extra_ids} sentinel ids for {rows} embedding "
                            "rows (padded rows)")
    return result


# Google's English releases' name, then transformers', then a KerasHub preset's
ALBERT_MODEL_NAMES = ["30k-clean.model", "spiece.model", KERAS_SENTENCEPIECE]
# albert_zh's; Google's Chinese releases'; a KerasHub preset's (its BertTokenizer)
ALBERT_VOCAB_NAMES = ["vocab.txt", "vocab_chinese.txt", "tokenizer.json", KERAS_VOCABULARY]
ALBERT_SPECIALS = {"bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "<unk>", "sep_token": "[SEP]",
                   "pad_token": "<pad>", "cls_token": "[CLS]", "mask_token": "[MASK]"}


def albert_tokenizer(source_dir: Path, explicit: Path | None, out_dir: Path, scheme: str, config: dict,
                     lowercase: bool | None) -> TokenizerResult:
    """ALBERT: Google's English releases carry a sentencepiece model (30k-clean.model), which transformers'
    AlbertTokenizer reads as spiece.model (lowercased, like Google's do_lower_case default); the Chinese
    releases and albert_zh a WordPiece vocabulary, which travels as BERT's does."""
    found = _find(explicit, source_dir, ALBERT_MODEL_NAMES + ALBERT_VOCAB_NAMES)
    if found is None:
        return TokenizerResult(notes=[f"no tokenizer: {source_dir} has no 30k-clean.model or vocab.txt: the output "
                                      "has weights and config only; pass --tokenizer PATH to add it"])
    if found.name == "tokenizer.json" and _tokenizer_json_type(found) != "WordPiece":
        return TokenizerResult(notes=[f"no tokenizer: {found} is a sentencepiece tokenizer.json without its "
                                      "spiece.model, which Google's code needs: pass --tokenizer PATH to add it"])
    if found.suffix not in (".model", ".spm"):  # KerasHub's AlbertTokenizer is sentencepiece; its BertTokenizer
        result = wordpiece(source_dir, found, out_dir, scheme, config, lowercase)
        if scheme == "keras":
            result.keras_tokenizer = KERAS_BERT_TOKENIZER
            result.notes.append(f"{found.name} is a WordPiece vocabulary, which KerasHub's AlbertTokenizer "
                                "(sentencepiece) cannot read: the preset's tokenizer is KerasHub's BertTokenizer")
        return result
    pieces, rows = len(SentencePieceModel(found)), config.get("vocab_size")
    if rows is not None and pieces > rows:
        raise ModelportError(f"{found}: {pieces} pieces, but the model has only {rows} embedding rows")
    lowercase = albert_lowercase(found, lowercase)
    if scheme == "keras":
        result = write_keras_sentencepiece(out_dir, found.read_bytes())
        if lowercase:
            result.notes.append("KerasHub's AlbertTokenizer runs the sentencepiece model on the text as given: "
                                "transformers' AlbertTokenizer (do_lower_case) and Google's code lowercase it and "
                                "strip accents first, so lowercase text before tokenizing")
        return result
    if scheme != "hf":
        (out_dir / ALBERT_MODEL_NAMES[0]).write_bytes(found.read_bytes())
        return TokenizerResult(files=[ALBERT_MODEL_NAMES[0]])
    (out_dir / "spiece.model").write_bytes(found.read_bytes())
    settings = {"tokenizer_class": "AlbertTokenizer", "do_lower_case": lowercase, "remove_space": True,
                "keep_accents": False, "model_max_length": config.get("max_position_embeddings", 512),
                **ALBERT_SPECIALS}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(ALBERT_SPECIALS, indent=2) + "\n")
    result = TokenizerResult(files=["spiece.model", "tokenizer_config.json", "special_tokens_map.json"])
    if rows is not None and pieces < rows:
        result.notes.append(f"the tokenizer has {pieces} pieces for {rows} embedding rows (padded rows)")
    return result


def albert_lowercase(found: Path, lowercase: bool | None) -> bool:
    """--lowercase/--no-lowercase, else the source's tokenizer_config.json, else Google's do_lower_case default."""
    if lowercase is not None:
        return lowercase
    stored = _stored_setting(found, "do_lower_case")
    return stored if isinstance(stored, bool) else True


def _tokenizer_json_type(path: Path) -> str:
    try:
        return json.loads(path.read_text(encoding="utf-8"))["model"]["type"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelportError(f"{path}: not a tokenizer.json") from None


class TokenVocabulary:
    """A tokenizer as prune-vocab sees it: its ids, the ones it always keeps (special tokens, sentinels), how it
    encodes text, and how it writes itself with only some ids."""

    path: Path
    size: int
    specials: set[int]

    def encode(self, lines: list[str]) -> list[list[int]]:
        raise NotImplementedError

    def write_pruned(self, keep: list[int], out_dir: Path, scheme: str, config: dict) -> TokenizerResult:
        raise NotImplementedError


class WordPieceVocabulary(TokenVocabulary):
    def __init__(self, found: Path, config: dict, lowercase: bool | None):
        self.path, self.tokens = found, _wordpiece_vocab(found)
        self.lowercase = decide_lowercase(found, self.tokens, lowercase)
        self.size = len(self.tokens)
        self.specials = {i for i, token in enumerate(self.tokens) if token in BERT_SPECIALS.values()}

    def encode(self, lines: list[str]) -> list[list[int]]:
        """BERT's tokenization (clean, split CJK characters and punctuation, lowercase and strip accents when
        uncased, greedy longest-match WordPiece), as transformers' fast BERT tokenizer runs it."""
        try:
            from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
        except ImportError:
            raise ModelportError("--corpus needs the tokenizers package: pip install 'modelport[hf]'") from None
        vocab = {token: i for i, token in reversed(list(enumerate(self.tokens)))}
        tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=BERT_SPECIALS["unk_token"]))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=self.lowercase)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        return [encoding.ids for encoding in tokenizer.encode_batch(lines, add_special_tokens=False)]

    def write_pruned(self, keep: list[int], out_dir: Path, scheme: str, config: dict) -> TokenizerResult:
        kept = out_dir / "vocab.txt"
        kept.write_text("\n".join(self.tokens[i] for i in keep if i < self.size) + "\n", encoding="utf-8")
        return wordpiece(out_dir, kept, out_dir, scheme, config, self.lowercase)


class T5Vocabulary(TokenVocabulary):
    def __init__(self, found: Path, config: dict, lowercase: bool | None):
        self.path, self.model = found, SentencePieceModel(found)
        self.pieces = len(self.model)
        self.extra_ids = _t5_extra_ids(found, self.pieces, config.get("vocab_size"))
        self.size = self.pieces + self.extra_ids
        sentinels = set(range(max(0, self.size - T5_SENTINELS), self.size))
        self.specials = self.model.special_ids() | sentinels

    def encode(self, lines: list[str]) -> list[list[int]]:
        return self.model.encode(lines)

    def write_pruned(self, keep: list[int], out_dir: Path, scheme: str, config: dict) -> TokenizerResult:
        extra_ids = sum(1 for i in keep if self.pieces <= i < self.size)
        model = self.model.pruned([i for i in keep if i < self.pieces])
        return TokenizerResult(files=_write_t5_tokenizer(out_dir, scheme, model, extra_ids))


class AlbertVocabulary(TokenVocabulary):
    """Google's English ALBERT releases: a sentencepiece model, run on text as transformers' AlbertTokenizer and
    Google's tokenization prepare it (spaces collapsed, `` and '' as ", accents stripped, lowercased unless
    do_lower_case is off)."""

    def __init__(self, found: Path, config: dict, lowercase: bool | None):
        self.path, self.model = found, SentencePieceModel(found)
        self.size = len(self.model)
        self.specials = self.model.special_ids()  # <pad>, <unk>, [CLS], [SEP], [MASK]
        self.lowercase = albert_lowercase(found, lowercase)

    def encode(self, lines: list[str]) -> list[list[int]]:
        return self.model.encode([self._prepared(line) for line in lines])

    def _prepared(self, text: str) -> str:
        text = " ".join(text.strip().split()).replace("``", '"').replace("''", '"')
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
        return text.lower() if self.lowercase else text

    def write_pruned(self, keep: list[int], out_dir: Path, scheme: str, config: dict) -> TokenizerResult:
        staged = out_dir / ".pruned.model"  # written under the layout's own name by albert_tokenizer
        staged.write_bytes(self.model.pruned(keep))
        try:
            return albert_tokenizer(out_dir, staged, out_dir, scheme, config, self.lowercase)
        finally:
            staged.unlink()


def albert_vocabulary(found: Path, config: dict, lowercase: bool | None) -> TokenVocabulary:
    """ALBERT's English releases carry a sentencepiece model, its Chinese ones (and albert_zh) a WordPiece
    vocabulary."""
    kind = AlbertVocabulary if found.suffix in (".model", ".spm") else WordPieceVocabulary
    return kind(found, config, lowercase)


VOCABULARIES = {"wordpiece": (WORDPIECE_NAMES, WordPieceVocabulary),
                "t5": (T5_MODEL_NAMES, T5Vocabulary),
                "albert": (ALBERT_MODEL_NAMES + ALBERT_VOCAB_NAMES, albert_vocabulary)}


def open_vocabulary(kind: str, source_dir: Path, explicit: Path | None, config: dict,
                    lowercase: bool | None) -> TokenVocabulary:
    if kind not in VOCABULARIES:
        raise ModelportError(f"prune-vocab does not handle {kind or 'this architecture'}'s tokenizer "
                             f"(it handles {', '.join(VOCABULARIES)})")
    names, vocabulary = VOCABULARIES[kind]
    found = _find(explicit, source_dir, names)
    if found is None:
        raise ModelportError(f"{source_dir}: no tokenizer ({' or '.join(names)}), which prune-vocab needs to keep "
                             "token ids and weights in step: pass --tokenizer PATH")
    return vocabulary(found, config, lowercase)


KINDS = {"wordpiece": wordpiece, "cpm": cpm_sentencepiece, "t5": t5_sentencepiece, "albert": albert_tokenizer}


def carry_tokenizer(kind: str, source_dir: Path, explicit: Path | None, out_dir: Path, scheme: str, config: dict,
                    lowercase: bool | None) -> TokenizerResult:
    if not kind:
        return TokenizerResult()
    return KINDS[kind](source_dir, explicit, out_dir, scheme, config, lowercase)


def wordpiece_files(scheme: str) -> list[tuple[str, ...]]:
    """What transformers needs for a WordPiece tokenizer in the hf layout (a vocabulary and its settings; the
    special tokens map is optional), and what Google's code needs otherwise (vocab.txt)."""
    return [("vocab.txt", "tokenizer.json"), ("tokenizer_config.json",)] if scheme == "hf" else [("vocab.txt",)]


def cpm_files(scheme: str) -> list[tuple[str, ...]]:
    """transformers needs the sentencepiece model, the tokenizer class and its settings; CPM's code its model."""
    if scheme == "hf":
        return [("spiece.model",), (CPM_TOKENIZER_CODE,), ("tokenizer_config.json",)]
    return [(CPM_MODEL_NAMES[0],)]


def t5_files(scheme: str) -> list[tuple[str, ...]]:
    """transformers needs the sentencepiece model and its settings (extra_ids); Mesh TF its vocabulary model."""
    if scheme == "hf":
        return [("spiece.model", "tokenizer.json"), ("tokenizer_config.json",)]
    return [tuple(T5_MODEL_NAMES)]


def albert_files(scheme: str) -> list[tuple[str, ...]]:
    """transformers needs a sentencepiece model or a WordPiece vocabulary and its settings; Google's code the
    model (English releases) or vocab.txt (Chinese ones, albert_zh)."""
    if scheme == "hf":
        return [("spiece.model", "vocab.txt", "tokenizer.json"), ("tokenizer_config.json",)]
    return [(ALBERT_MODEL_NAMES[0], "vocab.txt")]


REQUIRED_FILES = {"wordpiece": wordpiece_files, "cpm": cpm_files, "t5": t5_files, "albert": albert_files}


def required_tokenizer_files(kind: str, scheme: str) -> list[tuple[str, ...]]:
    """The files a folder in `scheme` needs for a tokenizer of `kind`: each entry is met by any one of its names.
    A KerasHub preset describes every kind of tokenizer in its tokenizer.json (its assets beside it)."""
    if not kind:
        return []
    return [("tokenizer.json",)] if scheme == "keras" else REQUIRED_FILES[kind](scheme)
