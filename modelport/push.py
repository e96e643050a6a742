"""`modelport push`: publish a checkpoint folder to the Hugging Face Hub with huggingface_hub (create_repo, then
upload_folder; the endpoint follows HF_ENDPOINT).

Nothing is sent before the folder is known to load: weights readable (every shard of an index present), config
present and agreeing with every tensor shape, the tokenizer files there. A model card is written unless the
folder has its own. The token (--token, else HF_TOKEN, else the stored login) goes into the Authorization header
only: it is never printed, logged or written, and it is scrubbed from error messages.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from modelport.api import _plan_any
from modelport.card import CardFacts, is_generated, model_card
from modelport.converters import engine
from modelport.converters.formats import open_reader
from modelport.converters.tokenizers import required_tokenizer_files
from modelport.errors import ModelportError
from modelport.mappings import Mapping, get_mapping
from modelport.mappings.base import CANONICAL
from modelport.record import modelport_version, read_record

CARD_NAME = "README.md"
NO_TOKEN = "no Hugging Face token: pass --token, set HF_TOKEN or run `hf auth login`"
HINTS = {
    401: "the token{source} was not accepted: check --token, HF_TOKEN or `hf auth login`",
    403: "the token{source} may not write there: it needs write access to the namespace",
    404: "no such repository or revision, or the token{source} cannot see it",
}


def _hub():
    try:
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.utils
    except ImportError:
        raise ModelportError("pushing needs huggingface_hub: pip install 'modelport[hub]'") from None
    return huggingface_hub


@dataclass
class FolderCheck:
    facts: CardFacts
    record: dict | None
    notes: list[str] = field(default_factory=list)


def _architecture_fields(mapping: Mapping, config: dict) -> dict:
    """The config fields the tensor shapes depend on: what says how big the model is."""
    names = set(mapping.counts.values()) | set(mapping.required_config)
    for row in mapping.rows:
        for expression in row.shape or ():
            if isinstance(expression, str):
                names.update(re.findall(r"[A-Za-z_]\w*", expression))
    return {name: config[name] for name in sorted(names) if name in config}


def check_folder(folder: str | Path) -> FolderCheck:
    """Refuse (one-line ModelportError) a folder that would not load from the Hub; else what it holds."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelportError(f"{folder}: not a folder (push publishes a checkpoint folder)")
    record = read_record(folder)
    with open_reader(folder) as reader:
        arch = (record or {}).get("arch")
        plan = engine.plan_source(get_mapping(arch), reader) if arch else _plan_any(reader, None)
        mapping = plan.mapping
        shipped, config_path = engine.source_config(plan)
        if config_path is None:
            name = mapping.config_files.get(plan.scheme, "config file")
            raise ModelportError(f"{folder}: no {name}, without which the pushed weights cannot be loaded")
        config = engine.resolve_config(plan, shipped, {})
        architecture = _architecture_fields(mapping, config)
        # transformers fills a field config.json leaves out with its class default, not from the weights
        unstated = [f"{name} (the weights say {value})" for name, value in architecture.items()
                    if name not in shipped] if plan.scheme == CANONICAL else []
        if unstated:
            raise ModelportError(f"{config_path}: does not state {', '.join(unstated)}; transformers would use its "
                                 "defaults")
        model_class = engine.check_complete(plan, config)
        for names in required_tokenizer_files(mapping.tokenizer, plan.scheme):
            if not any((folder / name).is_file() for name in names):
                raise ModelportError(f"{folder}: no tokenizer file {' or '.join(names)}: add the tokenizer "
                                     "(convert --tokenizer PATH) before pushing")
        tokenizer_config = folder / "tokenizer_config.json"
        tokenizer_code = (tokenizer_config.is_file()
                          and "auto_map" in engine.read_json(tokenizer_config, "tokenizer config"))
        files = reader.files()
        checkpoint = files[0].name.removesuffix(".index") if reader.format == "tf1" else files[0].name
        facts = CardFacts(arch=mapping.arch, model_class=model_class.name, format=reader.format, layout=plan.scheme,
                          parameters=engine.parameter_count(plan), architecture=architecture,
                          checkpoint=checkpoint, tokenizer=bool(mapping.tokenizer), tokenizer_code=tokenizer_code)
        notes = [f"{len(plan.unknown)} tensors the {mapping.arch} mapping does not know are pushed unchecked: "
                 f"{', '.join(plan.unknown[:6])}"] if plan.unknown else []
        return FolderCheck(facts, record, notes)


def check_target(repo_id: str, revision: str | None = None, create_pr: bool = False) -> None:
    """Refuse a repository id the Hub would refuse, and option combinations huggingface_hub refuses."""
    try:
        _hub().utils.validate_repo_id(repo_id)
    except ValueError as error:
        raise ModelportError(f"{repo_id!r}: not a Hub repository id ({_first_line(str(error))})") from None
    if create_pr and revision:
        raise ModelportError("--create-pr opens the pull request against the default branch: drop --revision "
                             "(or commit to the branch without --create-pr)")


def resolve_token(token: str | None) -> tuple[str | None, str]:
    """The token and where it came from (for messages; the token itself is never shown)."""
    if token:
        return token, "--token"
    found = _hub().get_token()
    from_env = found and found == (os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or "").strip()
    return found, "HF_TOKEN" if from_env else "the stored login"


def preflight(repo_id: str, token: str | None = None) -> None:
    """What `convert --push-to` checks before converting, so a long conversion does not end in a refusal."""
    check_target(repo_id)
    _check_online()
    if resolve_token(token)[0] is None:
        raise ModelportError(NO_TOKEN)


def _check_online() -> None:
    if _hub().constants.is_offline_mode():
        raise ModelportError("HF_HUB_OFFLINE is set: pushing needs the network (unset it for this command, or use "
                             "--dry-run)")


def hub_endpoint() -> str:
    """HF_ENDPOINT as it is now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_ENDPOINT", _hub().constants.ENDPOINT).rstrip("/")


def upload_list(folder: Path) -> dict[str, int]:
    """The files upload_folder sends (everything but .git and the huggingface cache), with their sizes."""
    hub = _hub()
    paths = {path.relative_to(folder).as_posix(): path for path in sorted(folder.rglob("*")) if path.is_file()}
    kept = hub.utils.filter_repo_objects(paths, ignore_patterns=hub.utils.DEFAULT_IGNORE_PATTERNS)
    return {name: paths[name].stat().st_size for name in kept}


@dataclass
class PushResult:
    repo_id: str
    endpoint: str
    revision: str | None
    private: bool
    create_pr: bool
    files: dict[str, int]  # path in the repository -> bytes
    card: str  # "generated" (written by modelport) or "kept" (the folder's own README.md)
    token_source: str | None  # where the token comes from; None when there is none
    dry_run: bool
    commit_message: str
    commit_url: str | None = None
    pull_request_url: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(self.files.values())

    def listing(self) -> str:
        """What --dry-run prints."""
        lines = [f"repository: {self.repo_id} at {self.endpoint}",
                 f"private: {'yes' if self.private else 'no (a new repository gets its namespace default)'}",
                 f"revision: {self.revision or 'main'}{' (created if missing)' if self.revision else ''}",
                 f"create pull request: {'yes' if self.create_pr else 'no'}",
                 f"commit message: {self.commit_message}",
                 f"token: {'from ' + self.token_source if self.token_source else 'none found'}",
                 f"files ({len(self.files)}, {_size(self.bytes)}):"]
        width = max(map(len, self.files), default=0)
        for name, size in self.files.items():
            card = f"  (model card, {self.card})" if name == CARD_NAME else ""
            lines.append(f"  {name:<{width}}  {size:>12,} bytes{card}")
        lines.append("dry run: nothing was sent")
        return "\n".join(lines)

    def summary(self) -> str:
        where = self.pull_request_url or self.commit_url
        kind = "opened a pull request" if self.pull_request_url else "committed"
        return (f"pushed {len(self.files)} files ({_size(self.bytes)}) to {self.repo_id} "
                f"({self.revision or 'main'}): {kind}: {where}")


def _size(n: float) -> str:
    if n < 1000:
        return f"{int(n)} B"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"


def push(dir: str | Path, repo_id: str, private: bool = False, revision: str | None = None, create_pr: bool = False,
         commit_message: str | None = None, token: str | None = None, dry_run: bool = False,
         progress: bool = False) -> PushResult:
    """Publish the checkpoint folder DIR to the Hub repository REPO_ID (created if missing)."""
    folder = Path(dir)
    check_target(repo_id, revision, create_pr)
    check = check_folder(folder)
    card_path = folder / CARD_NAME
    own_card = card_path.is_file() and not is_generated(card_path.read_text(encoding="utf-8", errors="replace"))
    card = None if own_card else model_card(check.facts, check.record, repo_id, revision)
    files = upload_list(folder)
    if card is not None:
        files[CARD_NAME] = len(card.encode("utf-8"))
    token, source = resolve_token(token)
    facts = check.facts
    message = commit_message or f"Upload {facts.model_class} ({facts.format}) with modelport {modelport_version()}"
    result = PushResult(repo_id=repo_id, endpoint=hub_endpoint(), revision=revision, private=private,
                        create_pr=create_pr, files=files, card="kept" if own_card else "generated",
                        token_source=source if token else None, dry_run=dry_run, commit_message=message,
                        notes=check.notes)
    if dry_run:
        return result
    _check_online()
    if token is None:
        raise ModelportError(NO_TOKEN)
    if card is not None:
        card_path.write_text(card, encoding="utf-8")
    hub = _hub()
    api = hub.HfApi(endpoint=result.endpoint, token=token, library_name="modelport",
                    library_version=modelport_version())
    try:
        with contextlib.nullcontext() if progress else hub.utils.disable_progress_bars():
            api.create_repo(repo_id, private=True if private else None, exist_ok=True)
            if revision and not revision.startswith("refs/"):
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            commit = api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision, create_pr=create_pr,
                                       commit_message=message)
    except Exception as error:  # anything the client raises while talking to the Hub: one line, no token
        raise ModelportError(_failure(error, result, token, source)) from error
    result.commit_url, result.pull_request_url = commit.commit_url, commit.pr_url
    return result


def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def _failure(error: BaseException, result: PushResult, token: str, source: str) -> str:
    """A one-line account of a failed push: the Hub's answer (status, its message, which call) or why the
    endpoint could not be reached."""
    from huggingface_hub.errors import HfHubHTTPError

    cause = error
    while not isinstance(cause, HfHubHTTPError) and cause.__cause__ is not None:
        cause = cause.__cause__
    response = getattr(cause, "response", None) if isinstance(cause, HfHubHTTPError) else None
    if response is not None:
        detail = _first_line(cause.server_message or "") or response.reason_phrase
        request = response.request
        message = (f"{result.repo_id}: the Hub at {result.endpoint} answered {response.status_code} ({detail}) to "
                   f"{request.method} {request.url.path}")
        hint = HINTS.get(response.status_code)
        if hint:
            message += f": {hint.format(source=f' from {source}')}"
    else:
        message = (f"{result.repo_id}: cannot push to {result.endpoint}: {type(cause).__name__}: "
                   f"{_first_line(str(cause))}")
    return message.replace(token, "***") if token else message
