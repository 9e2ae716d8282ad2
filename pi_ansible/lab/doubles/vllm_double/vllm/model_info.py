"""What the double knows about a model: read from its config.json (and safetensors index) only.

`load_model_files` is the I/O edge: it goes through the real huggingface_hub, so HF_HOME,
HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE behave as for real vLLM. Everything else
is a pure function of the config dict: weight size, KV bytes per token (vLLM's GQA and MLA rules,
`head_dim` rules, `text_config` nesting, `dtype`/`torch_dtype`), the derived max model length.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

GiB = 1 << 30
MiB = 1 << 20

_DTYPE_BYTES = {
    "float32": 4,
    "float": 4,
    "float16": 2,
    "half": 2,
    "bfloat16": 2,
    "fp8": 1,
    "float8_e4m3fn": 1,
    "int8": 1,
}
# Keys vLLM reads for the context length (`_get_and_verify_max_len`), in its order.
_MAX_LEN_KEYS = [
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
]
_KV_HEAD_KEYS = [
    "n_head_kv",
    "num_kv_heads",
    "num_key_value_heads",
    "multi_query_group_num",
    "num_attention_groups",
]


class ModelFilesError(Exception):
    """config.json could not be had; `cause` is the huggingface_hub exception (or None)."""

    def __init__(self, model: str, cause: BaseException | None):
        super().__init__(model)
        self.model = model
        self.cause = cause


def load_model_files(model: str, *, revision: str | None, token, download_dir: str | None):
    """Return (config dict, safetensors index dict or None) for a local dir or a Hub repo id."""
    local = Path(model)
    if local.is_dir():
        cfg = local / "config.json"
        if not cfg.is_file():
            raise ModelFilesError(model, None)
        idx = local / "model.safetensors.index.json"
        return json.loads(cfg.read_text()), (json.loads(idx.read_text()) if idx.is_file() else None)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import GatedRepoError

    tok = None if token is None else (True if token is True else str(token))
    try:
        cfg_path = hf_hub_download(model, "config.json", revision=revision, token=tok)
    except GatedRepoError:
        raise
    except Exception as e:  # repository not found, offline and not cached, network down, invalid id
        raise ModelFilesError(model, e) from e
    config = json.loads(Path(cfg_path).read_text())
    index = None
    for cache_dir in ([download_dir] if download_dir else []) + [None]:
        try:
            idx_path = hf_hub_download(
                model, "model.safetensors.index.json", revision=revision, token=tok, cache_dir=cache_dir
            )
        except Exception:  # no index in this cache or on the Hub: estimate from config.json
            continue
        index = json.loads(Path(idx_path).read_text())
        break
    return config, index


def _text(config: dict) -> dict:
    """vLLM's hf_text_config: the language model's fields of a wrapper/multimodal config."""
    for key in ("text_config", "llm_config", "language_config"):
        sub = config.get(key)
        if isinstance(sub, dict) and sub.get("num_hidden_layers"):
            merged = dict(sub)
            for k in ("dtype", "torch_dtype", "quantization_config"):
                merged.setdefault(k, config.get(k))
            return merged
    return config


@dataclass(frozen=True)
class ModelFacts:
    model: str
    architecture: str
    model_type: str
    dtype: str  # the resolved runtime dtype (bfloat16, float16, float32)
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    mla: bool
    kv_lora_rank: int
    qk_rope_head_dim: int
    params: int  # estimated parameter count
    weight_bytes: int  # checkpoint bytes on the GPU(s), all ranks together
    weight_source: str  # "index" (metadata.total_size) or "estimate"
    derived_max_len: int
    derived_max_len_key: str
    quant_method: str | None
    is_moe: bool


def _first(cfg: dict, keys: list[str], default=None):
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return default


def _config_dtype(cfg: dict) -> str:
    raw = cfg.get("dtype") or cfg.get("torch_dtype") or "bfloat16"
    return str(raw).replace("torch.", "")


def resolve_dtype(cfg: dict, dtype_arg: str) -> str:
    """vLLM's `--dtype auto`: the checkpoint dtype, fp32 checkpoints cast down to bfloat16."""
    if dtype_arg in ("half", "float16"):
        return "float16"
    if dtype_arg == "bfloat16":
        return "bfloat16"
    if dtype_arg in ("float", "float32"):
        return "float32"
    d = _config_dtype(_text(cfg))
    return "bfloat16" if d in ("float32", "float") else (d if d in ("float16", "bfloat16") else "bfloat16")


def head_dim(cfg: dict) -> int:
    hd = cfg.get("head_dim")
    if isinstance(hd, int) and hd > 0:
        return hd
    if cfg.get("hidden_size_per_head"):
        return int(cfg["hidden_size_per_head"])
    return int(cfg.get("hidden_size", 4096)) // int(cfg.get("num_attention_heads", 32))


def _bytes_per_param(cfg: dict, dtype: str, quant_arg: str | None) -> float:
    q = cfg.get("quantization_config") or {}
    method = (quant_arg or q.get("quant_method") or "").lower()
    if method in ("mxfp4", "gpt_oss_mxfp4"):
        return 4.25 / 8
    if method in ("modelopt_fp4", "nvfp4"):
        return 4.5 / 8
    bits = q.get("bits") or q.get("w_bit") or (q.get("weights") or {}).get("num_bits")
    if (
        method in ("awq", "auto_awq", "awq_marlin", "gptq", "auto_gptq", "gptq_marlin", "moe_wna16")
        or bits == 4
    ):
        return (bits or 4) / 8 * 1.03
    if method in ("fp8", "fbgemm_fp8", "experts_int8", "modelopt", "deepseek_v4_fp8") or bits == 8:
        return 1.0
    if method == "compressed-tensors":
        groups = q.get("config_groups") or {}
        for group in groups.values():
            nb = (group.get("weights") or {}).get("num_bits")
            if nb:
                return nb / 8 * (1.03 if nb < 8 else 1.0)
        return 1.0
    return float(_DTYPE_BYTES.get(dtype, 2))


def estimate_params(cfg: dict) -> tuple[int, bool]:
    """Parameter count from the architecture fields; MoE counts every expert (all are resident)."""
    h = int(cfg.get("hidden_size", 4096))
    layers = int(cfg.get("num_hidden_layers", 32))
    vocab = int(cfg.get("vocab_size", 32000))
    heads = int(cfg.get("num_attention_heads", 32))
    kv = int(_first(cfg, _KV_HEAD_KEYS, heads))
    hd = head_dim(cfg)
    inter = int(cfg.get("intermediate_size", 4 * h))
    if cfg.get("kv_lora_rank"):
        q_rank = cfg.get("q_lora_rank")
        nope = int(cfg.get("qk_nope_head_dim", 128))
        rope = int(cfg.get("qk_rope_head_dim", 64))
        v_hd = int(cfg.get("v_head_dim", 128))
        kv_rank = int(cfg["kv_lora_rank"])
        q = (h * q_rank + q_rank * heads * (nope + rope)) if q_rank else h * heads * (nope + rope)
        attn = q + h * (kv_rank + rope) + kv_rank * heads * (nope + v_hd) + heads * v_hd * h
    else:
        attn = h * heads * hd + 2 * h * kv * hd + heads * hd * h
    experts = int(_first(cfg, ["num_experts", "num_local_experts", "n_routed_experts"], 0) or 0)
    if experts:
        moe_inter = int(cfg.get("moe_intermediate_size") or inter)
        shared = int(cfg.get("n_shared_experts") or 0)
        shared_inter = int(cfg.get("shared_expert_intermediate_size") or 0)
        moe_mlp = (
            experts * 3 * h * moe_inter + shared * 3 * h * moe_inter + 3 * h * shared_inter + h * experts
        )
        dense_layers = int(cfg.get("first_k_dense_replace") or 0)
        mlp_total = dense_layers * 3 * h * inter + (layers - dense_layers) * moe_mlp
    else:
        mlp_total = layers * 3 * h * inter
    embed = vocab * h * (1 if cfg.get("tie_word_embeddings") else 2)
    return embed + layers * attn + mlp_total, bool(experts)


def derived_max_len(cfg: dict) -> tuple[int, str]:
    best, key = None, "max_position_embeddings"
    for k in _MAX_LEN_KEYS:
        v = cfg.get(k)
        if isinstance(v, int) and v > 0 and (best is None or v < best):
            best, key = v, k
    if best is None:
        best = 2048
    rope = cfg.get("rope_scaling") or {}
    rtype = rope.get("rope_type") or rope.get("type")
    factor = rope.get("factor")
    if factor and rtype not in ("su", "longrope", "llama3", "mrope", "default", None):
        base = rope.get("original_max_position_embeddings") or best
        best = int(base * factor)
    return int(best), key


def facts(
    model: str, config: dict, index: dict | None, *, dtype_arg: str = "auto", quantization: str | None = None
) -> ModelFacts:
    cfg = _text(config)
    dtype = resolve_dtype(config, dtype_arg)
    heads = int(cfg.get("num_attention_heads", 32))
    params, moe = estimate_params(cfg)
    total = (index or {}).get("metadata", {}).get("total_size")
    if total and not quantization:
        weight_bytes, source = int(total), "index"
        if _config_dtype(cfg) in ("float32", "float") and dtype in ("bfloat16", "float16"):
            weight_bytes //= 2  # an fp32 checkpoint is cast down on load
    else:
        weight_bytes, source = int(params * _bytes_per_param(cfg, dtype, quantization)), "estimate"
    archs = config.get("architectures") or ["LlamaForCausalLM"]
    max_len, key = derived_max_len(cfg)
    q = cfg.get("quantization_config") or {}
    return ModelFacts(
        model=model,
        architecture=archs[0],
        model_type=str(config.get("model_type", "")),
        dtype=dtype,
        num_layers=int(cfg.get("num_hidden_layers", 32)),
        num_heads=heads,
        num_kv_heads=int(_first(cfg, _KV_HEAD_KEYS, heads)),
        head_dim=head_dim(cfg),
        hidden_size=int(cfg.get("hidden_size", 4096)),
        vocab_size=int(cfg.get("vocab_size", 32000)),
        mla=bool(cfg.get("kv_lora_rank")),
        kv_lora_rank=int(cfg.get("kv_lora_rank") or 0),
        qk_rope_head_dim=int(cfg.get("qk_rope_head_dim") or 0),
        params=params,
        weight_bytes=weight_bytes,
        weight_source=source,
        derived_max_len=max_len,
        derived_max_len_key=key,
        quant_method=quantization or q.get("quant_method"),
        is_moe=moe,
    )


def kv_dtype_bytes(kv_cache_dtype: str, model_dtype: str) -> int:
    if kv_cache_dtype.startswith(("fp8", "int8")):
        return 1
    if kv_cache_dtype.startswith(("nvfp4", "int4", "turboquant", "octave", "ultraquant")):
        return 1  # sub-byte formats: counted at one byte, an upper bound
    if kv_cache_dtype in ("bfloat16", "float16"):
        return 2
    return 4 if model_dtype == "float32" else 2


def kv_bytes_per_token(f: ModelFacts, *, tp: int, pp: int, kv_cache_dtype: str = "auto") -> int:
    """KV cache bytes one token takes on one GPU (vLLM's AttentionSpec / MLAAttentionSpec page sizes)."""
    layers = math.ceil(f.num_layers / pp)
    b = kv_dtype_bytes(kv_cache_dtype, f.dtype)
    if f.mla:
        return layers * (f.kv_lora_rank + f.qk_rope_head_dim) * b
    kv_heads = max(1, f.num_kv_heads // tp)
    return layers * 2 * kv_heads * f.head_dim * b
