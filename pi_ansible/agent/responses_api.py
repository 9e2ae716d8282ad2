"""The Responses API, streamed: output_text deltas, function_call items and their arguments, reasoning.

Tool results go back as `function_call_output` input items. The request is sent with `store: false`,
so the whole conversation travels in `input` and nothing depends on the server keeping state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pi_ansible.agent.events import (
    AssistantDelta,
    AssistantMessage,
    Event,
    ReasoningDelta,
    TokenUsage,
    ToolCall,
    ToolResult,
    UserMessage,
)
from pi_ansible.agent.reply import ModelError, ModelReply, PendingCall, as_int, get
from pi_ansible.agent.tools import Tool


def tool_specs(tools: Iterable[Tool]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "name": t.name,
            "description": t.description,
            "parameters": t.parameters,
            "strict": False,
        }
        for t in tools
    ]


def input_from_history(history: list[Event]) -> list[dict[str, Any]]:
    answered = {e.tool_call_id for e in history if isinstance(e, ToolResult)}
    called: set[str] = set()
    items: list[dict[str, Any]] = []
    for event in history:
        if isinstance(event, UserMessage):
            items.append({"type": "message", "role": "user", "content": event.text})
        elif isinstance(event, AssistantMessage):
            if event.text:
                items.append({"type": "message", "role": "assistant", "content": event.text})
        elif isinstance(event, ToolCall):
            if event.tool_call_id in answered:
                items.append(
                    {
                        "type": "function_call",
                        "call_id": event.tool_call_id,
                        "name": event.name,
                        "arguments": event.args or "{}",
                    }
                )
                called.add(event.tool_call_id)
        elif isinstance(event, ToolResult) and event.tool_call_id in called:
            items.append(
                {"type": "function_call_output", "call_id": event.tool_call_id, "output": event.result}
            )
    return items


def usage_event(usage: Any) -> TokenUsage | None:
    if usage is None:
        return None
    reasoning = get(get(usage, "output_tokens_details"), "reasoning_tokens")
    inp, out = as_int(get(usage, "input_tokens")), as_int(get(usage, "output_tokens"))
    return TokenUsage(
        input_tokens=inp,
        output_tokens=out,
        total_tokens=as_int(get(usage, "total_tokens")) or inp + out,
        cache_read_tokens=as_int(get(get(usage, "input_tokens_details"), "cached_tokens")),
        cache_write_tokens=0,
        reasoning_tokens=as_int(reasoning) if reasoning is not None else None,
    )


def _item_text(item: Any, kinds: tuple[str, ...], fields: tuple[str, ...] = ("content",)) -> str:
    parts = []
    for name in fields:
        for part in get(item, name, []) or []:
            if get(part, "type") in kinds and isinstance(get(part, "text"), str):
                parts.append(get(part, "text"))
    return "".join(parts)


class ResponsesAssembler:
    def __init__(self, emit: Callable[[Event], None]):
        self.emit = emit
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[str, PendingCall] = {}  # by item id (or output index)
        self.usage: TokenUsage | None = None
        self.finish_reason: str | None = None
        self.completed_output: list[Any] | None = None

    def _key(self, event: Any) -> str:
        item_id = get(event, "item_id")
        return item_id if item_id else f"#{get(event, 'output_index', len(self.calls))}"

    def _item_key(self, event: Any, item: Any) -> str:
        item_id = get(item, "id")
        return item_id if item_id else f"#{get(event, 'output_index', len(self.calls))}"

    def _register(self, key: str, item: Any) -> PendingCall:
        call = self.calls.get(key)
        if call is None:
            call = self.calls[key] = PendingCall(call_id="", name="")
        call.call_id = get(item, "call_id") or call.call_id or get(item, "id") or ""
        call.name = get(item, "name") or call.name
        return call

    def feed(self, event: Any) -> None:
        kind = get(event, "type", "")
        if kind == "response.output_text.delta":
            delta = get(event, "delta", "")
            if delta:
                self.text.append(delta)
                self.emit(AssistantDelta(delta))
        elif kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
            delta = get(event, "delta", "")
            if delta:
                self.reasoning.append(delta)
                self.emit(ReasoningDelta(delta))
        elif kind == "response.output_item.added":
            item = get(event, "item")
            if get(item, "type") == "function_call":
                call = self._register(self._item_key(event, item), item)
                call.arguments = get(item, "arguments", "") or ""
        elif kind == "response.function_call_arguments.delta":
            key = self._key(event)
            call = self.calls.get(key) or self._register(key, {})
            call.arguments += get(event, "delta", "") or ""
        elif kind == "response.function_call_arguments.done":
            key = self._key(event)
            call = self.calls.get(key) or self._register(key, {})
            if get(event, "arguments") is not None:
                call.arguments = get(event, "arguments")
            if get(event, "name"):
                call.name = get(event, "name")
        elif kind == "response.output_item.done":
            self._item_done(event, get(event, "item"))
        elif kind in ("response.completed", "response.incomplete"):
            response = get(event, "response")
            self.usage = usage_event(get(response, "usage")) or self.usage
            self.finish_reason = "stop" if kind == "response.completed" else "length"
            self.completed_output = get(response, "output")
        elif kind == "response.failed":
            error = get(get(event, "response"), "error")
            raise ModelError(get(error, "message") or "the response failed")
        elif kind == "error":
            raise ModelError(get(event, "message") or get(get(event, "error"), "message") or "stream error")

    def _item_done(self, event: Any, item: Any) -> None:
        kind = get(item, "type")
        if kind == "function_call":
            call = self._register(self._item_key(event, item), item)
            if get(item, "arguments") is not None:
                call.arguments = get(item, "arguments")
        elif kind == "message" and not self.text:
            text = _item_text(item, ("output_text",))
            if text:
                self.text.append(text)
                self.emit(AssistantDelta(text))
        elif kind == "reasoning" and not self.reasoning:
            text = _item_text(item, ("reasoning_text", "summary_text"), ("content", "summary"))
            if text:
                self.reasoning.append(text)
                self.emit(ReasoningDelta(text))

    def reply(self) -> ModelReply:
        # A server that streams nothing but the final response still gets its output read.
        if self.completed_output and not (self.text or self.calls or self.reasoning):
            for n, item in enumerate(self.completed_output):
                self._item_done({"output_index": n}, item)
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
        "input": input_from_history(history),
        "stream": True,
        "store": False,
    }
    if system_prompt:
        request["instructions"] = system_prompt
    if specs:
        request["tools"] = specs
        request["tool_choice"] = "auto"
    if max_tokens:
        request["max_output_tokens"] = max_tokens
    assembler = ResponsesAssembler(emit)
    stream = client.responses.create(**request)
    with stream:
        for event in stream:
            assembler.feed(event)
    return assembler.reply()
