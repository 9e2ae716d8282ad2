"""A model's memory-relevant architecture, read from its `config.json` (and safetensors index) alone.

Pure: no downloads. The rules are vLLM 0.33's (`vllm-facts.md` §5.2–5.3): the language model's
fields live under `text_config` in wrapper configs, `dtype` wins over the older `torch_dtype`,
KV heads have several aliases, `head_dim` may be explicit, and MLA models (DeepSeek V2/V3, Kimi K2)
cache one latent vector per token instead of K and V per head.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from pi_ansible.errors import PiError

# vLLM's aliases for the KV head count, in the order it tries them (CONFIG_FIELD_ALIASES).
KV_HEAD_KEYS = ("n_head_kv", "num_kv_heads", "num_key_value_heads", "multi_query_group_num",
                "num_attention_groups")
# Keys vLLM reads for the context length, in its order; it takes the smallest present.
MAX_LEN_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length",
                "model_max_length", "max_sequence_length", "max_seq_length", "seq_len")
EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts")

_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2}

# Bytes one weight takes on the GPU, by quantization method. Block/group scales add a little:
# INT4 with group 128 is ~3 % over 4 bits; MXFP4 is 4 bits + one shared 8-bit scale per 32 (4.25);
# NVFP4 is 4 bits + an 8-bit scale per 16 (4.5).
_FP8_METHODS = {"fp8", "fbgemm_fp8", "modelopt", "modelopt_mxfp8", "deepseek_v4_fp8", "experts_int8", "quark"}
_INT4_METHODS = {"awq", "auto_awq", "awq_marlin", "gptq", "auto_gptq", "gptq_marlin", "moe_wna16"}
_MXFP4_METHODS = {"mxfp4", "gpt_oss_mxfp4"}
_NVFP4_METHODS = {"modelopt_fp4", "nvfp4"}


@dataclass(frozen=True)
class Arch:
    """What planning needs to know about a model, without its weights.

    weights_bytes is what the weights take on the GPU(s), all ranks together (the safetensors
    index's `metadata.total_size` when known). max_model_len is the context vLLM derives by default
    (max_position_embeddings, stretched by YaRN-style rope scaling as vLLM does).
    """

    params: int
    dtype: str  # runtime dtype: bfloat16 / float16 (fp32 checkpoints are cast down by --dtype auto)
    weights_bytes: int
    weights_source: str  # "index" (safetensors total_size) or "params" (params × bytes per param)
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    attention: str  # "gqa" or "mla"
    kv_lora_rank: int
    qk_rope_head_dim: int
    max_position_embeddings: int
    max_model_len: int
    quantization: str | None
    expert_weight_fraction: float  # share of the weights in routed experts (sharded over tp × dp)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Arch:
        names = {f.name for f in fields(cls)}
        missing = names - set(data)
        if missing:
            raise PiError(f"model arch is missing {', '.join(sorted(missing))}; "
                          "re-derive it with `python -m pi_ansible.catalog.derive_arch`")
        return cls(**{k: data[k] for k in names})


def text_config(config: dict) -> dict:
    """vLLM's hf_text_config: the language model's fields of a wrapper/multimodal config."""
    for key in ("text_config", "llm_config", "language_config"):
        sub = config.get(key)
        if isinstance(sub, dict) and sub.get("num_hidden_layers"):
            merged = dict(sub)
            for k in ("dtype", "torch_dtype", "quantization_config"):
                if merged.get(k) is None and config.get(k) is not None:
                    merged[k] = config[k]
            return merged
    return config


def _int(cfg: dict, key: str, default: int | None = None) -> int:
    value = cfg.get(key)
    if value is None and default is not None:
        return default
    if not _number(value) or value < 0 or value > 1 << 50:
        raise PiError(f"config.json has no usable {key!r} (got {value!r}); "
                      "planning needs it to estimate memory: check the model repository's config.json")
    return int(value)


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _first(cfg: dict, keys, default=None):
    for k in keys:
        if cfg.get(k) is not None:
            return _int(cfg, k)
    return default


def checkpoint_dtype(cfg: dict) -> str:
    # transformers ≥ 4.56 writes `dtype`; older configs `torch_dtype`. Configs with neither
    # (gpt-oss) load as bfloat16.
    raw = cfg.get("dtype") or cfg.get("torch_dtype") or "bfloat16"
    return str(raw).replace("torch.", "")


def runtime_dtype(cfg: dict) -> str:
    """What `--dtype auto` runs: the checkpoint's half type; fp32 checkpoints are cast to bfloat16."""
    d = checkpoint_dtype(cfg)
    return d if d in ("float16", "bfloat16") else "bfloat16"


def head_dim(cfg: dict) -> int:
    hd = cfg.get("head_dim")
    if isinstance(hd, int) and not isinstance(hd, bool) and hd > 0:
        return hd
    hs = cfg.get("hidden_size_per_head")
    if isinstance(hs, int) and not isinstance(hs, bool) and hs > 0:
        return hs
    heads = _int(cfg, "num_attention_heads")
    if heads == 0:
        raise PiError("config.json has num_attention_heads 0; it cannot be a decoder model vLLM serves")
    return _int(cfg, "hidden_size") // heads


def _dict(v) -> dict:
    return v if isinstance(v, dict) else {}


def quant_method(cfg: dict) -> str | None:
    method = _dict(cfg.get("quantization_config")).get("quant_method")
    return method.lower() if isinstance(method, str) and method else None


def bytes_per_param(cfg: dict) -> float:
    """Bytes one weight takes on the GPU, from quantization_config, else the checkpoint dtype."""
    q = _dict(cfg.get("quantization_config"))
    method = quant_method(cfg) or ""
    if method in _MXFP4_METHODS:
        return 4.25 / 8
    if method in _NVFP4_METHODS:
        return 4.5 / 8
    bits = q.get("bits") or q.get("w_bit") or _dict(q.get("weights")).get("num_bits")
    if method == "compressed-tensors":
        for group in _dict(q.get("config_groups")).values():
            nb = _dict(_dict(group).get("weights")).get("num_bits")
            if nb:
                bits = nb
                break
        bits = bits or 8
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 32:
        bits = None
    if method in _INT4_METHODS or (method == "compressed-tensors" and (bits or 8) < 8) or bits == 4:
        return (bits or 4) / 8 * 1.03
    if method in _FP8_METHODS or bits == 8:
        return 1.0
    return float(_DTYPE_BYTES.get(checkpoint_dtype(cfg), 2))


def derived_max_len(cfg: dict) -> tuple[int, int]:
    """(max_position_embeddings as written, the context vLLM derives from it)."""
    present = [cfg[k] for k in MAX_LEN_KEYS if isinstance(cfg.get(k), int) and cfg[k] > 0]
    base = min(present) if present else 2048
    rope = cfg.get("rope_scaling") if isinstance(cfg.get("rope_scaling"), dict) else {}
    rtype = rope.get("rope_type") or rope.get("type")
    factor = rope.get("factor")
    original = rope.get("original_max_position_embeddings")
    original = original if isinstance(original, int) and original > 0 else base
    derived = base
    # vLLM stretches the context by the rope factor except for types that already account for it.
    if _number(factor) and factor > 0 and rtype not in ("su", "longrope", "llama3", "mrope", "default", None):
        derived = int(original * factor)
    return int(base), max(1, derived)


def estimate_params(cfg: dict) -> tuple[int, int]:
    """(all parameters, those in routed experts) from the architecture fields.

    MoE counts every expert: all are resident. Used when there is no safetensors index, and for
    the expert share that expert/data parallelism spreads over GPUs.
    """
    h = _int(cfg, "hidden_size")
    layers = _int(cfg, "num_hidden_layers")
    vocab = _int(cfg, "vocab_size", 32000)
    heads = _int(cfg, "num_attention_heads")
    kv = int(_first(cfg, KV_HEAD_KEYS, heads))
    hd = head_dim(cfg)
    inter = _int(cfg, "intermediate_size", 4 * h)
    if cfg.get("kv_lora_rank"):
        q_rank = _int(cfg, "q_lora_rank", 0)
        nope = _int(cfg, "qk_nope_head_dim", 128)
        rope = _int(cfg, "qk_rope_head_dim", 64)
        v_hd = _int(cfg, "v_head_dim", 128)
        kv_rank = _int(cfg, "kv_lora_rank")
        q = (h * q_rank + q_rank * heads * (nope + rope)) if q_rank else h * heads * (nope + rope)
        attn = q + h * (kv_rank + rope) + kv_rank * heads * (nope + v_hd) + heads * v_hd * h
    else:
        attn = h * heads * hd + 2 * h * kv * hd + heads * hd * h
    experts = int(_first(cfg, EXPERT_KEYS, 0) or 0)
    expert_params = 0
    if experts:
        moe_inter = _int(cfg, "moe_intermediate_size", inter)
        shared = _int(cfg, "n_shared_experts", 0)
        shared_inter = _int(cfg, "shared_expert_intermediate_size", 0)
        dense_layers = min(layers, _int(cfg, "first_k_dense_replace", 0))
        routed = experts * 3 * h * moe_inter
        moe_mlp = routed + shared * 3 * h * moe_inter + 3 * h * shared_inter + h * experts
        mlp_total = dense_layers * 3 * h * inter + (layers - dense_layers) * moe_mlp
        expert_params = (layers - dense_layers) * routed
    else:
        mlp_total = layers * 3 * h * inter
    embed = vocab * h * (1 if cfg.get("tie_word_embeddings") else 2)
    return embed + layers * attn + mlp_total, expert_params


def arch_from_config(config: dict, index: dict | None, *, params: int | None = None) -> Arch:
    """The Arch of a model from its config.json and (optionally) model.safetensors.index.json.

    params: the exact parameter count when known (the Hub's safetensors metadata); otherwise it is
    estimated from the config. Raises PiError when the config lacks what planning needs.
    """
    if not isinstance(config, dict):
        raise PiError("config.json is not a JSON object; check the model repository")
    cfg = text_config(config)
    layers = _int(cfg, "num_hidden_layers")
    heads = _int(cfg, "num_attention_heads")
    if layers == 0 or heads == 0:
        raise PiError("config.json has no layers or attention heads; it is not a decoder model vLLM serves")
    kv_heads = max(1, int(_first(cfg, KV_HEAD_KEYS, heads)))
    estimated, expert_params = estimate_params(cfg)
    n_params = int(params) if params else estimated
    dtype = runtime_dtype(cfg)
    total = ((index or {}).get("metadata") or {}).get("total_size") if isinstance(index, dict) else None
    if isinstance(total, int | float) and total > 0:
        weights, source = int(total), "index"
        if checkpoint_dtype(cfg) in ("float32", "float") and quant_method(cfg) is None:
            weights //= 2  # an fp32 checkpoint is cast to 16 bits on load
    else:
        weights, source = math.ceil(n_params * bytes_per_param(cfg)), "params"
    mla = bool(cfg.get("kv_lora_rank"))
    base_len, max_len = derived_max_len(cfg)
    return Arch(
        params=n_params,
        dtype=dtype,
        weights_bytes=weights,
        weights_source=source,
        num_layers=layers,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        # vLLM's head size for MLA is the latent width (kv_lora_rank + qk_rope_head_dim).
        head_dim=(_int(cfg, "kv_lora_rank") + _int(cfg, "qk_rope_head_dim", 0)) if mla else head_dim(cfg),
        attention="mla" if mla else "gqa",
        kv_lora_rank=_int(cfg, "kv_lora_rank", 0) if mla else 0,
        qk_rope_head_dim=_int(cfg, "qk_rope_head_dim", 0) if mla else 0,
        max_position_embeddings=base_len,
        max_model_len=max_len,
        quantization=quant_method(cfg),
        expert_weight_fraction=round(expert_params / estimated, 4) if estimated else 0.0,
    )
