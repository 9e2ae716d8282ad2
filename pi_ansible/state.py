"""Local state: one schema-validated JSON file, `$PI_CONFIG_DIR/pi-ansible.json` (default `~/.pi`).

The TypeScript pi keeps `pods.json` in the same directory; we never write it (`import_pi_pods` only reads it).
Its defects shape this module: pi treats a corrupt file as empty and overwrites it, writes in place with no lock,
and loses a pod when two commands run at once. Here a malformed file is an error that leaves it untouched,
writers hold an flock, and a write is a temp file + fsync + rename, so a reader sees the old or the new file.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from .errors import PiError
from .paths import config_dir
from .sshargs import SshTarget, parse_ssh, suggest_name, validate_name

FILE_NAME = "pi-ansible.json"
VERSION = 1
VARIANTS = ("release", "nightly", "gpt-oss")
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "state.schema.json"

# Tests set this to observe (and kill) a writer between the steps of an atomic write.
_test_hook = None


def _hook(stage: str) -> None:
    if _test_hook is not None:
        _test_hook(stage)


@cache
def _validator():
    import jsonschema  # only to explain a malformed file: its import costs every command 0.1-0.2 s

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _where(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def now_utc() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def pod_record(target: SshTarget, *, gpus: list[dict] | tuple = (), driver_version: str | None = None,
               cuda_version: str | None = None, engine_variant: str = "release",
               vllm_version: str | None = None, models_path: str | None = None,
               set_up_at: str | None = None, origin: str = "setup") -> dict:
    """A pod entry for State.pods; gpus are dicts with index, uuid, name, memory_total_mib."""
    if set_up_at is None and origin == "setup":
        set_up_at = now_utc()
    return {
        "ssh": target.display(),
        "target": target.to_record(),
        "gpus": [{"index": g["index"], "uuid": g.get("uuid"), "name": g["name"],
                  "memory_total_mib": g.get("memory_total_mib")} for g in gpus],
        "driver_version": driver_version,
        "cuda_version": cuda_version,
        "engine_variant": engine_variant,
        "vllm_version": vllm_version,
        "models_path": models_path,
        "set_up_at": set_up_at,
        "origin": origin,
    }


@dataclass
class State:
    pods: dict[str, dict] = field(default_factory=dict)
    active: str | None = None
    models: dict[str, dict[str, dict]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"version": VERSION, "active": self.active, "pods": self.pods, "models": self.models}

    @classmethod
    def from_dict(cls, doc: dict) -> State:
        doc = copy.deepcopy(doc)
        return cls(pods=doc["pods"], active=doc["active"], models=doc["models"])

    def pod(self, name: str) -> dict:
        if name not in self.pods:
            known = ", ".join(sorted(self.pods)) or "none yet"
            raise PiError(f"no pod named {name!r} (known pods: {known}); add one with `pi pods setup NAME \"SSH\"`")
        return self.pods[name]

    def target(self, name: str) -> SshTarget:
        return parse_ssh(self.pod(name)["ssh"])

    def add_pod(self, name: str, record: dict) -> None:
        """Add or replace a pod; like pi, the first pod becomes the active one."""
        validate_name(name, "pod")
        self.pods[name] = record
        if self.active is None:
            self.active = name

    def remove_pod(self, name: str) -> dict:
        record = self.pod(name)
        del self.pods[name]
        self.models.pop(name, None)
        if self.active == name:
            self.active = None
        return record

    def set_active(self, name: str) -> None:
        self.pod(name)
        self.active = name


_POD_KEYS = frozenset(("ssh", "target", "gpus", "driver_version", "cuda_version", "engine_variant", "vllm_version",
                       "models_path", "set_up_at", "origin"))
_TARGET_KEYS = frozenset(("user", "host", "port", "identity_file", "options"))
_GPU_KEYS = frozenset(("index", "uuid", "name", "memory_total_mib"))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_name(v) -> bool:
    # the schema's pattern, searched as JSON Schema does (re.search: `$` also matches before a final newline)
    return isinstance(v, str) and 1 <= len(v) <= 63 and re.search(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", v) is not None


def _nullable_str(v) -> bool:
    return v is None or isinstance(v, str)


def _pod_conforms(pod) -> bool:
    if not isinstance(pod, dict) or pod.keys() != _POD_KEYS:
        return False
    t = pod["target"]
    if not (isinstance(pod["ssh"], str) and pod["ssh"] and isinstance(t, dict) and t.keys() == _TARGET_KEYS
            and isinstance(t["user"], str) and t["user"] and isinstance(t["host"], str) and t["host"]
            and (t["port"] is None or (_is_int(t["port"]) and 1 <= t["port"] <= 65535))
            and _nullable_str(t["identity_file"]) and isinstance(t["options"], list)):
        return False
    for opt in t["options"]:
        if not (isinstance(opt, list) and len(opt) == 2 and all(isinstance(x, str) and x for x in opt)):
            return False
    if not isinstance(pod["gpus"], list):
        return False
    for g in pod["gpus"]:
        if not (isinstance(g, dict) and g.keys() == _GPU_KEYS and _is_int(g["index"]) and g["index"] >= 0
                and _nullable_str(g["uuid"]) and isinstance(g["name"], str)
                and (g["memory_total_mib"] is None or (_is_int(g["memory_total_mib"]) and g["memory_total_mib"] >= 0))):
            return False
    return (all(_nullable_str(pod[k]) for k in ("driver_version", "cuda_version", "vllm_version", "set_up_at"))
            and pod["engine_variant"] in VARIANTS and pod["origin"] in ("setup", "pi-import")
            and (pod["models_path"] is None or (isinstance(pod["models_path"], str) and pod["models_path"].startswith("/"))))


def conforms(doc) -> bool:
    """state.schema.json, checked by hand: reading the file on every command must not import jsonschema.
    True only where the schema holds (tests/unit/test_state.py compares the two on many documents); on False,
    jsonschema explains what is wrong."""
    if not (isinstance(doc, dict) and doc.keys() == {"version", "active", "pods", "models"}):
        return False
    if not (_is_int(doc["version"]) and doc["version"] == 1 and (doc["active"] is None or _is_name(doc["active"]))):
        return False
    pods, models = doc["pods"], doc["models"]
    if not (isinstance(pods, dict) and all(_is_name(k) and _pod_conforms(v) for k, v in pods.items())):
        return False
    if not isinstance(models, dict):
        return False
    for pod_name, per_pod in models.items():
        if not (_is_name(pod_name) and isinstance(per_pod, dict)
                and all(_is_name(k) and isinstance(v, dict) for k, v in per_pod.items())):
            return False
    return True


def check_document(doc) -> str | None:
    """What is wrong with a state document (schema, then what a schema cannot say), or None."""
    if isinstance(doc, dict) and isinstance(doc.get("version"), int) and doc["version"] > VERSION:
        return (f"version {doc['version']} was written by a newer pi-ansible (this one reads version {VERSION}); "
                "upgrade pi-ansible")
    if not conforms(doc):
        import jsonschema

        error = jsonschema.exceptions.best_match(_validator().iter_errors(doc))
        if error is not None:
            return f"at {_where(error.absolute_path)}: {_short(error.message)}"
    for name, pod in doc["pods"].items():
        # JSON Schema patterns are searched with Python's re, where `$` also matches before a final newline
        if not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", name):
            return f"at pods: {name!r} is not a valid pod name"
        try:
            target = parse_ssh(pod["ssh"])
        except PiError as exc:
            return f"at pods.{name}.ssh: {exc}"
        if target.to_record() != pod["target"]:
            return f"at pods.{name}.target: the fields do not match pods.{name}.ssh {pod['ssh']!r}"
    if doc["active"] is not None and doc["active"] not in doc["pods"]:
        return f"at active: {doc['active']!r} is not one of the pods"
    for name in doc["models"]:
        if name not in doc["pods"]:
            return f"at models.{name}: there is no pod named {name!r}"
    return None


class StateStore:
    """The local state file, its lock, and atomic writes."""

    def __init__(self, path: str | os.PathLike | None = None, *, lock_timeout: float = 30.0):
        self.path = Path(path) if path is not None else config_dir() / FILE_NAME
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout = lock_timeout
        self._in_transaction = False

    def _malformed(self, what: str) -> PiError:
        return PiError(f"the local state file {self.path} is malformed: {what}. It was left as it is; "
                       "fix it by hand, or move it away to start again with no pods")

    def _read(self) -> dict | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PiError(f"cannot read the local state file {self.path}: {exc.strerror}; "
                          "check its owner and permissions") from exc
        try:
            doc = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise self._malformed(f"it is not UTF-8 text (byte {exc.start})") from exc
        except json.JSONDecodeError as exc:
            raise self._malformed(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
        problem = check_document(doc)
        if problem:
            raise self._malformed(problem)
        return doc

    def load(self) -> State:
        """The current state; a missing file is an empty state. No lock: writes are atomic renames."""
        doc = self._read()
        return State() if doc is None else State.from_dict(doc)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[State]:
        """Lock, load, let the caller change the state, write it on a clean exit (nothing on an exception)."""
        if self._in_transaction:
            raise RuntimeError("StateStore.transaction() is not reentrant")
        self._ensure_dir()
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            self._lock(fd)
            self._in_transaction = True
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._remove_stale_temps()
            before = self._read()
            state = State() if before is None else State.from_dict(before)
            yield state
            after = state.to_dict()
            if after != before and not (before is None and after == State().to_dict()):
                problem = check_document(after)
                if problem:
                    raise PiError(f"refusing to write invalid local state ({problem}); "
                                  f"{self.path} was left as it was. This is a bug in pi-ansible")
                self._write(after)
        finally:
            self._in_transaction = False
            os.close(fd)  # closing the descriptor releases the flock

    def _ensure_dir(self) -> None:
        # 0700 when we create it; an existing ~/.pi may be the TypeScript pi's and is left as it is
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _lock(self, fd: int) -> None:
        deadline = time.monotonic() + self.lock_timeout
        pause = 0.005  # short at first: most transactions take milliseconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise PiError(f"another pi command is changing local state (pid {holder}); "
                              f"wait for it to finish, then try again (lock: {self.lock_path})")
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def _remove_stale_temps(self) -> None:
        # only a writer killed mid-way leaves one, and we hold the lock, so none is in use
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()

    def _write(self, doc: dict) -> None:
        data = (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            try:
                os.fchmod(fd, 0o600)  # O_CREAT's mode is not applied to a leftover file
                half = len(data) // 2
                _write_all(fd, data[:half])
                _hook("partial")
                _write_all(fd, data[half:])
                os.fsync(fd)
            finally:
                os.close(fd)
            _hook("written")
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        _hook("replaced")
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# ---- the TypeScript pi's pods.json -------------------------------------------------------------------------

@dataclass
class PiPods:
    """What `pods.json` holds, translated: records ready for State.add_pod, and notes for the user."""
    pods: dict[str, dict] = field(default_factory=dict)
    active: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class ImportReport:
    added: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _memory_mib(text) -> int | None:
    # pi stores nvidia-smi's "81559 MiB"
    if isinstance(text, int) and not isinstance(text, bool) and text >= 0:
        return text
    m = re.fullmatch(r"\s*(\d+)\s*MiB\s*", text) if isinstance(text, str) else None
    return int(m.group(1)) if m else None


def _pi_gpus(name: str, gpus, notes: list[str]) -> list[dict]:
    if not isinstance(gpus, list):
        notes.append(f"{name}: its GPU list is not a list; imported without GPUs (setup will read them)")
        return []
    out = []
    for pos, gpu in enumerate(gpus):
        if not isinstance(gpu, dict):
            notes.append(f"{name}: GPU entry {pos} is not an object; skipped")
            continue
        index = gpu.get("id")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            index = pos
        out.append({"index": index, "uuid": None, "name": str(gpu.get("name", "")),
                    "memory_total_mib": _memory_mib(gpu.get("memory"))})
    return out


def read_pi_pods(path: str | os.PathLike | None = None) -> PiPods:
    """Read the TypeScript pi's pods.json (never written) and translate what can be trusted."""
    path = Path(path) if path is not None else config_dir() / "pods.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PiError(f"there is no {path}: the TypeScript pi keeps its pods there; nothing to import") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PiError(f"cannot read {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        # pi itself would silently treat this file as empty; say so instead
        raise PiError(f"{path} is not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg}); "
                      "nothing imported") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("pods", {}), dict):
        raise PiError(f"{path} does not look like pi's pods.json ({{\"pods\": {{...}}, \"active\": ...}}); "
                      "nothing imported")
    result = PiPods()
    for old_name, pod in doc.get("pods", {}).items():
        name = old_name
        try:
            validate_name(name)
        except PiError:
            name = suggest_name(old_name)
            if name in doc["pods"] or name in result.pods:
                result.notes.append(f"{old_name!r}: not a valid pod name, and {name!r} is taken; skipped")
                continue
            result.notes.append(f"{old_name!r}: not a valid pod name; imported as {name!r}")
        if not isinstance(pod, dict) or not isinstance(pod.get("ssh"), str):
            result.notes.append(f"{old_name!r}: it has no SSH string; skipped")
            continue
        try:
            target = parse_ssh(pod["ssh"])
        except PiError as exc:
            result.notes.append(f"{old_name!r}: skipped, {exc}")
            continue
        variant = pod.get("vllmVersion") if pod.get("vllmVersion") in VARIANTS else "release"
        models_path = pod.get("modelsPath")
        if models_path is not None and not (isinstance(models_path, str) and models_path.startswith("/")):
            result.notes.append(f"{old_name!r}: models path {models_path!r} is not an absolute path; dropped")
            models_path = None
        if isinstance(pod.get("models"), dict) and pod["models"]:
            # pi's model entries are its own bookkeeping of PIDs and ports, never checked against the pod
            result.notes.append(f"{old_name!r}: its {len(pod['models'])} model record(s) are not imported; "
                                "`pi list` reads models from the pod")
        result.pods[name] = pod_record(target, gpus=_pi_gpus(name, pod.get("gpus", []), result.notes),
                                       engine_variant=variant, models_path=models_path, origin="pi-import")
        if doc.get("active") == old_name:
            result.active = name
    return result


def import_pi_pods(path: str | os.PathLike | None = None, store: StateStore | None = None) -> ImportReport:
    """Add pi's pods to our state; a name we already have is kept as it is."""
    found = read_pi_pods(path)
    report = ImportReport(notes=list(found.notes))
    with (store or StateStore()).transaction() as state:
        had_active = state.active is not None
        for name, record in found.pods.items():
            if name in state.pods:
                report.notes.append(f"{name!r}: already in pi-ansible's state; kept as it is")
                continue
            state.add_pod(name, record)
            report.added.append(name)
        if not had_active and found.active in report.added:
            state.active = found.active
    return report
