"""The engine's command line and environment, from a catalog config and the user's options.

Fixes pi's mapping (`pi-pods-behaviour.md` §4): `--memory 0.9` means 90 % (pi made it 0.9 %),
`--context 256k` means 262,144 tokens (pi parsed it as 256), overriding a flag the config already
sets removes its value too (pi left a stray `0.95` behind), multi-GPU models get
CUDA_VISIBLE_DEVICES (pi set it only for one GPU), and the API key never reaches argv.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

from pi_ansible.errors import PiError
from pi_ansible.planning import vllm_args

MAX_CONTEXT = 1 << 24  # 16M tokens: beyond any released model; a larger number is a typo
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SECRET_ENV = frozenset({"VLLM_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "PI_API_KEY", "OPENAI_API_KEY"})

# Every engine gets these: no usage reporting, fewer fragmentation OOMs (the OOM text recommends
# it), and nvidia-smi's PCI order for CUDA_VISIBLE_DEVICES indices (CUDA's default is fastest-first).
BASE_ENV = {"VLLM_NO_USAGE_STATS": "1", "VLLM_DO_NOT_TRACK": "1",
            "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}

PASSTHROUGH_WARNING = ("--memory, --context and --gpus are ignored with --vllm: the --vllm flags replace "
                       "the catalog's (as in pi); put --gpu-memory-utilization, --max-model-len or "
                       "--tensor-parallel-size in --vllm instead")


@dataclass(frozen=True)
class Command:
    argv: list[str]
    env: dict[str, str]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_memory(value) -> float:
    """`--memory` → a GPU memory fraction: "90%", "90" (pi's form) and "0.9" all mean 0.9."""
    text = str(value).strip() if not isinstance(value, bool) else ""
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*(%?)", text)
    if not m:
        raise PiError(f"--memory {value!r} is not a share of GPU memory; use a percentage like 90% "
                      "(or a fraction like 0.9)")
    number = float(m.group(1))
    # A bare number above 1 is a percentage, as pi reads it; 1 or less is a fraction.
    fraction = number / 100 if m.group(2) or number > 1 else number
    if not 0.01 <= fraction <= 1:
        raise PiError(f"--memory {value!r} is outside 1%–100%; use e.g. 90% (the whole GPU) or 45% to share it")
    return round(fraction, 4)


def parse_context(value) -> int:
    """`--context` → tokens: 4k…128k as pi maps them (k = 1024), "1m", or a plain number."""
    text = str(value).strip().lower().replace("_", "") if not isinstance(value, bool) else ""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([km]?)", text)
    if not m:
        raise PiError(f"--context {value!r} is not a token count; use e.g. 32k, 128k or 32768")
    scale = {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2)]
    tokens = float(m.group(1)) * scale
    if not math.isfinite(tokens) or tokens != int(tokens):
        raise PiError(f"--context {value!r} is not a whole number of tokens; use e.g. 32k or 32768")
    tokens = int(tokens)
    if not 1 <= tokens <= MAX_CONTEXT:
        raise PiError(f"--context {value!r} is out of range: give 1 to {MAX_CONTEXT:,} tokens (e.g. 32k)")
    return tokens


def parse_vllm_len(value: str) -> int:
    """A `--max-model-len` value as vLLM reads it: 1k = 1000, 1K = 1024 (unlike --context)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgG]?)", value.strip())
    if not m:
        raise PiError(f"--max-model-len {value!r} is not a token count")
    unit = m.group(2)
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "K": 2**10, "M": 2**20, "G": 2**30}[unit]
    number = float(m.group(1)) * scale
    tokens = int(number) if math.isfinite(number) else 0
    if not 1 <= tokens <= MAX_CONTEXT:
        raise PiError(f"--max-model-len {value!r} is out of range (1 to {MAX_CONTEXT:,})")
    return tokens


def passthrough_settings(args: list[str]) -> dict:
    """What a `--vllm` flag list asks for, so placement and the fit check can plan it."""
    tp, pp, dp, ep = vllm_args.parallelism(args)
    gmu = vllm_args.flag_value(args, "--gpu-memory-utilization")
    mml = vllm_args.flag_value(args, "--max-model-len")
    try:
        fraction = float(gmu) if gmu is not None else None
    except ValueError:
        raise PiError(f"--gpu-memory-utilization {gmu!r} in --vllm is not a number") from None
    if fraction is not None and not 0 < fraction <= 1:
        raise PiError(f"--gpu-memory-utilization {gmu} in --vllm must be in (0, 1]")
    length = parse_vllm_len(mml) if mml is not None and mml not in ("auto", "-1") else None
    return {"memory_fraction": fraction, "max_model_len": length, "tp": tp, "pp": pp, "dp": dp,
            "expert_parallel": ep, "gpu_count": tp * pp * dp,
            "kv_cache_dtype": vllm_args.flag_value(args, "--kv-cache-dtype")}


def check_passthrough(extra: list[str]) -> None:
    """Refuse --vllm arguments that set what pi-ansible manages (host, port, served name, API key, model)."""
    managed = vllm_args.managed_flags_in(extra)
    if managed:
        key_hint = (" The API key goes in the env file as VLLM_API_KEY, never on the command line."
                    if "--api-key" in managed else "")
        raise PiError(f"--vllm must not set {', '.join(managed)}: pi-ansible sets them itself.{key_hint}")
    passthrough_settings(extra)  # numbers it sets (memory share, length, parallelism) parse, or a PiError


def check_tokens(tokens: list[str], what: str) -> None:
    for t in tokens:
        if not isinstance(t, str) or _CONTROL.search(t):
            raise PiError(f"{what} has a value with a control character or newline ({t!r}); remove it")


def _with_parsers(entry, args: list[str]) -> list[str]:
    """Config args whose parser and trust flags agree with the entry (the entry's fields win, so a
    user override of `tool_call_parser` is enough to fix a wrong parser)."""
    tool, reasoning = entry.tool_call_parser, entry.reasoning_parser
    if vllm_args.flag_value(args, "--tool-call-parser") != tool:
        args = vllm_args.remove_flag(args, "--tool-call-parser")
        if tool:
            args += ["--tool-call-parser", tool]
    if tool and not vllm_args.has_flag(args, "--enable-auto-tool-choice"):
        args += ["--enable-auto-tool-choice"]
    if not tool:
        args = vllm_args.remove_flag(args, "--enable-auto-tool-choice", with_value=False)
    if vllm_args.flag_value(args, "--reasoning-parser") != reasoning:
        args = vllm_args.remove_flag(args, "--reasoning-parser")
        if reasoning:
            args += ["--reasoning-parser", reasoning]
    has_trust = vllm_args.has_flag(args, "--trust-remote-code")
    if entry.trust_remote_code and not has_trust:
        args += ["--trust-remote-code"]
    elif not entry.trust_remote_code and has_trust:
        args = vllm_args.remove_flag(args, "--trust-remote-code", with_value=False)
    return args


def _replace(args: list[str], flag: str, value: str) -> list[str]:
    return [*vllm_args.remove_flag(args, flag), flag, value]


def engine_command(entry, config, *, served_name: str, port: int, memory_fraction: float | None,
                   max_model_len: int | None, gpus: list[int], vllm_passthrough: list[str] | None,
                   venv: str, requested_gpu_count: int | None = None) -> Command:
    """`vllm serve MODEL --host 0.0.0.0 --port P --served-model-name NAME …` and its environment.

    config: the catalog config (ignored with a passthrough). memory_fraction / max_model_len:
    None keeps the config's own value (or vLLM's default); given, they replace it. gpus: the GPU
    indices placement chose. vllm_passthrough: `--vllm` flags, which replace the config's flags,
    --memory, --context and --gpus (warning when those were given too).
    """
    if not _DNS_LABEL.match(served_name or ""):
        raise PiError(f"model name {served_name!r} must be a DNS label: lowercase letters, digits and '-', "
                      "at most 63 characters, not starting or ending with '-'")
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise PiError(f"port {port!r} is not a TCP port (1–65535)")
    if not gpus or len(set(gpus)) != len(gpus) or any(not isinstance(g, int) or g < 0 for g in gpus):
        raise PiError(f"GPU list {gpus!r} must name distinct GPU indices (placement chooses them)")
    argv = [f"{venv.rstrip('/')}/bin/vllm", "serve", entry.id, "--host", "0.0.0.0", "--port", str(port),
            "--served-model-name", served_name]
    env = dict(BASE_ENV)
    warnings: list[str] = []
    if vllm_passthrough is not None:
        extra = list(vllm_passthrough)
        check_tokens(extra, "--vllm")
        check_passthrough(extra)
        if memory_fraction is not None or max_model_len is not None or requested_gpu_count is not None:
            warnings.append(PASSTHROUGH_WARNING)
        if entry.tool_call_parser and not vllm_args.has_flag(extra, "--tool-call-parser"):
            warnings.append(f"the catalog's --tool-call-parser {entry.tool_call_parser} is not applied with --vllm; "
                            f"add --enable-auto-tool-choice --tool-call-parser {entry.tool_call_parser} "
                            "for tool calls")
        world = vllm_args.world_size(extra)
        args = extra
    else:
        args = _with_parsers(entry, list(config.args))
        check_tokens(args, f"the catalog config of {entry.id}")
        if memory_fraction is not None:
            if not 0 < memory_fraction <= 1:
                raise PiError(f"memory fraction {memory_fraction!r} must be in (0, 1]")
            args = _replace(args, "--gpu-memory-utilization", f"{memory_fraction:g}")
        if max_model_len is not None:
            if not 1 <= max_model_len <= MAX_CONTEXT:
                raise PiError(f"context {max_model_len!r} is out of range (1 to {MAX_CONTEXT:,})")
            args = _replace(args, "--max-model-len", str(int(max_model_len)))
        world = vllm_args.world_size(args)
        if world == 1 and len(gpus) > 1:
            args = _replace(args, "--tensor-parallel-size", str(len(gpus)))
            world = len(gpus)
        env.update(config.env)
    if world != len(gpus):
        raise PiError(f"the flags use {world} GPU(s) (tensor × pipeline × data parallel) but {len(gpus)} "
                      f"were placed; use --gpus {world} or change the parallel sizes")
    secrets = sorted(SECRET_ENV & set(env))
    if secrets:
        raise PiError(f"the catalog config of {entry.id} sets {', '.join(secrets)} in its env; secrets belong in "
                      "the model's 0600 env file, so remove them from the catalog")
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    return Command(argv=argv + args, env=env, warnings=warnings)


def systemd_exec(argv: list[str]) -> str:
    """argv as an ExecStart= line: each word double-quoted, with systemd's `%` specifiers and `$`
    expansion escaped, so a flag value can never turn into something else in the unit."""
    check_tokens(argv, "the command line")
    words = []
    for a in argv:
        a = a.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
        words.append(f'"{a}"')
    return " ".join(words)
