"""estimate_fit: vLLM's memory rules, known cases, and every catalog model × lab GPU profile × GPU count."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from pi_ansible.catalog import load_builtin_catalog
from pi_ansible.errors import PiError
from pi_ansible.lab.gpu_profiles import profile
from pi_ansible.planning.fit import (
    BLOCK_SIZE,
    CONTEXT_STEP,
    OVERHEAD_LARGE_GPU,
    OVERHEAD_SMALL_GPU,
    estimate_fit,
    kv_bytes_per_token,
    weights_per_gpu,
)
from pi_ansible.planning.gpu_state import GiB, GpuState, gpu_type_matches

CATALOG = load_builtin_catalog()
PROFILES = ["h100x2", "rtx4090", "h200x8", "h100-mig"]
COUNTS = [1, 2, 4, 8]


def pod(name: str) -> list[GpuState]:
    return [GpuState.from_fact(g) for g in profile(name)["gpus"]]


def arch(model: str):
    return CATALOG.get(model).arch


def fit(model: str, pod_name: str, count: int = 1, fraction: float = 0.9, context: int | None = None, **kw):
    e = CATALOG.get(model)
    v = CATALOG.fp8_variant_of(e)
    return estimate_fit(e.arch, pod(pod_name), gpu_count=count, memory_fraction=fraction, max_model_len=context,
                        fp8_variant=(v.id, v.arch) if v else None, **kw)


# --- the formulas ---------------------------------------------------------------------------------

def test_llama_31_8b_kv_is_128_kib_per_token():
    # facts §5.2: 32 layers × 2 × 8 KV heads × 128 × 2 B
    assert kv_bytes_per_token(arch("meta-llama/Llama-3.1-8B-Instruct")) == 131_072


def test_deepseek_mla_kv_is_70272_bytes_per_token_and_not_split_by_tp():
    a = arch("deepseek-ai/DeepSeek-V3.1")
    assert kv_bytes_per_token(a) == 70_272
    assert kv_bytes_per_token(a, tp=8) == 70_272
    assert kv_bytes_per_token(a, kv_cache_dtype="fp8") == 35_136


def test_gqa_kv_splits_over_tp_until_one_head_per_gpu():
    a = arch("Qwen/Qwen3-30B-A3B")  # 4 KV heads
    assert kv_bytes_per_token(a, tp=2) == kv_bytes_per_token(a) // 2
    assert kv_bytes_per_token(a, tp=8) == kv_bytes_per_token(a, tp=4)  # replicated beyond 4
    assert kv_bytes_per_token(a, pp=2) == kv_bytes_per_token(a) // 2


def test_weights_split_over_tp_and_experts_over_dp():
    a = arch("Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8")
    assert weights_per_gpu(a, tp=8) == math.ceil(a.weights_bytes / 8)
    dp8 = weights_per_gpu(a, dp=8)
    assert a.weights_bytes / 8 < dp8 < a.weights_bytes / 4  # dense parts replicated, experts sharded


def test_numbers_add_up():
    r = fit("Qwen/Qwen3-8B", "h100x2", context=32768)
    g = pod("h100x2")[0]
    assert r.requested_bytes_per_gpu == math.ceil(g.total_bytes * 0.9)
    assert r.overhead_bytes_per_gpu == OVERHEAD_LARGE_GPU
    assert r.available_kv_bytes_per_gpu == r.requested_bytes_per_gpu - r.weights_bytes_per_gpu - OVERHEAD_LARGE_GPU
    assert r.kv_bytes_needed == 32768 * r.kv_bytes_per_token
    assert r.fits and r.free_ok and not r.reasons and not r.options
    assert fit("Qwen/Qwen3-0.6B", "rtx4090").overhead_bytes_per_gpu == OVERHEAD_SMALL_GPU


def test_gpu_type_match_is_by_whole_word():
    assert gpu_type_matches("NVIDIA H100 80GB HBM3", "H100")
    assert not gpu_type_matches("NVIDIA H200", "H20")
    assert gpu_type_matches("NVIDIA GeForce RTX 4090", "RTX 4090")
    assert gpu_type_matches("NVIDIA A100-SXM4-80GB", "A100")


# --- known cases ----------------------------------------------------------------------------------

def test_qwen3_coder_30b_fits_one_h100_at_90_percent_with_32k():
    r = fit("Qwen/Qwen3-Coder-30B-A3B-Instruct", "h100x2", context=32768)
    assert r.fits and r.max_context > 100_000


def test_qwen3_coder_30b_full_256k_context_does_not_fit_one_h100_and_says_what_does():
    r = fit("Qwen/Qwen3-Coder-30B-A3B-Instruct", "h100x2")
    assert not r.fits
    kinds = {o.kind: o for o in r.options}
    assert kinds["context"].value % CONTEXT_STEP == 0 and kinds["context"].value <= r.max_context
    assert kinds["fp8_variant"].value == "Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8"
    assert kinds["gpus"].value == 2


def test_qwen25_coder_32b_bf16_does_not_fit_an_rtx_4090():
    r = fit("Qwen/Qwen2.5-Coder-32B-Instruct", "rtx4090")
    assert not r.fits and r.available_kv_bytes_per_gpu < 0 and r.max_context == 0
    assert r.weights_bytes_per_gpu > 60 * GiB
    assert "nothing" in r.reasons[0]


def test_glm45_needs_8_h200_class_gpus():
    assert not fit("zai-org/GLM-4.5", "h200x8", count=4).fits
    assert fit("zai-org/GLM-4.5", "h200x8", count=8).fits
    # eight H100s (80 GB) cannot hold ~665 GiB of bf16 weights
    h100x8 = [replace(pod("h100x2")[0], index=i) for i in range(8)]
    assert not estimate_fit(arch("zai-org/GLM-4.5"), h100x8, gpu_count=8, memory_fraction=0.9).fits


def test_gpt_oss_20b_fits_an_rtx_4090_with_its_full_context():
    r = fit("openai/gpt-oss-20b", "rtx4090")
    assert r.fits and r.max_model_len == 131072


def test_gpt_oss_120b_fits_one_h100_with_pis_config():
    assert fit("openai/gpt-oss-120b", "h100x2", fraction=0.95).fits


def test_glm45_air_bf16_on_one_h200_is_refused_with_the_fp8_variant_offered():
    r = fit("zai-org/GLM-4.5-Air", "h200x8", fraction=0.95)
    assert not r.fits
    assert [o.value for o in r.options if o.kind == "fp8_variant"] == ["zai-org/GLM-4.5-Air-FP8"]
    assert [o.value for o in r.options if o.kind == "gpus"] == [2]


def test_qwen3_coder_480b_fp8_fits_8_h200_with_expert_and_data_parallel():
    r = fit("Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8", "h200x8", count=8, tp=1, dp=8, context=131072)
    assert r.fits


def test_qwen3_235b_fits_eight_h100s():
    h100x8 = [replace(pod("h100x2")[0], index=i) for i in range(8)]
    assert estimate_fit(arch("Qwen/Qwen3-235B-A22B"), h100x8, gpu_count=8, memory_fraction=0.9).fits


def test_llama_70b_on_two_h100s_fits_about_19k_of_context():
    r = fit("meta-llama/Llama-3.3-70B-Instruct", "h100x2", count=2)
    assert not r.fits and 16_000 < r.max_context < 24_000
    assert any(o.kind == "context" and o.value == (r.max_context // 1024) * 1024 for o in r.options)
    assert fit("meta-llama/Llama-3.3-70B-Instruct", "h100x2", count=2, context=16384).fits


def test_kimi_k2_0905_on_eight_h200s_fits_a_shorter_context_or_more_memory():
    r = fit("moonshotai/Kimi-K2-Instruct-0905", "h200x8", count=8)
    assert not r.fits and r.max_context > 32_000
    assert fit("moonshotai/Kimi-K2-Instruct-0905", "h200x8", count=8, fraction=0.95, context=131072).fits


def test_context_beyond_the_models_maximum_is_refused():
    r = fit("Qwen/Qwen3-8B", "h200x8", context=65536)
    assert not r.fits and "maximum" in r.reasons[0]
    assert [o.value for o in r.options if o.kind == "context"] == [40960]


def test_busy_gpu_fails_vllms_free_memory_check_and_suggests_a_smaller_share():
    g = pod("h100x2")
    busy = [replace(g[0], memory_used_mib=40_000, memory_free_mib=81559 - 479 - 40_000), g[1]]
    r = estimate_fit(arch("Qwen/Qwen3-8B"), busy, gpu_count=1, memory_fraction=0.9, use=[0])
    assert not r.fits and not r.free_ok and "GPU 0" in r.reasons[0]
    mem = [o for o in r.options if o.kind == "memory"]
    assert mem and mem[0].value <= 41_080 / 81559
    again = estimate_fit(arch("Qwen/Qwen3-8B"), busy, gpu_count=1, memory_fraction=mem[0].value, use=[0],
                         max_model_len=CATALOG.get("Qwen/Qwen3-8B").arch.max_model_len)
    assert again.free_ok


def test_higher_memory_is_offered_when_free_memory_allows():
    r = fit("Qwen/Qwen2.5-Coder-32B-Instruct", "h100x2", context=32768)
    mem = [o for o in r.options if o.kind == "memory"]
    assert not r.fits and mem and 0.9 < mem[0].value <= 0.95


def test_mig_gpu_is_refused_with_the_fix():
    r = fit("Qwen/Qwen3-0.6B", "h100-mig")
    assert not r.fits and "MIG" in r.reasons[0] and "-mig 0" in r.reasons[0] and not r.options


def test_heads_must_divide_by_tensor_parallel():
    r = fit("Qwen/Qwen2.5-Coder-32B-Instruct", "h200x8", count=8, tp=8)  # 40 heads: fine
    assert r.fits
    g = pod("h200x8")[:3]
    r = estimate_fit(arch("Qwen/Qwen2.5-Coder-32B-Instruct"), g, gpu_count=3, memory_fraction=0.9)
    assert not r.fits and "divide" in " ".join(r.reasons)


def test_too_few_gpus_on_the_pod():
    r = fit("Qwen/Qwen3-8B", "rtx4090", count=2)
    assert not r.fits and "the pod has 1" in r.reasons[0]


@pytest.mark.parametrize("kw", [dict(gpu_count=0), dict(gpu_count=2, tp=3), dict(memory_fraction=0),
                                dict(memory_fraction=1.5), dict(max_model_len=0), dict(kv_cache_dtype="fp3")])
def test_bad_arguments_are_pierrors(kw):
    args = dict(gpu_count=1, memory_fraction=0.9) | kw
    with pytest.raises(PiError):
        estimate_fit(arch("Qwen/Qwen3-8B"), pod("h100x2"), **args)


def test_use_names_gpus_not_on_the_pod():
    with pytest.raises(PiError, match="not on this pod"):
        estimate_fit(arch("Qwen/Qwen3-8B"), pod("h100x2"), gpu_count=1, memory_fraction=0.9, use=[5])


def test_summary_and_dict_carry_the_numbers():
    r = fit("meta-llama/Llama-3.3-70B-Instruct", "h100x2", count=2)
    text = "\n".join(r.summary())
    assert "GiB" in text and "does not fit" in text and "would fit: --context" in text
    d = r.to_dict()
    assert d["fits"] is False and d["kv_bytes_per_token"] == r.kv_bytes_per_token and d["options"]


# --- every catalog model × lab profile × GPU count -------------------------------------------------

def _check_options(entry, gpus, r, count):
    for o in r.options:
        if o.kind == "context":
            again = estimate_fit(entry.arch, gpus, gpu_count=count, memory_fraction=r.memory_fraction,
                                 max_model_len=o.value, use=r.gpu_indices)
            assert again.fits and o.value % CONTEXT_STEP == 0, o
        elif o.kind == "memory" and "--context" not in o.hint:
            again = estimate_fit(entry.arch, gpus, gpu_count=count, memory_fraction=o.value,
                                 max_model_len=r.max_model_len, use=r.gpu_indices)
            assert again.fits, o
        elif o.kind == "gpus":
            idle = [replace(gpus[0], index=i, memory_used_mib=0, memory_free_mib=None) for i in range(o.value)]
            assert estimate_fit(entry.arch, idle, gpu_count=o.value, memory_fraction=r.memory_fraction,
                                max_model_len=r.max_model_len).fits, o
            assert o.value > count
        elif o.kind == "fp8_variant":
            v = CATALOG.get(o.value)
            assert estimate_fit(v.arch, gpus, gpu_count=count, memory_fraction=r.memory_fraction,
                                max_model_len=min(r.max_model_len, v.arch.max_model_len), use=r.gpu_indices).fits
        elif o.kind == "kv_cache_dtype":
            assert estimate_fit(entry.arch, gpus, gpu_count=count, memory_fraction=r.memory_fraction,
                                max_model_len=r.max_model_len, kv_cache_dtype="fp8", use=r.gpu_indices).fits


@pytest.mark.parametrize("pod_name", PROFILES)
@pytest.mark.parametrize("model", [e.id for e in CATALOG])
def test_every_model_on_every_profile_and_gpu_count(model, pod_name):
    entry = CATALOG.get(model)
    gpus = pod(pod_name)
    v = CATALOG.fp8_variant_of(entry)
    previous = None
    for count in COUNTS:
        r = estimate_fit(entry.arch, gpus, gpu_count=count, memory_fraction=0.9,
                         fp8_variant=(v.id, v.arch) if v else None)
        assert r.max_model_len == entry.arch.max_model_len
        assert (0 <= r.max_context <= entry.arch.max_model_len and r.max_context % BLOCK_SIZE == 0) \
            or r.max_context == entry.arch.max_model_len
        assert r.fits == (not r.reasons)
        assert not (r.fits and r.options)
        if r.fits:
            assert r.free_ok and r.kv_bytes_needed <= r.available_kv_bytes_per_gpu
            assert count <= len(gpus) and not any(g.mig_enabled for g in gpus)
        if count > len(gpus):
            assert not r.fits and any("the pod has" in x for x in r.reasons)
        if pod_name == "h100-mig":
            assert not r.fits and any("MIG" in x for x in r.reasons)
        _check_options(entry, gpus, r, count)
        # more GPUs of the same kind never shorten the context that fits
        if previous is not None and entry.arch.num_attention_heads % count == 0 and count <= len(gpus):
            assert r.max_context >= previous
        if entry.arch.num_attention_heads % count == 0 and count <= len(gpus):
            previous = r.max_context


def test_catalog_configs_fit_their_own_gpu_class_where_we_expect():
    """Each config's own GPU type and count, idle, at its --memory (or 0.9): which ones fit."""
    from pi_ansible.planning import vllm_args

    sizes = {"H100": pod("h100x2")[0], "H200": pod("h200x8")[0], "RTX 4090": pod("rtx4090")[0]}
    refused = set()
    for e in CATALOG:
        for c in e.configs:
            for t in c.gpu_types:
                if t not in sizes:
                    continue
                args = list(c.args)
                tp, pp, dp, _ = vllm_args.parallelism(args)
                tp = c.gpu_count if tp * pp * dp == 1 else tp
                gmu = float(vllm_args.flag_value(args, "--gpu-memory-utilization") or 0.9)
                mml = vllm_args.flag_value(args, "--max-model-len")
                gpus = [replace(sizes[t], index=i) for i in range(c.gpu_count)]
                r = estimate_fit(e.arch, gpus, gpu_count=c.gpu_count, memory_fraction=gmu, tp=tp, pp=pp, dp=dp,
                                 max_model_len=int(mml) if mml else None)
                if not r.fits and r.max_context < 8192:
                    refused.add((e.name, c.gpu_count, t))
    # pi's configs that cannot hold the weights: GLM-4.5-Air bf16 on two H100s or one H200
    assert refused == {("GLM-4.5-Air", 2, "H100"), ("GLM-4.5-Air", 1, "H200")}
