"""Test knobs: environment variables a test sets to make the double slow, crash, or die later.

PI_LAB_VLLM_LOAD_SECONDS         seconds "loading weights" takes (default 0.5)
PI_LAB_VLLM_CRASH_ON_START       "always": the engine core dies during start, every time;
                                 "once": it dies unless the marker file exists, and creates it
PI_LAB_VLLM_CRASH_MARKER         the marker for "once" (default $PI_LAB_GPU_STATE/vllm-crash-once-<port>)
PI_LAB_VLLM_CRASH_AFTER_SECONDS  the engine dies this many seconds after the server is up (exit 1)
PI_LAB_VLLM_STREAM_DELAY_SECONDS pause between streamed deltas (default 0)
PI_LAB_VLLM_FAIL_REQUESTS        the first N generation requests get HTTP 500 ("all": every one)
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def _float(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return max(0.0, float(raw))
    except ValueError:
        return default


def _count(name: str) -> int:
    raw = os.environ.get(name, "").strip().lower()
    if raw == "all":
        return -1
    return int(raw) if raw.isdigit() else 0


@dataclass(frozen=True)
class Knobs:
    load_seconds: float
    crash_on_start: str
    crash_marker: str | None
    crash_after: float | None
    stream_delay: float
    fail_requests: int  # -1: all

    @classmethod
    def from_env(cls) -> Knobs:
        return cls(
            load_seconds=_float("PI_LAB_VLLM_LOAD_SECONDS", 0.5) or 0.0,
            crash_on_start=os.environ.get("PI_LAB_VLLM_CRASH_ON_START", "").strip().lower(),
            crash_marker=os.environ.get("PI_LAB_VLLM_CRASH_MARKER") or None,
            crash_after=_float("PI_LAB_VLLM_CRASH_AFTER_SECONDS", None),
            stream_delay=_float("PI_LAB_VLLM_STREAM_DELAY_SECONDS", 0.0) or 0.0,
            fail_requests=_count("PI_LAB_VLLM_FAIL_REQUESTS"),
        )
