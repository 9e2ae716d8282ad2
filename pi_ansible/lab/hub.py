"""The hub double: what the real `huggingface_hub` client needs from `HF_ENDPOINT`, for pods with no internet.

Serves the repos under `hub_models/<org>/<name>/` with the routes and headers the client reads
(`file_download.get_hf_file_metadata`, `HfApi.model_info`, `HfApi.list_repo_tree`, `utils/_http.hf_raise_for_status`):

- `GET /api/models/{repo}` and `/api/models/{repo}/revision/{rev}`: model info (`sha`, `siblings`, `gated`, ...);
- `GET /api/models/{repo}/tree/{rev}[/{path}]`: the tree listing `snapshot_download` reads;
- `HEAD`/`GET /{repo}/resolve/{rev}/{filename}`: files, with `X-Repo-Commit`, `ETag`, and `X-Linked-Etag`/`X-Linked-Size`
  for LFS-like files, byte ranges, and never a xet header, so the client downloads over plain HTTP.

A repo folder holds real metadata files (`config.json`, `model.safetensors.index.json`, ...) and a lab-only `_lab.json`
(never served) naming the weight files of the real repo. Those are served as stand-ins: tiny valid safetensors files,
made on the fly from the repo and file name, so the same request always gets the same bytes.

Errors carry the real hub's `X-Error-Code` and message so the client raises `RepositoryNotFoundError`,
`RevisionNotFoundError`, `RemoteEntryNotFoundError` or `GatedRepoError` with the real text.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

MODELS_DIR = Path(__file__).resolve().parent / "hub_models"
# As on the real hub: Meta's repos are gated with manual approval.
DEFAULT_GATED: Mapping[str, str] = {"meta-llama/Llama-3.1-8B-Instruct": "manual"}
REAL_HUB = "https://huggingface.co"
LAB_FILE = "_lab.json"
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5")
# Fixed dates keep model info byte-stable between runs.
CREATED_AT = "2025-01-01T00:00:00.000Z"
LAST_MODIFIED = "2025-01-01T00:00:00.000Z"
_REPO_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"


@dataclass(frozen=True)
class RepoFile:
    path: str
    data: bytes
    lfs: bool

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def git_oid(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def etag(self) -> str:
        # The real hub: the LFS object's sha256 for LFS files, the git blob id otherwise.
        return self.sha256 if self.lfs else self.git_oid


@dataclass(frozen=True)
class Repo:
    repo_id: str
    sha: str
    files: Mapping[str, RepoFile]
    config: Mapping[str, object]
    gated: str | bool = False
    parameters: Mapping[str, int] | None = None

    def info(self, *, blobs: bool = False) -> dict:
        org, _, _ = self.repo_id.partition("/")
        siblings = []
        for f in self.files.values():
            sibling: dict[str, object] = {"rfilename": f.path}
            if blobs:
                sibling |= {"blobId": f.git_oid, "size": f.size}
                if f.lfs:
                    sibling["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": 134}
            siblings.append(sibling)
        config = {
            k: self.config[k]
            for k in ("architectures", "model_type", "quantization_config")
            if k in self.config
        }
        info: dict[str, object] = {
            "_id": hashlib.sha1(self.repo_id.encode()).hexdigest()[:24],
            "id": self.repo_id,
            "modelId": self.repo_id,
            "author": org,
            "sha": self.sha,
            "lastModified": LAST_MODIFIED,
            "createdAt": CREATED_AT,
            "private": False,
            "gated": self.gated,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "library_name": "transformers",
            "pipeline_tag": "text-generation",
            "tags": [
                "transformers",
                "safetensors",
                str(self.config.get("model_type", "")),
                "text-generation",
            ],
            "config": config,
            "siblings": siblings,
            "spaces": [],
            "usedStorage": sum(f.size for f in self.files.values()),
        }
        if self.parameters:
            info["safetensors"] = {
                "parameters": dict(self.parameters),
                "total": sum(self.parameters.values()),
            }
        return info

    def tree(self, path: str, *, recursive: bool) -> list[dict] | None:
        """Entries under `path` ('' for the root), or None when `path` names nothing."""
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        if prefix and any(p == prefix[:-1] for p in self.files):
            return None  # a file, not a folder: the real hub answers 404 there too
        entries: dict[str, dict] = {}
        for f in self.files.values():
            if not f.path.startswith(prefix):
                continue
            rest = f.path[len(prefix) :]
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                folder = prefix + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(
                        folder,
                        {
                            "type": "directory",
                            "oid": hashlib.sha1(folder.encode()).hexdigest(),
                            "size": 0,
                            "path": folder,
                        },
                    )
                if not recursive:
                    break
            if recursive or len(parts) == 1:
                entry: dict[str, object] = {"type": "file", "oid": f.git_oid, "size": f.size, "path": f.path}
                if f.lfs:
                    entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
                entries[f.path] = entry
        if prefix and not entries:
            return None
        return [entries[k] for k in sorted(entries)]


def stand_in_safetensors(repo_id: str, filename: str) -> bytes:
    """A tiny valid safetensors file, the same bytes for the same repo and file name."""
    seed = hashlib.sha256(f"{repo_id}/{filename}".encode()).digest()
    data = seed * 2  # 64 bytes
    header = {
        "__metadata__": {"format": "pt", "pi_lab": "stand-in weights of the hub double", "repo": repo_id},
        "pi_lab.stand_in": {"dtype": "U8", "shape": [len(data)], "data_offsets": [0, len(data)]},
    }
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes
    return len(raw).to_bytes(8, "little") + raw + data


def _is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


def load_repo(repo_dir: Path, repo_id: str, gated: str | bool = False) -> Repo:
    lab: dict = {}
    lab_path = repo_dir / LAB_FILE
    if lab_path.is_file():
        lab = json.loads(lab_path.read_text())
    files: dict[str, RepoFile] = {}
    for p in sorted(repo_dir.rglob("*")):
        rel = p.relative_to(repo_dir).as_posix()
        if p.is_file() and not any(part.startswith("_") for part in rel.split("/")):
            files[rel] = RepoFile(rel, p.read_bytes(), _is_lfs(rel))
    weights = list(lab.get("weights", []))
    index = files.get("model.safetensors.index.json")
    if not weights and index is not None:
        weights = sorted(set(json.loads(index.data).get("weight_map", {}).values()))
    for name in weights:
        files.setdefault(name, RepoFile(name, stand_in_safetensors(repo_id, name), True))
    files = dict(sorted(files.items()))
    digest = hashlib.sha1(f"pi-lab hub double\n{repo_id}\n".encode())
    for f in files.values():
        digest.update(f"{f.path}\0{f.git_oid}\n".encode())
    config = json.loads(files["config.json"].data) if "config.json" in files else {}
    return Repo(repo_id, digest.hexdigest(), files, config, gated, lab.get("safetensors_parameters"))


def load_repos(models_dir: Path, gated: Mapping[str, str] | Iterable[str] | None = None) -> dict[str, Repo]:
    gates = _gates(gated)
    repos = {}
    for org in sorted(
        p for p in Path(models_dir).iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    ):
        for repo_dir in sorted(p for p in org.iterdir() if p.is_dir()):
            repo_id = f"{org.name}/{repo_dir.name}"
            repos[repo_id] = load_repo(repo_dir, repo_id, gates.get(repo_id, False))
    return repos


def _gates(gated: Mapping[str, str] | Iterable[str] | None) -> dict[str, str]:
    if gated is None:
        return dict(DEFAULT_GATED)
    if isinstance(gated, Mapping):
        return dict(gated)
    return {repo_id: "manual" for repo_id in gated}


@dataclass
class HubState:
    repos: Mapping[str, Repo]
    access_tokens: frozenset[str] = field(default_factory=frozenset)


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})


class HubHandler(BaseHTTPRequestHandler):
    server: HubServer
    protocol_version = "HTTP/1.1"
    server_version = "pi-lab-hub/1"

    # -- plumbing -----------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request comes from _log, which never sees the Authorization value

    def _log(self, status: int) -> None:
        auth = "yes" if self.headers.get("Authorization") else "no"
        sys.stderr.write(f"hub {self.address_string()} {self.command} {self.path} {status} auth={auth}\n")

    def _token(self) -> str | None:
        value = self.headers.get("Authorization", "")
        scheme, _, token = value.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    def _send(self, status: int, body: bytes, headers: Mapping[str, str], *, head: bool) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)
        self._log(status)

    def _send_json(self, obj: object, *, head: bool, status: int = 200) -> None:
        body = json.dumps(obj).encode()
        self._send(status, body, {"Content-Type": "application/json; charset=utf-8"}, head=head)

    def _dispatch(self, *, head: bool) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = parse_qs(url.query)
        try:
            if path.startswith("/api/models/"):
                if head:
                    raise HubError(405, None, "Method not allowed")
                self._api(path[len("/api/models/") :], query)
            elif "/resolve/" in path:
                self._resolve(path.lstrip("/"), head=head)
            else:
                raise HubError(404, None, "Sorry, we can't find the page you are looking for.")
        except HubError as e:
            headers = {"Content-Type": "application/json; charset=utf-8", **e.headers}
            if e.code:
                headers["X-Error-Code"] = e.code
            headers["X-Error-Message"] = e.message
            self._send(e.status, json.dumps({"error": e.message}).encode(), headers, head=head)
        except (BrokenPipeError, ConnectionResetError):
            self._log(499)

    # -- lookup --------------------------------------------------------------------------------------------
    def _repo(self, repo_id: str) -> Repo:
        repo = self.server.state.repos.get(repo_id)
        if repo is None:
            # Like the real hub: 401 to an anonymous caller, 404 to an authenticated one; both RepoNotFound.
            if self._token() is None:
                raise HubError(401, "RepoNotFound", "Invalid username or password.")
            raise HubError(404, "RepoNotFound", "Repository not found")
        return repo

    @staticmethod
    def _check_revision(repo: Repo, revision: str) -> None:
        if revision not in ("main", repo.sha):
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")

    def _check_access(self, repo: Repo) -> None:
        if not repo.gated:
            return
        token = self._token()
        if token is None:
            raise HubError(
                401,
                "GatedRepo",
                f"Access to model {repo.repo_id} is restricted. You must have access to it and be authenticated "
                "to access it. Please log in.",
            )
        if token not in self.server.state.access_tokens:
            raise HubError(
                403,
                "GatedRepo",
                f"Access to model {repo.repo_id} is restricted and you are not in the authorized list. "
                f"Visit {REAL_HUB}/{repo.repo_id} to ask for access.",
            )

    # -- routes ----------------------------------------------------------------------------------------------
    def _api(self, rest: str, query: dict[str, list[str]]) -> None:
        m = re.fullmatch(rf"({_REPO_PART}/{_REPO_PART})(?:/(revision|tree)/([^/]+)(?:/(.*))?)?/?", rest)
        if m is None:
            raise HubError(404, None, "Not Found")
        repo_id, kind, revision, sub = m.groups()
        repo = self._repo(repo_id)
        if kind is None:
            self._send_json(repo.info(blobs=_flag(query, "blobs")), head=False)
            return
        self._check_revision(repo, revision)
        if kind == "revision":
            if sub:
                raise HubError(404, None, "Not Found")
            self._send_json(repo.info(blobs=_flag(query, "blobs")), head=False)
            return
        entries = repo.tree(sub or "", recursive=_flag(query, "recursive"))
        if entries is None:
            raise HubError(404, "EntryNotFound", f'{sub} does not exist on "{revision}"')
        self._send_json(entries, head=False)

    def _resolve(self, rest: str, *, head: bool) -> None:
        m = re.fullmatch(rf"({_REPO_PART}/{_REPO_PART})/resolve/([^/]+)/(.+)", rest)
        if m is None:
            raise HubError(404, None, "Not Found")
        repo_id, revision, filename = m.groups()
        repo = self._repo(repo_id)
        self._check_access(repo)
        self._check_revision(repo, revision)
        f = repo.files.get(filename)
        if f is None:
            raise HubError(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": repo.sha})
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "X-Repo-Commit": repo.sha,
            "ETag": f'"{f.etag}"',
            "Content-Disposition": f'inline; filename="{Path(f.path).name}";',
        }
        if f.lfs:
            headers["X-Linked-Etag"] = f'"{f.sha256}"'
            headers["X-Linked-Size"] = str(f.size)
        status, body = 200, f.data
        byte_range = self.headers.get("Range")
        if byte_range:
            span = _parse_range(byte_range, f.size)
            if span is None:
                raise HubError(
                    416, None, "Requested Range Not Satisfiable", {"Content-Range": f"bytes */{f.size}"}
                )
            start, end = span
            status, body = 206, f.data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{f.size}"
        self._send(status, body, headers, head=head)


def _flag(query: Mapping[str, list[str]], name: str) -> bool:
    return any(v.lower() in ("1", "true") for v in query.get(name, []))


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", value.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):  # suffix range: the last N bytes
        n = int(m.group(2))
        return (max(size - n, 0), size - 1) if n and size else None
    start = int(m.group(1))
    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    return (start, end) if start <= end else None


class HubServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: HubState):
        self.state = state
        super().__init__(address, HubHandler)


def make_server(
    bind: str,
    port: int,
    models_dir: Path = MODELS_DIR,
    gated: Mapping[str, str] | Iterable[str] | None = None,
    access_tokens: Iterable[str] = (),
) -> HubServer:
    """A hub double bound to (bind, port); port 0 picks a free one (read `server.server_address`)."""
    state = HubState(load_repos(Path(models_dir), gated), frozenset(t for t in access_tokens if t))
    return HubServer((bind, port), state)


def serve(
    bind: str,
    port: int,
    models_dir: Path = MODELS_DIR,
    gated: Mapping[str, str] | Iterable[str] | None = None,
    access_tokens: Iterable[str] = (),
) -> None:
    server = make_server(bind, port, models_dir, gated, access_tokens)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The hub double (HF_ENDPOINT) of the local lab.")
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    args = parser.parse_args(argv)
    serve(args.bind, args.port, args.models_dir)


if __name__ == "__main__":
    main()
