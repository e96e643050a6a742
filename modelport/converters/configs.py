"""Config files beside a checkpoint, read into and written from plain dicts: JSON (config.json,
bert_config.json) and gin (Mesh TensorFlow's operative_config.gin, whose bindings become
`{"scope/Configurable.param": value, "macro": value}` with `%macro` references resolved)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from modelport.errors import ModelportError

_REFERENCE = re.compile(r"@([\w./]+)(\(\))?")
_MACRO = re.compile(r"%([\w./]+)")


def read_config(path: Path, what: str = "config") -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ModelportError(f"{path}: cannot read {what}: {error.strerror}")
    except UnicodeDecodeError:
        raise ModelportError(f"{path}: {what} is not UTF-8 text")
    if path.suffix == ".gin":
        return parse_gin(text, path)
    try:
        data = json.loads(text)
    except ValueError:
        raise ModelportError(f"{path}: {what} is not valid JSON")
    if not isinstance(data, dict):
        raise ModelportError(f"{path}: {what} is not a JSON object")
    return data


def write_config(path: Path, config: dict) -> None:
    if Path(path).suffix == ".gin":
        Path(path).write_text(format_gin(config), encoding="utf-8")
    else:
        Path(path).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _statements(text: str) -> list[str]:
    """Whole statements: comments dropped, backslash continuations and open brackets joined."""
    statements, pending, depth = [], "", 0
    for line in text.splitlines():
        if not pending.strip() and (not line.strip() or line.lstrip().startswith("#")):
            continue
        continued = line.rstrip().endswith("\\")
        pending += " " + (line.rstrip()[:-1] if continued else line.strip())
        depth = sum(pending.count(c) for c in "([{") - sum(pending.count(c) for c in ")]}")
        if not continued and depth <= 0 and pending.strip():
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        statements.append(pending.strip())
    return statements


def parse_gin(text: str, path: Path | None = None) -> dict:
    """Gin bindings as a dict. `@configurable` references become the string "@configurable"; values that are
    not Python literals are kept as their text. `import` and `include` lines are skipped."""
    raw: dict[str, str] = {}
    for statement in _statements(text):
        if re.match(r"(import|include|from)\s", statement):
            continue
        key, equals, value = statement.partition("=")
        if not equals or not re.fullmatch(r"[\w./]+", key.strip()):
            raise ModelportError(f"{path or 'gin config'}: cannot read the line {statement[:80]!r}")
        raw[key.strip()] = _REFERENCE.sub(lambda m: repr("@" + m.group(1)), value.strip())

    def resolve(value: str, seen: tuple[str, ...] = ()) -> str:
        def macro(found: re.Match) -> str:
            name = found.group(1)
            if name not in raw or name in seen:
                return repr("%" + name)
            return resolve(raw[name], seen + (name,))
        return _MACRO.sub(macro, value)

    bindings = {}
    for key, value in raw.items():
        resolved = resolve(value)
        try:
            bindings[key] = ast.literal_eval(resolved)
        except (ValueError, SyntaxError):
            bindings[key] = resolved
    return bindings


def _gin_value(value) -> str:
    if isinstance(value, str) and value.startswith(("@", "%")):
        return value
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_gin_value(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    return repr(value)


def format_gin(bindings: dict) -> str:
    """Gin text, one binding per line; strings starting with @ or % are written as references."""
    return "".join(f"{key} = {_gin_value(value)}\n" for key, value in bindings.items())
