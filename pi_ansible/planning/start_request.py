"""Turn a start request plus a pod's facts into the model_service role's variables.

Called by the `pi_model_plan` filter inside playbooks/model_start.yml, whether the run comes from
`pi start` or from plain ansible-playbook: one planner, one answer.
"""

from __future__ import annotations

from pi_ansible.catalog import load_catalog
from pi_ansible.errors import PiError
from pi_ansible.planning.cmdline import parse_context, parse_memory
from pi_ansible.planning.gpu_state import gpus_from_facts
from pi_ansible.planning.model_config import arch_from_config
from pi_ansible.planning.placement import RunningModel
from pi_ansible.planning.plan import plan_start
from pi_ansible.sshargs import validate_name

EXISTING = ("error", "keep", "resume")
# A model in one of these states is kept by a converge; a crashed or stopped one is started again.
KEPT_STATES = ("running", "starting")


def request_key(request: dict) -> dict:
    """What a start request asks for, normalised ("50%" == 0.5, "32k" == 32768): recorded in the manifest
    so that a converge can tell whether a running model is the one declared."""
    def opt(key, parse):
        value = request.get(key)
        return None if value is None or value == "" else parse(value)

    args = request.get("vllm_args")
    return {"model": str(request.get("model") or ""), "memory": opt("memory", parse_memory),
            "context": opt("context", parse_context), "gpus": opt("gpus", int),
            "vllm_args": None if args is None else [str(a) for a in args]}


def existing_decision(request: dict, running: dict) -> tuple[str, str]:
    """("keep", "") when the model running under the request's name (pi_models.models[name]) is the one
    requested and up, else ("replace", why)."""
    manifest, status = running.get("manifest") or {}, running.get("status") or {}
    want = request_key(request)
    if manifest.get("model") != want["model"]:
        return "replace", f"it runs {manifest.get('model')}, not {want['model']}"
    if "request" not in manifest:
        return "replace", "its manifest records no start request (started by an older pi-ansible)"
    if manifest["request"] != want:
        diff = [k for k in want if manifest["request"].get(k) != want[k]]
        return "replace", "it was started with other " + ", ".join(diff) + " (" + ", ".join(
            f"{k} {manifest['request'].get(k)!r} -> {want[k]!r}" for k in diff) + ")"
    state = status.get("state", "running")
    if state not in KEPT_STATES:
        return "replace", f"it is {state}"
    return "keep", ""


def resume_vars(request: dict, manifest: dict) -> dict:
    """The model_service variables of a model whose manifest is on the pod, for starting it again as it was."""
    extra_keys = ("gpu_uuids", "memory_fraction", "max_model_len", "api", "started_by", "request", "fit", "env")
    args = [str(a) for a in manifest.get("args") or []]
    return {
        "model_service_action": "resume",
        "model_service_name": manifest["name"],
        "model_service_model": manifest["model"],
        "model_service_served_name": manifest.get("served_name") or manifest["name"],
        "model_service_port": manifest["port"],
        "model_service_gpus": list(manifest.get("gpus") or []),
        "model_service_args": args,
        "model_service_env": dict(manifest.get("env") or {}),
        "model_service_verify_tool_call": bool(request.get("verify", True)) and "--enable-auto-tool-choice" in args
        and any(a == "--tool-call-parser" or a.startswith("--tool-call-parser=") for a in args),
        "model_service_manifest_extra": {k: manifest[k] for k in extra_keys if k in manifest},
        "warnings": [],
    }


def model_service_vars(request: dict, pi_gpus: dict, pi_models: dict, *, venv: str, pod: str = "the pod",
                       config: dict | None = None, index: dict | None = None) -> dict:
    """request: model, name, memory, context, gpus, vllm_args (None or a list), verify, started_by, existing.

    existing (what to do when a model of that name is on the pod): "error" (refuse), "keep" (a converge:
    the same model with the same request, up, is kept as it is, with no plan and no restart:
    model_service_action "keep"; any other is to be stopped and planned again: "replace", with why) or
    "resume" (`pi start`: the same model with the same request is started again in place, on the GPUs and
    port its manifest reserves, so re-running an interrupted `pi start` converges; any other is refused).
    A plan to run has model_service_action "start".
    """
    name = validate_name(str(request.get("name") or ""), "model")
    model = str(request.get("model") or "")
    models = (pi_models or {}).get("models", {})
    existing = request.get("existing") or "error"
    if existing not in EXISTING:
        raise PiError(f"existing {existing!r} is not one of {', '.join(EXISTING)}")
    if name in models:
        running = models[name]["manifest"]
        if existing == "resume":
            action, why = existing_decision(request, models[name])
            if action == "keep" or why.startswith("it is "):
                return resume_vars(request, running)
            raise PiError(f"a model named {name!r} already runs on {pod} ({running.get('model')}, port "
                          f"{running.get('port')}), and {why}: stop it first (`pi stop {name}`), "
                          "choose another --name, or repeat its own options")
        if existing == "keep":
            action, why = existing_decision(request, models[name])
            return {"model_service_action": action, "model_service_name": name, "model_service_model": model,
                    "model_service_port": running.get("port"), "model_service_gpus": running.get("gpus"),
                    "reason": why, "warnings": []}
        raise PiError(f"a model named {name!r} already runs on {pod} ({running.get('model')}, port "
                      f"{running.get('port')}): stop it first (`pi stop {name}`) or choose another --name")
    catalog = load_catalog()
    arch = None
    if catalog.get(model) is None:
        if not config:
            raise PiError(f"{model} is not in the catalog and its config.json could not be read; check the id")
        arch = arch_from_config(config, index)
    gpus = gpus_from_facts(pi_gpus)
    plan = plan_start(
        catalog, model, name=name, gpus=gpus, venv=venv,
        running_models=[RunningModel.from_manifest(m["manifest"]) for m in models.values()],
        listening_ports=(pi_models or {}).get("listening_ports", []),
        processes=(pi_gpus or {}).get("processes", []),
        memory=request.get("memory"), context=request.get("context"), gpu_count=request.get("gpus"),
        vllm_passthrough=request.get("vllm_args"), arch=arch)
    argv = plan.command.argv
    args = argv[3:]  # after `<venv>/bin/vllm serve MODEL`
    tool_parser = any(a == "--tool-call-parser" or a.startswith("--tool-call-parser=") for a in args)
    verify = bool(request.get("verify", True)) and tool_parser and "--enable-auto-tool-choice" in args
    gpu_uuids = [u for u in plan.placement.gpu_uuids if u]
    env = {k: v for k, v in plan.command.env.items() if k != "CUDA_VISIBLE_DEVICES"}
    return {
        "model_service_action": "start",
        "model_service_name": name,
        "model_service_model": model,
        "model_service_served_name": name,
        "model_service_port": plan.placement.port,
        "model_service_gpus": list(plan.placement.gpu_indices),
        "model_service_args": args,
        "model_service_env": env,
        "model_service_verify_tool_call": verify,
        "model_service_manifest_extra": {
            "gpu_uuids": gpu_uuids,
            "memory_fraction": plan.memory_fraction,
            "max_model_len": plan.max_model_len,
            "api": plan.entry.api,
            "started_by": request.get("started_by") or "ansible-playbook",
            "request": request_key(request),
            "env": env,  # the engine's own settings (no secret: the API key is only in the env file)
            "fit": {"weights_gib_per_gpu": round(plan.fit.weights_bytes_per_gpu / 2**30, 2),
                    "kv_bytes_per_token": plan.fit.kv_bytes_per_token,
                    "max_context": plan.fit.max_context},
        },
        "warnings": plan.warnings,
    }
