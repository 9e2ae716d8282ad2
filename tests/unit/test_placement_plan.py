"""plan_start: the whole `pi start` decision (config, GPUs, port, fit, command) as one pure function."""

from __future__ import annotations

import pytest

from pi_ansible.catalog import load_builtin_catalog
from pi_ansible.errors import PiError
from pi_ansible.lab.gpu_profiles import profile
from pi_ansible.planning import vllm_args
from pi_ansible.planning.gpu_state import GpuState
from pi_ansible.planning.model_config import arch_from_config
from pi_ansible.planning.placement import PlacementRefused, RunningModel
from pi_ansible.planning.plan import FitRefused, catalog_fit_table, plan_start

CATALOG = load_builtin_catalog()
PROFILES = ["h100x2", "rtx4090", "h200x8", "h100-mig"]


def pod(name: str) -> list[GpuState]:
    return [GpuState.from_fact(g) for g in profile(name)["gpus"]]


def start(model, pod_name="h100x2", name="m", running=(), **kw):
    return plan_start(CATALOG, model, name=name, gpus=pod(pod_name), venv="/opt/venv", running_models=running, **kw)


def manifest(plan, name):
    return RunningModel(name, plan.placement.port, plan.placement.gpu_indices, (), plan.memory_fraction)


def test_two_models_on_the_2xh100_pod_then_a_third_is_refused_with_numbers():
    a = start("Qwen/Qwen3-Coder-30B-A3B-Instruct", name="coder", context="32k")
    b = start("Qwen/Qwen3-8B", name="qwen", running=[manifest(a, "coder")], listening_ports=[22, 8001])
    assert a.placement.gpu_indices == (0,) and b.placement.gpu_indices == (1,)
    assert (a.placement.port, b.placement.port) == (8001, 8002)
    assert a.command.env["CUDA_VISIBLE_DEVICES"] == "0" and b.command.env["CUDA_VISIBLE_DEVICES"] == "1"
    with pytest.raises(PlacementRefused) as err:
        start("Qwen/Qwen3-32B", name="third", running=[manifest(a, "coder"), manifest(b, "qwen")])
    assert "GiB free" in str(err.value) and "coder" in str(err.value)


def test_a_model_that_cannot_fit_is_refused_before_download_with_options():
    with pytest.raises(FitRefused) as err:
        start("zai-org/GLM-4.5-Air")
    assert "GiB" in str(err.value) and "GLM-4.5-Air-FP8" in str(err.value)
    assert err.value.fit.options and not err.value.fit.fits


def test_no_context_given_takes_the_longest_that_fits_and_says_so():
    p = start("Qwen/Qwen3-8B", "rtx4090")
    assert p.max_model_len % 1024 == 0 and p.max_model_len < 40960 and p.fit.fits
    assert vllm_args.flag_value(p.command.argv, "--max-model-len") == str(p.max_model_len)
    assert any("longest that fits" in w for w in p.warnings)


def test_full_context_when_it_fits():
    p = start("Qwen/Qwen3-8B", "h100x2")
    assert p.max_model_len == 40960 and not p.warnings


def test_memory_and_context_options_flow_into_the_command():
    p = start("openai/gpt-oss-120b", memory="92%", context="64k")
    assert vllm_args.flag_value(p.command.argv, "--gpu-memory-utilization") == "0.92"
    assert vllm_args.flag_value(p.command.argv, "--max-model-len") == "65536" and p.memory_fraction == 0.92


def test_config_memory_and_context_are_defaults():
    p = start("openai/gpt-oss-120b")
    assert p.memory_fraction == 0.95  # pi's 1-GPU config
    big = start("Qwen/Qwen3-Coder-480B-A35B-Instruct", "h200x8")
    assert big.max_model_len == 32000 and big.fit.gpu_count == 8


def test_gpus_option_picks_that_config_and_lists_counts_when_none():
    p = start("Qwen/Qwen3-Coder-30B-A3B-Instruct", gpu_count=2)
    assert p.placement.gpu_indices == (0, 1) and p.command.env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert vllm_args.flag_value(p.command.argv, "--tensor-parallel-size") == "2"
    with pytest.raises(PiError, match=r"configs are for 1, 2"):
        start("Qwen/Qwen3-Coder-30B-A3B-Instruct", "h200x8", gpu_count=4)


def test_type_mismatch_is_allowed_when_the_fit_check_passes():
    p = start("openai/gpt-oss-20b", "rtx4090")
    assert any("made for H100/H200" in w for w in p.warnings)


def test_vllm_passthrough_plans_from_its_own_flags():
    p = start("openai/gpt-oss-120b", vllm_passthrough=["-tp", "2", "--gpu-memory-utilization", "0.5"], memory="80%")
    assert p.placement.gpu_indices == (0, 1) and p.memory_fraction == 0.5
    assert any("ignored with --vllm" in w for w in p.warnings)


def test_unknown_model_needs_its_config_and_then_plans_like_pi():
    with pytest.raises(PiError, match=r"config\.json"):
        start("acme/Unknown-7B")
    cfg = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
           "intermediate_size": 14336, "vocab_size": 128256, "max_position_embeddings": 8192}
    p = start("acme/Unknown-7B", arch=arch_from_config(cfg, None))
    assert p.placement.gpu_indices == (0,) and not vllm_args.has_flag(p.command.argv, "--tool-call-parser")


@pytest.mark.parametrize("pod_name", PROFILES)
@pytest.mark.parametrize("model", [e.id for e in CATALOG])
def test_every_model_on_every_profile_plans_or_refuses_cleanly(model, pod_name):
    try:
        p = start(model, pod_name)
    except PiError as e:
        assert str(e)
        return
    assert p.fit.fits and p.fit.gpu_count == len(p.placement.gpu_indices)
    assert vllm_args.world_size(p.command.argv[3:]) == p.fit.gpu_count
    assert p.command.env["CUDA_VISIBLE_DEVICES"] == p.placement.cuda_visible_devices
    assert "--api-key" not in p.command.argv
    assert pod_name != "h100-mig"
    assert p.to_dict()["fit"]["fits"] is True


def test_catalog_fit_table_for_pi_start_without_a_model():
    rows = {r["id"]: r for r in catalog_fit_table(CATALOG, pod("rtx4090"))}
    assert rows["openai/gpt-oss-20b"]["fits"] and rows["Qwen/Qwen3-0.6B"]["fits"]
    assert not rows["Qwen/Qwen2.5-Coder-32B-Instruct"]["fits"] and rows["Qwen/Qwen2.5-Coder-32B-Instruct"]["why"]
    h200 = {r["id"]: r for r in catalog_fit_table(CATALOG, pod("h200x8"))}
    assert h200["zai-org/GLM-4.5"]["fits"] and h200["zai-org/GLM-4.5"]["gpu_count"] == 8
