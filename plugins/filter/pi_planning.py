"""Filters that call pi-ansible's pure planning functions, so a plain `ansible-playbook` run and the
`pi` CLI always decide the same way (one implementation, imported by both)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from ansible.errors import AnsibleFilterError

try:
    import pi_ansible  # noqa: F401
except ImportError:  # a checkout used without `pip install`: the package sits beside plugins/
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pi_ansible.errors import PiError
from pi_ansible.planning import engine_wheels, mounts


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


class FilterModule:
    def filters(self):
        return {"pi_engine_build": pi_engine_build, "pi_mount_plan": pi_mount_plan, "pi_models_path": pi_models_path}
