"""`run_agent` with a scripted SDK client: sessions, -c, option precedence, exit codes, JSON stdin."""

import io
import json

import pytest

from pi_ansible.agent import AgentError, run_agent
from pi_ansible.agent.sessions import latest_session, load_session, sessions_dir
from tests.unit.test_agent_loop import FakeClient, call_reply, text_reply


class Tty(io.StringIO):
    def isatty(self):
        return False


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("PI_CONFIG_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def go(tmp_path, client, *messages, **kw):
    out, err = io.StringIO(), io.StringIO()
    kw.setdefault("base_url", "http://127.0.0.1:1/v1")
    kw.setdefault("model", "m")
    code = run_agent(
        messages=list(messages), cwd=tmp_path, client=client, stdin=Tty(""), stdout=out, stderr=err, **kw
    )
    return code, out.getvalue(), err.getvalue()


def test_several_messages_in_order_into_one_session(tmp_path, state):
    client = FakeClient(text_reply("one"), text_reply("two"))
    code, out, _ = go(tmp_path, client, "first", "second", api_key="sk-abcdef")
    assert code == 0 and out == "one\ntwo\n"
    assert [m["content"] for m in client.requests[1]["messages"]][1:] == ["first", "one", "second"]
    path = latest_session(sessions_dir(tmp_path))
    assert path.parent.parent == state / "sessions"
    assert "sk-abcdef" not in path.read_text()
    assert [e.type for e in load_session(path).events].count("user_message") == 2


def test_continue_sends_the_history_and_keeps_the_session_config(tmp_path, state):
    go(tmp_path, FakeClient(text_reply("Hi Ada")), "I am Ada", model="first-model", system_prompt="custom")
    client = FakeClient(text_reply("Ada"))
    code, _, _ = go(tmp_path, client, "who am I?", model=None, continue_=True)
    assert code == 0
    request = client.requests[0]
    assert request["model"] == "first-model"
    assert [m["content"] for m in request["messages"]] == ["custom", "I am Ada", "Hi Ada", "who am I?"]
    sessions = list(sessions_dir(tmp_path).glob("*.jsonl"))
    assert len(sessions) == 1
    # an explicit option beats the session's
    client = FakeClient(text_reply("x"))
    go(tmp_path, client, "again", model="other", continue_=True)
    assert client.requests[0]["model"] == "other"


def test_a_new_run_starts_a_new_session(tmp_path, state):
    go(tmp_path, FakeClient(text_reply("a")), "one")
    client = FakeClient(text_reply("b"))
    go(tmp_path, client, "two")
    assert [m["content"] for m in client.requests[0]["messages"]][1:] == ["two"]
    assert len(list(sessions_dir(tmp_path).glob("*.jsonl"))) == 2


def test_json_output_lines(tmp_path, state):
    _, out, err = go(tmp_path, FakeClient(text_reply("hello")), "hi", json_output=True)
    types = [json.loads(line)["type"] for line in out.splitlines()]
    assert types == ["session_start", "user_message", "assistant_start", "assistant_message", "token_usage"]
    assert err == ""


def test_errors_raise_agent_error(tmp_path, state):
    with pytest.raises(AgentError, match="stopped after 1 model calls"):
        go(tmp_path, FakeClient(call_reply(("list", {}))), "loop", max_steps=1)
    with pytest.raises(AgentError, match="unknown API"):
        go(tmp_path, FakeClient(), "x", api="soap")


def test_model_comes_from_the_server_when_not_given(tmp_path, state):
    class Listed(FakeClient):
        class models:
            @staticmethod
            def list():
                return [type("M", (), {"id": "served-model"})()]

    client = Listed(text_reply("ok"))
    go(tmp_path, client, "hi", model=None)
    assert client.requests[0]["model"] == "served-model"


def test_message_from_stdin(tmp_path, state):
    client = FakeClient(text_reply("ok"))
    out = io.StringIO()
    run_agent(
        base_url="http://127.0.0.1:1/v1",
        model="m",
        cwd=tmp_path,
        client=client,
        stdin=Tty("piped question\n"),
        stdout=out,
        stderr=io.StringIO(),
    )
    assert client.requests[0]["messages"][-1]["content"] == "piped question\n"


def test_json_interactive_reads_messages_from_stdin(tmp_path, state):
    client = FakeClient(text_reply("a"), text_reply("b"))
    out = io.StringIO()
    lines = '{"type": "message", "content": "one"}\nplain two\n{"type": "bogus"}\n'
    code = run_agent(
        base_url="http://127.0.0.1:1/v1",
        model="m",
        cwd=tmp_path,
        client=client,
        stdin=Tty(lines),
        stdout=out,
        stderr=io.StringIO(),
        json_output=True,
        interactive=True,
    )
    assert code == 0
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["text"] for e in events if e["type"] == "user_message"] == ["one", "plain two"]
    assert events[-1]["type"] == "error"
