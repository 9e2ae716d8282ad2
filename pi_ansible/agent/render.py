"""Renderers: the same events drawn as text for people or as JSON lines for programs.

Text: the answer goes to stdout (so `pi-agent "…" > answer.txt` keeps only the answer); reasoning, tool
calls and notes go to stderr. JSON: one object per line on stdout, flushed at once; streamed deltas are
left out (the whole message follows them).
"""

from __future__ import annotations

import json
import os
from typing import IO

import click

from pi_ansible.agent.events import (
    AssistantDelta,
    AssistantMessage,
    AssistantStart,
    Error,
    Event,
    Interrupted,
    Reasoning,
    ReasoningDelta,
    TokenUsage,
    ToolCall,
    ToolResult,
    add_usage,
)


class JsonRenderer:
    def __init__(self, out: IO[str]):
        self.out = out

    def __call__(self, event: Event) -> None:
        if event.transient:
            return
        self.out.write(event.to_json() + "\n")
        self.out.flush()


def _unicode_ok(stream: IO[str]) -> bool:
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    return encoding in ("utf8", "utf_8")


def compact_args(args: str, limit: int = 60) -> str:
    """`{"path": "a.py", "start_line": 3}` → `path='a.py', start_line=3`, each value shortened."""
    try:
        data = json.loads(args) if args and args.strip() else {}
    except ValueError:
        return args if len(args) <= limit else args[: limit - 1] + "…"
    if not isinstance(data, dict):
        return json.dumps(data)[:limit]
    parts = []
    for key, value in data.items():
        shown = repr(value)
        if len(shown) > limit:
            shown = shown[: limit - 1] + "…"
        parts.append(f"{key}={shown}")
    return ", ".join(parts)


def summarize_result(result: str, is_error: bool, limit: int = 100) -> str:
    lines = result.splitlines() or [""]
    if is_error:
        head = next((line for line in lines if line.strip() and not line.startswith("[exit code")), lines[0])
        tail = lines[-1] if lines[-1].startswith("[") and lines[-1] != head else ""
        text = f"error: {head.strip()}" + (f" {tail}" if tail else "")
    else:
        text = f"{len(lines)} line{'s' if len(lines) != 1 else ''}"
        if len(lines) == 1 and lines[0]:
            text = lines[0].strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


class TextRenderer:
    """Streams the answer as it arrives and shows tool calls on one line each.

    `show_errors`: print `error` events (interactive mode; a one-shot run prints the error once, at exit).
    """

    def __init__(self, out: IO[str], err: IO[str], *, color: bool | None = None, show_errors: bool = False):
        self.out = out
        self.err = err
        if color is None:
            color = bool(getattr(err, "isatty", lambda: False)()) and "NO_COLOR" not in os.environ
        self.color = color
        self.show_errors = show_errors
        self.fancy = _unicode_ok(err)
        self.open: IO[str] | None = None  # a stream whose current line is unfinished
        self.streamed_text = False
        self.streamed_reasoning = False
        self.turn_usage = TokenUsage()
        self.tool_calls = 0

    def _style(self, text: str, **style) -> str:
        # click.style(dim=False) emits "normal intensity", which would cancel bold: pass only what is on.
        style = {k: v for k, v in style.items() if v}
        return click.style(text, **style) if self.color and style else text

    def _write(self, stream: IO[str], text: str) -> None:
        if self.open is not None and self.open is not stream:
            self.open.write("\n")
            self.open.flush()
            self.open = None
        stream.write(text)
        stream.flush()
        self.open = None if text.endswith("\n") else stream

    def end_line(self) -> None:
        if self.open is not None:
            self.open.write("\n")
            self.open.flush()
            self.open = None

    def _line(self, text: str, **style) -> None:
        self.end_line()
        self._write(self.err, self._style(text, **style) + "\n")

    def __call__(self, event: Event) -> None:
        if isinstance(event, AssistantStart):
            self.streamed_text = self.streamed_reasoning = False
        elif isinstance(event, ReasoningDelta):
            if not self.streamed_reasoning:
                self.end_line()
                self._write(self.err, self._style("[thinking] ", dim=True, italic=True))
                self.streamed_reasoning = True
            self._write(self.err, self._style(event.text, dim=True, italic=True))
        elif isinstance(event, Reasoning):
            if not self.streamed_reasoning and event.text:
                self._line("[thinking] " + event.text, dim=True, italic=True)
            elif self.open is self.err:
                self.end_line()
        elif isinstance(event, AssistantDelta):
            if self.open is self.err:
                self.end_line()
            self._write(self.out, event.text)
            self.streamed_text = True
        elif isinstance(event, AssistantMessage):
            if self.streamed_text:
                self.end_line()
            elif event.text:
                self._write(self.out, event.text + ("" if event.text.endswith("\n") else "\n"))
        elif isinstance(event, ToolCall):
            self.tool_calls += 1
            mark = "⚒" if self.fancy else "*"
            self._line(f"{mark} {event.name}({compact_args(event.args)})", fg="cyan")
        elif isinstance(event, ToolResult):
            mark = "↳" if self.fancy else "->"
            summary = summarize_result(event.result, event.is_error)
            self._line(f"  {mark} {summary}", fg="red" if event.is_error else None, dim=not event.is_error)
        elif isinstance(event, TokenUsage):
            self.turn_usage = add_usage(self.turn_usage, event)
        elif isinstance(event, Error):
            if self.show_errors:
                self._line(f"Error: {event.message}", fg="red")
        elif isinstance(event, Interrupted):
            self._line("[cancelled]", fg="yellow")

    def usage_line(self, usage: TokenUsage) -> str:
        up, down = ("↑", "↓") if self.fancy else ("in:", "out:")
        text = f"{up}{usage.input_tokens} {down}{usage.output_tokens}"
        if usage.reasoning_tokens:
            text += f" reasoning {usage.reasoning_tokens}"
        if usage.cache_read_tokens or usage.cache_write_tokens:
            text += f" (cache read {usage.cache_read_tokens} / write {usage.cache_write_tokens})"
        return text

    def note(self, text: str, **style) -> None:
        self._line(text, **({"dim": True} | style))


def fanout(*sinks):
    def emit(event: Event) -> None:
        for sink in sinks:
            sink(event)

    return emit
