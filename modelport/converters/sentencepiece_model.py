"""SentencePiece model files (spiece.model, sentencepiece.model) through their protobuf, as the sentencepiece
package ships it (sentencepiece_model_pb2): how many pieces, which are special, the same model with only
some pieces, and encoding text into ids."""

from __future__ import annotations

from pathlib import Path

from modelport.errors import ModelportError

T5_SENTINELS = 100  # T5's span-corruption sentinels <extra_id_0..99>: the last 100 ids of the vocabulary


def _protobuf():
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:
        raise ModelportError("reading a sentencepiece model needs the sentencepiece and protobuf packages: "
                             "pip install 'modelport[sentencepiece]'") from None
    return sentencepiece_model_pb2


class SentencePieceModel:
    """A parsed model file; `ids` are piece indices, which are the token ids."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.proto = _protobuf().ModelProto()
        try:
            self.proto.ParseFromString(self.path.read_bytes())
        except OSError as error:
            raise ModelportError(f"{self.path}: cannot read the sentencepiece model ({error.strerror})") from None
        except Exception:  # protobuf's DecodeError
            raise ModelportError(f"{self.path}: not a sentencepiece model") from None
        if not self.proto.pieces:
            raise ModelportError(f"{self.path}: not a sentencepiece model (no pieces)")

    def __len__(self) -> int:
        return len(self.proto.pieces)

    def special_ids(self) -> set[int]:
        """Pieces that are not learned text pieces: unknown, control (<pad>, </s>), user-defined and byte pieces."""
        normal = {_protobuf().ModelProto.SentencePiece.NORMAL, _protobuf().ModelProto.SentencePiece.UNUSED}
        return {i for i, piece in enumerate(self.proto.pieces) if piece.type not in normal}

    def encode(self, lines: list[str]) -> list[list[int]]:
        import sentencepiece

        processor = sentencepiece.SentencePieceProcessor(model_proto=self.proto.SerializeToString())
        return processor.encode(lines)

    def pruned(self, keep: list[int]) -> bytes:
        """The model with only the pieces `keep` (sorted ids), which become ids 0..len(keep)-1."""
        proto = _protobuf().ModelProto()
        proto.CopyFrom(self.proto)
        del proto.pieces[:]
        proto.pieces.extend(self.proto.pieces[i] for i in keep)
        new_id = {old: new for new, old in enumerate(keep)}
        spec = proto.trainer_spec
        spec.vocab_size = len(keep)
        for name in ("unk_id", "bos_id", "eos_id", "pad_id"):
            old = getattr(spec, name)
            if old >= 0:
                setattr(spec, name, new_id.get(old, -1))
        return proto.SerializeToString()


def t5_extra_ids(pieces: int, rows: int | None) -> int:
    """How many sentinel ids T5 adds after the pieces: 100 when the embedding has rows for them (T5: 32000
    pieces, 32128 rows), none when the pieces already hold them (mT5: 250100 pieces, 250112 rows)."""
    return T5_SENTINELS if rows is None or pieces + T5_SENTINELS <= rows else 0
