"""Filters for playbooks/site.yml: a host's declared models against what runs on it (pi_ansible.fleet),
planned by the same function as `pi start` and playbooks/model_start.yml."""

from __future__ import annotations

import sys
from pathlib import Path

from ansible.errors import AnsibleFilterError

try:
    import pi_ansible  # noqa: F401
except ImportError:  # a checkout used without `pip install`: the package sits beside plugins/
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pi_ansible import fleet
from pi_ansible.errors import PiError


def pi_fleet_actions(declared, pi_models: dict, stop_undeclared: bool = False) -> dict:
    """keep / replace / undeclared / stop / start / fetch_config for one host (fleet.converge_actions)."""
    try:
        return fleet.converge_actions(declared, pi_models, bool(stop_undeclared))
    except PiError as exc:
        raise AnsibleFilterError(str(exc)) from None


def pi_fleet_plan(requests: list, pi_gpus: dict, pi_models: dict, venv: str, pod: str = "the pod",
                  configs: dict | None = None) -> list:
    """The model_service variables of each request to start, planned in order (fleet.plan_models)."""
    try:
        return fleet.plan_models(list(requests or []), pi_gpus, pi_models, venv=venv, pod=pod, configs=configs)
    except PiError as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self):
        return {"pi_fleet_actions": pi_fleet_actions, "pi_fleet_plan": pi_fleet_plan}
