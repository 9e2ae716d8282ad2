"""Session files: where they live, what they hold (never the key), and how they are read back."""

import json
import os
import stat

import pytest

from pi_ansible.agent import events as ev
from pi_ansible.agent import sessions as s


def test_state_dir_follows_pi_config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PI_CONFIG_DIR", str(tmp_path / "state"))
    assert s.state_dir() == tmp_path / "state"
    assert s.sessions_dir("/home/me/proj").parent == tmp_path / "state" / "sessions"
    monkeypatch.delenv("PI_CONFIG_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert s.state_dir() == tmp_path / ".pi"


def test_encoded_cwd_is_readable_and_keeps_directories_apart():
    a, b = s.encode_cwd("/home/me/a-b"), s.encode_cwd("/home/me/a/b")
    assert a.startswith("--home-me-a-b--") and b.startswith("--home-me-a-b--")
    assert a != b  # pi mapped both to the same directory
    assert s.encode_cwd("/").startswith("--root--")
    assert "/" not in s.encode_cwd("/weird/ name\n/x")
    assert s.encode_cwd("/x") == s.encode_cwd("/x")


def writer_for(tmp_path, cwd="/proj"):
    config = s.SessionConfig(
        base_url="http://127.0.0.1:1/v1", model="m", api="completions", system_prompt="sp"
    )
    return s.SessionWriter(tmp_path / "sessions" / s.encode_cwd(cwd), cwd, config)


def test_file_appears_with_the_first_event_only(tmp_path):
    w = writer_for(tmp_path)
    assert w.path is None
    w(ev.AssistantDelta("streamed piece"))  # transient: not stored, no file
    assert w.path is None
    w(ev.UserMessage("hi"))
    assert w.path.is_file()
    assert w.path.suffix == ".jsonl"


def test_file_and_directory_modes(tmp_path):
    w = writer_for(tmp_path)
    w(ev.UserMessage("hi"))
    assert stat.S_IMODE(w.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(w.path.parent.stat().st_mode) == 0o700


def test_header_then_events_and_no_key(tmp_path):
    w = writer_for(tmp_path)
    for e in (
        ev.UserMessage("hi"),
        ev.AssistantStart(),
        ev.AssistantDelta("x"),
        ev.AssistantMessage("hello"),
        ev.TokenUsage(3, 2, 5, 0, 0),
    ):
        w(e)
    lines = [json.loads(line) for line in w.path.read_text().splitlines()]
    header = lines[0]
    assert header["type"] == "session" and header["id"] == w.session_id and header["cwd"] == "/proj"
    assert header["config"] == {
        "baseURL": "http://127.0.0.1:1/v1",
        "model": "m",
        "api": "completions",
        "systemPrompt": "sp",
    }
    assert "apiKey" not in json.dumps(lines)
    assert [line["event"]["type"] for line in lines[1:]] == [
        "user_message",
        "assistant_start",
        "assistant_message",
        "token_usage",
    ]
    assert all(line["type"] == "event" and line["timestamp"].endswith("Z") for line in lines[1:])


def test_load_round_trip_and_damaged_lines(tmp_path):
    w = writer_for(tmp_path)
    events = [ev.UserMessage("hi"), ev.ToolCall("c", "list", "{}"), ev.ToolResult("c", "a", False)]
    for e in events:
        w(e)
    with open(w.path, "a") as f:
        f.write('{"type": "event", "event": {"type": "assistant_mes')  # a crash mid-write
    loaded = s.load_session(w.path)
    assert loaded.events == events
    assert loaded.session_id == w.session_id
    assert loaded.config.model == "m"
    assert loaded.skipped_lines == 1


def test_continuing_appends_a_new_header_to_the_same_file(tmp_path):
    w = writer_for(tmp_path)
    w(ev.UserMessage("one"))
    loaded = s.load_session(w.path)
    config = s.SessionConfig("http://other/v1", "m2", "responses", None)
    w2 = s.SessionWriter(w.directory, "/proj", config, path=loaded.path, session_id=loaded.session_id)
    w2(ev.UserMessage("two"))
    assert w2.path == w.path
    again = s.load_session(w.path)
    assert [e.text for e in again.events] == ["one", "two"]
    assert again.config.model == "m2"  # the latest header wins
    headers = [json.loads(x) for x in w.path.read_text().splitlines() if '"session"' in x]
    assert len(headers) == 2 and {h["id"] for h in headers} == {w.session_id}


def test_latest_session_is_the_last_used(tmp_path):
    d = tmp_path / "d"
    assert s.latest_session(d) is None
    d.mkdir()
    old, new = d / "2020-01-01T00-00-00-000000Z.jsonl", d / "2021-01-01T00-00-00-000000Z.jsonl"
    old.write_text("")
    new.write_text("")
    os.utime(old, (2_000_000_000, 2_000_000_000))  # the older one was continued last
    os.utime(new, (1_000_000_000, 1_000_000_000))
    assert s.latest_session(d) == old


def test_two_sessions_in_the_same_instant_get_two_files(tmp_path, monkeypatch):
    import datetime as dt

    fixed = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    monkeypatch.setattr(s, "_now", lambda: fixed)
    a, b = writer_for(tmp_path), writer_for(tmp_path)
    a(ev.UserMessage("a"))
    b(ev.UserMessage("b"))
    assert a.path != b.path


@pytest.mark.parametrize("junk", ["not json\n", '{"type": "event", "event": {"type": "nope"}}\n', "[1]\n"])
def test_junk_lines_are_skipped(tmp_path, junk):
    p = tmp_path / "x.jsonl"
    p.write_text(junk + json.dumps({"type": "event", "event": {"type": "user_message", "text": "ok"}}) + "\n")
    loaded = s.load_session(p)
    assert loaded.events == [ev.UserMessage("ok")] and loaded.skipped_lines == 1
