"""Model lifecycle operations that change a pod: start and stop, each one playbook run."""

from __future__ import annotations

import contextlib
import getpass
import json
import re
import secrets as secrets_mod
import shlex
import socket
import subprocess
import threading
from collections.abc import Callable

from .errors import Interrupted, PiError
from .ssh import batch_argv
from .sshargs import validate_name
from .state import StateStore

_INTERPRETER = re.compile(r"^/[A-Za-z0-9._/+-]+$")


def _inventory(pod: str, target, python: str | None = None) -> dict:
    """One host; PYTHON (a path the pod reported) spares Ansible its interpreter discovery round trips."""
    interpreter = python if python and _INTERPRETER.match(python) else "auto_silent"
    return {"all": {"hosts": {pod: {**target.ansible_vars(), "ansible_python_interpreter": interpreter}}}}


def stop_models(pod: str, names: list[str], *, on_event: Callable | None = None,
                store: StateStore | None = None) -> list[str]:
    """Stop NAMES (all models when empty) on POD; returns the names stopped. Local cache follows the pod."""
    from .runner import run_playbook

    store = store or StateStore()
    target = store.load().target(pod)
    result = run_playbook("model_stop.yml", inventory=_inventory(pod, target),
                          extravars={"model_stop_names": names}, on_event=on_event, label=pod,
                          what=f"stopping {', '.join(names) or 'all models'} on pod {pod}")
    before = result.facts.get(pod, {}).get("pi_models", {}).get("models", {})
    stopped = names or sorted(before)
    with store.transaction() as state:
        cache = state.models.get(pod, {})
        for n in stopped:
            cache.pop(n, None)
        if pod in state.models and not cache:
            del state.models[pod]
    return stopped


_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def validate_request(model: str, name: str, memory, context, gpus, vllm_args) -> dict:
    """Every local check of `pi start`'s input (nothing touches a pod before they pass)."""
    from .planning.cmdline import check_passthrough, check_tokens, parse_context, parse_memory

    validate_name(name, "model")
    if not _MODEL_ID.match(model or "") or ".." in model:
        raise PiError(f"{model!r} is not a Hugging Face model id; use the form ORG/NAME, e.g. Qwen/Qwen3-8B "
                      "(`pi start` with no model lists the catalog)")
    if memory is not None:
        parse_memory(memory)
    if context is not None:
        parse_context(context)
    if gpus is not None and not 1 <= gpus <= 64:
        raise PiError(f"--gpus {gpus} is out of range: give 1 to 64")
    if vllm_args is not None:
        check_tokens(list(vllm_args), "--vllm")
        check_passthrough(list(vllm_args))
    from .catalog import load_catalog

    load_catalog()  # a broken user catalog is a clear error here, before anything runs
    return {"model": model, "name": name, "memory": memory, "context": context, "gpus": gpus,
            "vllm_args": list(vllm_args) if vllm_args is not None else None}


class RemoteFollower:
    """Streams a command's output from the pod over SSH while a playbook task runs (stopped with the run):
    the engine's journal while /health is awaited, the Hub client's progress while weights download."""

    def __init__(self, target, command: str, on_line: Callable[[str], None]):
        self.target, self.command, self.on_line = target, command, on_line
        self.proc: subprocess.Popen | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.proc is not None:
            return
        argv = batch_argv(self.target, self.command)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     stdin=subprocess.DEVNULL)
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        last = ""
        for line in self.proc.stdout:
            # progress bars redraw with \r: show the newest state of each line, once
            text = line.rstrip("\n").split("\r")[-1].strip()
            if text and text != last:
                self.on_line(text)
                last = text

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            if self.thread:
                self.thread.join(timeout=5)


def release_placement_lock(target, token: str) -> None:
    """After Ctrl+C: drop the pod's placement lock if this run holds it, so a re-run need not wait for it."""
    from .pod_status import PLACEMENT_LOCK as lock

    argv = batch_argv(target, f'test "$(cat {lock}/owner 2>/dev/null)" = {token} && rm -rf {lock}; true', 5)
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(argv, capture_output=True, timeout=15, stdin=subprocess.DEVNULL)


class PlacementRead:
    """What a start plans from, in one SSH call outside the placement lock (pod_status.py's placement read),
    started early so the CLI's own preparation runs meanwhile. result(): {pod, gpus, models, digest, python},
    or None when the read failed or the pod is not set up (the playbook's locked path then reads, and explains)."""

    def __init__(self, target):
        from .model_list import STATUS_SCRIPT
        from .planning.gpu_facts_parse import SMI_CALLS

        argv = batch_argv(target, "python3 - placement " + shlex.quote(json.dumps(SMI_CALLS)))
        self.proc: subprocess.Popen | None = None
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
            # the script (~12 KB) fits in the pipe's buffer: written now, the pod starts on it at once
            self.proc.stdin.write(STATUS_SCRIPT.read_text())
            self.proc.stdin.close()
            self.proc.stdin = None  # so communicate() does not flush the closed pipe
        except OSError:
            if self.proc is not None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def result(self, timeout: float = 30) -> dict | None:
        from .planning.gpu_facts_parse import SMI_CALLS, facts_from_runs

        if self.proc is None:
            return None
        try:
            out, _ = self.proc.communicate(timeout=timeout)
            data = json.loads(out) if self.proc.returncode == 0 else None
            if not (isinstance(data, dict) and isinstance(data.get("pod"), dict)
                    and isinstance(data.get("models"), dict) and set(data.get("nvidia_smi") or {}) == set(SMI_CALLS)):
                return None
            gpus = facts_from_runs(data["nvidia_smi"])
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return None
        except (OSError, ValueError, TypeError, IndexError):
            return None
        if gpus.get("failure"):
            return None
        return {"pod": data["pod"], "gpus": gpus, "models": data["models"], "digest": str(data.get("digest") or ""),
                "python": data.get("python")}


def plan_ahead(pod: str, model_start: dict, read: dict | None) -> dict | None:
    """model_start's plan, made here from READ (the playbook's planner, same inputs), with what the start task
    needs to check it under the lock; None where the playbook's locked path should plan instead: no read, a
    model the catalog does not know (its config.json is fetched on the pod), or a request the planner refuses
    (the playbook then refuses it with the same words as for any ansible-playbook run)."""
    from .catalog import load_catalog
    from .planning.start_request import model_service_vars

    if read is None or not read["digest"] or load_catalog().get(model_start["model"]) is None:
        return None
    try:
        storage, venv = read["pod"]["storage"], read["pod"]["engine"]["venv"]
        plan = model_service_vars(model_start, read["gpus"], read["models"], venv=venv, pod=pod)
        pod_vars = {"engine": {"venv": venv}, "storage": {"hf_home": storage["hf_home"],
                                                            "hf_endpoint": storage.get("hf_endpoint") or ""}}
    except (PiError, KeyError, TypeError, ValueError):
        return None
    if plan.get("model_service_action") not in ("start", "resume"):
        return None
    return {"plan": plan, "pod": pod_vars, "state_digest": read["digest"]}


def start_model(pod: str, request: dict, *, verify: bool = True, on_event: Callable | None = None,
                on_log: Callable[[str], None] | None = None, store: StateStore | None = None,
                env=None) -> dict:
    """One run of playbooks/model_start.yml; returns the plan and the endpoint. Local cache follows the pod."""
    from .pod_setup import read_secrets
    from .pod_status import STALE_PLAN
    from .runner import PlaybookFailed, run_playbook

    store = store or StateStore()
    target = store.load().target(pod)
    secrets = read_secrets(env)
    reading = PlacementRead(target)  # the SSH read runs while the rest is prepared
    name = request["name"]
    token = secrets_mod.token_hex(8)  # names this run's placement lock and its download log on the pod
    # Both followers start with the run (the engine's journal from now on; this run's download log, which
    # exists only when this start downloads), well before the start task reaches either.
    followers = [
        RemoteFollower(target, f"tail -F -n +1 /run/pi-ansible/download-{name}-{token}.log 2>/dev/null", on_log),
        RemoteFollower(target, f"journalctl -u pi-model-{name}.service -f -n 0 -o cat --no-pager", on_log),
    ] if on_log else []

    who = f"pi start ({getpass.getuser()}@{socket.gethostname()})"
    model_start = {**request, "verify": verify, "started_by": who, "lock_token": token, "existing": "resume"}
    # The pod is read and the start planned here (one SSH call, ~0.2 s on the master connection, mostly hidden
    # behind the imports below) rather than by a locked Ansible task (~1 s): the start task takes the lock and
    # checks that nothing changed in between.
    import ansible_runner  # noqa: F401  (run_playbook's ~0.3 s of imports, while the read is under way)

    read = reading.result()
    ahead = plan_ahead(pod, model_start, read)
    for follower in followers:
        follower.start()

    def run(extra: dict | None):
        return run_playbook(
            "model_start.yml", inventory=_inventory(pod, target, (read or {}).get("python")),
            extravars={"model_start": {**model_start, **(extra or {})}},
            secret_vars={"model_service_api_key": secrets["PI_API_KEY"],
                         "model_service_hf_token": secrets["HF_TOKEN"]},
            on_event=on_event, label=f"{pod}-{request['name']}",
            what=f"starting {request['model']} as {request['name']} on pod {pod}")

    try:
        try:
            result = run(ahead)
        except PlaybookFailed as exc:
            if ahead is None or STALE_PLAN not in str(exc):
                raise
            ahead = None  # another start changed the pod after the read: plan again, under the lock
            result = run(None)
    except Interrupted:
        release_placement_lock(target, token)
        raise
    finally:
        for follower in followers:
            follower.stop()
    plan = ahead["plan"] if ahead else result.facts.get(pod, {}).get("model_start_plan", {})
    manifest = {"name": request["name"], "model": request["model"], "port": plan.get("model_service_port"),
                "gpus": plan.get("model_service_gpus"), "served_name": plan.get("model_service_served_name"),
                "args": plan.get("model_service_args"), "unit": f"pi-model-{request['name']}.service",
                **plan.get("model_service_manifest_extra", {})}  # as the pod's manifest: `pi list` keeps it as is
    with store.transaction() as state:
        state.models.setdefault(pod, {})[request["name"]] = manifest
    return {"pod": pod, "name": request["name"], "model": request["model"], "port": manifest["port"],
            "gpus": manifest["gpus"], "base_url": f"http://{target.host}:{manifest['port']}/v1",
            "served_name": manifest["served_name"], "api": manifest.get("api", "completions"),
            "memory_fraction": manifest.get("memory_fraction"), "max_model_len": manifest.get("max_model_len"),
            "warnings": plan.get("warnings", []), "changed": result.changed()}
