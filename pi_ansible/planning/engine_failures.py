"""Recognise why an engine failed to start (or a download failed) from its log, and say what to try.

Pure and stdlib-only: the `pi_model_service` module imports it on the pod, and the CLI uses it on
logs it reads. Patterns are vLLM 0.33's and huggingface_hub's real error texts (vllm-facts.md §3.8).
"""

from __future__ import annotations

import re

# (kind, regex over the log, advice). First match wins: specific causes before generic ones.
_RULES: tuple[tuple[str, str, str], ...] = (
    ("gated", r"GatedRepoError|Access to model \S+ is restricted|Cannot access gated repo|requires approval",
     "the model is gated: request access on its Hugging Face page, then check that HF_TOKEN belongs to the "
     "account that has access (run `pi pods setup` again after changing HF_TOKEN)"),
    ("not_found", r"RepositoryNotFoundError|Repository Not Found|Model '[^']+' not found|"
     r"does not appear to have a file named config\.json",
     "the model id does not exist on the Hub (or is private): check its spelling, e.g. Qwen/Qwen3-8B"),
    ("port_in_use", r"Address already in use",
     "the port is taken by another process on the pod: let pi choose a port, or stop what listens there"),
    ("bad_args", r"unrecognized arguments: (?P<args>.+)",
     "vLLM 0.33 does not know these arguments: {args}; check the --vllm arguments (`vllm serve --help=all`)"),
    ("tool_parser", r"invalid tool call parser: (?P<parser>\S+)",
     "vLLM has no tool-call parser named {parser}; use one vLLM 0.33 knows (e.g. hermes, qwen3_coder, glm45, "
     "openai, kimi_k2, llama3_json)"),
    ("reasoning_parser", r"Reasoning parser '(?P<parser>[^']+)' not found",
     "vLLM has no reasoning parser named {parser}; use one vLLM 0.33 knows (e.g. qwen3, glm45, deepseek_r1)"),
    ("context", r"max seq len \((?P<len>\d+)\).*?estimated maximum model length is (?P<max>\d+)",
     "the context does not fit the KV cache: start with --context {max} or less, give the model more memory "
     "(--memory) or more GPUs (--gpus)"),
    ("context", r"max seq len \((?P<len>\d+)\).*?(?:larger than|KV cache is needed)",
     "the context ({len} tokens) does not fit the KV cache: use a smaller --context, more --memory or more --gpus"),
    ("gpu_busy", r"Free memory on device (?P<dev>\S+) \((?P<free>[\d.]+)/(?P<total>[\d.]+) GiB\) on startup is less",
     "only {free} of {total} GiB are free on {dev}: other processes hold GPU memory; stop them (pi list) or "
     "lower --memory"),
    ("out_of_memory", r"Failed to load model - not enough GPU memory|torch\.OutOfMemoryError|CUDA out of memory",
     "the weights do not fit the GPU memory: use more GPUs (--gpus), an FP8 variant of the model, or a smaller model"),
    ("no_kv_memory", r"No available memory for the cache blocks",
     "the weights fit but leave no room for the KV cache: raise --memory, use more GPUs (--gpus) or an FP8 variant"),
    ("trust_remote_code", r"trust_remote_code|--trust-remote-code",
     "the model needs custom code: add --vllm --trust-remote-code (only for models you trust)"),
    ("no_gpu", r"Failed to infer device type|No CUDA GPUs are available|CUDA_VISIBLE_DEVICES is set to empty",
     "vLLM sees no GPU: check `nvidia-smi` on the pod and the model's GPUs (pi list)"),
    ("engine_init", r"Engine core initialization failed",
     "the engine failed to start; the log lines above say why"),
)


def classify(log: str) -> tuple[str, str] | None:
    """(kind, advice) for the first known failure in the log, or None."""
    text = log or ""
    for kind, pattern, advice in _RULES:
        m = re.search(pattern, text, re.DOTALL)
        if m:
            values = {k: (v or "").strip() for k, v in m.groupdict().items()}
            return kind, advice.format(**values)
    return None


def describe(log: str, what: str, tail: int = 12) -> str:
    """One message: what failed, why (when recognised), what to try, and the last log lines."""
    lines = [ln for ln in (log or "").splitlines() if ln.strip()]
    found = classify(log)
    head = f"{what}: {found[1]}" if found else f"{what}; the last log lines:"
    return head + ("\n  " + "\n  ".join(lines[-tail:]) if lines else "")
