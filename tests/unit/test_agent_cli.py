"""`pi-agent` options and the errors that need no server (a closed port stands for an unreachable one)."""

import json
import socket

import jsonschema
import pytest
from click.testing import CliRunner

from pi_ansible.agent.cli import agent_command
from pi_ansible.agent.events import load_schema

SECRET = "sk-test-never-shown-0123456789"


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("PI_CONFIG_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("PI_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args, input=None, env=None):
    return CliRunner().invoke(agent_command, list(args), input=input, env=env, catch_exceptions=False)


def test_help():
    result = run("--help")
    assert result.exit_code == 0
    for option in ("--base-url", "--api-key", "--model", "--api", "--system-prompt", "--json", "-i", "-c,"):
        assert option in result.output


def test_bad_api_is_a_usage_error():
    result = run("--api", "soap", "hi")
    assert result.exit_code == 2
    assert "'soap' is not one of 'completions', 'responses'" in result.output


def test_openai_without_a_key():
    result = run("hi")
    assert result.exit_code == 1
    assert result.output == "Error: no API key for OpenAI. Pass --api-key or set OPENAI_API_KEY.\n"


def test_nothing_to_send():
    result = run("--base-url", "http://127.0.0.1:1/v1", "--model", "m", input="")
    assert result.exit_code == 1
    assert "nothing to send" in result.output


@pytest.mark.parametrize("model", [None, "m"])  # without a model, the server's list is asked first
def test_unreachable_server_is_one_line(model):
    port = closed_port()
    args = ["--base-url", f"http://127.0.0.1:{port}/v1", "--api-key", SECRET, "hello"]
    if model:
        args[:0] = ["--model", model]
    result = run(*args)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: could not reach the server at http://127.0.0.1:{port}/v1 (connection refused). "
        "Check --base-url and that the model is running (pi list shows running models).\n"
    )
    assert "Traceback" not in result.output


def test_unreachable_server_in_json_mode_emits_an_error_event(tmp_path):
    port = closed_port()
    result = CliRunner().invoke(
        agent_command,
        ["--json", "--model", "m", "--base-url", f"http://127.0.0.1:{port}/v1", "hello"],
        env={"OPENAI_API_KEY": SECRET},
    )
    assert result.exit_code == 1
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    validator = jsonschema.Draft202012Validator(load_schema())
    for line in lines:
        validator.validate(json.loads(line))
    assert [json.loads(line)["type"] for line in lines] == [
        "session_start",
        "user_message",
        "assistant_start",
        "error",
    ]
    assert "could not reach" in json.loads(lines[-1])["message"]
    assert result.stderr.startswith("Error: could not reach")
    assert SECRET not in result.output
    for f in (tmp_path / "state").rglob("*.jsonl"):
        assert SECRET not in f.read_text()


def test_continue_without_an_earlier_session_says_so():
    port = closed_port()
    result = run("-c", "--model", "m", "--base-url", f"http://127.0.0.1:{port}/v1", "hello")
    assert "No earlier session in" in result.output
    assert result.exit_code == 1
