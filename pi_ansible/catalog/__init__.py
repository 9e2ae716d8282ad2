"""The model catalog: built-in `models.json` plus the user's `$PI_CONFIG_DIR/models.json`.

Both are validated against `catalog.schema.json` when loaded, and then checked for what a schema
cannot say (parser names vLLM knows, flags pi-ansible manages, GPU counts the flags agree with),
so a mistake is an error naming the entry before anything runs on a pod. pi read its list
unchecked; a typo there surfaced as an engine crash minutes into a start.

The schema check is remembered by content: `$PI_CONFIG_DIR/cache/catalog-checked` holds digests of
(schema, built-in file, user file) combinations that passed, so a command (and each Ansible task that
reads the catalog) skips jsonschema, 0.25 s, until one of the three files changes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from pi_ansible.catalog.parsers import REASONING_PARSERS, TOOL_CALL_PARSERS, VLLM_VERSION, suggest
from pi_ansible.errors import PiError
from pi_ansible.planning import vllm_args
from pi_ansible.planning.cmdline import SECRET_ENV
from pi_ansible.planning.model_config import Arch

HERE = Path(__file__).resolve().parent
BUILTIN_FILE = HERE / "models.json"
SCHEMA_FILE = HERE / "catalog.schema.json"
USER_FILE_NAME = "models.json"


@dataclass(frozen=True)
class CatalogConfig:
    gpu_count: int
    gpu_types: tuple[str, ...]
    args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    notes: str = ""

    def to_dict(self) -> dict:
        return {"gpu_count": self.gpu_count, "gpu_types": list(self.gpu_types), "args": list(self.args),
                "env": dict(self.env), "notes": self.notes}


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    name: str
    family: str
    tool_call_parser: str | None
    reasoning_parser: str | None
    api: str
    trust_remote_code: bool
    configs: tuple[CatalogConfig, ...]
    arch: Arch | None = None
    origin: str = "user"
    gated: bool = False
    fp8_variant: str | None = None
    notes: str = ""

    @property
    def gpu_counts(self) -> list[int]:
        return sorted({c.gpu_count for c in self.configs})

    def to_dict(self) -> dict:
        d = {"id": self.id, "name": self.name, "family": self.family, "origin": self.origin,
             "tool_call_parser": self.tool_call_parser, "reasoning_parser": self.reasoning_parser,
             "api": self.api, "trust_remote_code": self.trust_remote_code, "gated": self.gated,
             "fp8_variant": self.fp8_variant, "notes": self.notes,
             "configs": [c.to_dict() for c in self.configs]}
        if self.arch is not None:
            d["arch"] = self.arch.to_dict()
        return d


@dataclass(frozen=True)
class Catalog:
    entries: tuple[CatalogEntry, ...]
    sources: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, model: str) -> CatalogEntry | None:
        """By Hub id (any case) or by short name ("Qwen3-Coder-30B"); None when unknown."""
        key = model.strip().lower()
        for e in self.entries:
            if e.id.lower() == key:
                return e
        for e in self.entries:
            if e.name.lower() == key:
                return e
        return None

    def fp8_variant_of(self, entry: CatalogEntry) -> CatalogEntry | None:
        return self.get(entry.fp8_variant) if entry.fp8_variant else None


@cache
def _schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text())


def _path(parts) -> str:
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _fail(source: str, where: str, what: str) -> PiError:
    return PiError(f"{source}: {where}: {what}. Fix or remove that entry (its shape: "
                   f"pi_ansible/catalog/{SCHEMA_FILE.name}).")


def _entry_label(doc: dict, path: list) -> str:
    """'model "org/repo" (models[3])' for the entry a JSON path points into."""
    if len(path) >= 2 and path[0] == "models" and isinstance(path[1], int):
        models = doc.get("models") or []
        i = path[1]
        mid = models[i].get("id") if i < len(models) and isinstance(models[i], dict) else None
        return f"model {mid!r} (models[{i}])" if mid else f"models[{i}]"
    return "the file"


def _jsonschema():
    """Imported only when a file's content was not checked before (0.15 s). The piansible.pods collection
    lists it in requirements.txt rather than depending on it: say what to install when it is missing."""
    try:
        import jsonschema
    except ImportError:
        raise PiError("the model catalog is validated with jsonschema: install it where ansible-playbook "
                      "runs (pip install 'jsonschema>=4.20')") from None
    return jsonschema


def _validate_doc(doc, schema: dict, source: str) -> None:
    validator = _jsonschema().Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: (list(e.path), e.message))
    if errors:
        e = errors[0]
        path = list(e.absolute_path)
        label = _entry_label(doc, path) if isinstance(doc, dict) else "the file"
        raise _fail(source, label, f"at {_path(path)}: {e.message}")


@cache
def _entry_validator():
    schema = _schema()
    return _jsonschema().Draft202012Validator({"$schema": schema["$schema"], "$defs": schema["$defs"],
                                            "$ref": "#/$defs/entry"})


def _user_schema() -> dict:
    # An override of a built-in entry may give only `id` and the fields it changes; the merged
    # entry is then checked against the full schema.
    schema = json.loads(json.dumps(_schema()))
    schema["$defs"]["entry"]["required"] = ["id"]
    return schema


def _check_semantics(e: dict, source: str, label: str) -> None:
    for key, known in (("tool_call_parser", TOOL_CALL_PARSERS), ("reasoning_parser", REASONING_PARSERS)):
        name = e.get(key)
        if name is not None and name not in known:
            hint = suggest(name, known, tool=key == "tool_call_parser")
            raise _fail(source, label, f"{key} {name!r} is not a vLLM {VLLM_VERSION} parser"
                        + (f" (did you mean {hint!r}?)" if hint else ""))
    for i, c in enumerate(e["configs"]):
        args = list(c["args"])
        managed = vllm_args.managed_flags_in(args)
        if managed:
            raise _fail(source, label, f"configs[{i}].args sets {', '.join(managed)}, which pi-ansible sets "
                        "itself (port and name are planned; the API key goes in the env file, never argv)")
        secrets = sorted(SECRET_ENV & set(c.get("env") or {}))
        if secrets:
            raise _fail(source, label, f"configs[{i}].env sets {', '.join(secrets)}: secrets go in the model's "
                        "0600 env file from your environment, never in the catalog")
        try:
            world = vllm_args.world_size(args)
        except PiError as err:
            raise _fail(source, label, f"configs[{i}].args: {err}") from None
        if world != c["gpu_count"]:
            raise _fail(source, label, f"configs[{i}] is for {c['gpu_count']} GPU(s) but its args use {world} "
                        "(tensor × pipeline × data parallel sizes)")


def _build(e: dict) -> CatalogEntry:
    configs = tuple(CatalogConfig(gpu_count=c["gpu_count"], gpu_types=tuple(c.get("gpu_types") or ()),
                                  args=tuple(c["args"]), env=dict(c.get("env") or {}),
                                  notes=c.get("notes") or "") for c in e["configs"])
    return CatalogEntry(
        id=e["id"], name=e["name"], family=e["family"], tool_call_parser=e["tool_call_parser"],
        reasoning_parser=e["reasoning_parser"], api=e["api"], trust_remote_code=e["trust_remote_code"],
        configs=configs, arch=Arch.from_dict(e["arch"]) if e.get("arch") else None,
        origin=e.get("origin", "user"), gated=e.get("gated", False), fp8_variant=e.get("fp8_variant"),
        notes=e.get("notes") or "")


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as e:
        raise PiError(f"cannot read the model catalog {path}: {e.strerror}") from None


def _parse(path: Path, text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise PiError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                      "fix the file or move it away") from None


def from_pi_format(doc: dict) -> dict:
    """pi's own models.json shape ({"models": {id: {name, configs: [{gpuCount, …}]}}}) in ours."""
    models = []
    for mid, m in (doc.get("models") or {}).items():
        m = m if isinstance(m, dict) else {}
        configs = [{"gpu_count": c.get("gpuCount"), "gpu_types": c.get("gpuTypes") or [],
                    "args": c.get("args") or [], "env": c.get("env") or {}, "notes": c.get("notes") or ""}
                   for c in (m.get("configs") or []) if isinstance(c, dict)]
        args = [a for c in configs for a in c["args"] if isinstance(a, str)]
        models.append({
            "id": mid, "name": m.get("name") or mid.split("/")[-1], "family": str(m.get("name") or mid).split("-")[0],
            "origin": "user", "tool_call_parser": vllm_args.flag_value(args, "--tool-call-parser"),
            "reasoning_parser": vllm_args.flag_value(args, "--reasoning-parser"), "api": "completions",
            "trust_remote_code": vllm_args.has_flag(args, "--trust-remote-code"), "configs": configs,
            "notes": m.get("notes") or ""})
    return {"version": 1, "models": models}


# --- which file contents already passed the schema check ------------------------------------------------------

_CHECKED_KEEP = 16


def _checked_file() -> Path:
    from pi_ansible.paths import config_dir

    return config_dir() / "cache" / "catalog-checked"


def _content_key(*texts: str) -> str:
    h = hashlib.sha256(SCHEMA_FILE.read_bytes())
    for text in texts:
        h.update(b"\0" + text.encode())
    return h.hexdigest()


def _was_checked(key: str) -> bool:
    try:
        return key in _checked_file().read_text().split()
    except OSError:
        return False


def _remember_checked(key: str) -> None:
    """Best effort (a read-only config dir only costs the check next time); written whole, mode 0600."""
    from pi_ansible.paths import write_atomic

    path = _checked_file()
    try:
        keys = [k for k in (path.read_text().split() if path.exists() else []) if k != key][-(_CHECKED_KEEP - 1):]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, "\n".join([*keys, key]) + "\n", 0o600)
    except OSError:
        pass


def _load_builtin(text: str | None = None, check_schema: bool = True) -> list[dict]:
    text = _read_text(BUILTIN_FILE) if text is None else text
    doc = _parse(BUILTIN_FILE, text)
    source = str(BUILTIN_FILE)
    if check_schema:
        _validate_doc(doc, _schema(), source)
    for i, e in enumerate(doc["models"]):
        _check_semantics(e, source, f"model {e['id']!r} (models[{i}])")
    return doc["models"]


def merge(builtin: list[dict], user_doc: object, source: str, check_schema: bool = True) -> list[dict]:
    """Built-in entries with the user's added or overriding ones (field by field, by id)."""
    if isinstance(user_doc, dict) and isinstance(user_doc.get("models"), dict):
        user_doc = from_pi_format(user_doc)
    if check_schema:
        _validate_doc(user_doc, _user_schema(), source)
    by_id = {e["id"].lower(): dict(e) for e in builtin}
    order = [e["id"].lower() for e in builtin]
    for i, u in enumerate(user_doc["models"]):
        key = u["id"].lower()
        label = f"model {u['id']!r} (models[{i}])"
        base = by_id.get(key)
        merged = {**(base or {}), **u, "origin": u.get("origin", "user")}
        if base is not None:
            merged["id"] = base["id"]
        errors = sorted(_entry_validator().iter_errors(merged), key=lambda e: list(e.path)) if check_schema else []
        if errors:
            e = errors[0]
            raise _fail(source, label, f"at {_path(['models', i, *e.absolute_path])}: {e.message}"
                        + ("" if base else " (a new model needs every required field)"))
        _check_semantics(merged, source, label)
        by_id[key] = merged
        if key not in order:
            order.append(key)
    return [by_id[k] for k in order]


def default_user_file() -> Path:
    from pi_ansible.paths import config_dir

    return config_dir() / USER_FILE_NAME


def load_catalog(user_file: str | Path | None = None) -> Catalog:
    """The catalog: built-in entries, plus `user_file` (default `$PI_CONFIG_DIR/models.json`, if present)."""
    builtin_text = _read_text(BUILTIN_FILE)
    path = Path(user_file).expanduser() if user_file is not None else default_user_file()
    user_text = _read_text(path) if user_file is not None or path.is_file() else None
    key = _content_key(builtin_text, *([user_text] if user_text is not None else []))
    checked = _was_checked(key)
    entries = _load_builtin(builtin_text, check_schema=not checked)
    sources = [str(BUILTIN_FILE)]
    if user_text is not None:
        entries = merge(entries, _parse(path, user_text), str(path), check_schema=not checked)
        sources.append(str(path))
    if not checked:
        _remember_checked(key)  # only reached when every check passed
    return Catalog(entries=tuple(_build(e) for e in entries), sources=tuple(sources))


def load_builtin_catalog() -> Catalog:
    return Catalog(entries=tuple(_build(e) for e in _load_builtin()), sources=(str(BUILTIN_FILE),))
