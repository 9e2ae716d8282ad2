"""The deterministic "model": what it answers, which tools it calls, how the server shapes that.

Policy (README.md, "Model behaviour"):
- Tools offered and tool_choice not "none": the tools the latest user message names (as words) are
  called one per assistant turn, in the order they appear in that message. Required parameters get
  values from the message's backtick-quoted strings, in order across the calls (quoted tool names
  are skipped); when they run out, path-like parameters get ".", other strings the first quoted
  string or "". After each tool result the next named tool not yet called in this turn is called.
- When every named tool has been called the answer quotes each tool result (first 400 characters).
- Nothing to call: a plain answer that echoes the question.
- Thinking (when the family thinks by default or a reasoning parser is on) adds a short reasoning text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from vllm.families import Family, render_tool_call

RESULT_CHARS = 400
QUESTION_CHARS = 500
_PATHY = ("path", "dir", "file", "folder", "cwd", "root")


@dataclass
class Msg:
    role: str
    content: str = ""
    tool_calls: list[dict] = field(default_factory=list)  # {"id", "name", "arguments"}
    tool_call_id: str | None = None
    name: str | None = None


@dataclass
class Decision:
    reasoning: str
    text: str | None
    calls: list[tuple[str, dict]]


def count_tokens(text: str) -> int:
    return len(re.findall(r"\w+|[^\w\s]", text or ""))


def pieces(text: str) -> list[str]:
    """Stream deltas: one word (with its trailing space) at a time."""
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


def content_text(content) -> str:
    """Chat/Responses content: a string or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    out = []
    for part in content:
        if isinstance(part, dict):
            out.append(str(part.get("text") or part.get("output") or ""))
        else:
            out.append(str(part))
    return "".join(out)


def _mentioned(question: str, tools: dict[str, dict]) -> list[str]:
    found = []
    for name in tools:
        m = re.search(r"(?<![\w-])" + re.escape(name) + r"(?![\w-])", question)
        if m:
            found.append((m.start(), name))
    return [n for _, n in sorted(found)]


def _arg_value(pname: str, schema: dict, quoted: list[str], cursor: list[int]):
    ptype = schema.get("type")
    if isinstance(ptype, list):
        ptype = next((t for t in ptype if t != "null"), "string")
    if ptype in (None, "string"):
        if schema.get("enum"):
            for q in quoted[cursor[0] :]:
                if q in schema["enum"]:
                    cursor[0] = quoted.index(q, cursor[0]) + 1
                    return q
            return schema["enum"][0]
        if cursor[0] < len(quoted):
            cursor[0] += 1
            return quoted[cursor[0] - 1]
        if any(p in pname.lower() for p in _PATHY):
            return "."
        return quoted[0] if quoted else ""
    if "default" in schema:
        return schema["default"]
    return {"integer": 1, "number": 1, "boolean": False, "array": [], "object": {}}.get(ptype, "")


def plan_calls(question: str, tools: dict[str, dict], names: list[str]) -> list[tuple[str, dict]]:
    quoted = [q for q in re.findall(r"`([^`\n]+)`", question) if q not in tools]
    cursor = [0]
    plan = []
    for name in names:
        params = tools[name].get("parameters") or {}
        props = params.get("properties") or {}
        args = {}
        for pname in params.get("required") or []:
            args[pname] = _arg_value(pname, props.get(pname) or {}, quoted, cursor)
        plan.append((name, args))
    return plan


def decide(messages: list[Msg], tools: list[dict], tool_choice="auto", model: str = "") -> Decision:
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    question = messages[last_user].content if last_user >= 0 else ""
    turn = messages[last_user + 1 :]
    names_by_id = {tc["id"]: tc["name"] for m in turn for tc in m.tool_calls}
    called = [tc["name"] for m in turn for tc in m.tool_calls]
    called += [m.name for m in turn if m.role == "tool" and m.name and m.tool_call_id not in names_by_id]
    results = [
        (names_by_id.get(m.tool_call_id or "", m.name or "tool"), m.content) for m in turn if m.role == "tool"
    ]
    offered = {t["name"]: t for t in tools} if tool_choice != "none" else {}
    q_short = question[:QUESTION_CHARS]

    names = _mentioned(question, offered)
    if isinstance(tool_choice, dict):
        forced = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
        names = [forced] if forced in offered else []
    elif tool_choice == "required" and offered and not names:
        names = [next(iter(offered))]
    plan = plan_calls(question, offered, names)
    pending = [(n, a) for n, a in plan if n not in called]
    if pending:
        name, args = pending[0]
        return Decision(
            f'The user asked: "{q_short[:200]}". I should call {name} next.', None, [(name, args)]
        )
    if results:
        lines = [f"- {name}: {text[:RESULT_CHARS]}" for name, text in results]
        text = "Here is what the tools returned:\n" + "\n".join(lines)
        return Decision("I have the tool results; I will report them.", text, [])
    text = f"You asked: {q_short}\nThis is a deterministic answer from the vLLM lab double serving {model}."
    return Decision(f'The user asked: "{q_short[:200]}". I will answer directly.', text, [])


@dataclass
class Shaped:
    reasoning: str | None  # what the reasoning parser separated (None: no reasoning field)
    content: str | None
    calls: list[tuple[str, dict]]  # structured tool calls
    raw: str  # the model's full text, as a parser would have seen it
    finish_reason: str


def shape(
    d: Decision,
    fam: Family,
    *,
    thinking: bool,
    reasoning_separated: bool,
    structured_tools: bool,
    forced_named: bool = False,
) -> Shaped:
    think = d.reasoning if thinking else None
    prefix = ""
    reasoning = None
    if think is not None:
        if reasoning_separated:
            reasoning = think
        else:
            prefix = fam.think_open + think + fam.think_close
    if d.calls:
        call_text = "\n".join(render_tool_call(fam.name, n, a, i) for i, (n, a) in enumerate(d.calls))
        raw = prefix + call_text
        if structured_tools:
            return Shaped(
                reasoning, prefix or None, list(d.calls), raw, "stop" if forced_named else "tool_calls"
            )
        return Shaped(reasoning, raw, [], raw, "stop")
    body = d.text or ""
    return Shaped(reasoning, prefix + body, [], prefix + body, "stop")


def truncate(text: str, max_tokens: int | None) -> tuple[str, bool]:
    if max_tokens is None or count_tokens(text) <= max_tokens:
        return text, False
    toks = [m.group(0) for m in re.finditer(r"\s*(\w+|[^\w\s])", text)]
    return "".join(toks[:max_tokens]), True


def args_json(args: dict) -> str:
    return json.dumps(args, ensure_ascii=False)
