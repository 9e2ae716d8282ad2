"""The turn loop: the model answers, the tools it asked for run, their results go back, until it answers
without asking for a tool (or the step limit is reached).

Every step is an event; `Agent.history` is the list of lasting events and is the only conversation
state, so a session file replays into the same requests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pi_ansible.agent import chat_api, responses_api
from pi_ansible.agent.client import AgentError, describe_error, scrub
from pi_ansible.agent.events import (
    AssistantDelta,
    AssistantMessage,
    AssistantStart,
    Error,
    Event,
    Interrupted,
    Reasoning,
    ToolCall,
    ToolResult,
    UserMessage,
)
from pi_ansible.agent.reply import ModelError
from pi_ansible.agent.tools import TOOLS, ToolContext, run_tool

APIS = ("completions", "responses")
MAX_STEPS = 25
CANCELLED = "Cancelled by the user before the tool finished."


@dataclass
class TurnOutcome:
    status: str  # "answered", "interrupted", "error", "step_limit"
    text: str = ""
    error: str | None = None


class Agent:
    def __init__(
        self,
        *,
        client: Any,
        model: str,
        api: str,
        base_url: str,
        system_prompt: str | None,
        tools: ToolContext,
        emit: Callable[[Event], None],
        history: list[Event] | None = None,
        max_steps: int = MAX_STEPS,
        max_tokens: int | None = None,
        api_key: str | None = None,
    ):
        if api not in APIS:
            raise AgentError(f"unknown API {api!r}; use completions or responses.")
        self.client = client
        self.model = model
        self.api = api
        self.base_url = base_url
        self.system_prompt = system_prompt
        self.tools = tools
        self.sink = emit
        self.history: list[Event] = list(history or [])
        self.max_steps = max_steps
        self.max_tokens = max_tokens
        self._api_key = api_key
        self._partial: list[str] = []

    def emit(self, event: Event) -> None:
        if isinstance(event, AssistantDelta):
            self._partial.append(event.text)
        if not event.transient:
            self.history.append(event)
        self.sink(event)

    def _stream_reply(self):
        module = chat_api if self.api == "completions" else responses_api
        return module.stream_reply(
            self.client,
            model=self.model,
            system_prompt=self.system_prompt,
            history=self.history,
            tools=TOOLS.values(),
            emit=self.emit,
            max_tokens=self.max_tokens,
        )

    def _fail(self, message: str) -> TurnOutcome:
        message = scrub(message, self._api_key)
        self.emit(Error(message))
        return TurnOutcome("error", error=message)

    def send(self, text: str) -> TurnOutcome:
        """One user message, answered. Ctrl+C (KeyboardInterrupt) ends the turn, not the session."""
        self.emit(UserMessage(text))
        open_calls: list[ToolCall] = []
        try:
            for _step in range(self.max_steps):
                self._partial = []
                self.emit(AssistantStart())
                try:
                    reply = self._stream_reply()
                except ModelError as exc:
                    return self._fail(f"the server at {self.base_url} reported an error mid-answer: {exc}.")
                except Exception as exc:
                    message = describe_error(exc, self.base_url, self.model, key_given=bool(self._api_key))
                    if message is None:
                        raise
                    return self._fail(message)
                self._partial = []
                if reply.reasoning:
                    self.emit(Reasoning(reply.reasoning))
                if reply.text or not reply.tool_calls:
                    self.emit(AssistantMessage(reply.text))
                calls = [ToolCall(c.call_id, c.name, c.arguments) for c in reply.tool_calls]
                for call in calls:
                    self.emit(call)
                if reply.usage is not None:
                    self.emit(reply.usage)
                if not calls:
                    return TurnOutcome("answered", text=reply.text)
                open_calls = list(calls)
                for call in calls:
                    outcome = run_tool(self.tools, call.name, call.args)
                    self.emit(ToolResult(call.tool_call_id, outcome.text, outcome.is_error))
                    open_calls.remove(call)
            message = (
                f"stopped after {self.max_steps} model calls without a final answer; "
                f"send another message to let it go on."
            )
            self.emit(Error(message))
            return TurnOutcome("step_limit", error=message)
        except KeyboardInterrupt:
            if self._partial:
                self.emit(AssistantMessage("".join(self._partial)))
                self._partial = []
            for call in open_calls:
                self.emit(ToolResult(call.tool_call_id, CANCELLED, True))
            self.emit(Interrupted())
            return TurnOutcome("interrupted")
