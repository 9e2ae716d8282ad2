"""The turn loop against a scripted SDK client (no HTTP): tools run, results go back, limits hold."""

import json
import re

import httpx2
import openai
import pytest

from pi_ansible.agent import events as ev
from pi_ansible.agent.loop import CANCELLED, Agent
from pi_ansible.agent.tools import ToolContext


def text_reply(text, usage=(10, 2)):
    return [
        {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
        for piece in re.findall(r"\S+\s*", text)
    ] + [{"choices": [], "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}}]


def call_reply(*calls):
    return [
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": n,
                                "id": f"call_{name}_{n}",
                                "function": {"name": name, "arguments": json.dumps(args)},
                            }
                        ]
                    },
                }
            ]
        }
        for n, (name, args) in enumerate(calls)
    ] + [{"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}]


class Stream:
    def __init__(self, items):
        self.items = items
        self.closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.closed = True
        return False

    def __iter__(self):
        for item in self.items:
            if isinstance(item, BaseException):
                raise item
            yield item


class FakeClient:
    def __init__(self, *replies):
        self.replies = list(replies)
        self.requests = []
        self.streams = []
        self.chat = self
        self.completions = self

    def create(self, **request):
        self.requests.append(json.loads(json.dumps(request)))
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        stream = Stream(reply)
        self.streams.append(stream)
        return stream


def make_agent(tmp_path, client, **kw):
    seen = []
    agent = Agent(
        client=client,
        model="m",
        api="completions",
        base_url="http://127.0.0.1:1/v1",
        system_prompt="sys",
        tools=ToolContext(cwd=tmp_path),
        emit=seen.append,
        **kw,
    )
    return agent, seen


def types(events):
    return [e.type for e in events if not e.transient]


def test_plain_answer(tmp_path):
    agent, seen = make_agent(tmp_path, FakeClient(text_reply("Hello there")))
    outcome = agent.send("hi")
    assert outcome.status == "answered" and outcome.text == "Hello there"
    assert types(seen) == ["user_message", "assistant_start", "assistant_message", "token_usage"]
    assert [e.text for e in seen if e.type == "assistant_delta"] == ["Hello ", "there"]


def test_tools_run_and_results_go_back(tmp_path):
    (tmp_path / "notes.txt").write_text("codeword: walrus\n")
    client = FakeClient(call_reply(("list", {}), ("read", {"path": "notes.txt"})), text_reply("It is walrus"))
    agent, seen = make_agent(tmp_path, client)
    assert agent.send("what is the codeword?").status == "answered"
    assert types(seen) == [
        "user_message",
        "assistant_start",
        "tool_call",
        "tool_call",
        "token_usage",
        "tool_result",
        "tool_result",
        "assistant_start",
        "assistant_message",
        "token_usage",
    ]
    results = [e for e in seen if isinstance(e, ev.ToolResult)]
    assert results[0].result == "notes.txt" and results[1].result == "codeword: walrus\n"
    second = client.requests[1]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "tool", "tool"]
    assert second[-1] == {"role": "tool", "tool_call_id": "call_read_1", "content": "codeword: walrus\n"}


def test_tool_errors_go_back_to_the_model(tmp_path):
    client = FakeClient(call_reply(("read", {"path": "missing"}), ("nosuch", {})), text_reply("sorry"))
    agent, seen = make_agent(tmp_path, client)
    assert agent.send("read it").status == "answered"
    results = [e for e in seen if isinstance(e, ev.ToolResult)]
    assert all(r.is_error for r in results)
    assert "File not found" in results[0].result and "Unknown tool" in results[1].result


def test_the_step_limit_stops_a_model_that_never_answers(tmp_path):
    client = FakeClient(*[call_reply(("list", {})) for _ in range(3)])
    agent, seen = make_agent(tmp_path, client, max_steps=3)
    outcome = agent.send("loop forever")
    assert outcome.status == "step_limit"
    assert len(client.requests) == 3
    assert seen[-1].type == "error" and "stopped after 3 model calls" in seen[-1].message


def test_ctrl_c_mid_stream_keeps_what_was_said(tmp_path):
    client = FakeClient(
        [{"choices": [{"index": 0, "delta": {"content": "Once upon"}}]}, KeyboardInterrupt()],
        text_reply("fine"),
    )
    agent, seen = make_agent(tmp_path, client)
    assert agent.send("tell a story").status == "interrupted"
    assert client.streams[0].closed
    assert types(seen)[-2:] == ["assistant_message", "interrupted"]
    assert seen[-2].text == "Once upon"
    assert agent.send("shorter please").status == "answered"  # the session goes on
    roles = [(m["role"], m["content"]) for m in client.requests[1]["messages"]]
    assert roles == [
        ("system", "sys"),
        ("user", "tell a story"),
        ("assistant", "Once upon"),
        ("user", "shorter please"),
    ]


def test_ctrl_c_during_a_tool_answers_the_open_calls(tmp_path, monkeypatch):
    from pi_ansible.agent import loop

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "run_tool", interrupted)
    client = FakeClient(call_reply(("bash", {"command": "sleep 100"})), text_reply("ok"))
    agent, seen = make_agent(tmp_path, client)
    assert agent.send("run it").status == "interrupted"
    result = next(e for e in seen if isinstance(e, ev.ToolResult))
    assert result.is_error and result.result == CANCELLED
    agent.send("again")
    assert [m["role"] for m in client.requests[1]["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "user",
    ]


def _status_error(cls, status, body):
    request = httpx2.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    response = httpx2.Response(status, request=request, json=body)
    return cls(f"Error code: {status}", response=response, body=body)


@pytest.mark.parametrize(
    "exc, expected",
    [
        (
            _status_error(openai.AuthenticationError, 401, {"error": {"message": "bad key"}}),
            "the server at http://127.0.0.1:1/v1 refused the API key (401). Set the right key with --api-key or "
            "OPENAI_API_KEY/PI_API_KEY.",
        ),
        (
            _status_error(openai.InternalServerError, 500, {"message": "engine\ncrashed"}),
            "the server at http://127.0.0.1:1/v1 failed with HTTP 500: engine crashed. Check the server's log",
        ),
        (
            _status_error(openai.NotFoundError, 404, {"error": {"message": "The model `x` does not exist."}}),
            "answered 404 for model 'm': The model `x` does not exist. Check --model against "
            "http://127.0.0.1:1/v1/models",
        ),
        (
            openai.APIConnectionError(request=httpx2.Request("POST", "http://127.0.0.1:1/v1")),
            "could not reach the server at http://127.0.0.1:1/v1",
        ),
    ],
)
def test_api_failures_become_one_line_errors(tmp_path, exc, expected):
    agent, seen = make_agent(tmp_path, FakeClient(exc), api_key="sk-secret-key")
    outcome = agent.send("hi")
    assert outcome.status == "error"
    assert expected in outcome.error
    assert "\n" not in outcome.error
    assert seen[-1] == ev.Error(outcome.error)


def test_unknown_exceptions_are_bugs_and_propagate(tmp_path):
    agent, _ = make_agent(tmp_path, FakeClient(ZeroDivisionError()))
    with pytest.raises(ZeroDivisionError):
        agent.send("hi")


def test_history_continues_from_loaded_events(tmp_path):
    earlier = [ev.UserMessage("my name is Ada"), ev.AssistantStart(), ev.AssistantMessage("Hi Ada")]
    client = FakeClient(text_reply("Ada"))
    agent, _ = make_agent(tmp_path, client, history=earlier)
    agent.send("what is my name?")
    contents = [m["content"] for m in client.requests[0]["messages"]]
    assert contents == ["sys", "my name is Ada", "Hi Ada", "what is my name?"]
