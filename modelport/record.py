"""The conversion record: a small machine-readable modelport.json written into every converted folder, so the
folder can say later (in a model card, on the Hub) what it was made from, how, and whether it was verified.

Source files are identified by name, size and sha256 (the same digest the Hub shows for LFS files, so a record
can be matched against the release it came from). Hashing needs a read pass of its own, since the readers
memory-map; it runs in a background thread while the conversion streams the same files (hashlib releases the
GIL on large updates), and it stops as soon as the conversion fails. A data file whose every tensor has a
checksum in another file, checked as the conversion reads it (a TF1 checkpoint's crc32c in its .index), is not
hashed again: the index's sha256 pins those checksums, and hashing would cost a core for the whole conversion.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from pathlib import Path

from modelport.errors import ModelportError

RECORD_NAME = "modelport.json"
CHUNK_BYTES = 1 << 20


def modelport_version() -> str:
    from modelport import __version__

    return __version__


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class SourceDigests:
    """sha256 of files, computed in a background thread; `result()` waits for it, leaving the block stops it.
    `verified` files (path -> how their tensors are checked) are listed with that instead."""

    def __init__(self, paths: list[Path], verified: dict[Path, str] | None = None):
        self._paths = list(dict.fromkeys(Path(p) for p in paths))
        self._verified = verified or {}
        self._stop = threading.Event()
        self._digests: list[dict] = []
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="modelport-sha256", daemon=True)

    def __enter__(self) -> "SourceDigests":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            for path in self._paths:
                if path in self._verified:
                    self._digests.append({"name": path.name, "bytes": path.stat().st_size,
                                          "checked_by": self._verified[path]})
                    continue
                digest = hashlib.sha256()
                with open(path, "rb") as file:
                    while chunk := file.read(CHUNK_BYTES):
                        if self._stop.is_set():
                            return
                        digest.update(chunk)
                self._digests.append({"name": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()})
        except OSError as error:
            self._error = error

    def result(self) -> list[dict]:
        self._thread.join()
        if self._error is not None:
            raise ModelportError(f"{self._error.filename}: cannot read it to record its checksum "
                                 f"({self._error.strerror})")
        return list(self._digests)


def conversion_record(plan, model_class: str, target_format: str, target_scheme: str, dtype: str,
                      sources: list[dict], others: list, changes: dict) -> dict:
    """What a conversion made and from what (file names only: local paths stay private): `others` are the
    plans of the parts given beside the source (--with), `changes` what was done beyond changing the layout
    (position_extension, vocabulary_pruning)."""
    record = {
        "modelport": modelport_version(), "date": utc_now(), "arch": plan.mapping.arch, "model_class": model_class,
        "source": {"format": plan.reader.format, "layout": plan.scheme, "files": sources},
        "output": {"format": target_format, "layout": target_scheme, "dtype": dtype},
        "skipped": {"training_state": len(plan.training_state), "unmapped": list(plan.unknown)},
    }
    if plan.mapping.variant:
        record["source"]["part"] = plan.mapping.variant
    if others:
        record["source"]["with"] = [{"part": other.mapping.variant, "format": other.reader.format,
                                     "layout": other.scheme} for other in others]
    return {**record, **changes}


def write_record(folder: Path, record: dict) -> str:
    """Write (or replace, atomically) FOLDER/modelport.json; returns the file name."""
    path = Path(folder) / RECORD_NAME
    partial = path.with_name(f".{RECORD_NAME}.partial-{os.getpid()}")
    partial.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    partial.replace(path)
    return RECORD_NAME


def read_record(folder: Path) -> dict | None:
    """FOLDER/modelport.json, or None when the folder has none."""
    path = Path(folder) / RECORD_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        raise ModelportError(f"{path}: the conversion record is not valid JSON")
    if not isinstance(record, dict):
        raise ModelportError(f"{path}: the conversion record is not a JSON object")
    return record


def record_verification(folder: Path, source: Path, rows: list[dict], forward: list[dict], ok: bool,
                        tolerance: float) -> None:
    """Add a `verify` run's results to FOLDER's record, when FOLDER is a converted folder with one that can be
    rewritten (a read-only folder keeps its record as it is: verification itself succeeded)."""
    record = read_record(folder) if Path(folder).is_dir() else None
    if record is None:
        return
    record["verify"] = {
        "date": utc_now(), "against": Path(source).name, "ok": ok, "tolerance": tolerance,
        "tensors": len(rows), "bit_exact": sum(row["result"] == "bit-exact" for row in rows),
        "failed": [row["tensor"] for row in rows if not row["ok"]][:20],
        "forward": [{"output": row["output"], "result": row["result"], "ok": row["ok"]} for row in forward],
    }
    with contextlib.suppress(OSError):
        write_record(folder, record)
