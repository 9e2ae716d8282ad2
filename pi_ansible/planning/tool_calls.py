"""Did a model's answer carry a structured tool call, and if not, which parser would read what it wrote?

The most common complaint about self-hosted agentic models is tool calls landing in `content`
because the tool-call parser is wrong or missing. Markers are the models' real native formats.
"""

from __future__ import annotations

import re

# (marker regex in the raw text, vLLM 0.33 parser that reads it). Specific formats first.
_FORMATS: tuple[tuple[str, str], ...] = (
    (r"<function=[^>]+>", "qwen3_coder"),
    (r"<arg_key>", "glm45"),
    (r"<\|tool_calls_section_begin\|>|<\|tool_call_begin\|>", "kimi_k2"),
    (r"<｜tool▁calls▁begin｜>|<｜tool▁call▁begin｜>", "deepseek_v31"),
    (r"<\|channel\|>|to=functions\.", "openai"),
    (r"\[TOOL_CALLS\]", "mistral"),
    (r"<tool_call>\s*\{", "hermes"),
    (r'^\s*\{\s*"name"\s*:.*"parameters"\s*:', "llama3_json"),
)


def parser_for_text(text: str) -> str | None:
    for pattern, parser in _FORMATS:
        if re.search(pattern, text or "", re.DOTALL):
            return parser
    return None


def _current_parser(args: list[str]) -> str | None:
    for i, a in enumerate(args):
        if a == "--tool-call-parser" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--tool-call-parser="):
            return a.split("=", 1)[1]
    return None


def verdict(response: dict, args: list[str]) -> str:
    """'' when the first choice carries tool_calls; otherwise what went wrong and which parser to try."""
    try:
        message = response["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return "the tool-call check got no answer from the model (see `pi logs NAME`); --no-verify skips this check"
    if message.get("tool_calls"):
        return ""
    content = message.get("content") or ""
    current = _current_parser(args) or "none"
    suggested = parser_for_text(content)
    if suggested and suggested != current:
        fix = f"restart it with --vllm ... --enable-auto-tool-choice --tool-call-parser {suggested}"
    elif suggested:
        fix = "add --enable-auto-tool-choice to its vLLM arguments"
    else:
        fix = "check the model's tool-call parser (its model card) and pass it with --vllm ... --tool-call-parser NAME"
    return (f"tool calls come back as text in the message, not as structured tool_calls "
            f"(tool-call parser: {current}); {fix}, or start with --no-verify to skip this check. "
            f"The model wrote: {content[:200]!r}")
