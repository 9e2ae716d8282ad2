"""Chat Completions, streamed: text and reasoning deltas, tool calls assembled from their pieces, usage.

`messages_from_history` turns the agent's events into the request's messages, so a continued session
sends exactly what was said before, tool calls and results included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pi_ansible.agent.events import (
    AssistantDelta,
    AssistantMessage,
    AssistantStart,
    Event,
    ReasoningDelta,
    TokenUsage,
    ToolCall,
    ToolResult,
    UserMessage,
)
from pi_ansible.agent.reply import ModelReply, PendingCall, as_int, get
from pi_ansible.agent.tools import Tool


def tool_specs(tools: Iterable[Tool]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


def answered_call_ids(history: Iterable[Event]) -> set[str]:
    return {e.tool_call_id for e in history if isinstance(e, ToolResult)}


def messages_from_history(system_prompt: str | None, history: list[Event]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    answered = answered_call_ids(history)
    called: set[str] = set()
    pending: dict[str, Any] | None = None

    def flush() -> None:
        nonlocal pending
        if pending is not None and (pending["content"] or pending.get("tool_calls")):
            messages.append(pending)
        pending = None

    for event in history:
        if isinstance(event, UserMessage):
            flush()
            messages.append({"role": "user", "content": event.text})
        elif isinstance(event, AssistantStart):
            flush()
            pending = {"role": "assistant", "content": ""}
        elif isinstance(event, AssistantMessage):
            if pending is None:
                pending = {"role": "assistant", "content": ""}
            pending["content"] += event.text
        elif isinstance(event, ToolCall):
            # A call whose result never came (the turn was cancelled) would make the server refuse the
            # whole conversation, so it is left out.
            if event.tool_call_id not in answered:
                continue
            if pending is None:
                pending = {"role": "assistant", "content": ""}
            pending.setdefault("tool_calls", []).append(
                {
                    "id": event.tool_call_id,
                    "type": "function",
                    "function": {"name": event.name, "arguments": event.args or "{}"},
                }
            )
            called.add(event.tool_call_id)
        elif isinstance(event, ToolResult):
            flush()
            if event.tool_call_id in called:
                messages.append({"role": "tool", "tool_call_id": event.tool_call_id, "content": event.result})
    flush()
    for message in messages:
        if message["role"] == "assistant" and message.get("tool_calls") and not message["content"]:
            message["content"] = None
    return messages


def usage_event(usage: Any) -> TokenUsage | None:
    if usage is None:
        return None
    prompt_details = get(usage, "prompt_tokens_details")
    completion_details = get(usage, "completion_tokens_details")
    reasoning = get(completion_details, "reasoning_tokens")
    inp, out = as_int(get(usage, "prompt_tokens")), as_int(get(usage, "completion_tokens"))
    return TokenUsage(
        input_tokens=inp,
        output_tokens=out,
        total_tokens=as_int(get(usage, "total_tokens")) or inp + out,
        cache_read_tokens=as_int(get(prompt_details, "cached_tokens")),
        cache_write_tokens=0,
        reasoning_tokens=as_int(reasoning) if reasoning is not None else None,
    )


class ChatAssembler:
    """Feeds on stream chunks; emits deltas as they come; `reply()` has the whole answer."""

    def __init__(self, emit: Callable[[Event], None]):
        self.emit = emit
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[Any, PendingCall] = {}
        self.usage: TokenUsage | None = None
        self.finish_reason: str | None = None

    def feed(self, chunk: Any) -> None:
        usage = get(chunk, "usage")
        if usage is not None:
            self.usage = usage_event(usage)
        for choice in get(chunk, "choices", []) or []:
            if get(choice, "index", 0) != 0:
                continue
            delta = get(choice, "delta")
            if get(choice, "finish_reason"):
                self.finish_reason = get(choice, "finish_reason")
            if delta is None:
                continue
            # vLLM sends `reasoning_content` (and, from 0.10, `reasoning`); others send one of the two.
            reasoning = get(delta, "reasoning_content") or get(delta, "reasoning")
            if isinstance(reasoning, str) and reasoning:
                self.reasoning.append(reasoning)
                self.emit(ReasoningDelta(reasoning))
            content = get(delta, "content")
            if isinstance(content, str) and content:
                self.text.append(content)
                self.emit(AssistantDelta(content))
            for piece in get(delta, "tool_calls", []) or []:
                self._add_call_piece(piece)

    def _add_call_piece(self, piece: Any) -> None:
        index = get(piece, "index")
        call_id = get(piece, "id")
        key = index if index is not None else (call_id or len(self.calls))
        function = get(piece, "function")
        call = self.calls.get(key)
        if call is None:
            call = self.calls[key] = PendingCall(call_id="", name="")
        if call_id and not call.call_id:
            call.call_id = call_id
        name = get(function, "name")
        if name:
            # Some servers repeat the name in every piece, others send it once.
            call.name = name if call.name in ("", name) else call.name + name
        arguments = get(function, "arguments")
        if arguments:
            call.arguments += arguments

    def reply(self) -> ModelReply:
        calls = []
        for n, call in enumerate(self.calls.values()):
            if not call.call_id:
                call.call_id = f"call_{n}"
            calls.append(call)
        return ModelReply(
            text="".join(self.text),
            reasoning="".join(self.reasoning),
            tool_calls=calls,
            usage=self.usage,
            finish_reason=self.finish_reason,
        )


def stream_reply(
    client: Any,
    *,
    model: str,
    system_prompt: str | None,
    history: list[Event],
    tools: Iterable[Tool],
    emit: Callable[[Event], None],
    max_tokens: int | None = None,
) -> ModelReply:
    specs = tool_specs(tools)
    request: dict[str, Any] = {
        "model": model,
        "messages": messages_from_history(system_prompt, history),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if specs:
        request["tools"] = specs
        request["tool_choice"] = "auto"
    if max_tokens:
        request["max_completion_tokens"] = max_tokens
    assembler = ChatAssembler(emit)
    stream = client.chat.completions.create(**request)
    with stream:
        for chunk in stream:
            assembler.feed(chunk)
    return assembler.reply()
