"""Filters that call pi-ansible's pure planning functions, so a plain `ansible-playbook` run and the
`pi` CLI always decide the same way (one implementation, imported by both)."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

from ansible.errors import AnsibleFilterError

try:
    import pi_ansible  # noqa: F401
except ImportError:  # a checkout used without `pip install`: the package sits beside plugins/
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pi_ansible.errors import PiError
from pi_ansible.planning import engine_failures, engine_wheels, mounts, start_request, tool_calls


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except PiError as exc:
        raise AnsibleFilterError(str(exc)) from None


def pi_engine_build(pi_gpus: dict, variant: str, vllm_version: str | None = None, index_urls: dict | None = None) -> dict:
    """The vLLM build for this pod's driver (engine_wheels.choose_engine_build) as a dict with `uv_args`."""
    gpus = pi_gpus.get("gpus") or []
    build = _call(engine_wheels.choose_engine_build, variant, pi_gpus.get("driver_version") or "",
                  pi_gpus.get("cuda_version"), [g.get("name", "") for g in gpus],
                  vllm_version=vllm_version or None, index_urls={k: v for k, v in (index_urls or {}).items() if v})
    return {**dataclasses.asdict(build), "uv_args": build.uv_args()}


def pi_mount_plan(command: str) -> dict:
    """A `--mount` command as an ansible.posix.mount plan (mounts.parse_mount); {} when there is none."""
    if not command:
        return {}
    plan = _call(mounts.parse_mount, command)
    return {**dataclasses.asdict(plan), "module_args": plan.module_args()}


def pi_models_path(mount_command: str, option: str | None) -> str:
    """--models-path when given, else the mount's target (mounts.models_path)."""
    plan = _call(mounts.parse_mount, mount_command) if mount_command else None
    return _call(mounts.models_path, plan, option or None)


_SYSTEMD_SAFE = re.compile(r"^[A-Za-z0-9_./:=,+@-]+$")


def pi_systemd_args(args: list) -> str:
    """Arguments quoted for a systemd ExecStart= line (its own rules: % and $ are specifiers there)."""
    out = []
    for a in map(str, args):
        a = a.replace("%", "%%").replace("$", "$$")
        out.append(a if _SYSTEMD_SAFE.match(a) else '"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return " ".join(out)


def pi_download_failure(stderr: str, model: str) -> str:
    return engine_failures.describe(stderr, f"downloading {model} failed")


def pi_tool_call_verdict(response: dict, args: list) -> str:
    return tool_calls.verdict(response or {}, list(args or []))


def pi_model_plan(request: dict, pi_gpus: dict, pi_models: dict, venv: str, pod: str = "the pod",
                  config: dict | None = None, index: dict | None = None) -> dict:
    """The model_service role's variables for a start request (planning.start_request)."""
    return _call(start_request.model_service_vars, dict(request), pi_gpus, pi_models, venv=venv, pod=pod,
                 config=config or None, index=index or None)


def pi_catalog_has(model: str) -> bool:
    from pi_ansible.catalog import load_catalog

    return _call(load_catalog).get(model) is not None


class FilterModule:
    def filters(self):
        return {"pi_engine_build": pi_engine_build, "pi_mount_plan": pi_mount_plan, "pi_models_path": pi_models_path,
                "pi_systemd_args": pi_systemd_args, "pi_download_failure": pi_download_failure,
                "pi_tool_call_verdict": pi_tool_call_verdict, "pi_model_plan": pi_model_plan,
                "pi_catalog_has": pi_catalog_has}
