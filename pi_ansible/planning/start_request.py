"""Turn a start request plus a pod's facts into the model_service role's variables.

Called by the `pi_model_plan` filter inside playbooks/model_start.yml, whether the run comes from
`pi start` or from plain ansible-playbook: one planner, one answer.
"""

from __future__ import annotations

from pi_ansible.catalog import load_catalog
from pi_ansible.errors import PiError
from pi_ansible.planning.gpu_state import gpus_from_facts
from pi_ansible.planning.model_config import arch_from_config
from pi_ansible.planning.placement import RunningModel
from pi_ansible.planning.plan import plan_start
from pi_ansible.sshargs import validate_name


def model_service_vars(request: dict, pi_gpus: dict, pi_models: dict, *, venv: str, pod: str = "the pod",
                       config: dict | None = None, index: dict | None = None) -> dict:
    """request: model, name, memory, context, gpus, vllm_args (None or a list), verify, started_by."""
    name = validate_name(str(request.get("name") or ""), "model")
    model = str(request.get("model") or "")
    models = (pi_models or {}).get("models", {})
    if name in models:
        running = models[name]["manifest"]
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
    return {
        "model_service_name": name,
        "model_service_model": model,
        "model_service_served_name": name,
        "model_service_port": plan.placement.port,
        "model_service_gpus": list(plan.placement.gpu_indices),
        "model_service_args": args,
        "model_service_env": {k: v for k, v in plan.command.env.items() if k != "CUDA_VISIBLE_DEVICES"},
        "model_service_verify_tool_call": verify,
        "model_service_manifest_extra": {
            "gpu_uuids": gpu_uuids,
            "memory_fraction": plan.memory_fraction,
            "max_model_len": plan.max_model_len,
            "api": plan.entry.api,
            "started_by": request.get("started_by") or "ansible-playbook",
            "fit": {"weights_gib_per_gpu": round(plan.fit.weights_bytes_per_gpu / 2**30, 2),
                    "kv_bytes_per_token": plan.fit.kv_bytes_per_token,
                    "max_context": plan.fit.max_context},
        },
        "warnings": plan.warnings,
    }
