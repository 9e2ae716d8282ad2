"""The only importer of ansible_runner: run a playbook, stream progress, raise a typed error on failure.

Secrets never travel in the environment: ansible-runner writes the whole environment of the run into
the artifact `command` file. They go in an extra-vars file in a private RAM-backed directory (0700/0600),
removed when the run ends, and the tasks that use them are `no_log`. Secret variables inherited from the
caller's environment are blanked for the run for the same reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import Interrupted, PiError
from .paths import config_dir, content_root, runs_dir
from .sshmux import ansible_env, control_dir

KEEP_RUNS = 30
# Names that must never reach ansible-runner's recorded environment.
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "PI_API_KEY", "VLLM_API_KEY", "OPENAI_API_KEY")


@dataclass(frozen=True)
class TaskEvent:
    """One line of progress: a task finished on a host (or started, with host None)."""

    elapsed: float
    host: str | None
    task: str
    status: str  # started | ok | changed | failed | skipped | unreachable | ignored
    message: str = ""


@dataclass
class RunResult:
    status: str
    rc: int
    artifact_dir: Path
    stats: dict = field(default_factory=dict)
    failures: list[TaskEvent] = field(default_factory=list)
    results: dict[str, dict[str, dict]] = field(default_factory=dict)  # host -> task name -> module result
    facts: dict[str, dict] = field(default_factory=dict)

    def changed(self) -> int:
        return sum((self.stats.get("changed") or {}).values())


class PlaybookFailed(PiError):
    def __init__(self, result: RunResult, what: str):
        self.result = result
        lines = [f"{what} failed"]
        for f in result.failures:
            where = f"{f.host}: " if f.host else ""
            lines.append(f"  {where}{f.task}: {f.message}".rstrip())
        if not result.failures:
            lines.append(f"  ansible-playbook ended with status {result.status} (rc {result.rc})")
            stdout = result.artifact_dir / "stdout"
            errors = [ln for ln in (stdout.read_text(errors="replace").splitlines() if stdout.exists() else [])
                      if "ERROR" in ln]
            lines += [f"  {ln.strip()}" for ln in errors[:3]]
        lines.append(f"  full log: {result.artifact_dir}/stdout")
        super().__init__("\n".join(lines))


def _message(res: dict) -> str:
    """The most useful single line of a failed task's result."""
    if res.get("censored"):
        return "(details hidden: the task handles secrets)"
    msg = res.get("msg") or res.get("stderr") or res.get("reason") or ""
    if isinstance(msg, list):
        msg = " ".join(map(str, msg))
    msg = str(msg).strip()
    # A planning refusal raised in a filter arrives wrapped in Ansible's templating context: keep ours.
    inner = re.search(r"The filter plugin '[^']+' failed: (.*)", msg, re.DOTALL)
    return inner.group(1).strip() if inner else msg


def read_fact_cache(cache_dir: Path, host: str) -> dict:
    """A host's cached facts. ansible-core 2.19 names the file `s<N>_<host>` and wraps the facts in a
    JSON string under `__payload__`, which ansible-runner's get_fact_cache does not read yet."""
    for path in [cache_dir / host, *sorted(cache_dir.glob(f"s*_{host}"))]:
        if path.is_file():
            data = json.loads(path.read_text())
            payload = data.get("__payload__") if isinstance(data, dict) else None
            return _untag(json.loads(payload) if isinstance(payload, str) else data)
    return {}


def _untag(obj):
    """Strip ansible-core 2.19's data tags ({"value": …, "tags": […], "__ansible_type": …}) from cached facts."""
    if isinstance(obj, dict):
        if "__ansible_type" in obj and "value" in obj:
            return _untag(obj["value"])
        return {k: _untag(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_untag(v) for v in obj]
    return obj


@contextlib.contextmanager
def _secret_vars_file(secret_vars: dict[str, str] | None):
    """Yield `-e @FILE` for the secrets (or None): a 0600 file in a 0700 dir on tmpfs, always removed."""
    if not secret_vars:
        yield None
        return
    shm = Path("/dev/shm")
    tmp = Path(tempfile.mkdtemp(prefix="pi-secrets-", dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None))
    try:
        path = tmp / "vars.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(secret_vars, fh)
        yield f"-e @{path}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _rotate(base: Path) -> None:
    runs = sorted((p for p in base.iterdir() if p.is_dir()), key=lambda p: p.name)
    for old in runs[:-KEEP_RUNS]:
        shutil.rmtree(old, ignore_errors=True)


def _no_close_grace() -> None:
    """ansible-runner closes ansible-playbook's pty only after its loop saw the process exit, and ptyprocess then
    sleeps 0.1 s "to give the kernel time" before checking that the child is gone: every run paid it for nothing.
    The grace is an attribute each PtyProcess sets in __init__; the spawn hook clears it (if the child were alive
    after all, close() still terminates it)."""
    import pexpect.pty_spawn

    spawn = pexpect.pty_spawn.spawn
    if getattr(spawn._spawnpty, "_pi_no_grace", False):
        return
    original = spawn._spawnpty

    def _spawnpty(self, args, **kwargs):
        proc = original(self, args, **kwargs)
        proc.delayafterclose = 0
        return proc

    _spawnpty._pi_no_grace = True
    spawn._spawnpty = _spawnpty


def run_playbook(
    playbook: str,
    *,
    inventory: str | dict | list,
    extravars: dict | None = None,
    secret_vars: dict[str, str] | None = None,
    on_event: Callable[[TaskEvent], None] | None = None,
    limit: str | None = None,
    label: str = "",
    what: str | None = None,
    check: bool = True,
) -> RunResult:
    """Run playbooks/<playbook> with the repo's ansible.cfg; raise PlaybookFailed naming hosts and tasks."""
    import ansible_runner  # ~0.3 s of imports that local commands must not pay

    _no_close_grace()

    root = content_root()
    base = runs_dir()
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    _rotate(base)
    ident = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}-{Path(playbook).stem}{'-' + label if label else ''}"
    private = base / ident
    private.mkdir(mode=0o700)

    started = time.monotonic()
    results: dict[str, dict[str, dict]] = {}
    failures: list[TaskEvent] = []

    def handle(event: dict) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        task = (data.get("task") or "").strip()
        host = data.get("host")
        elapsed = time.monotonic() - started
        ev = None
        if kind == "playbook_on_task_start" and on_event:
            ev = TaskEvent(elapsed, None, task, "started")
        elif kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_on_skipped"):
            res = data.get("res") or {}
            if kind == "runner_on_ok":
                # A no_log result is censored, changed flag included; the event's own line still says it.
                changed = res.get("changed") or (event.get("stdout") or "").lstrip().startswith("changed")
                status = "changed" if changed else "ok"
                results.setdefault(host, {})[task] = res
            elif kind == "runner_on_skipped":
                status = "skipped"
            elif kind == "runner_on_failed" and data.get("ignore_errors"):
                status = "ignored"
            else:
                status = "unreachable" if kind == "runner_on_unreachable" else "failed"
            message = _message(res) if status in ("failed", "unreachable") else ""
            if status == "unreachable":
                message = (f"lost the SSH connection to {host} ({message or 'no answer'}); check the pod and its "
                           "network, then run the same command again")
            ev = TaskEvent(elapsed, host, task, status, message)
            if status in ("failed", "unreachable"):
                # One failure per host: a failure handled by a rescue is followed by the rescue's own.
                failures[:] = [f for f in failures if f.host != host]
                failures.append(ev)
        if ev:
            track(ev)
        return True

    bindir = str(Path(sys.executable).parent)
    envvars = {
        # The venv's tools first, as an activated venv has them (ansible-playbook itself runs as sys.executable -m).
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
        "ANSIBLE_CONFIG": str(root / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(root / "roles"),
        "ANSIBLE_LIBRARY": str(root / "plugins" / "modules"),
        "ANSIBLE_MODULE_UTILS": str(root / "plugins" / "module_utils"),
        "ANSIBLE_FILTER_PLUGINS": str(root / "plugins" / "filter"),
        "ANSIBLE_ACTION_PLUGINS": str(root / "plugins" / "action"),
        "ANSIBLE_CALLBACK_PLUGINS": str(root / "plugins" / "callback"),  # ansible-runner adds its own after it
        "ANSIBLE_NOCOLOR": "1",
        "PI_ANSIBLE_CACHE": str(config_dir() / "cache" / "ansible"),  # ansible_launcher.py's parsed routing table
        **ansible_env(control_dir(config_dir())),  # the pods' master connections, shared with pi's direct SSH
        # ansible-runner writes an inventory given as data to hosts.json: only the yaml plugin need load (~0.05 s)
        **({"ANSIBLE_INVENTORY_ENABLED": "ansible.builtin.yaml"} if isinstance(inventory, dict) else {}),
        **{name: "" for name in SECRET_ENV if name in os.environ},
    }
    interrupted: list[TaskEvent | None] = []
    last: list[TaskEvent] = []

    def on_sigint(signum, frame):
        if interrupted:  # a second Ctrl+C: stop waiting at once
            raise KeyboardInterrupt
        interrupted.append(last[-1] if last else None)

    def track(ev: TaskEvent) -> None:
        last.append(ev)
        if on_event:
            on_event(ev)

    previous = signal.signal(signal.SIGINT, on_sigint) if threading.current_thread() is threading.main_thread() else None
    try:
        with _secret_vars_file(secret_vars) as secrets:
            # ansible-playbook through ansible_launcher (a routing table parsed once per machine): with a binary,
            # ansible-runner leaves the playbook's path to the command line.
            cmdline = shlex.join(["-m", "pi_ansible.ansible_launcher", str(root / "playbooks" / playbook)])
            runner = ansible_runner.run(
                private_data_dir=str(private),
                project_dir=str(root),
                playbook=str(root / "playbooks" / playbook),
                binary=sys.executable,
                inventory=inventory,
                extravars=extravars or {},
                envvars=envvars,
                cmdline=f"{cmdline} {secrets}" if secrets else cmdline,
                limit=limit,
                event_handler=handle,
                cancel_callback=lambda: bool(interrupted),
                settings={"pexpect_timeout": 0.5},
                quiet=True,
                suppress_env_files=True,
                suppress_ansible_output=True,
            )
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    art = Path(runner.config.artifact_dir)
    if interrupted or runner.status == "canceled":
        where = interrupted[0] if interrupted and interrupted[0] else None
        during = f" during '{where.task}'" + (f" on {where.host}" if where.host else "") if where else ""
        raise Interrupted(f"interrupted{during}. What finished on the pod is kept and nothing is left half-written; "
                          f"run the same command again to finish it. Log: {art}/stdout")
    facts = {host: read_fact_cache(art / "fact_cache", host) for host in (runner.stats or {}).get("ok", {}) or {}}
    result = RunResult(status=runner.status, rc=runner.rc, artifact_dir=art, stats=runner.stats or {},
                       failures=failures, results=results, facts=facts)
    if check and (runner.status != "successful" or runner.rc != 0):
        raise PlaybookFailed(result, what or f"playbook {playbook}")
    return result
