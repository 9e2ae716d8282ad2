"""Will a model fit? vLLM 0.33's memory rules as a pure function, with numbers and ways out.

What vLLM does (`vllm-facts.md` §5.1): each GPU's budget is `total × --gpu-memory-utilization`,
and that much must be free when the engine starts. Weights (split over the GPUs) load into the
budget, then activations and CUDA graphs are profiled, and the rest becomes KV cache in blocks of
16 tokens. Start-up fails unless one request of `--max-model-len` tokens fits in that cache.

pi checks none of this ("a config exists for this GPU count"); we refuse before downloading and
say what would fit: a shorter context, a larger --memory, more GPUs, an FP8 KV cache or variant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from pi_ansible.errors import PiError
from pi_ansible.planning.gpu_state import GiB, GpuState, gib
from pi_ansible.planning.model_config import Arch

BLOCK_SIZE = 16  # vLLM's default KV block: capacity and needs round to whole blocks

# Memory vLLM takes per GPU besides weights and KV cache, which it measures at start-up and we
# can only bound: the CUDA context and cuBLAS/NCCL workspaces (~0.5–0.7 GiB), the activation
# peak of the profiling pass at the default max-num-batched-tokens plus logits for max-num-seqs
# (~0.5–2 GiB: 8192 tokens / 1024 seqs on ≥ 70 GiB GPUs, 2048 / 256 on smaller ones), and the
# CUDA-graph estimate vLLM subtracts since v0.21 (~0.3–0.8 GiB). Those sums for the catalog's
# models stay under 3 GiB on large GPUs and 2 GiB on small ones; a margin above the real figure
# only makes us suggest a slightly shorter context, one below it lets vLLM crash at start-up.
OVERHEAD_LARGE_GPU = 3 * GiB
OVERHEAD_SMALL_GPU = 2 * GiB
LARGE_GPU_BYTES = 70 * GiB  # vLLM's own threshold for the larger serving defaults

# Never suggest more than this --memory: the driver reserves ~0.5 GiB and a CUDA context of any
# other tool needs room too.
MAX_SUGGESTED_FRACTION = 0.95
DEFAULT_GPU_COUNTS = (1, 2, 4, 8)
CONTEXT_STEP = 1024  # suggested contexts are whole "k"s, as --context takes them


@dataclass(frozen=True)
class FitOption:
    kind: str  # "context" | "memory" | "gpus" | "kv_cache_dtype" | "fp8_variant"
    value: int | float | str
    hint: str  # what to pass to `pi start`, e.g. "--context 31k"
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FitResult:
    fits: bool
    gpu_count: int
    tp: int
    pp: int
    dp: int
    gpu_indices: tuple[int, ...]
    memory_fraction: float
    max_model_len: int  # the context asked for (the model's default when none was)
    model_max_len: int
    kv_cache_dtype: str
    total_bytes_per_gpu: int  # the smallest GPU used
    requested_bytes_per_gpu: int  # ceil(total × fraction): vLLM's budget on that GPU
    weights_bytes_per_gpu: int
    overhead_bytes_per_gpu: int
    available_kv_bytes_per_gpu: int  # budget − weights − overhead (negative: weights do not fit)
    kv_bytes_per_token: int
    kv_bytes_needed: int  # for one request of max_model_len tokens
    max_context: int  # the longest context that fits (0: none), capped at the model's maximum
    free_ok: bool
    reasons: tuple[str, ...] = ()
    options: tuple[FitOption, ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["options"] = [o.to_dict() for o in self.options]
        d["reasons"] = list(self.reasons)
        d["gpu_indices"] = list(self.gpu_indices)
        return d

    def summary(self) -> list[str]:
        """Human lines with the numbers, for `pi start` and its refusals."""
        lines = [
            f"weights {gib(self.weights_bytes_per_gpu)} per GPU on {self.gpu_count} GPU(s)"
            f" (tp {self.tp}, pp {self.pp}, dp {self.dp}); overhead kept {gib(self.overhead_bytes_per_gpu)}",
            f"vLLM budget per GPU {gib(self.requested_bytes_per_gpu)} ({self.memory_fraction:.2f} × "
            f"{gib(self.total_bytes_per_gpu)}); left for KV cache {gib(max(0, self.available_kv_bytes_per_gpu))}",
            f"KV cache {self.kv_bytes_per_token:,} B per token ({self.kv_cache_dtype}); "
            f"{self.max_model_len:,} tokens need {gib(self.kv_bytes_needed)}; "
            f"longest context that fits: {self.max_context:,} tokens",
        ]
        lines += [f"does not fit: {r}" for r in self.reasons]
        lines += [f"would fit: {o.hint} ({o.detail})" for o in self.options]
        return lines


def kv_dtype_bytes(kv_cache_dtype: str | None, arch: Arch) -> int:
    d = (kv_cache_dtype or "auto").lower()
    if d == "auto":
        return 4 if arch.dtype == "float32" else 2
    if d in ("bfloat16", "float16", "half"):
        return 2
    # fp8 variants take one byte; sub-byte formats are counted at one byte, an upper bound
    if d.startswith(("fp8", "int8", "nvfp4", "int4")):
        return 1
    raise PiError(f"unknown --kv-cache-dtype {kv_cache_dtype!r}; use auto, bfloat16, float16 or fp8")


def kv_bytes_per_token(arch: Arch, *, tp: int = 1, pp: int = 1, kv_cache_dtype: str | None = None) -> int:
    """KV cache bytes one token takes on one GPU (vLLM's AttentionSpec / MLAAttentionSpec pages).

    Sliding-window layers (gpt-oss) keep fewer tokens; the full-attention formula is an upper bound.
    """
    layers = math.ceil(arch.num_layers / pp)
    b = kv_dtype_bytes(kv_cache_dtype, arch)
    if arch.attention == "mla":
        # one latent per token, replicated on every tensor-parallel rank
        return layers * (arch.kv_lora_rank + arch.qk_rope_head_dim) * b
    kv_heads = max(1, arch.num_kv_heads // tp)  # replicated when tp > kv heads
    return layers * 2 * kv_heads * arch.head_dim * b


def weights_per_gpu(arch: Arch, *, tp: int = 1, pp: int = 1, dp: int = 1) -> int:
    # Dense weights split over tp × pp; with data parallelism each replica holds them again, but
    # MoE expert weights are sharded across all tp × dp ranks (expert or tensor parallel).
    experts = arch.weights_bytes * arch.expert_weight_fraction
    dense = arch.weights_bytes - experts
    return math.ceil(dense / (tp * pp) + experts / (tp * dp * pp))


def overhead_bytes(total_bytes: int) -> int:
    return OVERHEAD_LARGE_GPU if total_bytes >= LARGE_GPU_BYTES else OVERHEAD_SMALL_GPU


def requested_bytes(gpu: GpuState, fraction: float) -> int:
    return math.ceil(gpu.total_bytes * fraction)


def _pick(gpus: Sequence[GpuState], count: int, use: Sequence[int] | None) -> list[GpuState]:
    if use is not None:
        by_index = {g.index: g for g in gpus}
        missing = [i for i in use if i not in by_index]
        if missing:
            raise PiError(f"GPU(s) {', '.join(map(str, missing))} are not on this pod "
                          f"(it has {', '.join(str(g.index) for g in gpus) or 'none'})")
        return [by_index[i] for i in use]
    # without a placement: the GPUs with the most free memory, whole GPUs before MIG ones
    ranked = sorted(gpus, key=lambda g: (g.mig_enabled, -g.free_mib, g.index))
    return ranked[:count]


def _core(arch: Arch, used: list[GpuState], *, tp: int, pp: int, dp: int, fraction: float,
          max_model_len: int, kv_cache_dtype: str | None, pod_gpus: int, gpu_count: int) -> FitResult:
    reasons: list[str] = []
    if pod_gpus < gpu_count:
        reasons.append(f"it needs {gpu_count} GPUs and the pod has {pod_gpus}")
    for g in used:
        if g.mig_enabled:
            reasons.append(f"GPU {g.index} has MIG enabled: vLLM would only see a MIG slice, and planning "
                           "works with whole GPUs (disable MIG with `nvidia-smi -i "
                           f"{g.index} -mig 0` and reset the GPU)")
    if arch.num_attention_heads % tp:
        reasons.append(f"{arch.num_attention_heads} attention heads do not divide by tensor parallel size {tp}")
    smallest = min(used, key=lambda g: g.total_bytes) if used else None
    total = smallest.total_bytes if smallest else 0
    requested = min((requested_bytes(g, fraction) for g in used), default=0)
    weights = weights_per_gpu(arch, tp=tp, pp=pp, dp=dp)
    overhead = overhead_bytes(total)
    available = requested - weights - overhead
    kvpt = kv_bytes_per_token(arch, tp=tp, pp=pp, kv_cache_dtype=kv_cache_dtype)
    per_block = kvpt * BLOCK_SIZE
    needed = math.ceil(max_model_len / BLOCK_SIZE) * per_block
    max_context = min(arch.max_model_len, (available // per_block) * BLOCK_SIZE) if available > 0 else 0
    free_ok = True
    for g in used:
        req = requested_bytes(g, fraction)
        if g.free_bytes < req:
            free_ok = False
            reasons.append(f"GPU {g.index} has {gib(g.free_bytes)} free, and --memory {fraction:.2f} makes vLLM "
                           f"take {gib(req)} ({fraction:.2f} × {gib(g.total_bytes)}) at start")
    if max_model_len > arch.max_model_len:
        reasons.append(f"a context of {max_model_len:,} tokens is more than the model's maximum "
                       f"({arch.max_model_len:,})")
    if used and available <= 0:
        reasons.append(f"weights take {gib(weights)} per GPU and {gib(overhead)} is kept for activations and "
                       f"CUDA graphs, which leaves nothing of the {gib(requested)} budget for the KV cache")
    elif used and needed > available:
        reasons.append(f"{max_model_len:,} tokens of context need {gib(needed)} of KV cache per GPU "
                       f"({kvpt:,} B per token) and {gib(available)} is left after weights "
                       f"({gib(weights)}) and overhead ({gib(overhead)})")
    if not used:
        reasons.append("the pod reports no GPUs")
    return FitResult(
        fits=not reasons, gpu_count=gpu_count, tp=tp, pp=pp, dp=dp,
        gpu_indices=tuple(g.index for g in used), memory_fraction=fraction,
        max_model_len=max_model_len, model_max_len=arch.max_model_len,
        kv_cache_dtype=kv_cache_dtype or "auto", total_bytes_per_gpu=total,
        requested_bytes_per_gpu=requested, weights_bytes_per_gpu=weights,
        overhead_bytes_per_gpu=overhead, available_kv_bytes_per_gpu=available,
        kv_bytes_per_token=kvpt, kv_bytes_needed=needed, max_context=max_context,
        free_ok=free_ok, reasons=tuple(reasons),
    )


def _idle(gpu: GpuState) -> GpuState:
    return replace(gpu, memory_used_mib=0, memory_free_mib=None)


def _options(arch: Arch, base: FitResult, used: list[GpuState], pod: Sequence[GpuState], *,
             kv_cache_dtype: str | None, fp8_variant: tuple[str, Arch] | None,
             gpu_counts: Sequence[int]) -> list[FitOption]:
    opts: list[FitOption] = []
    common = dict(tp=base.tp, pp=base.pp, dp=base.dp, pod_gpus=len(pod), gpu_count=base.gpu_count)
    blocked = any(g.mig_enabled for g in used) or not used or len(pod) < base.gpu_count \
        or arch.num_attention_heads % base.tp
    if not blocked:
        # 1. a shorter context, at the same --memory (only helps when the free check passes)
        k = (base.max_context // CONTEXT_STEP) * CONTEXT_STEP
        if base.free_ok and k >= CONTEXT_STEP and k < base.max_model_len:
            opts.append(FitOption("context", k, f"--context {k // 1024}k",
                                  f"the longest context that fits at --memory {base.memory_fraction:.2f}"))
        # 2. another --memory: higher when free memory allows, lower when the GPUs are busy
        cap = min(MAX_SUGGESTED_FRACTION, min(math.floor(g.free_bytes / g.total_bytes * 100) / 100 for g in used))
        steps = [f / 100 for f in range(round(base.memory_fraction * 100) + 1, round(cap * 100) + 1)]
        if not base.free_ok:
            steps = [cap] if cap > 0 else []
        for f in steps:
            r = _core(arch, used, fraction=f, max_model_len=base.max_model_len,
                      kv_cache_dtype=kv_cache_dtype, **common)
            if r.fits:
                opts.append(FitOption("memory", f, f"--memory {round(f * 100)}%",
                                      f"{gib(r.available_kv_bytes_per_gpu)} left for the KV cache"))
                break
            k = (r.max_context // CONTEXT_STEP) * CONTEXT_STEP
            if not base.free_ok and r.free_ok and k >= CONTEXT_STEP:
                # the GPUs are busy: a smaller share of them, with the context that share holds
                opts.append(FitOption("memory", f, f"--memory {round(f * 100)}% --context {k // 1024}k",
                                      f"what is free now holds {k:,} tokens of context"))
        # 3. an FP8 KV cache halves the cache per token
        if kv_dtype_bytes(kv_cache_dtype, arch) > 1:
            r = _core(arch, used, fraction=base.memory_fraction, max_model_len=base.max_model_len,
                      kv_cache_dtype="fp8", **common)
            if r.fits:
                opts.append(FitOption("kv_cache_dtype", "fp8", "--kv-cache-dtype fp8 (an engine flag: pass it with --vllm)",
                                      f"{r.kv_bytes_per_token:,} B per token instead of {base.kv_bytes_per_token:,}"))
        # 4. the catalog's FP8 variant of the model, on the same GPUs
        if fp8_variant is not None:
            vid, varch = fp8_variant
            r = _core(varch, used, fraction=base.memory_fraction,
                      max_model_len=min(base.max_model_len, varch.max_model_len),
                      kv_cache_dtype=kv_cache_dtype, **common)
            if r.fits:
                opts.append(FitOption("fp8_variant", vid, f"pi start {vid}",
                                      f"weights {gib(r.weights_bytes_per_gpu)} per GPU instead of "
                                      f"{gib(base.weights_bytes_per_gpu)}"))
    # 5. more GPUs of the same kind, idle, tensor parallel
    if used and not any(g.mig_enabled for g in used):
        template = _idle(min(used, key=lambda g: g.total_bytes))
        for count in sorted(set(gpu_counts)):
            if count <= base.gpu_count or arch.num_attention_heads % count:
                continue
            gpus = [replace(template, index=i) for i in range(count)]
            r = _core(arch, gpus, tp=count, pp=1, dp=1, fraction=base.memory_fraction,
                      max_model_len=base.max_model_len, kv_cache_dtype=kv_cache_dtype,
                      pod_gpus=count, gpu_count=count)
            if r.fits:
                where = "" if count <= len(pod) else f"; this pod has {len(pod)}"
                opts.append(FitOption("gpus", count, f"--gpus {count}",
                                      f"{gib(r.weights_bytes_per_gpu)} of weights per GPU{where}"))
                break
    return opts


def estimate_fit(arch: Arch, gpus: Sequence[GpuState], *, gpu_count: int, memory_fraction: float,
                 max_model_len: int | None = None, kv_cache_dtype: str | None = None,
                 tp: int | None = None, pp: int = 1, dp: int = 1, use: Sequence[int] | None = None,
                 fp8_variant: tuple[str, Arch] | None = None,
                 gpu_counts: Sequence[int] | None = None) -> FitResult:
    """Does `arch` fit on `gpu_count` of the pod's `gpus` at --memory `memory_fraction`?

    gpus: the pod's GPUs with their free memory now (running models counted). use: the indices
    placement chose; without it, the GPUs with the most free memory. tp defaults to
    gpu_count / (pp × dp). max_model_len None: the model's own maximum, as vLLM defaults.
    gpu_counts: the counts a "more GPUs" option may suggest (the catalog's configs).
    """
    if not isinstance(gpu_count, int) or gpu_count < 1:
        raise PiError(f"GPU count must be a whole number ≥ 1, got {gpu_count!r}")
    if not 0 < memory_fraction <= 1:
        raise PiError(f"memory fraction must be in (0, 1], got {memory_fraction!r}")
    tp = tp if tp is not None else gpu_count // (pp * dp)
    if min(tp, pp, dp) < 1 or tp * pp * dp != gpu_count:
        raise PiError(f"tensor × pipeline × data parallel sizes ({tp} × {pp} × {dp}) must equal the "
                      f"GPU count {gpu_count}")
    length = arch.max_model_len if max_model_len is None else max_model_len
    if length < 1:
        raise PiError(f"context must be at least 1 token, got {length}")
    used = _pick(gpus, gpu_count, use)
    base = _core(arch, used, tp=tp, pp=pp, dp=dp, fraction=memory_fraction, max_model_len=length,
                 kv_cache_dtype=kv_cache_dtype, pod_gpus=len(gpus), gpu_count=gpu_count)
    if base.fits:
        return base
    opts = _options(arch, base, used, gpus, kv_cache_dtype=kv_cache_dtype, fp8_variant=fp8_variant,
                    gpu_counts=gpu_counts or DEFAULT_GPU_COUNTS)
    return replace(base, options=tuple(opts))
