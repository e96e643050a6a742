"""A stand-in for the Hugging Face Hub: the HTTP calls huggingface_hub makes to create a repository, a branch
and a commit (with Xet disabled, HF_HUB_DISABLE_XET=1: preupload, LFS batch, LFS upload and verify, NDJSON
commit), served on 127.0.0.1 from a thread. It records every request and keeps the committed files, so tests
drive the real client over real HTTP and compare bytes."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

REPO = r"(?P<repo>[^/]+/[^/]+)"
ROUTES = [  # (method, path pattern, handler name)
    ("POST", r"/api/repos/create", "create_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("POST", rf"/api/models/{REPO}/branch/(?P<branch>.+)", "create_branch"),
    ("POST", rf"/api/models/{REPO}/preupload/(?P<revision>.+)", "preupload"),
    ("POST", rf"/{REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
    ("PUT", r"/lfs-storage/(?P<oid>[0-9a-f]{64})", "lfs_store"),
    ("POST", r"/lfs-verify", "lfs_verify"),
    ("POST", rf"/api/models/{REPO}/commit/(?P<revision>.+)", "commit"),
]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes


class HubServer:
    """Start with `with HubServer(token=...) as hub:`; hub.url is the endpoint (HF_ENDPOINT)."""

    def __init__(self, token: str | None = None):
        self.token = token
        self.requests: list[Request] = []
        self.repos: dict[str, dict] = {}  # repo id -> {"private", "refs": {ref: {path: bytes}}, "commits": [...]}
        self.blobs: dict[str, bytes] = {}  # LFS objects by sha256
        self.failures: list[tuple[str, int, str]] = []  # (path pattern, status, message)
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._thread = threading.Thread(target=self._http.serve_forever, name="hub-server", daemon=True)

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=10)

    def fail(self, path_pattern: str, status: int, message: str = "the test hub was told to fail") -> None:
        """Answer requests whose path matches with this error from now on."""
        self.failures.append((path_pattern, status, message))

    def files(self, repo_id: str, ref: str = "main") -> dict[str, bytes]:
        return self.repos[repo_id]["refs"][ref]

    # ------------------------------------------------------------------------------------------ the API

    def create_repo(self, body: dict, query: dict) -> tuple[int, dict]:
        repo_id = f"{body.get('organization') or 'user'}/{body['name']}"
        if repo_id in self.repos:
            return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}
        self.repos[repo_id] = {"private": body.get("visibility") == "private", "refs": {"main": {}}, "commits": []}
        return 200, {"url": f"{self.url}/{repo_id}", "name": repo_id}

    def validate_yaml(self, body: dict, query: dict) -> tuple[int, dict]:
        return 200, {"errors": [], "warnings": []}

    def create_branch(self, body: dict, query: dict, repo: str, branch: str) -> tuple[int, dict]:
        refs = self._repo(repo)["refs"]
        if branch in refs:
            return 409, {"error": "Reference already exists"}
        refs[branch] = dict(refs[body.get("startingPoint", "main")])
        return 200, {}

    def preupload(self, body: dict, query: dict, repo: str, revision: str) -> tuple[int, dict]:
        self._repo(repo)
        modes = [{"path": f["path"], "shouldIgnore": False, "oid": None,
                  "uploadMode": "lfs" if b"\0" in base64.b64decode(f["sample"]) else "regular"}
                 for f in body["files"]]
        return 200, {"files": modes}

    def lfs_batch(self, body: dict, query: dict, repo: str) -> tuple[int, dict]:
        self._repo(repo)
        objects = []
        for obj in body["objects"]:
            actions = None if obj["oid"] in self.blobs else {
                "upload": {"href": f"{self.url}/lfs-storage/{obj['oid']}"},
                "verify": {"href": f"{self.url}/lfs-verify"}}
            objects.append({**obj, "authenticated": True, **({"actions": actions} if actions else {})})
        return 200, {"transfer": "basic", "objects": objects}

    def lfs_store(self, data: bytes, query: dict, oid: str) -> tuple[int, dict]:
        if hashlib.sha256(data).hexdigest() != oid:
            return 400, {"error": "content does not match its sha256"}
        self.blobs[oid] = data
        return 200, {}

    def lfs_verify(self, body: dict, query: dict) -> tuple[int, dict]:
        blob = self.blobs.get(body["oid"])
        return (200, {}) if blob is not None and len(blob) == body["size"] else (404, {"error": "object not found"})

    def commit(self, lines: list[dict], query: dict, repo: str, revision: str) -> tuple[int, dict]:
        record = self._repo(repo)
        if revision not in record["refs"]:
            return 404, {"error": f"Invalid rev id: {revision}", "_code": "RevisionNotFound"}
        changes = {}
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                changes[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.blobs:
                    return 422, {"error": f"LFS object {value['oid']} was never uploaded"}
                changes[value["path"]] = self.blobs[value["oid"]]
        oid = hashlib.sha1(json.dumps(lines).encode()).hexdigest()
        answer = {"commitUrl": f"{self.url}/{repo}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}
        target = revision
        if query.get("create_pr") == "1":
            number = 1 + sum(ref.startswith("refs/pr/") for ref in record["refs"])
            target = f"refs/pr/{number}"
            record["refs"][target] = dict(record["refs"][revision])
            answer["pullRequestUrl"] = f"{self.url}/{repo}/discussions/{number}"
        record["refs"][target].update(changes)
        record["commits"].append({"ref": target, "summary": lines[0]["value"]["summary"], "files": sorted(changes)})
        return 200, answer

    def _repo(self, repo_id: str) -> dict:
        if repo_id not in self.repos:
            raise _Answer(404, {"error": "Repository not found", "_code": "RepoNotFound"})
        return self.repos[repo_id]

    # ------------------------------------------------------------------------------------------ plumbing

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
        split = urlsplit(target)
        path, query = split.path, dict(parse_qsl(split.query))
        with self._lock:
            self.requests.append(Request(method, path, query, headers, body))
            for pattern, status, message in self.failures:
                if re.search(pattern, path):
                    return status, {"error": message}
            for route_method, pattern, name in ROUTES:
                match = re.fullmatch(pattern, path)
                if route_method != method or match is None:
                    continue
                needs_token = not path.startswith(("/lfs-storage/", "/lfs-verify"))
                if needs_token and self.token and headers.get("authorization") != f"Bearer {self.token}":
                    return 401, {"error": "Invalid credentials in Authorization header"}
                if name == "lfs_store":
                    payload = body
                elif name == "commit":
                    payload = [json.loads(line) for line in body.splitlines() if line.strip()]
                else:
                    payload = json.loads(body or b"{}")
                arguments = {key: unquote(value) for key, value in match.groupdict().items()}
                try:
                    return getattr(self, name)(payload, query, **arguments)
                except _Answer as answer:
                    return answer.status, answer.body
            return 404, {"error": f"{method} {path} is not served by the test hub"}


class _Answer(Exception):
    def __init__(self, status: int, body: dict):
        self.status, self.body = status, body


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as huggingface_hub's httpx client expects
        timeout = 10

        def _serve(self) -> None:
            body = self._body()
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, answer = hub.handle(self.command, self.path, headers, body)
            code = answer.pop("_code", None)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if code:
                self.send_header("X-Error-Code", code)
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while (size := int(self.rfile.readline().split(b";")[0].strip(), 16)) > 0:
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, *args) -> None:  # keep test output clean
            pass

    return Handler
