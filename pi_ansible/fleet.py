"""A host's declared models against what runs on it: what to keep, stop and start, and the plans to start.

playbooks/site.yml calls these through the `pi_fleet_actions` and `pi_fleet_plan` filters. Pure: facts in,
decisions out. Each plan comes from planning.start_request.model_service_vars (what `pi start` and
playbooks/model_start.yml use), called in the declared order with the models planned before it booked on
the pod, as the facts would show them once those models run.
"""

from __future__ import annotations

import re

from pi_ansible.catalog import load_catalog
from pi_ansible.errors import PiError
from pi_ansible.planning.cmdline import check_tokens, parse_context, parse_memory
from pi_ansible.planning.start_request import existing_decision, model_service_vars
from pi_ansible.sshargs import validate_name

KEYS = ("name", "model", "memory", "context", "gpus", "vllm_args", "verify")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def declared_requests(declared, where: str = "pi_fleet_models") -> list[dict]:
    """The declared models as start requests, every entry checked as `pi start` checks its options."""
    if declared is None:
        return []
    if not isinstance(declared, list | tuple):
        raise PiError(f"{where} must be a list of models ({{name, model, ...}}), not {type(declared).__name__}")
    out, seen = [], set()
    for i, entry in enumerate(declared):
        at = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise PiError(f"{at} must be a mapping with name and model, not {entry!r}")
        unknown = sorted(set(entry) - set(KEYS))
        if unknown:
            raise PiError(f"{at} has unknown key(s) {', '.join(unknown)}; known: {', '.join(KEYS)}")
        name, model = entry.get("name"), entry.get("model")
        if not name or not model:
            raise PiError(f"{at} needs both name and model (e.g. {{name: coder, model: Qwen/Qwen3-8B}})")
        try:
            validate_name(str(name), "model")
            if not _MODEL_ID.match(str(model)) or ".." in str(model):
                raise PiError(f"{model!r} is not a Hugging Face model id; use the form ORG/NAME, e.g. Qwen/Qwen3-8B")
            if entry.get("memory") is not None:
                parse_memory(entry["memory"])
            if entry.get("context") is not None:
                parse_context(entry["context"])
            gpus = entry.get("gpus")
            if gpus is not None and (isinstance(gpus, bool) or not isinstance(gpus, int) or not 1 <= gpus <= 64):
                raise PiError(f"gpus {gpus!r} must be a whole number from 1 to 64")
            args = entry.get("vllm_args")
            if args is not None:
                if not isinstance(args, list | tuple) or not all(isinstance(a, str | int | float) for a in args):
                    raise PiError(f"vllm_args must be a list of strings, not {args!r}")
                check_tokens([str(a) for a in args], "vllm_args")
        except PiError as exc:
            raise PiError(f"{at} ({name}): {exc}") from None
        if name in seen:
            raise PiError(f"{at}: the name {name!r} is declared twice on this host; model names must be unique")
        seen.add(name)
        out.append({"name": str(name), "model": str(model), "memory": entry.get("memory"),
                    "context": entry.get("context"), "gpus": entry.get("gpus"),
                    "vllm_args": None if entry.get("vllm_args") is None else [str(a) for a in entry["vllm_args"]],
                    "verify": bool(entry.get("verify", True))})
    return out


def converge_actions(declared, pi_models: dict, stop_undeclared: bool = False) -> dict:
    """What a converge does on one host (pi_models: the pi_models_facts of the host).

    keep: declared names that run as declared (left alone: no plan, no restart); replace: {name: why} for
    declared names that run differently (stopped, then started again); undeclared: names that run but
    are not declared; stop: what to stop first (replace, plus undeclared when stop_undeclared); start:
    the requests to plan and start, in declared order; fetch_config: model ids the catalog does not know
    among them (their config.json is needed to plan).
    """
    requests = declared_requests(declared)
    models = (pi_models or {}).get("models", {})
    keep, replace = [], {}
    for r in requests:
        if r["name"] in models:
            action, why = existing_decision(r, models[r["name"]])
            if action == "keep":
                keep.append(r["name"])
            else:
                replace[r["name"]] = why
    names = {r["name"] for r in requests}
    undeclared = sorted(n for n in models if n not in names)
    start = [r for r in requests if r["name"] not in keep]
    catalog = load_catalog()
    fetch = sorted({r["model"] for r in start if catalog.get(r["model"]) is None})
    return {"keep": keep, "replace": replace, "undeclared": undeclared,
            "stop": [n for n in models if n in replace] + (undeclared if stop_undeclared else []),
            "start": start, "fetch_config": fetch}


def _booked(plan: dict) -> dict:
    """The manifest a planned model will have, as pi_models_facts reports it once it starts."""
    return {"manifest": {"name": plan["model_service_name"], "model": plan["model_service_model"],
                         "port": plan["model_service_port"], "gpus": plan["model_service_gpus"],
                         **plan["model_service_manifest_extra"]},
            "status": {"state": "starting"}}


def plan_models(requests: list[dict], pi_gpus: dict, pi_models: dict, *, venv: str, pod: str = "the pod",
                configs: dict | None = None, started_by: str = "ansible-playbook site.yml") -> list[dict]:
    """model_service variables for each request, planned in order: each sees the ones before it on the pod.

    pi_models must no longer hold the models to replace (they are stopped first). configs: model id ->
    config.json for models the catalog does not know.
    """
    models = dict((pi_models or {}).get("models", {}))
    facts = {**(pi_models or {}), "models": models, "listening_ports": list((pi_models or {}).get("listening_ports", []))}
    plans = []
    for r in requests:
        request = {**r, "existing": "keep", "started_by": r.get("started_by") or started_by}
        plan = model_service_vars(request, pi_gpus, facts, venv=venv, pod=pod,
                                  config=(configs or {}).get(r["model"]) or None)
        if plan["model_service_action"] != "start":
            raise PiError(f"{r['name']} still runs on {pod} ({plan.get('reason') or 'as declared'}); "
                          "the converge stops a model before planning it again")
        models[r["name"]] = _booked(plan)
        facts["listening_ports"].append(plan["model_service_port"])
        plans.append(plan)
    return plans
