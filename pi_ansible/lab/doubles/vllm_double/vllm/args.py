"""`vllm` command line, parsed the way vLLM 0.33.0's FlexibleArgumentParser does.

Every `vllm serve` flag of the real release is accepted (the list is generated from its
`--help=all`, see `_serve_flags.py`); the ones the double acts on get vLLM's value types
(`--max-model-len 32k/32K/auto/-1`, …). Unknown flags fail as argparse fails in vLLM:
`vllm: error: unrecognized arguments: --swap-space 4`, exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re

from vllm import __version__, _log
from vllm._serve_flags import FLAGS, HELP_ALL

SUBCOMMANDS = ["chat", "complete", "serve", "launch", "bench", "collect-env", "run-batch", "download-kernels"]
SERVE_USAGE = "vllm serve [model_tag] [options]"
SERVE_DESCRIPTION = (
    "Launch a local OpenAI-compatible API server to serve LLM\n"
    "completions via HTTP. Defaults to Qwen/Qwen3-0.6B if no model is specified.\n\n"
    "Search by using: `--help=<ConfigGroup>` to explore options by section (e.g.,\n"
    "--help=ModelConfig, --help=Frontend)\n"
    "  Use `--help=all` to show all available flags at once."
)
EPILOG = (
    "For full list:            vllm {subcmd} --help=all\n"
    "For a section:            vllm {subcmd} --help=ModelConfig    (case-insensitive)\n"
    "For a flag:               vllm {subcmd} --help=max-model-len  (_ or - accepted)\n"
    "Documentation:            https://docs.vllm.ai\n"
)


def human_readable_int(value: str) -> int:
    """'1k' -> 1000, '1K' -> 1024, '25.6k' -> 25600 (vllm.utils.argparse_utils)."""
    value = value.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgGtT])", value)
    if match:
        decimal = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
        binary = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
        number, suffix = match.groups()
        if suffix in decimal:
            return int(float(number) * decimal[suffix])
        try:
            return int(number) * binary[suffix]
        except ValueError as e:
            raise argparse.ArgumentTypeError(
                "Decimals are not allowed "
                f"with binary suffixes like {suffix}. Did you mean to use "
                f"{number}{suffix.lower()} instead?"
            ) from e
    return int(value)


def human_readable_int_or_auto(value: str) -> int:
    value = value.strip()
    if value == "-1" or value.lower() == "auto":
        return -1
    return human_readable_int(value)


# Value types of the flags the double acts on; every other flag keeps its value as a string.
TYPES = {
    "port": int,
    "max_model_len": human_readable_int_or_auto,
    "max_num_batched_tokens": human_readable_int,
    "kv_cache_memory_bytes": human_readable_int,
    "gpu_memory_utilization": float,
    "tensor_parallel_size": int,
    "pipeline_parallel_size": int,
    "data_parallel_size": int,
    "max_num_seqs": int,
    "shutdown_timeout": int,
    "seed": int,
    "max_logprobs": int,
    "block_size": int,
}
JSON_ARGS = {"default_chat_template_kwargs", "hf_overrides", "override_generation_config"}


class _Parser(argparse.ArgumentParser):
    search_keyword: str | None = None

    def format_help(self):
        keyword = _Parser.search_keyword
        if self.prog != "vllm serve":
            return super().format_help()
        if keyword is None:
            return _compact_help()
        return _search_help(keyword)


def _compact_help() -> str:
    groups = []
    current = None
    for line in HELP_ALL.splitlines():
        m = re.match(r"^([A-Z][A-Za-z]*Config|Frontend):$", line)
        if m:
            current = m.group(1)
            groups.append([current, ""])
        elif current and groups[-1][1] == "" and line.startswith("  ") and not line.startswith("  -"):
            groups[-1][1] = line.strip()
    width = max(len(g) for g, _ in groups) + 1
    body = "\n".join(f"{g: <{width}}{d}" for g, d in groups)
    return (
        f"usage: {SERVE_USAGE}\n\n{SERVE_DESCRIPTION}\n\n"
        "positional arguments:\n  model_tag             The model tag to serve (optional if specified in\n"
        "                        config) (default: None)\n\n"
        "options:\n  -h, --help            show this help message and exit\n\n"
        f"Config Groups:\n{body}\n\n{EPILOG.format(subcmd='serve')}"
    )


def _blocks():
    """(group, option-names, text) for every option block of the real help."""
    group = ""
    block = None
    for line in HELP_ALL.splitlines():
        g = re.match(r"^([A-Za-z][A-Za-z0-9 ]*):$", line)
        if g:
            group = g.group(1)
            block = None
            continue
        if line.startswith("  -"):
            names = re.findall(r"(?:^|, )(-{1,2}[A-Za-z0-9][A-Za-z0-9._-]*)", line.strip().split("  ")[0])
            block = [group, names, [line]]
            yield block
        elif block is not None and line.startswith("    "):
            block[2].append(line)
        else:
            block = None


def _search_help(keyword: str) -> str:
    keyword = keyword.lower().replace("_", "-")
    if keyword == "all":
        return HELP_ALL
    start = HELP_ALL.find("\nFrontend:\n")
    tip = HELP_ALL[HELP_ALL.find("When passing JSON CLI arguments") :]
    sections = re.split(
        r"\n(?=[A-Z][A-Za-z]*:\n)", HELP_ALL[start + 1 : HELP_ALL.find("When passing JSON CLI")]
    )
    for section in sections:
        title = section.split(":", 1)[0]
        if title.lower() == keyword:
            return section.rstrip() + "\n\n" + tip
    matched = [b for b in _blocks() if any(keyword in n.lower() for n in b[1])]
    if matched:
        body = "\n".join("\n".join(b[2]) for b in matched)
        return f"Arguments matching '{keyword}':\n{body}\n\n{tip}"
    return (
        f"No group or arguments matching '{keyword}'.\n"
        "Use '--help' to see available groups or '--help=all' to see all available parameters.\n"
    )


def _add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_tag", nargs="?", default=None)
    for spec in FLAGS:
        dest = spec["dest"]
        if spec["nargs"] == 0:
            p.add_argument(
                *spec["options"], dest=dest, action="store_const", const=True, default=spec["default"]
            )
            if spec["negatives"]:
                p.add_argument(
                    *spec["negatives"],
                    dest=dest,
                    action="store_const",
                    const=False,
                    default=argparse.SUPPRESS,
                )
            continue
        kwargs = {"dest": dest, "default": spec["default"]}
        if spec["nargs"] is not None:
            kwargs["nargs"] = spec["nargs"]
        if spec["choices"] is not None:
            kwargs["choices"] = spec["choices"]
        if dest in TYPES:
            kwargs["type"] = TYPES[dest]
        if dest == "hf_token":
            kwargs["const"] = True
        p.add_argument(*spec["options"], **kwargs)
    # vLLM turns `-O3` into `--optimization-level 3` before argparse sees it.


def build_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    top = _Parser(
        prog="vllm",
        description="vLLM CLI",
        epilog=EPILOG.format(subcmd="[subcommand]"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("-v", "--version", action="version", version=__version__)
    subs = top.add_subparsers(required=False, dest="subparser")
    serve = None
    for name in SUBCOMMANDS:
        if name == "serve":
            serve = subs.add_parser(
                "serve",
                prog="vllm serve",
                usage=SERVE_USAGE,
                description=SERVE_DESCRIPTION,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
            _add_serve_args(serve)
        else:
            sp = subs.add_parser(name, add_help=False)
            sp.add_argument("rest", nargs=argparse.REMAINDER)
    return top, serve


def _dashes(arg: str) -> str:
    if "=" in arg:
        key, value = arg.split("=", 1)
        return re.sub(r"(?<=--)[^.]*", lambda m: m.group(0).replace("_", "-"), key, count=1) + "=" + value
    return re.sub(r"(?<=--)[^.]*", lambda m: m.group(0).replace("_", "-"), arg, count=1)


def preprocess(args: list[str], error) -> list[str]:
    """FlexibleArgumentParser.parse_args' rewriting, before argparse runs."""
    if args and args[0] == "serve":
        idx = next((i for i, a in enumerate(args) if re.match(r"^--model(=.+|$)", a)), None)
        if idx is not None:
            _log.warning(
                "argparse_utils.py:275",
                "With `vllm serve`, you should provide the model as a positional argument or in a config "
                "file instead of via the `--model` option. The `--model` option will be removed in a future version.",
                proc=None,
            )
            if args[idx] == "--model":
                if idx + 1 >= len(args) or str(args[idx + 1]).startswith("-"):
                    error("argument --model: expected one argument")
                tag, rest = args[idx + 1], idx + 2
            else:
                tag, rest = args[idx].removeprefix("--model="), idx + 1
            args = ["serve", tag, *args[1:idx], *args[rest:]]
        if (
            len(args) > 1
            and args[1].startswith("-")
            and not any(re.match(r"^--config(=.+|$)", a) for a in args)
            and any(re.match(r"^--served[-_]model[-_]name(=.+|$)", a) for a in args)
        ):
            raise ValueError(
                "`model` should be provided as the first positional argument when "
                "using `vllm serve`. i.e. `vllm serve <model> --<arg> <value>`."
            )
    if "--config" in args:
        args = _pull_from_config(args)
    out: list[str] = []
    dotted: dict[str, dict] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--help="):
            _Parser.search_keyword = arg.split("=", 1)[1].lower()
            out.append("--help")
        elif arg.startswith("--"):
            arg = _dashes(arg)
            key = arg.split("=", 1)[0]
            if "." in key:
                # `--json-arg.key value` / `--json-arg.key=value` / `--json-arg.key+ value`
                base, path = key.split(".", 1)
                if "=" in arg:
                    value = arg.split("=", 1)[1]
                else:
                    i += 1
                    value = args[i] if i < len(args) else ""
                node = dotted.setdefault(base, {})
                keys = path.rstrip("+").split(".")
                for k in keys[:-1]:
                    node = node.setdefault(k, {})
                if path.endswith("+"):
                    node.setdefault(keys[-1], []).extend(value.split(","))
                else:
                    node[keys[-1]] = _json_value(value)
            else:
                out.append(arg)
        elif arg.startswith("-O") and arg != "-O":
            out += ["--optimization-level", arg[3:] if arg[2:3] == "=" else arg[2:]]
        elif arg == "-O" and i + 1 < len(args) and args[i + 1] in {"0", "1", "2", "3"}:
            out.append("--optimization-level")
        else:
            out.append(arg)
        i += 1
    for base, value in dotted.items():
        out += [base, json.dumps(value)]
    return out


def _json_value(value: str):
    try:
        return json.loads(value)
    except ValueError:
        return value


def _pull_from_config(args: list[str]) -> list[str]:
    idx = args.index("--config")
    if idx == len(args) - 1:
        raise ValueError("No config file specified! Please check your command-line arguments.")
    path = args[idx + 1]
    if not path.endswith((".yaml", ".yml")):
        raise ValueError(f"Config file must be of a yaml/yml type. {path} supplied")
    import yaml  # huggingface_hub depends on PyYAML

    with open(path) as f:
        config = yaml.safe_load(f) or {}
    extra: list[str] = []
    for key, value in config.items():
        flag = "--" + str(key).replace("_", "-")
        if isinstance(value, bool):
            if value:
                extra.append(flag)
        elif isinstance(value, list):
            extra += [flag, *map(str, value)]
        elif isinstance(value, dict):
            extra += [flag, json.dumps(value)]
        else:
            extra += [flag, str(value)]
    rest = args[:idx] + args[idx + 2 :]
    if rest and rest[0] == "serve":
        tag = rest[1:2] if len(rest) > 1 and not rest[1].startswith("-") else []
        if not tag and "model" in config:
            tag = [str(config["model"])]
            extra = [
                a for j, a in enumerate(extra) if not (a == "--model" or (j and extra[j - 1] == "--model"))
            ]
        return ["serve", *tag, *extra, *rest[1 + len(tag) :]]
    return rest + extra


def parse(argv: list[str]) -> argparse.Namespace:
    top, serve = build_parser()
    argv = preprocess(argv, serve.error)
    ns = top.parse_args(argv)
    if getattr(ns, "subparser", None) == "serve":
        # `model_tag` wins over `--model`, as in vLLM's ServeSubcommand.
        if ns.model_tag is not None:
            ns.model = ns.model_tag
        for name in JSON_ARGS:
            value = getattr(ns, name, None)
            if isinstance(value, str):
                try:
                    setattr(ns, name, json.loads(value))
                except ValueError:
                    serve.error(f"argument --{name.replace('_', '-')}: invalid loads value: {value!r}")
    return ns


def defaults() -> dict:
    _, serve = build_parser()
    return vars(serve.parse_args([]))


def non_default_args(ns: argparse.Namespace) -> dict:
    base = defaults()
    out = {}
    for key, value in vars(ns).items():
        if key in ("subparser",):
            continue
        if key in base and base[key] != value:
            out[key] = value
    return out


SENSITIVE = frozenset({"api_key", "hf_token", "watermark_config"})


def redact(args: dict) -> dict:
    return {k: ("***" if k in SENSITIVE else v) for k, v in args.items()}


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")
