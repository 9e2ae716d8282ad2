"""Interactive chat (`-i`) on a plain terminal, with the standard library's readline.

Enter sends; a line ending in `\\` continues on the next line, and a `\"\"\"` line opens a block that the
next `\"\"\"` line closes. Up/Down walk the prompt history (kept, 0600, in $PI_CONFIG_DIR/agent_history).
Ctrl+C cancels the answer being streamed (the session goes on) or clears the line being typed;
Ctrl+D on an empty prompt exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

from pi_ansible.agent.events import Error, TokenUsage, ToolCall, UserMessage, total_usage
from pi_ansible.agent.loop import Agent
from pi_ansible.agent.render import TextRenderer
from pi_ansible.agent.sessions import state_dir

PROMPT = "pi> "
CONTINUATION = "... "
BLOCK = '"""'
HISTORY_FILE = "agent_history"
HELP = (
    'Enter sends. End a line with \\ to go on, or put a block between two """ lines.\n'
    "Ctrl+C cancels the answer (the session goes on); Ctrl+D exits.\n"
    "/tokens shows the session's token usage, /session its file, /exit leaves."
)


def read_message(read_line: Callable[[str], str]) -> str:
    """One message from the user; raises EOFError at Ctrl+D, KeyboardInterrupt at Ctrl+C."""
    line = read_line(PROMPT)
    if line.strip() == BLOCK:
        lines = []
        while (line := read_line(CONTINUATION)).strip() != BLOCK:
            lines.append(line)
        return "\n".join(lines)
    lines = []
    while line.endswith("\\"):
        lines.append(line[:-1])
        line = read_line(CONTINUATION)
    lines.append(line)
    return "\n".join(lines)


@contextlib.contextmanager
def _readline_history(enabled: bool):
    if not enabled:
        yield
        return
    try:
        import readline
    except ImportError:  # pragma: no cover - platforms without readline
        yield
        return
    path = state_dir() / HISTORY_FILE
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    readline.set_history_length(1000)
    try:
        yield
    finally:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
            os.chmod(path, 0o600)  # prompts can hold anything the user typed
            readline.write_history_file(path)
        except OSError:
            pass


def _line_reader(stdin: IO[str], stdout: IO[str]) -> tuple[Callable[[str], str], bool]:
    """`input()` (with readline) on a terminal; plain line reads otherwise."""
    if stdin is sys.stdin and stdin.isatty() and stdout is sys.stdout:
        return input, True

    def read_line(prompt: str) -> str:
        stdout.write(prompt)
        stdout.flush()
        line = stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    return read_line, False


def _usage_since(agent: Agent, start: int) -> tuple[TokenUsage, int]:
    new = agent.history[start:]
    return total_usage(new), sum(isinstance(e, ToolCall) for e in new)


def run_interactive(
    agent: Agent,
    renderer: TextRenderer,
    writer: Any,
    *,
    stdin: IO[str],
    stdout: IO[str],
    stderr: IO[str],
    first_messages: Sequence[str] = (),
    continued: Any = None,
) -> int:
    read_line, is_terminal = _line_reader(stdin, stdout)
    renderer.note(
        f"pi-agent · {agent.model} at {agent.base_url} ({agent.api}) · {agent.tools.cwd}",
        dim=False,
        bold=True,
    )
    renderer.note("Ctrl+C cancels an answer, Ctrl+D exits, /help for more.")
    if continued is not None:
        asked = sum(isinstance(e, UserMessage) for e in continued.events)
        renderer.note(f"Continuing {continued.path.name}: {asked} earlier message(s).")

    def turn(text: str) -> None:
        start = len(agent.history)
        try:
            outcome = agent.send(text)
        except KeyboardInterrupt:  # between two steps of the loop; the turn is over either way
            renderer.note("[cancelled]", fg="yellow", dim=False)
            return
        usage, calls = _usage_since(agent, start)
        if outcome.status != "interrupted" and (usage.total_tokens or calls):
            footer = renderer.usage_line(usage)
            if calls:
                footer += f" · {calls} tool call{'s' if calls != 1 else ''}"
            renderer.note(footer)

    with _readline_history(is_terminal):
        for message in first_messages:
            renderer.note(PROMPT + message, dim=False)
            turn(message)
        while True:
            try:
                text = read_message(read_line)
            except KeyboardInterrupt:
                renderer.end_line()
                stdout.write("\n")
                stdout.flush()
                continue
            except EOFError:
                stdout.write("\n")
                stdout.flush()
                return 0
            command = text.strip()
            if not command:
                continue
            if command in ("/exit", "/quit"):
                return 0
            if command == "/help":
                renderer.note(HELP, dim=False)
                continue
            if command == "/tokens":
                renderer.note("session: " + renderer.usage_line(total_usage(agent.history)), dim=False)
                continue
            if command == "/session":
                renderer.note(str(writer.path or "(no file yet: nothing sent)"), dim=False)
                continue
            turn(text)


def run_json_stdin(agent: Agent, stdin: IO[str], *, first_messages: Sequence[str] = ()) -> int:
    """`--json -i`: each stdin line is `{"type": "message", "content": "…"}` (or plain text) → one turn."""
    for message in first_messages:
        agent.send(message)
    for line in stdin:
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                agent.emit(Error('stdin line is not JSON; send {"type": "message", "content": "…"}'))
                continue
            if data.get("type") == "interrupt":
                continue  # nothing runs while this line is read
            content = data.get("content") if data.get("type") == "message" else None
            if not isinstance(content, str) or not content:
                agent.emit(Error('expected {"type": "message", "content": "…"}'))
                continue
            agent.send(content)
        else:
            agent.send(line)
    return 0
