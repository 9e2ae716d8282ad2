"""The event model and its JSON Schema (the contract of `pi-agent --json`)."""

import json

import jsonschema
import pytest

from pi_ansible.agent import events as ev

SAMPLES = [
    ev.SessionStart("id-1", "m", "completions", "http://127.0.0.1:1/v1", "be brief"),
    ev.UserMessage("hi"),
    ev.AssistantStart(),
    ev.AssistantDelta("h"),
    ev.ReasoningDelta("t"),
    ev.Reasoning("thinking"),
    ev.AssistantMessage("hello"),
    ev.ToolCall("call_1", "read", '{"path": "a.txt"}'),
    ev.ToolResult("call_1", "text", False),
    ev.TokenUsage(10, 5, 15, 2, 0),
    ev.TokenUsage(10, 5, 15, 0, 0, reasoning_tokens=3),
    ev.Error("boom"),
    ev.Interrupted(),
]


@pytest.fixture(scope="module")
def validator():
    schema = ev.load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type)
def test_every_event_validates_and_round_trips(event, validator):
    data = json.loads(event.to_json())
    validator.validate(data)
    assert ev.event_from_dict(data) == event


def test_schema_covers_exactly_the_event_types():
    schema = ev.load_schema()
    consts = {d["properties"]["type"]["const"] for d in schema["$defs"].values() if "properties" in d}
    assert consts == set(ev.EVENT_TYPES)


def test_json_names_follow_pi():
    assert ev.ToolCall("c", "read", "{}").to_dict() == {
        "type": "tool_call",
        "toolCallId": "c",
        "name": "read",
        "args": "{}",
    }
    assert ev.ToolResult("c", "r", True).to_dict() == {
        "type": "tool_result",
        "toolCallId": "c",
        "result": "r",
        "isError": True,
    }
    assert ev.SessionStart("s", "m", "responses", "u", "p").to_dict()["baseURL"] == "u"
    usage = ev.TokenUsage(1, 2, 3, 4, 5).to_dict()
    assert usage == {
        "type": "token_usage",
        "inputTokens": 1,
        "outputTokens": 2,
        "totalTokens": 3,
        "cacheReadTokens": 4,
        "cacheWriteTokens": 5,
    }
    assert ev.TokenUsage(1, 2, 3, 0, 0, 7).to_dict()["reasoningTokens"] == 7


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "tool_call", "toolCallId": "c", "name": "read"},  # no args
        {
            "type": "token_usage",
            "inputTokens": -1,
            "outputTokens": 0,
            "totalTokens": 0,
            "cacheReadTokens": 0,
            "cacheWriteTokens": 0,
        },
        {"type": "user_message", "text": "x", "apiKey": "sk-1"},  # nothing extra, a key least of all
        {"type": "nope"},
    ],
)
def test_schema_rejects(bad, validator):
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)


def test_event_from_dict_rejects_junk():
    for junk in ({"type": "nope"}, {"type": "tool_call"}, ["x"]):
        with pytest.raises(ValueError):
            ev.event_from_dict(junk)


def test_transient_events_are_only_the_deltas():
    assert {t for t, cls in ev.EVENT_TYPES.items() if cls.transient} == {"assistant_delta", "reasoning_delta"}


def test_usage_sums():
    total = ev.total_usage(
        [ev.TokenUsage(1, 2, 3, 1, 0), ev.UserMessage("x"), ev.TokenUsage(10, 20, 30, 0, 0, 4)]
    )
    assert total == ev.TokenUsage(11, 22, 33, 1, 0, 4)
    assert ev.total_usage([]).reasoning_tokens is None
