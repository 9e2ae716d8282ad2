"""vLLM 0.33.0's parser names (`vllm-facts.md` §3.2–3.3, read from the wheel).

A wrong name only fails when the engine starts (a KeyError after minutes of loading), so the
catalog checks names here, at load time.
"""

from __future__ import annotations

import difflib

VLLM_VERSION = "0.33.0"

TOOL_CALL_PARSERS = frozenset(["apertus", "beam", "cohere_command3", "cohere_command4", "deepseek_v3", "deepseek_v31", "deepseek_v32", "deepseek_v4", "deepseek_v41", "dots", "ernie45", "functiongemma", "gemma4", "gigachat3", "glm45", "glm47", "granite", "granite-20b-fc", "granite4", "hermes", "hf", "hunyuan_a13b", "hy_v3", "hy_v4", "inkling", "internlm", "jamba", "k2_horizon", "kimi_k2", "kimi_k3", "lfm2", "ling3", "llama3_json", "llama4_json", "llama4_pythonic", "longcat", "mimo", "minicpm5", "minimax_m2", "minimax_m3", "mistral", "muse", "muse_glimmer", "musespark1x", "olmo3", "openai", "phi4_mini_json", "plamo3", "poolside_v1", "pythonic", "qwen3_coder", "qwen3_json", "qwen3_xml", "seed_oss", "step3", "step3p5", "step5", "xlam"])

REASONING_PARSERS = frozenset(["deepseek_r1", "deepseek_v3", "deepseek_v4", "deepseek_v41", "poolside_v1", "cohere_command3", "cohere_command4", "ernie45", "gemma4", "glm45", "glm47", "ling3", "openai_gptoss", "granite", "granite_thinking_parser", "hf", "beam", "holo2", "hunyuan_a13b", "hy_v3", "hy_v4", "kimi_k2", "kimi_k3", "k2_horizon", "mimo", "minicpmv", "minimax_m2", "minimax_m2_append_think", "minimax_m3", "mistral", "nemotron_v3", "olmo3", "plamo3", "muse", "muse_glimmer", "musespark1x", "qwen3", "seed_oss", "step3", "step3p5", "step5", "inkling"])

# Names people reach for that vLLM does not have, and what to use instead.
KNOWN_MISTAKES = {"glm4_moe": "glm45", "glm4": "glm45", "qwen3": "hermes", "kimi": "kimi_k2",
                  "llama3": "llama3_json", "gpt-oss": "openai", "gpt_oss": "openai"}


def suggest(name: str, known: frozenset[str], *, tool: bool) -> str:
    if tool and name in KNOWN_MISTAKES:
        return KNOWN_MISTAKES[name]
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return close[0] if close else ""
