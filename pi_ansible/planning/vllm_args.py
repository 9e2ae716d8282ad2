"""Reading and editing `vllm serve` flag lists, the way vLLM's argparse reads them.

vLLM accepts `--flag value`, `--flag=value`, underscores for dashes and a few short aliases, so a
plain `"--max-model-len" in args` (pi's test) misses forms and leaves values behind. Every
function here is pure.
"""

from __future__ import annotations

from pi_ansible.errors import PiError

ALIASES = {"-tp": "--tensor-parallel-size", "-pp": "--pipeline-parallel-size", "-dp": "--data-parallel-size",
           "-ep": "--enable-expert-parallel", "-q": "--quantization"}

# Flags pi-ansible sets itself: the port is planned, the name is the user's, and the API key goes
# in the 0600 env file as VLLM_API_KEY (on the command line it shows in `ps`).
MANAGED_FLAGS = ("--host", "--port", "--served-model-name", "--api-key", "--model")


def canonical(token: str) -> str | None:
    """The long flag a token names (`-tp` → `--tensor-parallel-size`), or None for a value."""
    if not token.startswith("-") or token in ("-", "--") or _is_number(token):
        return None
    name = token.split("=", 1)[0]
    if name in ALIASES:
        return ALIASES[name]
    if name.startswith("--"):
        return "--" + name[2:].replace("_", "-")
    return name


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def _takes_value(args: list[str], i: int) -> bool:
    # a flag takes the next token as its value unless it was written `--flag=value` or the next
    # token is itself a flag (then it is a boolean flag)
    return "=" not in args[i] and i + 1 < len(args) and canonical(args[i + 1]) is None


def flag_value(args: list[str], flag: str) -> str | None:
    """The value of the last occurrence of `flag` (argparse's last-wins), or None."""
    found = None
    for i, tok in enumerate(args):
        if canonical(tok) == flag:
            if "=" in tok:
                found = tok.split("=", 1)[1]
            elif _takes_value(args, i):
                found = args[i + 1]
    return found


def has_flag(args: list[str], flag: str) -> bool:
    return any(canonical(tok) == flag for tok in args)


def remove_flag(args: list[str], flag: str, *, with_value: bool = True) -> list[str]:
    """args without `flag` (every occurrence) and, for flags with values, the value after it."""
    out: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        if canonical(tok) == flag:
            i += 2 if with_value and _takes_value(args, i) else 1
            continue
        out.append(tok)
        i += 1
    return out


def _int_flag(args: list[str], flag: str, default: int) -> int:
    raw = flag_value(args, flag)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise PiError(f"{flag} needs a whole number, got {raw!r}") from None
    if value < 1:
        raise PiError(f"{flag} must be at least 1, got {value}")
    return value


def parallelism(args: list[str]) -> tuple[int, int, int, bool]:
    """(tensor, pipeline, data parallel sizes, expert parallel on) as the flags set them."""
    return (_int_flag(args, "--tensor-parallel-size", 1), _int_flag(args, "--pipeline-parallel-size", 1),
            _int_flag(args, "--data-parallel-size", 1), has_flag(args, "--enable-expert-parallel"))


def world_size(args: list[str]) -> int:
    tp, pp, dp, _ = parallelism(args)
    return tp * pp * dp


def managed_flags_in(args: list[str]) -> list[str]:
    return [f for f in MANAGED_FLAGS if has_flag(args, f)]
