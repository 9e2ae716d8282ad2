"""arch_from_config: vLLM's reading of config.json (GQA/MLA, text_config, dtype, quantization, head_dim)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pi_ansible.errors import PiError
from pi_ansible.planning.model_config import Arch, arch_from_config, bytes_per_param, derived_max_len

HUB = Path(__file__).resolve().parents[2] / "pi_ansible" / "lab" / "hub_models"
LLAMA = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
         "intermediate_size": 14336, "vocab_size": 128256, "max_position_embeddings": 131072,
         "torch_dtype": "bfloat16"}


def hub(model: str) -> tuple[dict, dict | None]:
    folder = HUB / model
    idx = folder / "model.safetensors.index.json"
    return json.loads((folder / "config.json").read_text()), (json.loads(idx.read_text()) if idx.is_file() else None)


def test_qwen3_06b_matches_the_facts():
    a = arch_from_config(*hub("Qwen/Qwen3-0.6B"))
    assert (a.num_layers, a.num_attention_heads, a.num_kv_heads, a.head_dim, a.max_model_len) == (28, 16, 8, 128, 40960)
    assert a.weights_source == "params" and a.attention == "gqa"


def test_index_total_size_is_the_weight_size():
    a = arch_from_config(*hub("Qwen/Qwen3-8B"))
    assert a.weights_bytes == 16_381_470_720 and a.weights_source == "index"


def test_llama_31_8b_weights_match_vllms_log():
    # vLLM: "Loading model weights took 14.9888 GB" (GiB really)
    a = arch_from_config(*hub("meta-llama/Llama-3.1-8B-Instruct"))
    assert abs(a.weights_bytes / 2**30 - 14.9888) < 0.05
    assert a.head_dim == 128  # hidden 4096 / 32 heads: no explicit head_dim


def test_deepseek_is_mla_with_latent_head_size():
    a = arch_from_config(*hub("deepseek-ai/DeepSeek-V3.1"))
    assert (a.attention, a.kv_lora_rank, a.qk_rope_head_dim, a.head_dim) == ("mla", 512, 64, 576)
    assert a.quantization == "fp8" and a.dtype == "bfloat16"
    assert a.max_model_len == 163840  # yarn: 4096 × 40


def test_kimi_k2_0905_context_from_yarn_factor():
    assert arch_from_config(*hub("moonshotai/Kimi-K2-Instruct-0905")).max_model_len == 262144


def test_llama3_rope_scaling_does_not_stretch_the_context():
    assert derived_max_len({**LLAMA, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}) == (131072, 131072)


def test_gpt_oss_has_no_dtype_and_mxfp4_experts():
    a = arch_from_config(*hub("openai/gpt-oss-20b"))
    assert a.dtype == "bfloat16" and a.quantization == "mxfp4" and a.head_dim == 64
    assert a.expert_weight_fraction > 0.8


def test_moe_expert_fraction_and_dense_zero():
    assert arch_from_config(*hub("Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8")).expert_weight_fraction > 0.95
    assert arch_from_config(*hub("Qwen/Qwen3-32B")).expert_weight_fraction == 0


def test_text_config_nesting_is_read():
    wrapped = {"architectures": ["X"], "torch_dtype": "float16", "text_config": {**LLAMA, "torch_dtype": None}}
    a = arch_from_config(wrapped, None)
    assert a.num_layers == 32 and a.num_kv_heads == 8 and a.dtype == "float16"


def test_dtype_wins_over_torch_dtype():
    assert arch_from_config({**LLAMA, "dtype": "float16", "torch_dtype": "bfloat16"}, None).dtype == "float16"
    assert arch_from_config({**LLAMA, "torch_dtype": "torch.bfloat16"}, None).dtype == "bfloat16"


def test_fp32_checkpoint_is_cast_down():
    cfg = {**LLAMA, "torch_dtype": "float32"}
    a = arch_from_config(cfg, {"metadata": {"total_size": 32_000_000_000}})
    assert a.dtype == "bfloat16" and a.weights_bytes == 16_000_000_000
    assert arch_from_config(cfg, None, params=1000).weights_bytes == 4000  # no index: fp32 bytes as stored


@pytest.mark.parametrize("key,value", [("n_head_kv", 2), ("num_kv_heads", 2), ("num_key_value_heads", 2),
                                       ("multi_query_group_num", 2), ("num_attention_groups", 2)])
def test_kv_head_aliases(key, value):
    cfg = {k: v for k, v in LLAMA.items() if k != "num_key_value_heads"}
    assert arch_from_config({**cfg, key: value}, None).num_kv_heads == value


def test_missing_kv_heads_means_multi_head_attention():
    cfg = {k: v for k, v in LLAMA.items() if k != "num_key_value_heads"}
    assert arch_from_config(cfg, None).num_kv_heads == 32


def test_head_dim_rules():
    assert arch_from_config({**LLAMA, "head_dim": 256}, None).head_dim == 256
    assert arch_from_config({**LLAMA, "head_dim": 0, "hidden_size_per_head": 96}, None).head_dim == 96
    assert arch_from_config({**LLAMA, "head_dim": None}, None).head_dim == 128


@pytest.mark.parametrize("qc,expected", [
    (None, 2.0),
    ({"quant_method": "fp8"}, 1.0),
    ({"quant_method": "awq", "bits": 4, "group_size": 128}, 0.5 * 1.03),
    ({"quant_method": "gptq", "bits": 4}, 0.5 * 1.03),
    ({"quant_method": "gptq", "bits": 8}, 1.03),  # group scales as for 4 bits
    ({"quant_method": "mxfp4"}, 4.25 / 8),
    ({"quant_method": "modelopt_fp4"}, 4.5 / 8),
    ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 4}}}}, 0.5 * 1.03),
    ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 8}}}}, 1.0),
])
def test_bytes_per_param_by_quantization(qc, expected):
    cfg = dict(LLAMA)
    if qc:
        cfg["quantization_config"] = qc
    assert bytes_per_param(cfg) == pytest.approx(expected)
    a = arch_from_config(cfg, None, params=1_000_000)
    assert a.weights_bytes == pytest.approx(1_000_000 * expected, abs=1)


def test_arch_round_trips_through_a_dict():
    a = arch_from_config(*hub("zai-org/GLM-4.6"))
    assert Arch.from_dict(a.to_dict()) == a
    with pytest.raises(PiError, match="derive_arch"):
        Arch.from_dict({"params": 1})


@pytest.mark.parametrize("cfg", [{}, {"num_hidden_layers": 2}, {**LLAMA, "num_attention_heads": 0},
                                 {**LLAMA, "hidden_size": "big"}, "not a dict"])
def test_unusable_configs_are_pierrors(cfg):
    with pytest.raises(PiError):
        arch_from_config(cfg, None)


JSONISH = st.recursive(st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=True)
                       | st.text(max_size=8), lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                       max_leaves=6)
KEYS = ["hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
        "hidden_size_per_head", "vocab_size", "intermediate_size", "max_position_embeddings", "rope_scaling",
        "torch_dtype", "dtype", "quantization_config", "kv_lora_rank", "qk_rope_head_dim", "num_experts",
        "n_routed_experts", "moe_intermediate_size", "first_k_dense_replace", "text_config", "tie_word_embeddings",
        "q_lora_rank", "n_shared_experts"]


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), JSONISH, max_size=10), st.one_of(st.none(), JSONISH))
def test_garbage_configs_never_raise_anything_but_pierror(cfg, index):
    with contextlib.suppress(PiError):
        arch_from_config({**LLAMA, **cfg} if cfg.get("hidden_size") is None else cfg, index)
