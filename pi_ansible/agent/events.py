"""The agent's events: one model behind the terminal output, the --json lines and the session files.

The JSON shape follows pi's agent (`{"type": "tool_call", "toolCallId": ..., ...}`) so tools written for
pi's JSONL keep working. Two event types are *transient* (`assistant_delta`, `reasoning_delta`): they
carry streamed pieces for the terminal and are neither printed by --json nor stored in sessions, where
the whole `assistant_message` / `reasoning` that follows them is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from importlib import resources
from typing import Any, ClassVar


def _json_name(f) -> str:
    if "json" in f.metadata:
        return f.metadata["json"]
    head, *rest = f.name.split("_")
    return head + "".join(part.capitalize() for part in rest)


@dataclass(frozen=True)
class Event:
    type: ClassVar[str] = ""
    transient: ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.metadata.get("optional"):
                continue
            data[_json_name(f)] = value
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


@dataclass(frozen=True)
class SessionStart(Event):
    type: ClassVar[str] = "session_start"
    session_id: str
    model: str
    api: str
    base_url: str = field(metadata={"json": "baseURL"})
    system_prompt: str


@dataclass(frozen=True)
class UserMessage(Event):
    type: ClassVar[str] = "user_message"
    text: str


@dataclass(frozen=True)
class AssistantStart(Event):
    type: ClassVar[str] = "assistant_start"


@dataclass(frozen=True)
class AssistantDelta(Event):
    type: ClassVar[str] = "assistant_delta"
    transient: ClassVar[bool] = True
    text: str


@dataclass(frozen=True)
class ReasoningDelta(Event):
    type: ClassVar[str] = "reasoning_delta"
    transient: ClassVar[bool] = True
    text: str


@dataclass(frozen=True)
class Reasoning(Event):
    type: ClassVar[str] = "reasoning"
    text: str


@dataclass(frozen=True)
class AssistantMessage(Event):
    type: ClassVar[str] = "assistant_message"
    text: str


@dataclass(frozen=True)
class ToolCall(Event):
    """`args` is the argument JSON text exactly as the model sent it (it may not even parse)."""

    type: ClassVar[str] = "tool_call"
    tool_call_id: str
    name: str
    args: str


@dataclass(frozen=True)
class ToolResult(Event):
    type: ClassVar[str] = "tool_result"
    tool_call_id: str
    result: str
    is_error: bool


@dataclass(frozen=True)
class TokenUsage(Event):
    type: ClassVar[str] = "token_usage"
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int | None = field(default=None, metadata={"optional": True})


@dataclass(frozen=True)
class Error(Event):
    type: ClassVar[str] = "error"
    message: str


@dataclass(frozen=True)
class Interrupted(Event):
    type: ClassVar[str] = "interrupted"


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        SessionStart,
        UserMessage,
        AssistantStart,
        AssistantDelta,
        ReasoningDelta,
        Reasoning,
        AssistantMessage,
        ToolCall,
        ToolResult,
        TokenUsage,
        Error,
        Interrupted,
    )
}


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from its JSON form; raises ValueError for anything that is not one."""
    if not isinstance(data, dict):
        raise ValueError("an event is a JSON object")
    cls = EVENT_TYPES.get(data.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown event type {data.get('type')!r}")
    kwargs = {}
    for f in fields(cls):
        name = _json_name(f)
        if name in data:
            kwargs[f.name] = data[name]
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad {cls.type} event: {exc}") from exc


def add_usage(total: TokenUsage, usage: TokenUsage) -> TokenUsage:
    reasoning = None
    if total.reasoning_tokens is not None or usage.reasoning_tokens is not None:
        reasoning = (total.reasoning_tokens or 0) + (usage.reasoning_tokens or 0)
    return TokenUsage(
        input_tokens=total.input_tokens + usage.input_tokens,
        output_tokens=total.output_tokens + usage.output_tokens,
        total_tokens=total.total_tokens + usage.total_tokens,
        cache_read_tokens=total.cache_read_tokens + usage.cache_read_tokens,
        cache_write_tokens=total.cache_write_tokens + usage.cache_write_tokens,
        reasoning_tokens=reasoning,
    )


def total_usage(events) -> TokenUsage:
    total = TokenUsage()
    for event in events:
        if isinstance(event, TokenUsage):
            total = add_usage(total, event)
    return total


def load_schema() -> dict[str, Any]:
    """The JSON Schema every --json line validates against."""
    text = resources.files(__package__).joinpath("events.schema.json").read_text(encoding="utf-8")
    return json.loads(text)
