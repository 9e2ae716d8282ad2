"""The Responses API: assembling a stream of events, and the input a history turns into."""

import pytest

from pi_ansible.agent import events as ev
from pi_ansible.agent import responses_api
from pi_ansible.agent.reply import ModelError
from pi_ansible.agent.tools import TOOLS


def assemble(events):
    seen = []
    a = responses_api.ResponsesAssembler(seen.append)
    for e in events:
        a.feed(e)
    return a.reply(), seen


USAGE = {
    "input_tokens": 20,
    "output_tokens": 7,
    "total_tokens": 27,
    "input_tokens_details": {"cached_tokens": 3},
    "output_tokens_details": {"reasoning_tokens": 5},
}


def test_text_reasoning_and_usage():
    reply, seen = assemble(
        [
            {"type": "response.created", "response": {}},
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {"type": "reasoning", "id": "rs_1"},
            },
            {"type": "response.reasoning_text.delta", "item_id": "rs_1", "delta": "Think"},
            {"type": "response.reasoning_text.delta", "item_id": "rs_1", "delta": "ing."},
            {
                "type": "response.output_item.done",
                "output_index": 0,
                "item": {
                    "type": "reasoning",
                    "id": "rs_1",
                    "content": [{"type": "reasoning_text", "text": "Thinking."}],
                },
            },
            {
                "type": "response.output_item.added",
                "output_index": 1,
                "item": {"type": "message", "id": "m1"},
            },
            {"type": "response.output_text.delta", "item_id": "m1", "delta": "Hi"},
            {"type": "response.output_text.delta", "item_id": "m1", "delta": "!"},
            {
                "type": "response.output_item.done",
                "output_index": 1,
                "item": {"type": "message", "id": "m1", "content": [{"type": "output_text", "text": "Hi!"}]},
            },
            {"type": "response.completed", "response": {"usage": USAGE, "output": []}},
        ]
    )
    assert reply.text == "Hi!"
    assert reply.reasoning == "Thinking."
    assert reply.usage == ev.TokenUsage(20, 7, 27, 3, 0, 5)
    assert [e.type for e in seen] == ["reasoning_delta"] * 2 + ["assistant_delta"] * 2


def test_function_calls_and_their_arguments():
    reply, _ = assemble(
        [
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_1",
                    "name": "list",
                    "arguments": "",
                },
            },
            {
                "type": "response.function_call_arguments.delta",
                "item_id": "fc_1",
                "output_index": 0,
                "delta": '{"path"',
            },
            {
                "type": "response.function_call_arguments.delta",
                "item_id": "fc_1",
                "output_index": 0,
                "delta": ': "."}',
            },
            {
                "type": "response.function_call_arguments.done",
                "item_id": "fc_1",
                "output_index": 0,
                "arguments": '{"path": "."}',
            },
            {
                "type": "response.output_item.done",
                "output_index": 0,
                "item": {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_1",
                    "name": "list",
                    "arguments": '{"path": "."}',
                },
            },
            {
                "type": "response.output_item.added",
                "output_index": 1,
                "item": {
                    "type": "function_call",
                    "id": "fc_2",
                    "call_id": "call_2",
                    "name": "read",
                    "arguments": "",
                },
            },
            {
                "type": "response.function_call_arguments.delta",
                "item_id": "fc_2",
                "output_index": 1,
                "delta": '{"path": "a"}',
            },
            {"type": "response.completed", "response": {"usage": USAGE}},
        ]
    )
    assert [(c.call_id, c.name, c.arguments) for c in reply.tool_calls] == [
        ("call_1", "list", '{"path": "."}'),
        ("call_2", "read", '{"path": "a"}'),
    ]


def test_a_response_that_arrives_only_whole_is_read():
    output = [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "sum"}]},
        {"type": "message", "content": [{"type": "output_text", "text": "whole"}]},
        {"type": "function_call", "call_id": "c", "name": "list", "arguments": "{}"},
    ]
    reply, _ = assemble([{"type": "response.completed", "response": {"output": output, "usage": USAGE}}])
    assert (reply.text, reply.reasoning) == ("whole", "sum")
    assert [(c.call_id, c.name) for c in reply.tool_calls] == [("c", "list")]


@pytest.mark.parametrize(
    "event",
    [
        {"type": "response.failed", "response": {"error": {"message": "engine died"}}},
        {"type": "error", "message": "engine died"},
    ],
)
def test_failures_in_the_stream_raise(event):
    with pytest.raises(ModelError, match="engine died"):
        assemble([event])


def test_input_from_history():
    history = [
        ev.UserMessage("what is here?"),
        ev.AssistantStart(),
        ev.Reasoning("look"),
        ev.AssistantMessage("Let me look."),
        ev.ToolCall("c1", "list", "{}"),
        ev.ToolCall("c2", "read", "{}"),  # never answered: left out
        ev.ToolResult("c1", "a.txt", False),
        ev.Interrupted(),
        ev.AssistantStart(),
        ev.AssistantMessage("a.txt"),
    ]
    assert responses_api.input_from_history(history) == [
        {"type": "message", "role": "user", "content": "what is here?"},
        {"type": "message", "role": "assistant", "content": "Let me look."},
        {"type": "function_call", "call_id": "c1", "name": "list", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "a.txt"},
        {"type": "message", "role": "assistant", "content": "a.txt"},
    ]


def test_tool_specs_are_flat():
    spec = responses_api.tool_specs(TOOLS.values())[0]
    assert spec["type"] == "function" and spec["name"] == "read" and "parameters" in spec
