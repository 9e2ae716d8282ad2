"""`run_agent`: settle the configuration, open (or continue) the session, then answer the messages or chat.

Both `pi-agent` and `pi agent NAME` call this; it raises `AgentError` (one line, with the fix) and leaves
turning that into an exit status to the command line edge.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from pi_ansible.agent.client import (
    OPENAI_BASE_URL,
    OPENAI_DEFAULT_MODEL,
    AgentError,
    describe_error,
    make_client,
)
from pi_ansible.agent.events import Error, SessionStart
from pi_ansible.agent.loop import APIS, MAX_STEPS, Agent
from pi_ansible.agent.prompts import default_prompt
from pi_ansible.agent.render import JsonRenderer, TextRenderer, fanout
from pi_ansible.agent.sessions import SessionConfig, SessionWriter, latest_session, load_session, sessions_dir
from pi_ansible.agent.tools import ToolContext

EXIT_INTERRUPTED = 130
NO_KEY = "none"  # servers started without --api-key accept any key; the SDK insists on one


def _detect_model(client: Any, base_url: str, key_given: bool) -> str:
    try:
        models = [m.id for m in client.models.list()]
    except Exception as exc:
        message = describe_error(exc, base_url, key_given=key_given)
        if message is None:
            raise
        raise AgentError(message) from exc
    if not models:
        raise AgentError(f"the server at {base_url} serves no model; pass one with --model.")
    return models[0]


def run_agent(
    base_url: str | None = None,
    api_key: str | None = None,
    model: str | None = None,
    api: str | None = None,
    messages: Sequence[str] = (),
    json_output: bool = False,
    interactive: bool = False,
    continue_: bool = False,
    system_prompt: str | None = None,
    cwd: str | os.PathLike | None = None,
    *,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    max_steps: int = MAX_STEPS,
    max_tokens: int | None = None,
    client: Any = None,
    state_dir: Path | None = None,
) -> int:
    """Run the agent; returns the exit status (0, or 130 after Ctrl+C in a one-shot run).

    Options left as None take the continued session's value (with `continue_`), then pi's default:
    OpenAI's base URL, the completions API, and for the model the one the server lists (gpt-5-mini on
    OpenAI). `api_key` None means no key: OpenAI needs one, a local server may not.
    """
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        return _run(**locals())
    except AgentError as exc:
        if json_output and not getattr(exc, "reported", False):
            JsonRenderer(stdout)(Error(str(exc)))
        raise


def _run(
    *,
    base_url,
    api_key,
    model,
    api,
    messages,
    json_output,
    interactive,
    continue_,
    system_prompt,
    cwd,
    stdin,
    stdout,
    stderr,
    max_steps,
    max_tokens,
    client,
    state_dir,
) -> int:
    cwd_path = Path(cwd or os.getcwd()).resolve()
    if not cwd_path.is_dir():
        raise AgentError(f"the working directory {cwd_path} does not exist.")
    if api is not None and api not in APIS:
        raise AgentError(f"unknown API {api!r}; use --api completions or --api responses.")
    directory = sessions_dir(cwd_path, state_dir)
    loaded = None
    if continue_:
        path = latest_session(directory)
        if path is None:
            stderr.write(f"No earlier session in {cwd_path}; starting a new one.\n")
        else:
            try:
                loaded = load_session(path)
            except OSError as exc:
                raise AgentError(f"cannot read the session {path}: {exc.strerror or exc}.") from exc
    saved = loaded.config if loaded else None

    base_url = base_url or (saved.base_url if saved and saved.base_url else None) or OPENAI_BASE_URL
    api = api or (saved.api if saved else None) or "completions"
    if system_prompt is None:
        system_prompt = saved.system_prompt if saved else default_prompt(str(cwd_path))
    is_openai = base_url.rstrip("/") == OPENAI_BASE_URL
    if not api_key and is_openai:
        raise AgentError("no API key for OpenAI. Pass --api-key or set OPENAI_API_KEY.")

    messages = [m for m in messages if m is not None]
    if not messages and not interactive:
        if stdin.isatty():
            interactive = True
        else:
            text = stdin.read()
            if not text.strip():
                raise AgentError("nothing to send: pass a MESSAGE, pipe one on stdin, or use -i for a chat.")
            messages = [text]

    if client is None:
        client = make_client(base_url, api_key or NO_KEY)
    if not model:
        if saved and saved.model:
            model = saved.model
        elif is_openai:
            model = OPENAI_DEFAULT_MODEL
        else:
            model = _detect_model(client, base_url, bool(api_key))

    config = SessionConfig(base_url=base_url, model=model, api=api, system_prompt=system_prompt)
    writer = SessionWriter(
        directory,
        str(cwd_path),
        config,
        path=loaded.path if loaded else None,
        session_id=loaded.session_id if loaded else None,
    )
    if json_output:
        renderer: Any = JsonRenderer(stdout)
    else:
        renderer = TextRenderer(stdout, stderr, show_errors=interactive)

    def write_session(event):
        try:
            writer(event)
        except OSError as exc:
            raise AgentError(f"cannot write the session file in {directory}: {exc.strerror or exc}.") from exc

    agent = Agent(
        client=client,
        model=model,
        api=api,
        base_url=base_url,
        system_prompt=system_prompt,
        tools=ToolContext(cwd=cwd_path, secrets=(api_key,) if api_key else ()),
        emit=fanout(write_session, renderer),
        history=loaded.events if loaded else None,
        max_steps=max_steps,
        max_tokens=max_tokens,
        api_key=api_key,
    )
    renderer(SessionStart(writer.session_id, model, api, base_url, system_prompt or ""))

    if interactive:
        from pi_ansible.agent.interactive import run_interactive, run_json_stdin

        if json_output:
            return run_json_stdin(agent, stdin, first_messages=messages)
        return run_interactive(
            agent,
            renderer,
            writer,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            first_messages=messages,
            continued=loaded,
        )

    for message in messages:
        outcome = agent.send(message)
        if outcome.status == "interrupted":
            return EXIT_INTERRUPTED
        if outcome.status in ("error", "step_limit"):
            error = AgentError(outcome.error)
            error.reported = True  # the error event is out already
            raise error
    return 0
