"""Model families: how each writes tool calls and reasoning, and which vLLM parsers read them.

This is the one table the double's "model" consults. A family's native tool-call text is what the
real model emits; vLLM turns it into structured `tool_calls` only when `--enable-auto-tool-choice`
is on and `--tool-call-parser` is one of the family's parsers. Otherwise the text stays in
`content`, the classic failure this double exists to reproduce.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# vLLM 0.33.0 `vllm/tool_parsers/__init__.py`, in the order of its error text and help metavar.
TOOL_PARSERS = [
    "apertus",
    "beam",
    "cohere_command3",
    "cohere_command4",
    "deepseek_v3",
    "deepseek_v31",
    "deepseek_v32",
    "deepseek_v4",
    "deepseek_v41",
    "dots",
    "ernie45",
    "functiongemma",
    "gemma4",
    "gigachat3",
    "glm45",
    "glm47",
    "granite",
    "granite-20b-fc",
    "granite4",
    "hermes",
    "hf",
    "hunyuan_a13b",
    "hy_v3",
    "hy_v4",
    "inkling",
    "internlm",
    "jamba",
    "k2_horizon",
    "kimi_k2",
    "kimi_k3",
    "lfm2",
    "ling3",
    "llama3_json",
    "llama4_json",
    "llama4_pythonic",
    "longcat",
    "mimo",
    "minicpm5",
    "minimax_m2",
    "minimax_m3",
    "mistral",
    "muse",
    "muse_glimmer",
    "musespark1x",
    "olmo3",
    "openai",
    "phi4_mini_json",
    "plamo3",
    "poolside_v1",
    "pythonic",
    "qwen3_coder",
    "qwen3_json",
    "qwen3_xml",
    "seed_oss",
    "step3",
    "step3p5",
    "step5",
    "xlam",
]
# vLLM 0.33.0 `vllm/reasoning/__init__.py` (the value `none` switches reasoning off).
REASONING_PARSERS = [
    "deepseek_r1",
    "deepseek_v3",
    "deepseek_v4",
    "deepseek_v41",
    "poolside_v1",
    "cohere_command3",
    "cohere_command4",
    "ernie45",
    "gemma4",
    "glm45",
    "glm47",
    "ling3",
    "openai_gptoss",
    "granite",
    "granite_thinking_parser",
    "hf",
    "beam",
    "holo2",
    "hunyuan_a13b",
    "hy_v3",
    "hy_v4",
    "kimi_k2",
    "kimi_k3",
    "k2_horizon",
    "mimo",
    "minicpmv",
    "minimax_m2",
    "minimax_m2_append_think",
    "minimax_m3",
    "mistral",
    "nemotron_v3",
    "olmo3",
    "plamo3",
    "muse",
    "muse_glimmer",
    "musespark1x",
    "qwen3",
    "seed_oss",
    "step3",
    "step3p5",
    "step5",
    "inkling",
]


@dataclass(frozen=True)
class Family:
    name: str  # the native tool-call format
    parsers: frozenset[str]  # tool-call parsers that read that format
    thinks: bool  # reasons by default (chat template `enable_thinking`)
    think_open: str = "<think>\n"
    think_close: str = "\n</think>\n\n"


FAMILIES = {
    "hermes": Family("hermes", frozenset({"hermes"}), thinks=False),
    "qwen3": Family("hermes", frozenset({"hermes"}), thinks=True),
    "qwen3_coder": Family("qwen3_coder", frozenset({"qwen3_coder", "qwen3_xml", "mimo"}), thinks=False),
    "qwen3_5": Family("qwen3_coder", frozenset({"qwen3_coder", "qwen3_xml", "mimo"}), thinks=True),
    "glm45": Family(
        "glm45", frozenset({"glm45", "glm47"}), thinks=True, think_open="<think>", think_close="</think>\n"
    ),
    "glm47": Family(
        "glm47", frozenset({"glm45", "glm47"}), thinks=True, think_open="<think>", think_close="</think>"
    ),
    "gpt_oss": Family(
        "openai",
        frozenset({"openai"}),
        thinks=True,
        think_open="<|channel|>analysis<|message|>",
        think_close="<|end|><|start|>assistant",
    ),
    "kimi_k2": Family(
        "kimi_k2", frozenset({"kimi_k2"}), thinks=False, think_open="<think>", think_close="</think>"
    ),
    "kimi_k2_thinking": Family(
        "kimi_k2", frozenset({"kimi_k2"}), thinks=True, think_open="<think>", think_close="</think>"
    ),
    "deepseek_v3": Family("deepseek_v3", frozenset({"deepseek_v3"}), thinks=False),
    "deepseek_r1": Family("deepseek_v3", frozenset({"deepseek_v3"}), thinks=True),
    "deepseek_v31": Family(
        "deepseek_v31", frozenset({"deepseek_v31"}), thinks=False, think_open="", think_close="</think>"
    ),
    "deepseek_v32": Family(
        "deepseek_v32", frozenset({"deepseek_v32"}), thinks=False, think_open="", think_close="</think>"
    ),
    "llama3": Family("llama3_json", frozenset({"llama3_json"}), thinks=False),
    "llama4": Family("llama4_pythonic", frozenset({"llama4_pythonic", "pythonic"}), thinks=False),
    "mistral": Family(
        "mistral", frozenset({"mistral"}), thinks=False, think_open="[THINK]", think_close="[/THINK]"
    ),
    "minimax_m2": Family("minimax_m2", frozenset({"minimax_m2"}), thinks=True),
}


def family_of(model_id: str, config: dict) -> Family:
    """Decide the family from config.json (model_type, architectures) and the model id."""
    mt = str(config.get("model_type", "")).lower()
    arch = " ".join(config.get("architectures") or []).lower()
    mid = model_id.lower()
    if mt == "gpt_oss" or "gptoss" in arch or "gpt-oss" in mid:
        return FAMILIES["gpt_oss"]
    if mt.startswith("qwen3_5") or "qwen3.5" in mid or "qwen3_5" in arch:
        return FAMILIES["qwen3_5"]
    if mt.startswith("qwen3") or "qwen3" in arch:
        if "coder" in mid:
            return FAMILIES["qwen3_coder"]
        if "instruct-2507" in mid:
            return FAMILIES["hermes"]
        return FAMILIES["qwen3"]
    if mt.startswith("qwen2") or "qwen2" in arch:
        return FAMILIES["hermes"]
    if mt.startswith("glm4") or mt.startswith("glm") or "glm" in arch:
        return FAMILIES["glm47"] if ("4.7" in mid or "glm-5" in mid or "glm5" in mt) else FAMILIES["glm45"]
    if "kimi" in mt or "kimi" in mid:
        return FAMILIES["kimi_k2_thinking"] if "thinking" in mid else FAMILIES["kimi_k2"]
    if mt.startswith("deepseek") or "deepseek" in arch:
        if "v3.2" in mid or "v32" in mt:
            return FAMILIES["deepseek_v32"]
        if "v3.1" in mid:
            return FAMILIES["deepseek_v31"]
        if "r1" in mid:
            return FAMILIES["deepseek_r1"]
        return FAMILIES["deepseek_v3"]
    if mt == "llama4" or "llama4" in arch:
        return FAMILIES["llama4"]
    if mt == "llama" or "llama" in arch:
        return FAMILIES["llama3"]
    if mt.startswith("mistral") or "mistral" in arch or "mistral" in mid:
        return FAMILIES["mistral"]
    if "minimax" in mt or "minimax" in mid:
        return FAMILIES["minimax_m2"]
    return FAMILIES["hermes"]


def _pyrepr(v) -> str:
    return json.dumps(v, ensure_ascii=False) if not isinstance(v, bool) else ("True" if v else "False")


def _xml_value(v) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def render_tool_call(fmt: str, name: str, args: dict, index: int = 0) -> str:
    """The text the model emits for one tool call, in its family's native format."""
    js = json.dumps(args, ensure_ascii=False)
    if fmt == "hermes":
        return f'<tool_call>\n{{"name": "{name}", "arguments": {js}}}\n</tool_call>'
    if fmt == "qwen3_coder":
        params = "".join(f"<parameter={k}>\n{_xml_value(v)}\n</parameter>\n" for k, v in args.items())
        return f"<tool_call>\n<function={name}>\n{params}</function>\n</tool_call>"
    if fmt == "glm45":
        kv = "".join(
            f"<arg_key>{k}</arg_key>\n<arg_value>{_xml_value(v)}</arg_value>\n" for k, v in args.items()
        )
        return f"<tool_call>{name}\n{kv}</tool_call>"
    if fmt == "glm47":
        kv = "".join(f"<arg_key>{k}</arg_key><arg_value>{_xml_value(v)}</arg_value>" for k, v in args.items())
        return f"<tool_call>{name}{kv}</tool_call>"
    if fmt == "openai":
        return f"<|channel|>commentary to=functions.{name} <|constrain|>json<|message|>{js}<|call|>"
    if fmt == "kimi_k2":
        return (
            f"<|tool_calls_section_begin|><|tool_call_begin|>functions.{name}:{index}"
            f"<|tool_call_argument_begin|>{js}<|tool_call_end|><|tool_calls_section_end|>"
        )
    if fmt == "deepseek_v3":
        return (
            f"<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}\n```json\n{js}\n```"
            f"<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
        )
    if fmt == "deepseek_v31":
        return f"<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>{name}<｜tool▁sep｜>{js}<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
    if fmt == "deepseek_v32":
        params = "".join(
            f'<｜DSML｜parameter name="{k}" string="{"true" if isinstance(v, str) else "false"}">'
            f"{_xml_value(v)}</｜DSML｜parameter>\n"
            for k, v in args.items()
        )
        return f'<｜DSML｜function_calls>\n<｜DSML｜invoke name="{name}">\n{params}</｜DSML｜invoke>\n</｜DSML｜function_calls>'
    if fmt == "llama3_json":
        return f'{{"name": "{name}", "parameters": {js}}}'
    if fmt == "llama4_pythonic":
        inner = ", ".join(f"{k}={_pyrepr(v)}" for k, v in args.items())
        return f"[{name}({inner})]"
    if fmt == "mistral":
        return f'[TOOL_CALLS][{{"name": "{name}", "arguments": {js}}}]'
    if fmt == "minimax_m2":
        params = "".join(f'<parameter name="{k}">{_xml_value(v)}</parameter>\n' for k, v in args.items())
        return f'<minimax:tool_call>\n<invoke name="{name}">\n{params}</invoke>\n</minimax:tool_call>'
    raise ValueError(f"unknown tool-call format {fmt}")


def tool_call_id(fmt: str, name: str, index: int, seed: str) -> str:
    if fmt == "kimi_k2":
        return f"functions.{name}:{index}"
    return "chatcmpl-tool-" + seed
