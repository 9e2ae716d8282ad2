"""`pi pods setup`: validate everything locally, probe SSH, run playbooks/pod_setup.yml, save the pod.

Nothing on the pod or in local state changes before every local check has passed, and local state
changes only after the playbook succeeded.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import ssh
from .errors import PiError
from .inventory import pod_hostvars
from .planning import engine_wheels, mounts
from .sshargs import parse_ssh, validate_name
from .state import StateStore, pod_record

SECRETS = ("HF_TOKEN", "PI_API_KEY")
_SECRET_HELP = {
    "HF_TOKEN": "a Hugging Face token (https://huggingface.co/settings/tokens): export HF_TOKEN=hf_...",
    "PI_API_KEY": "the API key your model endpoints will require: export PI_API_KEY=$(openssl rand -hex 24)",
}


@dataclass(frozen=True)
class SetupRequest:
    name: str
    ssh: str
    mount: str | None = None
    models_path: str | None = None
    vllm: str = "release"
    index_url: str | None = None
    hf_endpoint: str | None = None
    reinstall: bool = False


def read_secrets(env=None) -> dict[str, str]:
    env = os.environ if env is None else env
    missing = [k for k in SECRETS if not env.get(k)]
    if missing:
        raise PiError(" and ".join(missing) + " must be set before setting up a pod: "
                      + "; ".join(f"{k} is {_SECRET_HELP[k]}" for k in missing))
    return {k: env[k] for k in SECRETS}


def extravars(req: SetupRequest) -> dict:
    """Role variables for playbooks/pod_setup.yml (nothing secret: secrets travel in the environment)."""
    out = {
        "vllm_env_variant": req.vllm,
        "vllm_env_reinstall": req.reinstall,
        "model_storage_mount": req.mount or "",
        "model_storage_models_path": req.models_path or "",
    }
    return {**out, **mirror_vars(req.index_url, req.hf_endpoint)}


def mirror_vars(index_url: str | None, hf_endpoint: str | None) -> dict:
    """Role variables for a package index and a Hub mirror, where given."""
    out = {}
    if index_url:
        # A mirror (or the lab's index) serves everything: uv itself, vLLM's variants and torch.
        out["vllm_env_uv_index_url"] = index_url
        out["vllm_env_index_urls"] = {k: index_url for k in engine_wheels.DEFAULT_INDEX_URLS}
    if hf_endpoint:
        out["model_storage_hf_endpoint"] = hf_endpoint
    return out


def validate(req: SetupRequest, store: StateStore):
    """Every local check, before anything touches the pod: returns the parsed SSH target."""
    validate_name(req.name, "pod")
    target = parse_ssh(req.ssh)
    if req.vllm not in engine_wheels.VARIANTS:
        raise PiError(f"unknown --vllm {req.vllm!r}: use one of {', '.join(engine_wheels.VARIANTS)}")
    plan = mounts.parse_mount(req.mount) if req.mount else None
    mounts.models_path(plan, req.models_path)
    store.load()  # a malformed state file stops us here, untouched
    return target


def setup_pod(req: SetupRequest, *, store: StateStore | None = None,
              on_event: Callable | None = None, env=None, on_start: Callable[[str], None] | None = None) -> dict:
    """Set up the pod and save it; returns its local state record plus what the run reported.
    on_start(line) is told once the input is valid and the pod answers, before anything changes."""
    from .runner import run_playbook  # keeps ansible_runner off the import path of local commands

    store = store or StateStore()
    target = validate(req, store)
    secrets = read_secrets(env)
    ssh.probe(target)
    if on_start:
        on_start(f"Setting up pod {req.name} ({req.ssh})")
    inventory = {"all": {"hosts": {req.name: {**target.ansible_vars(),
                                              "ansible_python_interpreter": "auto_silent"}}}}
    result = run_playbook("pod_setup.yml", inventory=inventory, extravars=extravars(req),
                          secret_vars=_secret_vars(secrets), on_event=on_event, label=req.name,
                          what=f"setting up pod {req.name}")
    record = _record(target, req, result.facts.get(req.name, {}))
    with store.transaction() as state:
        state.add_pod(req.name, record)
        active = state.active
    return _report(req, record, result, active)


def _secret_vars(secrets: dict[str, str]) -> dict[str, str]:
    return {"pod_secrets_hf_token": secrets["HF_TOKEN"], "pod_secrets_api_key": secrets["PI_API_KEY"]}


def _record(target, req: SetupRequest, facts: dict) -> dict:
    """The pod's local state record, from what the setup run gathered on it."""
    gpus, engine, storage = facts.get("pi_gpus", {}), facts.get("vllm_env_installed", {}), facts.get("model_storage_layout", {})
    return pod_record(target, gpus=gpus.get("gpus", []), driver_version=gpus.get("driver_version"),
                      cuda_version=gpus.get("cuda_version"), engine_variant=req.vllm,
                      vllm_version=engine.get("vllm_version"), models_path=storage.get("models_path"))


def _report(req: SetupRequest, record: dict, result, active: str | None) -> dict:
    engine = result.facts.get(req.name, {}).get("vllm_env_installed", {})
    return {"name": req.name, **record, "active": active == req.name,
            "changed": (result.stats.get("changed") or {}).get(req.name, 0),
            "notes": list(engine.get("notes") or []), "cuda_variant": engine.get("cuda_variant"),
            "run": str(result.artifact_dir)}


def update_requests(state, names: list[str], index_url: str | None = None,
                    hf_endpoint: str | None = None) -> list[SetupRequest]:
    """Setup requests that run the setup again on set-up pods as they are: each keeps its recorded engine variant
    and models path (and whatever it has mounted). NAMES empty means every pod."""
    names = list(dict.fromkeys(names)) or sorted(state.pods)
    if not names:
        raise PiError('no pods to update: set one up with `pi pods setup NAME "ssh root@HOST" --models-path /mnt/models`')
    reqs = []
    for name in names:
        record = state.pod(name)  # an unknown name is an error naming the known pods
        if not record.get("models_path"):
            raise PiError(f"pod {name} has no recorded models path (it was imported, not set up): run "
                          f"`pi pods setup {name} {shlex.quote(record['ssh'])} --models-path PATH` once")
        reqs.append(SetupRequest(name=name, ssh=record["ssh"], models_path=record["models_path"],
                                 vllm=record.get("engine_variant") or "release", index_url=index_url,
                                 hf_endpoint=hf_endpoint))
    return reqs


def update_pods(names: list[str], *, index_url: str | None = None, hf_endpoint: str | None = None,
                store: StateStore | None = None, on_event: Callable | None = None, env=None,
                on_start: Callable[[str], None] | None = None) -> list[dict]:
    """Run the setup again on set-up pods (NAMES, or every pod) in one playbook run, all pods at once.

    Pods that finished are saved even when another failed; the failure is then raised, naming the pod and task."""
    from .runner import PlaybookFailed, run_playbook

    store = store or StateStore()
    state = store.load()  # checked against the state schema: names, SSH strings and variants are valid
    reqs = update_requests(state, names, index_url, hf_endpoint)
    targets = {r.name: state.target(r.name) for r in reqs}
    secrets = read_secrets(env)
    with ThreadPoolExecutor(max_workers=min(8, len(reqs))) as pool:  # every pod answers, or nothing runs
        problems = [str(e) for e in pool.map(_probe_error, targets.values()) if e]
    if problems:
        raise PiError("\n".join(problems))
    if on_start:
        on_start(f"Updating {len(reqs)} pod(s): {', '.join(targets)}")
    # Each pod's recorded setup is its host vars, as `pi inventory` gives them (extra vars would be one value for
    # all pods); the mirrors are the same for all.
    mirrors = mirror_vars(index_url, hf_endpoint)
    inventory = {"all": {"hosts": {r.name: {**pod_hostvars(r.name, state.pods[r.name]), **mirrors} for r in reqs}}}
    result = run_playbook("pod_setup.yml", inventory=inventory, secret_vars=_secret_vars(secrets),
                          on_event=on_event, label="update", what=f"updating pods {', '.join(targets)}",
                          check=False)
    failed = {f.host for f in result.failures}
    done = [r for r in reqs if r.name not in failed and r.name in result.facts]
    with store.transaction() as state:
        # A pod removed (`pi pods remove`) while the run went on stays removed.
        records = {r.name: _record(targets[r.name], r, result.facts[r.name]) for r in done if r.name in state.pods}
        for name, record in records.items():
            state.add_pod(name, record)
        active = state.active
    if failed or result.status != "successful" or result.rc != 0:
        raise PlaybookFailed(result, f"updating pods {', '.join(targets)}"
                             + (f" (saved: {', '.join(records)})" if records else ""))
    return [_report(r, records[r.name], result, active) for r in reqs if r.name in records]


def _probe_error(target) -> PiError | None:
    try:
        ssh.probe(target)
    except PiError as exc:
        return exc
    return None
