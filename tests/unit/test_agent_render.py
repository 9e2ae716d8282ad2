"""Rendering: text for people (answer on stdout, the rest on stderr), JSON lines for programs."""

import io
import json

from pi_ansible.agent import events as ev
from pi_ansible.agent.interactive import read_message
from pi_ansible.agent.render import JsonRenderer, TextRenderer, compact_args, summarize_result

TURN = [
    ev.UserMessage("q"),
    ev.AssistantStart(),
    ev.ReasoningDelta("hmm"),
    ev.Reasoning("hmm"),
    ev.ToolCall("c1", "read", '{"path": "a.txt", "start_line": 2}'),
    ev.TokenUsage(5, 1, 6, 0, 0),
    ev.ToolResult("c1", "one\ntwo\nthree", False),
    ev.AssistantStart(),
    ev.AssistantDelta("The "),
    ev.AssistantDelta("answer."),
    ev.AssistantMessage("The answer."),
    ev.TokenUsage(9, 3, 12, 0, 0),
]


class Flushes(io.StringIO):
    def __init__(self):
        super().__init__()
        self.flushed_at = []

    def flush(self):
        self.flushed_at.append(len(self.getvalue()))


def test_json_lines_skip_deltas_and_flush_each_event():
    out = Flushes()
    r = JsonRenderer(out)
    for e in TURN:
        r(e)
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["type"] for line in lines] == [e.type for e in TURN if not e.transient]
    assert len(out.flushed_at) == len(lines)
    assert out.flushed_at[0] == len(lines[0]) + 1


def test_text_answer_on_stdout_the_rest_on_stderr():
    out, err = io.StringIO(), io.StringIO()
    r = TextRenderer(out, err, color=False)
    for e in TURN:
        r(e)
    assert out.getvalue() == "The answer.\n"
    assert err.getvalue().splitlines() == [
        "[thinking] hmm",
        "* read(path='a.txt', start_line=2)",
        "  -> 3 lines",
    ]
    assert r.turn_usage == ev.TokenUsage(14, 4, 18, 0, 0)


def test_unstreamed_message_is_printed_whole_and_errors_only_when_asked():
    out, err = io.StringIO(), io.StringIO()
    r = TextRenderer(out, err, color=False)
    r(ev.AssistantStart())
    r(ev.AssistantMessage("whole"))
    r(ev.Error("boom"))
    r(ev.Interrupted())
    assert out.getvalue() == "whole\n"
    assert err.getvalue() == "[cancelled]\n"
    r2 = TextRenderer(out, err, color=False, show_errors=True)
    r2(ev.Error("boom"))
    assert err.getvalue().endswith("Error: boom\n")


def test_same_terminal_lines_do_not_run_together():
    term = io.StringIO()
    r = TextRenderer(term, term, color=False)
    for e in (
        ev.AssistantStart(),
        ev.AssistantDelta("Let me look"),
        ev.ToolCall("c", "list", "{}"),
        ev.ToolResult("c", "File not found: x\n[exit code 1]", True),
    ):
        r(e)
    assert term.getvalue() == "Let me look\n* list()\n  -> error: File not found: x [exit code 1]\n"


def test_compact_args_and_summaries():
    assert compact_args('{"command": "' + "x" * 100 + '"}').endswith("…")
    assert compact_args("{broken") == "{broken"
    assert compact_args("") == ""
    assert summarize_result("single line", False) == "single line"
    assert summarize_result("", False) == "1 line"


def test_read_message_multiline():
    def reader(lines):
        it = iter(lines)

        def read_line(prompt):
            try:
                return next(it)
            except StopIteration:
                raise EOFError from None

        return read_line

    assert read_message(reader(["hello"])) == "hello"
    assert read_message(reader(["first \\", "second"])) == "first \nsecond"
    assert read_message(reader(['"""', "a", "", "b", '"""'])) == "a\n\nb"
