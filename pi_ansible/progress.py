"""Live progress of a playbook run: one line per task and host, with its status and the elapsed time."""

from __future__ import annotations

import sys

_MARK = {"ok": "ok", "changed": "changed", "skipped": "skip", "failed": "FAILED", "unreachable": "UNREACHABLE",
         "ignored": "ignored"}


def format_event(ev) -> str | None:
    if ev.status == "started" or ev.host is None:
        return None
    if ev.task.startswith("Validating arguments against arg spec") and ev.status == "ok":
        return None  # every role's argument check: noise unless it fails
    line = f"[{ev.elapsed:6.1f}s] {ev.host:<12} {_MARK.get(ev.status, ev.status):<8} {ev.task}"
    if ev.message:
        line += f": {ev.message.splitlines()[0][:200]}"
    return line


def printer(stream=None):
    """An on_event callback writing progress lines to stderr (stdout stays clean for --json)."""
    out = stream or sys.stderr

    def on_event(ev) -> None:
        line = format_event(ev)
        if line:
            print(line, file=out, flush=True)

    return on_event
