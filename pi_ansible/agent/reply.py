"""What one streamed model call returned, whichever API carried it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pi_ansible.agent.events import TokenUsage


@dataclass
class PendingCall:
    call_id: str
    name: str
    arguments: str = ""


@dataclass
class ModelReply:
    text: str = ""
    reasoning: str = ""
    tool_calls: list[PendingCall] = field(default_factory=list)
    usage: TokenUsage | None = None
    finish_reason: str | None = None


class ModelError(Exception):
    """The server reported a failure inside a stream (an `error` event, a failed response)."""


def get(obj: Any, name: str, default: Any = None) -> Any:
    """Read a field from an SDK object or a plain dict (tests feed dicts), including a server's extras."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    value = getattr(obj, name, None)
    if value is None:
        extra = getattr(obj, "model_extra", None) or {}
        value = extra.get(name)
    return default if value is None else value


def as_int(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0
