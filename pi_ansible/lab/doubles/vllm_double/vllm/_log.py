"""Log lines and tracebacks in the shape vLLM 0.33 prints them.

`INFO MM-DD HH:MM:SS [file.py:line] message`, every line of a multi-line message carrying the
header (vLLM's NewLineFormatter), and, once the API server has "decorated" its output, every line
prefixed `(APIServer pid=N) ` (`(EngineCore pid=N) ` for engine lines). Logs go to stdout, uvicorn's
own lines and tracebacks to stderr, as in the real process.
"""

from __future__ import annotations

import os
import sys
import threading
import time

_LOCK = threading.Lock()
_state = {"decorated": False}
PKG_DIR = os.path.dirname(os.path.abspath(__file__))
PID = os.getpid()


def decorate() -> None:
    """From now on every line the API server writes carries `(APIServer pid=N)`."""
    _state["decorated"] = True


def _prefix(proc: str | None) -> str:
    if proc is None:
        return ""
    if proc == "APIServer" and not _state["decorated"]:
        return ""
    return f"({proc} pid={PID}) "


def write(text: str, proc: str | None = "APIServer", stream=None) -> None:
    stream = stream or sys.stdout
    prefix = _prefix(proc)
    out = "".join(prefix + line + "\n" for line in text.split("\n"))
    with _LOCK:
        try:
            stream.write(out)
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed pipe must not take the server down


def log(level: str, where: str, msg: str, proc: str | None = "APIServer") -> None:
    header = f"{level} {time.strftime('%m-%d %H:%M:%S')} [{where}] "
    write("\n".join(header + line for line in msg.split("\n")), proc)


def info(where: str, msg: str, proc: str | None = "APIServer") -> None:
    log("INFO", where, msg, proc)


def warning(where: str, msg: str, proc: str | None = "APIServer") -> None:
    log("WARNING", where, msg, proc)


def error(where: str, msg: str, proc: str | None = "APIServer") -> None:
    log("ERROR", where, msg, proc)


def uvicorn(msg: str, stream=None) -> None:
    write(f"INFO:     {msg}", "APIServer", stream or sys.stderr)


def frame(rel: str, line: int, func: str, code: str) -> tuple[str, int, str, str]:
    """A traceback frame in the installed package (rel is relative to the vllm package dir)."""
    path = rel if rel.startswith("/") else os.path.join(PKG_DIR, rel)
    return (path, line, func, code)


def format_traceback(frames, exc_line: str, cause: tuple | None = None) -> str:
    parts = []
    if cause is not None:
        parts.append(format_traceback(*cause))
        parts.append("\nThe above exception was the direct cause of the following exception:\n")
    lines = ["Traceback (most recent call last):"]
    for path, line, func, code in frames:
        lines.append(f'  File "{path}", line {line}, in {func}')
        if code:
            lines.append(f"    {code}")
    lines.append(exc_line)
    parts.append("\n".join(lines))
    return "\n".join(parts)


def print_traceback(frames, exc_line: str, proc: str | None = "APIServer", cause=None) -> None:
    write(format_traceback(frames, exc_line, cause), proc, sys.stderr)


def log_traceback(where: str, msg: str, frames, exc_line: str, proc: str = "EngineCore") -> None:
    """`logger.exception(msg)`: the message and the traceback, every line with the ERROR header."""
    log("ERROR", where, msg + "\n" + format_traceback(frames, exc_line), proc)


# Entry frames shared by every traceback the API server prints.
def cli_frames() -> list:
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "vllm"
    if argv0.endswith("__main__.py"):
        first = frame("__main__.py", 6, "<module>", "main()")
    else:
        first = frame(os.path.abspath(argv0), 10, "<module>", "sys.exit(main())")
    return [
        first,
        frame("entrypoints/cli/main.py", 153, "main", "args.dispatch_function(args)"),
        frame("entrypoints/cli/serve.py", 118, "cmd", "uvloop.run(run_server(args))"),
    ]
