"""Sessions: one JSONL file per conversation, kept per project directory.

    $PI_CONFIG_DIR/sessions/<encoded cwd>/<timestamp>.jsonl      (PI_CONFIG_DIR defaults to ~/.pi)

Line 1 is a header `{"type": "session", "id", "timestamp", "cwd", "config": {baseURL, model, api,
systemPrompt}}`; every other line is `{"type": "event", "timestamp", "event": {...}}`. Continuing a session
appends a new header and carries on in the same file. The API key is never written (pi stored it in
plaintext). Files are 0600 and directories 0700: conversations can quote anything the tools read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pi_ansible.agent.events import Event, event_from_dict


def state_dir() -> Path:
    return Path(os.environ.get("PI_CONFIG_DIR") or Path.home() / ".pi").expanduser().resolve()


def encode_cwd(cwd: str | os.PathLike) -> str:
    """A readable, collision-free directory name for a working directory.

    pi used `--home-me-a-b--`, which maps /a-b and /a/b to the same name; a short hash of the exact
    path keeps them apart.
    """
    text = os.path.abspath(os.fspath(cwd))
    readable = re.sub(r"[^A-Za-z0-9._]+", "-", text.strip("/")).strip("-")[:80] or "root"
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f"--{readable}--{digest}"


def sessions_dir(cwd: str | os.PathLike, root: Path | None = None) -> Path:
    return (root or state_dir()) / "sessions" / encode_cwd(cwd)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _make_private_dirs(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    # mkdir's mode is cut by the umask and skipped for existing parents; the sessions tree itself is ours.
    for p in (path, path.parent):
        try:
            if p.stat().st_uid == os.getuid() and p.stat().st_mode & 0o077:
                p.chmod(0o700)
        except OSError:
            pass


@dataclass
class SessionConfig:
    base_url: str
    model: str
    api: str
    system_prompt: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseURL": self.base_url,
            "model": self.model,
            "api": self.api,
            "systemPrompt": self.system_prompt,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionConfig:
        return cls(
            base_url=data.get("baseURL") or "",
            model=data.get("model") or "",
            api=data.get("api") or "completions",
            system_prompt=data.get("systemPrompt"),
        )


@dataclass
class LoadedSession:
    path: Path
    session_id: str
    config: SessionConfig | None
    events: list[Event] = field(default_factory=list)
    skipped_lines: int = 0


class SessionWriter:
    """Appends events to a session file, creating it (0600) only when the first event arrives."""

    def __init__(
        self,
        directory: Path,
        cwd: str,
        config: SessionConfig,
        *,
        path: Path | None = None,
        session_id: str | None = None,
    ):
        self.directory = directory
        self.cwd = cwd
        self.config = config
        self.path = path
        self.session_id = session_id or str(uuid.uuid4())
        self._header_written = False

    def _open(self) -> Path:
        _make_private_dirs(self.directory)
        if self.path is not None:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.close(fd)
            os.chmod(self.path, 0o600)
            return self.path
        stamp = _now().strftime("%Y-%m-%dT%H-%M-%S-%fZ")
        for n in range(100):
            candidate = self.directory / (f"{stamp}.jsonl" if n == 0 else f"{stamp}-{n}.jsonl")
            try:
                fd = os.open(candidate, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            os.close(fd)
            self.path = candidate
            return candidate
        raise OSError(f"cannot create a session file in {self.directory}")

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)

    def write(self, event: Event) -> None:
        if event.transient:
            return
        if not self._header_written:
            self._open()
            self._append(
                {
                    "type": "session",
                    "id": self.session_id,
                    "timestamp": _iso(_now()),
                    "cwd": self.cwd,
                    "config": self.config.to_dict(),
                }
            )
            self._header_written = True
        self._append({"type": "event", "timestamp": _iso(_now()), "event": event.to_dict()})

    __call__ = write


def latest_session(directory: Path) -> Path | None:
    """The session of this directory used last (by modification time, then by name)."""
    if not directory.is_dir():
        return None
    files = [p for p in directory.glob("*.jsonl") if p.is_file()]
    if not files:
        return None
    return max(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


def load_session(path: Path) -> LoadedSession:
    """Read a session file; a damaged line (a crash mid-write) is skipped and counted, not fatal."""
    session_id = ""
    config = None
    events: list[Event] = []
    skipped = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if record.get("type") == "session":
                    session_id = record.get("id") or session_id
                    config = SessionConfig.from_dict(record.get("config") or {})
                elif record.get("type") == "event":
                    events.append(event_from_dict(record["event"]))
                else:
                    skipped += 1
            except (ValueError, KeyError, AttributeError, TypeError):
                skipped += 1
    return LoadedSession(
        path=path,
        session_id=session_id or str(uuid.uuid4()),
        config=config,
        events=events,
        skipped_lines=skipped,
    )
