"""`pi-agent -i` in a real terminal (pexpect), against the engine double streaming slowly.

A question and its streamed answer, a Ctrl+C in the middle of an answer (the turn ends, the session
goes on), a follow-up, prompt history and multi-line input, then Ctrl+D.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pexpect
import pytest

from tests.helpers.engine import running_engine_double

PI_AGENT = str(Path(sys.executable).with_name("pi-agent"))
DELAY = 0.1  # seconds between streamed pieces (the double's PI_LAB_VLLM_STREAM_DELAY_SECONDS)
LONG_QUESTION = "Tell me a long story about " + " ".join(f"topic{n}" for n in range(80)) + " please."

pytestmark = pytest.mark.skipif(
    not Path(PI_AGENT).exists(), reason="pi-agent not installed (pip install -e .)"
)


@pytest.fixture(scope="module")
def slow_engine(tmp_path_factory):
    args = ["--enable-auto-tool-choice", "--tool-call-parser", "hermes", "--reasoning-parser", "qwen3"]
    with running_engine_double(
        tmp_path_factory.mktemp("engine"), args=args, env={"PI_LAB_VLLM_STREAM_DELAY_SECONDS": DELAY}
    ) as eng:
        yield eng


@pytest.fixture
def chat(slow_engine, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    env = {
        **os.environ,
        "PI_CONFIG_DIR": str(tmp_path / "state"),
        "OPENAI_API_KEY": slow_engine.api_key,
        "NO_COLOR": "1",
        "TERM": "xterm",
    }
    child = pexpect.spawn(
        PI_AGENT,
        ["-i", "--base-url", slow_engine.base_url],
        cwd=str(project),
        env=env,
        encoding="utf-8",
        timeout=30,
        dimensions=(40, 200),
    )
    yield child, tmp_path / "state"
    if child.isalive():
        child.terminate(force=True)


def test_chat_with_cancel_followup_and_exit(chat, slow_engine):
    child, state = chat
    child.expect_exact(f"pi-agent · {slow_engine.model} at {slow_engine.base_url}")
    child.expect_exact("pi> ")

    # a question and its streamed answer
    child.sendline("What is two plus two?")
    child.expect_exact("[thinking] ")  # the reasoning, streamed before the answer
    child.expect_exact("You asked: What is two plus two?")
    child.expect_exact(f"deterministic answer from the vLLM lab double serving {slow_engine.model}.")
    child.expect(r"↑\d+ ↓\d+")  # the turn's token usage
    child.expect_exact("pi> ")

    # Ctrl+C while the answer streams: the turn ends at once, the chat goes on
    child.sendline(LONG_QUESTION)
    child.expect_exact("You asked: Tell me a long story")
    child.expect_exact("topic3")
    started = time.monotonic()
    child.sendintr()
    child.expect_exact("[cancelled]")
    child.expect_exact("pi> ")
    assert time.monotonic() - started < 5
    assert "topic79" not in child.before  # the rest of the answer never came

    # a follow-up in the same session
    child.sendline("And a follow-up?")
    child.expect_exact("You asked: And a follow-up?")
    child.expect_exact("pi> ")

    # prompt history: Up brings back the last message; Ctrl+C at the prompt clears the line
    child.send("\x1b[A")
    child.expect_exact("And a follow-up?")
    child.sendintr()
    child.expect_exact("pi> ")

    # multi-line input: a line ending in a backslash goes on
    child.sendline("first line \\")
    child.expect_exact("... ")
    child.sendline("second line")
    child.expect_exact("You asked: first line")
    child.expect_exact("second line")
    child.expect_exact("pi> ")

    # Ctrl+D exits
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    (path,) = (state / "sessions").rglob("*.jsonl")
    events = [r["event"] for r in map(json.loads, path.read_text().splitlines()) if r["type"] == "event"]
    asked = [e["text"] for e in events if e["type"] == "user_message"]
    assert asked == ["What is two plus two?", LONG_QUESTION, "And a follow-up?", "first line \nsecond line"]
    assert [e["type"] for e in events].count("interrupted") == 1
    cut = events[[e["type"] for e in events].index("interrupted") - 1]
    assert cut["type"] == "assistant_message" and cut["text"].startswith("You asked: Tell me a long story")
    assert "topic79" not in cut["text"]
    history = (state / "agent_history").read_text()
    assert "And a follow-up?" in history
    assert oct((state / "agent_history").stat().st_mode & 0o777) == "0o600"


def test_continue_in_a_chat(slow_engine, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    env = {
        **os.environ,
        "PI_CONFIG_DIR": str(tmp_path / "state"),
        "OPENAI_API_KEY": slow_engine.api_key,
        "NO_COLOR": "1",
        "TERM": "xterm",
    }
    for args, question in ((["-i"], "My first message"), (["-i", "-c"], "My second message")):
        child = pexpect.spawn(
            PI_AGENT,
            [*args, "--base-url", slow_engine.base_url],
            cwd=str(project),
            env=env,
            encoding="utf-8",
            timeout=30,
        )
        try:
            if "-c" in args:
                child.expect_exact("Continuing ")
                child.expect_exact("1 earlier message(s)")
            child.expect_exact("pi> ")
            child.sendline(question)
            child.expect_exact(f"You asked: {question}")
            child.expect_exact("pi> ")
            child.sendline("/tokens")
            child.expect(r"session: ↑\d+ ↓\d+")
            child.sendeof()
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
        assert child.exitstatus == 0
    (path,) = (tmp_path / "state" / "sessions").rglob("*.jsonl")
    assert path.read_text().count('"user_message"') == 2
