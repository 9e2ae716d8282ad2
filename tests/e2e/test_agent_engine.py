"""`pi-agent` against the lab's engine double (a vLLM 0.33 stand-in on 127.0.0.1).

The double's model is deterministic: it calls the offered tools the user's message names, in order,
with arguments from the message's backtick-quoted strings, then answers quoting what the tools
returned; with no tool named it echoes the question. Each scenario runs both through Click's
CliRunner and through the installed console script `pi-agent`.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from pi_ansible.agent.cli import agent_command
from pi_ansible.agent.events import load_schema
from tests.helpers.engine import running_engine_double

PI_AGENT = str(Path(sys.executable).with_name("pi-agent"))
TOOL_ARGS = ["--enable-auto-tool-choice", "--tool-call-parser", "hermes", "--reasoning-parser", "qwen3"]
CODEWORD = "The codeword is walrus-42."
ASK_TOOLS = "Use list to see the files, then read `notes.txt` and tell me the codeword."
VALIDATOR = jsonschema.Draft202012Validator(load_schema())

pytestmark = pytest.mark.skipif(
    not Path(PI_AGENT).exists(), reason="pi-agent not installed (pip install -e .)"
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with running_engine_double(tmp_path_factory.mktemp("engine"), args=TOOL_ARGS) as eng:
        yield eng


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "notes.txt").write_text(CODEWORD + "\n")
    (root / "src" / "main.py").write_text("print('hi')\n")
    return root


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


@pytest.fixture
def state(tmp_path):
    return tmp_path / "state"


@pytest.fixture(params=["clirunner", "console"])
def agent(request, engine, project, state, monkeypatch):
    """Run pi-agent in the project directory with the double's key in OPENAI_API_KEY."""
    base_env = {
        "PI_CONFIG_DIR": str(state),
        "OPENAI_API_KEY": engine.api_key,
        "PI_API_KEY": None,
        "NO_COLOR": "1",
    }

    def run(*args: str, env: dict | None = None, cwd: Path | None = None) -> Run:
        full_env = {**base_env, **(env or {})}
        if request.param == "clirunner":
            monkeypatch.chdir(cwd or project)
            result = CliRunner().invoke(agent_command, list(args), env=full_env, catch_exceptions=False)
            return Run(result.exit_code, result.stdout, result.stderr)
        environ = {k: v for k, v in {**os.environ, **full_env}.items() if v is not None}
        proc = subprocess.run(
            [PI_AGENT, *args],
            cwd=cwd or project,
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    run.mode = request.param
    return run


def session_files(state: Path) -> list[Path]:
    return sorted((state / "sessions").rglob("*.jsonl"))


def session_events(path: Path) -> list[dict]:
    return [r["event"] for r in map(json.loads, path.read_text().splitlines()) if r["type"] == "event"]


def assert_no_secret(engine, run: Run, state: Path) -> None:
    assert engine.api_key not in run.stdout + run.stderr
    for f in session_files(state):
        assert engine.api_key not in f.read_text()
        assert oct(f.stat().st_mode & 0o777) == "0o600"


def test_one_shot_question(agent, engine, state):
    run = agent("--base-url", engine.base_url, "What is the capital of France?")
    assert run.code == 0, run.stderr
    assert run.stdout == (
        "You asked: What is the capital of France?\n"
        f"This is a deterministic answer from the vLLM lab double serving {engine.model}.\n"
    )
    assert "[thinking]" in run.stderr  # the reasoning parser's text, kept off stdout
    assert_no_secret(engine, run, state)


def test_several_messages_are_sent_in_order(agent, engine, state):
    run = agent("--base-url", engine.base_url, "--model", engine.model, "first question", "second question")
    assert run.code == 0, run.stderr
    assert run.stdout.index("You asked: first question") < run.stdout.index("You asked: second question")
    (path,) = session_files(state)
    asked = [e["text"] for e in session_events(path) if e["type"] == "user_message"]
    assert asked == ["first question", "second question"]


@pytest.mark.parametrize("api", ["completions", "responses"])
def test_list_and_read_then_answer(agent, engine, state, api):
    run = agent("--base-url", engine.base_url, "--api", api, ASK_TOOLS)
    assert run.code == 0, run.stderr
    # the answer is built from what the tools returned
    assert "- list: notes.txt\nsrc/" in run.stdout
    assert f"- read: {CODEWORD}" in run.stdout
    assert re.search(r"list\(\)\n.*2 lines\n", run.stderr)
    assert "read(path='notes.txt')" in run.stderr
    (path,) = session_files(state)
    header = json.loads(path.read_text().splitlines()[0])
    assert header["config"]["api"] == api and "apiKey" not in header["config"]
    events = session_events(path)
    calls = [(e["name"], json.loads(e["args"])) for e in events if e["type"] == "tool_call"]
    assert calls == [("list", {}), ("read", {"path": "notes.txt"})]
    results = [e for e in events if e["type"] == "tool_result"]
    assert [r["result"] for r in results] == ["notes.txt\nsrc/", CODEWORD + "\n"]
    assert not any(r["isError"] for r in results)
    assert sum(e["type"] == "token_usage" for e in events) == 3  # one per model call
    assert_no_secret(engine, run, state)


@pytest.mark.parametrize("api", ["completions", "responses"])
def test_json_output_is_valid_against_the_schema(agent, engine, api):
    run = agent("--base-url", engine.base_url, "--api", api, "--json", ASK_TOOLS)
    assert run.code == 0, run.stderr
    events = run.events
    for event in events:
        VALIDATOR.validate(event)
    assert [e["type"] for e in events] == [
        "session_start", "user_message",
        "assistant_start", "reasoning", "tool_call", "token_usage", "tool_result",
        "assistant_start", "reasoning", "tool_call", "token_usage", "tool_result",
        "assistant_start", "reasoning", "assistant_message", "token_usage",
    ]  # fmt: skip
    assert events[0]["api"] == api and events[0]["model"] == engine.model
    assert CODEWORD in events[-2]["text"]
    calls = {e["toolCallId"] for e in events if e["type"] == "tool_call"}
    assert calls == {e["toolCallId"] for e in events if e["type"] == "tool_result"}
    usage = events[-1]
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"] > 0
    if api == "responses":
        assert usage["reasoningTokens"] > 0
    assert run.stderr == ""


def _words(text: str) -> int:
    return len(re.findall(r"\w+|[^\w\s]", text))


@pytest.mark.parametrize("api", ["completions", "responses"])
def test_continue_sends_the_earlier_history(agent, engine, state, project, api):
    first = "Remember that my favourite animal is the walrus and my favourite colour is teal."
    question = "Which animal did I mention?"
    one = agent("--base-url", engine.base_url, "--api", api, "--json", first)
    assert one.code == 0, one.stderr
    earlier_answer = one.events[-2]["text"]
    # no --api or --model: they come from the session
    two = agent("--base-url", engine.base_url, "--json", "-c", question)
    assert two.code == 0, two.stderr
    assert two.events[0]["api"] == api
    (path,) = session_files(state)  # continued in the same file
    events = session_events(path)
    assert [e["text"] for e in events if e["type"] == "user_message"] == [first, question]
    assert [e["text"] for e in events if e["type"] == "assistant_message"] == [
        earlier_answer,
        two.events[-2]["text"],
    ]
    assert sum(json.loads(line)["type"] == "session" for line in path.read_text().splitlines()) == 2

    # The same question in a fresh session: the continued request was larger by the earlier exchange.
    fresh = agent("--base-url", engine.base_url, "--api", api, "--json", question)
    continued_in = two.events[-1]["inputTokens"]
    fresh_in = fresh.events[-1]["inputTokens"]
    assert continued_in - fresh_in >= _words(first) + _words(earlier_answer)
    assert len(session_files(state)) == 2


def test_wrong_api_key(agent, engine, state):
    run = agent(
        "--base-url", engine.base_url, "--model", engine.model, "hello", env={"OPENAI_API_KEY": "sk-wrong"}
    )
    assert run.code == 1
    assert run.stderr == (
        f"Error: the server at {engine.base_url} refused the API key (401). Set the right key with --api-key or "
        "OPENAI_API_KEY/PI_API_KEY.\n"
    )
    assert "Traceback" not in run.stdout + run.stderr
    assert "sk-wrong" not in run.stdout + run.stderr


def test_wrong_api_key_while_finding_the_model(agent, engine):
    run = agent("--base-url", engine.base_url, "--api-key", "sk-wrong", "hello")
    assert run.code == 1
    assert run.stderr.startswith(f"Error: the server at {engine.base_url} refused the API key (401).")
    assert run.stderr.count("\n") == 1


def test_no_key_for_a_server_that_wants_one(agent, engine):
    run = agent("--base-url", engine.base_url, "hello", env={"OPENAI_API_KEY": None})
    assert run.code == 1
    assert (
        run.stderr
        == f"Error: the server at {engine.base_url} needs an API key (401). Set it with --api-key or OPENAI_API_KEY/PI_API_KEY.\n"
    )


def test_unknown_model(agent, engine):
    run = agent("--base-url", engine.base_url, "--model", "no/such-model", "hello")
    assert run.code == 1
    assert run.stderr.startswith(
        f"Error: the server at {engine.base_url} answered 404 for model 'no/such-model': The model `no/such-model` "
        f"does not exist. Check --model against {engine.base_url}/models"
    )
    assert run.stderr.count("\n") == 1


def test_unreachable_url(agent):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = agent("--base-url", f"http://127.0.0.1:{port}/v1", "--api-key", "sk-x", "hello")
    assert run.code == 1
    assert run.stderr == (
        f"Error: could not reach the server at http://127.0.0.1:{port}/v1 (connection refused). "
        "Check --base-url and that the model is running (pi list shows running models).\n"
    )
    assert run.stdout == ""


@pytest.fixture(scope="module")
def failing_engine(tmp_path_factory):
    """Every generation request answers HTTP 500 (as vLLM does once its engine core has died)."""
    with running_engine_double(
        tmp_path_factory.mktemp("failing"), args=TOOL_ARGS, env={"PI_LAB_VLLM_FAIL_REQUESTS": "all"}
    ) as eng:
        yield eng


@pytest.mark.parametrize("api", ["completions", "responses"])
def test_server_error(agent, failing_engine, api):
    run = agent(
        "--base-url",
        failing_engine.base_url,
        "--api",
        api,
        "hello",
        env={"OPENAI_API_KEY": failing_engine.api_key},
    )
    assert run.code == 1
    assert run.stderr == (
        f"Error: the server at {failing_engine.base_url} failed with HTTP 500: EngineCore encountered an issue. "
        "See stack trace (above) for the root cause. Check the server's log (pi logs NAME for a pi model) and "
        "try again.\n"
    )
    assert "Traceback" not in run.stdout + run.stderr


def test_one_failed_request_is_retried(tmp_path, project, state, monkeypatch):
    with running_engine_double(
        tmp_path / "engine", args=TOOL_ARGS, env={"PI_LAB_VLLM_FAIL_REQUESTS": "1"}
    ) as eng:
        monkeypatch.chdir(project)
        result = CliRunner().invoke(
            agent_command,
            ["--base-url", eng.base_url, "hello"],
            env={"PI_CONFIG_DIR": str(state), "OPENAI_API_KEY": eng.api_key},
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.stderr
        assert result.stdout.startswith("You asked: hello")
        assert eng.log_text().count("Error in generation") == 1


def test_tool_errors_go_back_to_the_model(agent, engine, state):
    run = agent("--base-url", engine.base_url, "Please read `missing.txt` for me.")
    assert run.code == 0, run.stderr
    assert "- read: File not found:" in run.stdout
    (path,) = session_files(state)
    (result,) = [e for e in session_events(path) if e["type"] == "tool_result"]
    assert result["isError"] is True


HUB = Path(__file__).resolve().parents[2] / "pi_ansible" / "lab" / "hub_models"


@pytest.fixture(scope="module")
def gpt_oss(tmp_path_factory):
    model_dir = HUB / "openai" / "gpt-oss-20b"
    config = json.loads((model_dir / "config.json").read_text())
    index = json.loads((model_dir / "model.safetensors.index.json").read_text())
    with running_engine_double(
        tmp_path_factory.mktemp("gpt-oss"), model="openai/gpt-oss-20b", config=config, index=index
    ) as eng:
        yield eng


def test_gpt_oss_over_the_responses_api(gpt_oss, project, state, monkeypatch):
    """pi agent picks the Responses API for gpt-oss: reasoning items and function calls, no tool parser."""
    monkeypatch.chdir(project)
    result = CliRunner().invoke(
        agent_command,
        ["--base-url", gpt_oss.base_url, "--api", "responses", "--json", ASK_TOOLS],
        env={"PI_CONFIG_DIR": str(state), "OPENAI_API_KEY": gpt_oss.api_key},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    for event in events:
        VALIDATOR.validate(event)
    assert events[0]["model"] == "openai/gpt-oss-20b"
    assert [e["name"] for e in events if e["type"] == "tool_call"] == ["list", "read"]
    assert sum(e["type"] == "reasoning" for e in events) == 3
    assert CODEWORD in events[-2]["text"]
    assert events[-1]["reasoningTokens"] > 0
