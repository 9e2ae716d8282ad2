"""vLLM 0.33's memory rules as a pure function: does the model fit, and how much KV cache is left.

1. requested = ceil(total × gpu_memory_utilization) per GPU; free memory at start (total minus the
   driver's reserve minus other processes) below that fails (`v1/worker/utils.py:request_memory`).
2. The weights (split over tp × pp) load into whatever memory is free; more than that is a CUDA OOM
   ("Failed to load model - not enough GPU memory").
3. KV cache = requested − weights − non-torch memory − profiled activations − CUDA graphs
   (or `--kv-cache-memory-bytes`); nothing left fails, and so does a max model length whose KV cache
   for one request does not fit (`v1/core/kv_cache_planning.py`); `--max-model-len auto` takes the
   largest length that fits. The overhead constants are this double's estimates, documented in README.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vllm.gpus import Device
from vllm.model_info import GiB, MiB, ModelFacts, kv_bytes_per_token

BLOCK_SIZE = 16
NON_TORCH = 450 * MiB  # CUDA context, cuBLAS workspace
NON_TORCH_DISTRIBUTED = 256 * MiB  # NCCL buffers when tp × pp > 1


@dataclass(frozen=True)
class Limits:
    max_num_batched_tokens: int
    max_num_seqs: int


def default_limits(total_mib: int, mnbt: int | None, max_num_seqs: int | None) -> Limits:
    """vLLM's serving defaults: larger batches on ≥70 GiB data-centre GPUs."""
    big = total_mib >= 70 * 1024
    return Limits(mnbt or (8192 if big else 2048), max_num_seqs or (1024 if big else 256))


@dataclass(frozen=True)
class FreeMemoryShort:
    rank: int
    free: int
    total: int
    gmu: float
    requested: int


@dataclass(frozen=True)
class WeightsOOM:
    rank: int
    total: int
    free: int
    weights: int
    tried: int


@dataclass(frozen=True)
class NoCacheMemory:
    available: int


@dataclass(frozen=True)
class MaxLenTooLarge:
    max_model_len: int
    needed: int
    available: int
    estimated: int


@dataclass(frozen=True)
class Fit:
    requested: list[int]  # bytes per rank
    weights_per_gpu: int
    available_kv: int
    kv_per_token: int
    kv_tokens: int
    max_model_len: int
    concurrency: float
    auto_reduced_from: int | None


def requested_bytes(total_mib: int, gmu: float) -> int:
    return math.ceil(total_mib * MiB * gmu)


def free_bytes(dev: Device, others_mib: int) -> int:
    return max(0, dev.total_mib - dev.reserved_mib - others_mib) * MiB


def overhead_bytes(f: ModelFacts, limits: Limits, *, tp: int, world: int, enforce_eager: bool) -> int:
    activations = max(
        256 * MiB, limits.max_num_batched_tokens * (f.hidden_size * 20 + 4 * f.hidden_size * 3) // tp
    )
    logits = limits.max_num_seqs * f.vocab_size * 4 // tp
    graphs = 0 if enforce_eager else 256 * MiB + f.num_layers * 4 * MiB
    return NON_TORCH + (NON_TORCH_DISTRIBUTED if world > 1 else 0) + activations + logits + graphs


def check_free(devices: list[Device], others: dict[str, int], gmu: float) -> FreeMemoryShort | None:
    for rank, dev in enumerate(devices):
        req = requested_bytes(dev.total_mib, gmu)
        free = free_bytes(dev, others.get(dev.parent_uuid, 0))
        if free < req:
            return FreeMemoryShort(rank, free, dev.total_mib * MiB, gmu, req)
    return None


def weights_per_gpu(f: ModelFacts, tp: int, pp: int) -> int:
    return math.ceil(f.weight_bytes / (tp * pp))


def check_weights(
    devices: list[Device], others: dict[str, int], f: ModelFacts, tp: int, pp: int
) -> WeightsOOM | None:
    w = weights_per_gpu(f, tp, pp)
    layer = max(2 * MiB, (f.hidden_size * f.hidden_size * 4 * 2) // tp)
    tried = math.ceil(layer / (2 * MiB)) * 2 * MiB
    for rank, dev in enumerate(devices):
        free = free_bytes(dev, others.get(dev.parent_uuid, 0))
        if w + NON_TORCH > free:
            return WeightsOOM(rank, dev.total_mib * MiB, free, w, tried)
    return None


def plan_kv(
    devices: list[Device],
    f: ModelFacts,
    *,
    gmu: float,
    tp: int,
    pp: int,
    max_model_len: int,
    limits: Limits,
    kv_cache_dtype: str,
    enforce_eager: bool,
    kv_cache_memory_bytes: int | None,
) -> Fit | NoCacheMemory | MaxLenTooLarge:
    world = tp * pp
    w = weights_per_gpu(f, tp, pp)
    requested = [requested_bytes(d.total_mib, gmu) for d in devices]
    if kv_cache_memory_bytes:
        available = int(kv_cache_memory_bytes)
    else:
        overhead = overhead_bytes(f, limits, tp=tp, world=world, enforce_eager=enforce_eager)
        available = min(requested) - w - overhead
    if available <= 0:
        return NoCacheMemory(available)
    kvpt = kv_bytes_per_token(f, tp=tp, pp=pp, kv_cache_dtype=kv_cache_dtype)
    per_block = kvpt * BLOCK_SIZE
    kv_tokens = (available // per_block) * BLOCK_SIZE
    reduced_from = None
    if max_model_len == -1:
        max_model_len = min(f.derived_max_len, kv_tokens)
        if max_model_len < f.derived_max_len:
            reduced_from = f.derived_max_len
        if max_model_len <= 0:
            return NoCacheMemory(available)
    needed = math.ceil(max_model_len / BLOCK_SIZE) * per_block
    if needed > available:
        return MaxLenTooLarge(max_model_len, needed, available, kv_tokens)
    return Fit(
        requested, w, available, kvpt, kv_tokens, max_model_len, kv_tokens / max_model_len, reduced_from
    )


def gib(b: int) -> float:
    """vLLM's format_gib: GiB rounded to two places."""
    return round(b / GiB, 2)
