"""The tools the model may call: read, list, bash, glob, rg.

They work relative to the agent's working directory and run on this machine (not on the pod).
A tool never raises into the agent: every failure becomes a result with `is_error=True` that goes back to
the model, which can then correct itself. Long outputs are cut, with a note saying what was left out.
"""

from __future__ import annotations

import fnmatch
import glob as globlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTPUT_CAP = 64 * 1024  # characters of tool output sent back to the model
READ_CAP = 128 * 1024  # bytes of a file `read` returns in one call
LIST_CAP = 1000  # entries from `list` and `glob`
LINE_CAP = 500  # characters per line of search output
BASH_TIMEOUT = 120.0
BASH_TIMEOUT_MAX = 600.0
RG_TIMEOUT = 60.0
BINARY_SNIFF = 8192
# Keys the agent itself holds; a command run by the model must not see them.
SECRET_ENV = ("OPENAI_API_KEY", "PI_API_KEY")


class ToolError(Exception):
    """A failure the model should read: the message is the tool's result."""


@dataclass(frozen=True)
class ToolOutcome:
    text: str
    is_error: bool = False


@dataclass
class ToolContext:
    cwd: Path
    ripgrep: str | None = field(default_factory=lambda: shutil.which("rg"))
    secrets: tuple[str, ...] = ()  # strings scrubbed from every result (the API key)

    def resolve(self, path: str | None) -> Path:
        if path is None or path == "":
            path = "."
        if not isinstance(path, str):
            raise ToolError(f"path must be a string, got {type(path).__name__}")
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else self.cwd / p


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[..., str]


def cut(text: str, limit: int | None = None, *, keep_tail: bool = False) -> str:
    """Cut `text` to about `limit` characters (default OUTPUT_CAP), saying how much was left out."""
    if limit is None:
        limit = OUTPUT_CAP
    if len(text) <= limit:
        return text
    left_out = len(text) - limit
    if keep_tail:
        head, tail = text[: limit // 2], text[-(limit - limit // 2) :]
        return f"{head}\n[... {left_out} characters cut from the middle of the output ...]\n{tail}"
    return f"{text[:limit]}\n[... output cut: {left_out} more characters not shown ...]"


def _looks_binary(sample: bytes) -> bool:
    return b"\0" in sample


# --- read -----------------------------------------------------------------------------------------


def tool_read(ctx: ToolContext, path: str, start_line: int | None = None, end_line: int | None = None) -> str:
    p = ctx.resolve(path)
    if not p.exists():
        raise ToolError(f"File not found: {p}")
    if p.is_dir():
        raise ToolError(f"{p} is a directory; use the list tool for directories")
    for name, value in (("start_line", start_line), ("end_line", end_line)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ToolError(f"{name} must be a whole number of at least 1, got {value!r}")
    if start_line and end_line and end_line < start_line:
        raise ToolError(f"end_line ({end_line}) is before start_line ({start_line})")
    size = p.stat().st_size
    with open(p, "rb") as f:
        if _looks_binary(f.read(BINARY_SNIFF)):
            raise ToolError(f"{p} is a binary file ({size} bytes); it is not shown")
        f.seek(0)
        if start_line is None and end_line is None:
            data = f.read(READ_CAP + 1)
            if len(data) <= READ_CAP:
                return data.decode("utf-8", errors="replace")
            data = data[:READ_CAP]
            cut_at = data.rfind(b"\n") + 1 or READ_CAP
            shown = data[:cut_at].decode("utf-8", errors="replace")
            lines = shown.count("\n")
            return (
                f"{shown}\n[... file cut: {size} bytes, the first {cut_at} shown (lines 1-{lines}); "
                f"read the rest with start_line={lines + 1} ...]"
            )
        first = start_line or 1
        out: list[bytes] = []
        used = 0
        last = first - 1
        total = 0
        truncated = False
        for number, line in enumerate(f, start=1):
            total = number
            if number < first:
                continue
            if end_line is not None and number > end_line:
                break
            if used + len(line) > READ_CAP and out:
                truncated = True
                break
            out.append(line)
            used += len(line)
            last = number
        text = b"".join(out).decode("utf-8", errors="replace")
        if not out:
            return f"[the file has only {total} lines; nothing at line {first}]"
        if truncated:
            text += f"\n[... cut at {READ_CAP} bytes: lines {first}-{last} shown; read on with start_line={last + 1} ...]"
        return text


# --- list -----------------------------------------------------------------------------------------


def tool_list(ctx: ToolContext, path: str = ".") -> str:
    p = ctx.resolve(path)
    if not p.exists():
        raise ToolError(f"Directory not found: {p}")
    if not p.is_dir():
        raise ToolError(f"{p} is a file, not a directory; use the read tool for files")
    entries = []
    with os.scandir(p) as it:
        for entry in it:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            entries.append(entry.name + ("/" if is_dir else ""))
    entries.sort()
    if not entries:
        return "(empty directory)"
    shown = entries[:LIST_CAP]
    text = "\n".join(shown)
    if len(entries) > LIST_CAP:
        text += f"\n[... {len(entries) - LIST_CAP} more entries not shown ...]"
    return cut(text)


# --- bash -----------------------------------------------------------------------------------------


class _Capture:
    """Reads a pipe to the end, keeping its head and tail within the output cap."""

    def __init__(self, pipe, limit: int):
        self.pipe = pipe
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self.limit = limit
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        half = self.limit // 2
        try:
            while chunk := self.pipe.read1(65536) if hasattr(self.pipe, "read1") else self.pipe.read(65536):
                self.total += len(chunk)
                room = half - len(self.head)
                if room > 0:
                    self.head += chunk[:room]
                    chunk = chunk[room:]
                if chunk:
                    self.tail += chunk
                    if len(self.tail) > half:
                        del self.tail[: len(self.tail) - half]
        except (OSError, ValueError):
            pass

    def text(self) -> str:
        self.thread.join(timeout=5)
        kept = len(self.head) + len(self.tail)
        head = self.head.decode("utf-8", errors="replace")
        if self.total <= kept:
            return head + self.tail.decode("utf-8", errors="replace")
        tail = self.tail.decode("utf-8", errors="replace")
        return f"{head}\n[... {self.total - kept} bytes cut from the middle of the output ...]\n{tail}"


def _kill_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tool_bash(ctx: ToolContext, command: str, timeout: float | int | None = None) -> str:
    if not isinstance(command, str) or not command.strip():
        raise ToolError("command must be a non-empty string")
    if timeout is None:
        timeout = BASH_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ToolError(f"timeout must be a positive number of seconds, got {timeout!r}")
    timeout = min(float(timeout), BASH_TIMEOUT_MAX)
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    proc = subprocess.Popen(
        ["bash", "-c", command],
        cwd=ctx.cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # Ctrl+C reaches the agent, which then ends the whole group
    )
    capture = _Capture(proc.stdout, OUTPUT_CAP)
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
    except BaseException:
        _kill_group(proc)
        raise
    output = capture.text()
    proc.stdout.close()
    if timed_out:
        raise ToolError(f"{output}\n[timed out after {timeout:g} s; the command was killed]".lstrip("\n"))
    code = proc.returncode
    if code != 0:
        status = f"[killed by signal {-code}]" if code < 0 else f"[exit code {code}]"
        raise ToolError(f"{output}\n{status}".lstrip("\n"))
    return f"{output}\n[exit code 0]" if output else "[exit code 0, no output]"


# --- glob -----------------------------------------------------------------------------------------


def tool_glob(ctx: ToolContext, pattern: str, path: str = ".") -> str:
    if not isinstance(pattern, str) or not pattern:
        raise ToolError("pattern must be a non-empty string, e.g. '**/*.py'")
    base = ctx.resolve(path)
    if not base.is_dir():
        raise ToolError(f"Directory not found: {base}")
    deadline = time.monotonic() + 30
    matches = []
    skip_git = ".git" not in pattern
    for i, match in enumerate(globlib.iglob(pattern, root_dir=base, recursive=True, include_hidden=True)):
        if skip_git and (match == ".git" or match.startswith(".git/") or "/.git/" in match):
            continue
        matches.append(match)
        if len(matches) > 50 * LIST_CAP or (i % 1000 == 0 and time.monotonic() > deadline):
            break
    if not matches:
        return "No files found matching the pattern"
    matches.sort()
    shown = [m + ("/" if (base / m).is_dir() and not m.endswith("/") else "") for m in matches[:LIST_CAP]]
    text = "\n".join(shown)
    if len(matches) > LIST_CAP:
        text += f"\n[... {len(matches) - LIST_CAP} more matches not shown; narrow the pattern ...]"
    return cut(text)


# --- rg -------------------------------------------------------------------------------------------

_RG_PREFIX = [
    "--color=never",
    "--no-heading",
    "--line-number",
    f"--max-columns={LINE_CAP}",
    "--max-columns-preview",
]


def tool_rg(ctx: ToolContext, args: str) -> str:
    if not isinstance(args, str) or not args.strip():
        raise ToolError("args must be a non-empty string, e.g. '-i TODO src/'")
    try:
        argv = shlex.split(args)
    except ValueError as exc:
        raise ToolError(f"cannot split the arguments: {exc}") from exc
    if ctx.ripgrep:
        return _ripgrep(ctx, argv)
    return search(ctx, argv)


def _ripgrep(ctx: ToolContext, argv: list[str]) -> str:
    try:
        proc = subprocess.run(
            [ctx.ripgrep, *_RG_PREFIX, *argv],
            cwd=ctx.cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=RG_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"ripgrep took longer than {RG_TIMEOUT:g} s; narrow the search") from exc
    out = proc.stdout.decode("utf-8", errors="replace")
    err = proc.stderr.decode("utf-8", errors="replace").strip()
    if proc.returncode == 1 and not out:
        return "No matches found"
    if proc.returncode >= 2 and not out:
        raise ToolError(f"rg failed: {err or f'exit code {proc.returncode}'}")
    text = out.rstrip("\n")
    if err:
        text += f"\n[rg reported: {err}]"
    return cut(text)


_TYPES = {
    "py": ["*.py", "*.pyi"],
    "python": ["*.py", "*.pyi"],
    "js": ["*.js", "*.mjs", "*.cjs", "*.jsx"],
    "ts": ["*.ts", "*.tsx", "*.mts", "*.cts"],
    "md": ["*.md", "*.markdown"],
    "markdown": ["*.md", "*.markdown"],
    "json": ["*.json"],
    "yaml": ["*.yaml", "*.yml"],
    "toml": ["*.toml"],
    "sh": ["*.sh", "*.bash"],
    "rust": ["*.rs"],
    "go": ["*.go"],
    "c": ["*.c", "*.h"],
    "cpp": ["*.cpp", "*.cc", "*.cxx", "*.hpp", "*.hh", "*.h"],
    "java": ["*.java"],
    "html": ["*.html", "*.htm"],
    "css": ["*.css"],
    "txt": ["*.txt"],
    "jinja": ["*.j2", "*.jinja", "*.jinja2"],
}

_SHORT_FLAGS = {"i", "S", "s", "F", "w", "l", "c", "n", "N", "."}
_SHORT_WITH_VALUE = {"g", "t", "T", "e", "m"}
_LONG = {
    "--ignore-case": "i",
    "--smart-case": "S",
    "--case-sensitive": "s",
    "--fixed-strings": "F",
    "--word-regexp": "w",
    "--files-with-matches": "l",
    "--count": "c",
    "--line-number": "n",
    "--no-line-number": "N",
    "--hidden": ".",
}
_LONG_WITH_VALUE = {"--glob": "g", "--type": "t", "--type-not": "T", "--regexp": "e", "--max-count": "m"}
SEARCH_OPTIONS = "-i -S -s -F -w -l -c -n -N --hidden -g GLOB -t TYPE -T TYPE -e PATTERN -m NUM"


def _parse_search_args(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    opts: dict[str, Any] = {
        "flags": set(),
        "globs": [],
        "types": [],
        "not_types": [],
        "patterns": [],
        "max": None,
    }
    positional: list[str] = []

    def take(letter: str, value: str) -> None:
        if letter == "g":
            opts["globs"].append(value)
        elif letter in ("t", "T"):
            if value not in _TYPES:
                raise ToolError(f"unknown file type {value!r}; known: {', '.join(sorted(_TYPES))}")
            opts["types" if letter == "t" else "not_types"].append(value)
        elif letter == "e":
            opts["patterns"].append(value)
        elif letter == "m":
            if not value.isdigit():
                raise ToolError(f"-m needs a number, got {value!r}")
            opts["max"] = int(value)

    i = 0
    only_positional = False
    while i < len(argv):
        arg = argv[i]
        i += 1
        if only_positional or arg == "-" or not arg.startswith("-"):
            positional.append(arg)
        elif arg == "--":
            only_positional = True
        elif arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if name in _LONG and not eq:
                opts["flags"].add(_LONG[name])
            elif name in _LONG_WITH_VALUE:
                if not eq:
                    if i >= len(argv):
                        raise ToolError(f"{name} needs a value")
                    value = argv[i]
                    i += 1
                take(_LONG_WITH_VALUE[name], value)
            else:
                raise ToolError(
                    f"option {name} is not supported by the built-in search (ripgrep is not installed here); "
                    f"supported: {SEARCH_OPTIONS}"
                )
        else:
            letters = arg[1:]
            j = 0
            while j < len(letters):
                letter = letters[j]
                j += 1
                if letter in _SHORT_FLAGS:
                    opts["flags"].add(letter)
                elif letter in _SHORT_WITH_VALUE:
                    value = letters[j:]
                    if not value:
                        if i >= len(argv):
                            raise ToolError(f"-{letter} needs a value")
                        value = argv[i]
                        i += 1
                    take(letter, value)
                    break
                else:
                    raise ToolError(
                        f"option -{letter} is not supported by the built-in search (ripgrep is not installed "
                        f"here); supported: {SEARCH_OPTIONS}"
                    )
    if not opts["patterns"]:
        if not positional:
            raise ToolError("no search pattern given")
        opts["patterns"].append(positional.pop(0))
    return opts, positional


def _glob_ok(rel: str, globs: list[str]) -> bool:
    if not globs:
        return True
    name = rel.rsplit("/", 1)[-1]
    positives = [g for g in globs if not g.startswith("!")]
    for g in globs:
        if g.startswith("!") and (fnmatch.fnmatch(rel, g[1:]) or fnmatch.fnmatch(name, g[1:])):
            return False
    if not positives:
        return True
    return any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(name, g) for g in positives)


def _type_ok(name: str, types: list[str], not_types: list[str]) -> bool:
    if any(fnmatch.fnmatch(name, g) for t in not_types for g in _TYPES[t]):
        return False
    return not types or any(fnmatch.fnmatch(name, g) for t in types for g in _TYPES[t])


def search(ctx: ToolContext, argv: list[str]) -> str:
    """A pure-Python stand-in for the ripgrep options models use most (ripgrep itself is preferred).

    Differences from ripgrep: Python regular expressions, .gitignore files are not read (hidden files and
    .git are skipped as ripgrep does), results are sorted by path.
    """
    opts, paths = _parse_search_args(argv)
    flags = opts["flags"]
    sources = [re.escape(p) if "F" in flags else p for p in opts["patterns"]]
    if "w" in flags:
        sources = [rf"\b(?:{s})\b" for s in sources]
    ignore_case = "i" in flags or ("S" in flags and not any(ch.isupper() for ch in "".join(opts["patterns"])))
    if "s" in flags:
        ignore_case = False
    try:
        regex = re.compile("|".join(f"(?:{s})" for s in sources), re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise ToolError(f"bad regular expression: {exc}") from exc
    show_numbers = "N" not in flags
    hidden = "." in flags
    explicit = bool(paths)
    lines_out: list[str] = []
    size = 0
    deadline = time.monotonic() + RG_TIMEOUT
    errors: list[str] = []

    def files():
        for given in paths or ["."]:
            root = ctx.resolve(given)
            if root.is_file():
                yield given, root
                continue
            if not root.is_dir():
                errors.append(f"{given}: No such file or directory")
                continue
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if d != ".git" and (hidden or not d.startswith(".")))
                for name in sorted(filenames):
                    if not hidden and name.startswith("."):
                        continue
                    full = Path(dirpath) / name
                    rel = os.path.relpath(full, root)
                    shown = (
                        rel if not explicit else (os.path.join(given, rel) if given != "." else f"./{rel}")
                    )
                    yield shown, full

    for shown, full in files():
        if time.monotonic() > deadline:
            errors.append(f"stopped after {RG_TIMEOUT:g} s; narrow the search")
            break
        rel_for_glob = shown[2:] if shown.startswith("./") else shown
        name = full.name
        if not _glob_ok(rel_for_glob, opts["globs"]) or not _type_ok(name, opts["types"], opts["not_types"]):
            continue
        try:
            with open(full, "rb") as f:
                if _looks_binary(f.read(BINARY_SNIFF)):
                    continue
                f.seek(0)
                count = 0
                for number, raw in enumerate(f, start=1):
                    line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                    if not regex.search(line):
                        continue
                    count += 1
                    if "l" in flags:
                        break
                    if "c" not in flags:
                        if len(line) > LINE_CAP:
                            line = line[:LINE_CAP] + " [... line cut ...]"
                        entry = f"{shown}:{number}:{line}" if show_numbers else f"{shown}:{line}"
                        lines_out.append(entry)
                        size += len(entry) + 1
                    if opts["max"] is not None and count >= opts["max"]:
                        break
                    if size > OUTPUT_CAP:
                        break
        except OSError as exc:
            errors.append(f"{shown}: {exc.strerror or exc}")
            continue
        if count and "l" in flags:
            lines_out.append(shown)
            size += len(shown) + 1
        elif count and "c" in flags:
            lines_out.append(f"{shown}:{count}")
            size += len(shown) + 8
        if size > OUTPUT_CAP:
            lines_out.append("[... output cut: more matches not shown; narrow the search ...]")
            break
    if not lines_out:
        if errors:
            raise ToolError("search failed: " + "; ".join(errors))
        return "No matches found"
    text = "\n".join(lines_out)
    if errors:
        text += "\n[search reported: " + "; ".join(errors) + "]"
    return cut(text)


# --- registry -------------------------------------------------------------------------------------

TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        Tool(
            "read",
            "Read a text file. Without line numbers it returns the start of the file (up to 128 KiB); "
            "pass start_line/end_line (1-based, inclusive) to read a part of a large file.",
            {
                "type": "object",
                "properties": {
                    "path": {
                        "type": "string",
                        "description": "Path of the file, relative to the working directory",
                    },
                    "start_line": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "First line to return (1-based)",
                    },
                    "end_line": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "Last line to return (inclusive)",
                    },
                },
                "required": ["path"],
            },
            tool_read,
        ),
        Tool(
            "list",
            "List the contents of a directory; directories end with '/'.",
            {
                "type": "object",
                "properties": {
                    "path": {
                        "type": "string",
                        "description": "Directory to list (default: the working directory)",
                    }
                },
                "required": [],
            },
            tool_list,
        ),
        Tool(
            "bash",
            "Run a command with bash in the working directory. stdout and stderr are returned together, "
            "with the exit code; the command is killed after the timeout (default 120 s, at most 600 s).",
            {
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "The bash command line to run"},
                    "timeout": {"type": "number", "description": "Seconds before the command is killed"},
                },
                "required": ["command"],
            },
            tool_bash,
        ),
        Tool(
            "glob",
            "Find files whose paths match a glob pattern, e.g. '**/*.py'; directories end with '/'.",
            {
                "type": "object",
                "properties": {
                    "pattern": {
                        "type": "string",
                        "description": "Glob pattern, e.g. '**/*.py' or 'src/*.ts'",
                    },
                    "path": {
                        "type": "string",
                        "description": "Directory to search from (default: the working directory)",
                    },
                },
                "required": ["pattern"],
            },
            tool_glob,
        ),
        Tool(
            "rg",
            "Search file contents with ripgrep; prints path:line:text. Examples of args: '-l prompt', "
            "'-i TODO', '--type py class_name', 'function_name src/'. Never add quotes around the pattern "
            "unless it contains spaces.",
            {
                "type": "object",
                "properties": {"args": {"type": "string", "description": "Arguments passed to ripgrep"}},
                "required": ["args"],
            },
            tool_rg,
        ),
    )
}


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return text


def run_tool(ctx: ToolContext, name: str, args_json: str) -> ToolOutcome:
    """Run one tool call as the model sent it; never raises (except KeyboardInterrupt)."""
    tool = TOOLS.get(name)
    if tool is None:
        return ToolOutcome(f"Unknown tool {name!r}; the tools are: {', '.join(TOOLS)}", True)
    try:
        args = json.loads(args_json) if args_json and args_json.strip() else {}
    except json.JSONDecodeError as exc:
        return ToolOutcome(f"The arguments are not valid JSON ({exc}): {cut(args_json, 500)}", True)
    if not isinstance(args, dict):
        return ToolOutcome("The arguments must be a JSON object", True)
    allowed = tool.parameters["properties"]
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        return ToolOutcome(
            f"Unknown argument(s) {', '.join(unknown)} for {name}; it takes: {', '.join(allowed)}", True
        )
    missing = [p for p in tool.parameters.get("required", []) if p not in args]
    if missing:
        return ToolOutcome(f"Missing required argument(s) for {name}: {', '.join(missing)}", True)
    try:
        text = tool.run(ctx, **args)
        return ToolOutcome(_scrub(cut(text, OUTPUT_CAP + 1024), ctx.secrets), False)
    except ToolError as exc:
        return ToolOutcome(_scrub(cut(str(exc), OUTPUT_CAP + 1024), ctx.secrets), True)
    except (OSError, ValueError, TypeError, UnicodeError, subprocess.SubprocessError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
        return ToolOutcome(_scrub(f"{name} failed: {detail}{where}", ctx.secrets), True)
