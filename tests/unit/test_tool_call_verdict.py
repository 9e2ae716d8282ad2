"""The tool-call check's verdict (pi_ansible/planning/tool_calls.py, run on the pod by pi_model_service)."""

from __future__ import annotations

import pytest

from pi_ansible.planning.tool_calls import parser_for_text, verdict

ARGS = ["--enable-auto-tool-choice", "--tool-call-parser", "mistral"]


def answer(content=None, tool_calls=None) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": content, "tool_calls": tool_calls}}]}


def test_a_structured_call_passes():
    call = [{"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]
    assert verdict(answer(tool_calls=call), ARGS) == ""


@pytest.mark.parametrize(("text", "parser"), [
    ("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", "hermes"),
    ("<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>",
     "qwen3_coder"),
    ("<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>", "glm45"),
    ('[TOOL_CALLS]get_weather{"city": "Paris"}', "mistral"),
    ('{"name": "get_weather", "parameters": {"city": "Paris"}}', "llama3_json"),
])
def test_native_formats_are_recognised(text, parser):
    assert parser_for_text(text) == parser


def test_a_call_in_the_text_names_the_parser_that_reads_it():
    said = verdict(answer("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>"), ARGS)
    assert "(tool-call parser: mistral)" in said and "--tool-call-parser hermes" in said and "--no-verify" in said


def test_the_right_parser_without_auto_tool_choice_says_to_add_it():
    said = verdict(answer('[TOOL_CALLS]get_weather{"city": "Paris"}'), ["--tool-call-parser=mistral"])
    assert "add --enable-auto-tool-choice" in said


def test_plain_text_and_no_answer():
    assert "check the model's tool-call parser" in verdict(answer("It is sunny."), [])
    assert "(tool-call parser: none)" in verdict(answer("It is sunny."), [])
    assert "got no answer" in verdict({}, ARGS) and "got no answer" in verdict({"choices": []}, ARGS)
