"""Chat Completions: assembling a stream, and the messages a history turns into."""

from pi_ansible.agent import chat_api
from pi_ansible.agent import events as ev
from pi_ansible.agent.tools import TOOLS


def chunk(delta=None, finish=None, usage=None, choices=True):
    data = {"choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []}
    if usage is not None:
        data["usage"] = usage
    return data


def assemble(chunks):
    seen = []
    a = chat_api.ChatAssembler(seen.append)
    for c in chunks:
        a.feed(c)
    return a.reply(), seen


def test_text_and_reasoning_deltas_stream_and_add_up():
    reply, seen = assemble(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"reasoning_content": "Let me "}),
            chunk({"reasoning": "think."}),  # vLLM's newer field name
            chunk({"content": "Hello"}),
            chunk({"content": " there"}, finish="stop"),
            chunk(
                choices=False,
                usage={
                    "prompt_tokens": 12,
                    "completion_tokens": 3,
                    "total_tokens": 15,
                    "prompt_tokens_details": {"cached_tokens": 4},
                    "completion_tokens_details": {"reasoning_tokens": 2},
                },
            ),
        ]
    )
    assert reply.text == "Hello there"
    assert reply.reasoning == "Let me think."
    assert reply.tool_calls == []
    assert reply.finish_reason == "stop"
    assert reply.usage == ev.TokenUsage(12, 3, 15, 4, 0, 2)
    assert [e.type for e in seen] == [
        "reasoning_delta",
        "reasoning_delta",
        "assistant_delta",
        "assistant_delta",
    ]


def test_tool_call_pieces_are_assembled_by_index():
    reply, _ = assemble(
        [
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "list", "arguments": ""},
                        }
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"pa'}}]}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "call_b",
                            "function": {"name": "read", "arguments": '{"path": "a"}'},
                        }
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'th": "."}'}}]}),
            chunk({}, finish="tool_calls"),
        ]
    )
    assert [(c.call_id, c.name, c.arguments) for c in reply.tool_calls] == [
        ("call_a", "list", '{"path": "."}'),
        ("call_b", "read", '{"path": "a"}'),
    ]


def test_missing_call_ids_are_made_up_and_usage_may_be_absent():
    reply, _ = assemble(
        [chunk({"tool_calls": [{"index": 0, "function": {"name": "list", "arguments": "{}"}}]})]
    )
    assert reply.tool_calls[0].call_id == "call_0"
    assert reply.usage is None


def test_usage_without_details():
    assert chat_api.usage_event({"prompt_tokens": 5, "completion_tokens": 2}) == ev.TokenUsage(5, 2, 7, 0, 0)


def test_tool_specs_wrap_functions():
    specs = chat_api.tool_specs(TOOLS.values())
    assert specs[0]["type"] == "function"
    assert specs[0]["function"]["name"] == "read"
    assert specs[0]["function"]["parameters"]["required"] == ["path"]


HISTORY = [
    ev.UserMessage("what is here?"),
    ev.AssistantStart(),
    ev.Reasoning("I should look"),
    ev.ToolCall("c1", "list", "{}"),
    ev.ToolCall("c2", "read", '{"path": "a.txt"}'),
    ev.TokenUsage(1, 1, 2, 0, 0),
    ev.ToolResult("c1", "a.txt", False),
    ev.ToolResult("c2", "alpha", False),
    ev.AssistantStart(),
    ev.AssistantMessage("There is a.txt saying alpha."),
    ev.TokenUsage(1, 1, 2, 0, 0),
    ev.UserMessage("thanks"),
]


def test_messages_from_history():
    messages = chat_api.messages_from_history("be brief", HISTORY)
    assert messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "what is here?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "list", "arguments": "{}"}},
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "read", "arguments": '{"path": "a.txt"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "a.txt"},
        {"role": "tool", "tool_call_id": "c2", "content": "alpha"},
        {"role": "assistant", "content": "There is a.txt saying alpha."},
        {"role": "user", "content": "thanks"},
    ]


def test_cancelled_turns_leave_a_valid_conversation():
    history = [
        ev.UserMessage("q1"),
        ev.AssistantStart(),
        ev.AssistantMessage("partial ans"),
        ev.Interrupted(),
        ev.UserMessage("q2"),
        ev.AssistantStart(),
        ev.ToolCall("c9", "bash", '{"command": "sleep 100"}'),  # no result: the turn was cancelled
        ev.Interrupted(),
        ev.UserMessage("q3"),
        ev.AssistantStart(),
        ev.Error("server down"),
    ]
    assert chat_api.messages_from_history(None, history) == [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "partial ans"},
        {"role": "user", "content": "q2"},
        {"role": "user", "content": "q3"},
    ]


def test_stream_reply_request_shape():
    sent = {}

    class Stream(list):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    class Completions:
        def create(self, **request):
            sent.update(request)
            return Stream([chunk({"content": "ok"}, finish="stop")])

    class Client:
        class chat:
            completions = Completions()

    reply = chat_api.stream_reply(
        Client(),
        model="m",
        system_prompt="sys",
        history=[ev.UserMessage("hi")],
        tools=TOOLS.values(),
        emit=lambda e: None,
        max_tokens=50,
    )
    assert reply.text == "ok"
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["tool_choice"] == "auto" and len(sent["tools"]) == 5
    assert sent["max_completion_tokens"] == 50
    assert sent["messages"][0] == {"role": "system", "content": "sys"}
