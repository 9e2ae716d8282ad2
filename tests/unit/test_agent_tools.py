"""The agent's tools: results, caps with notes, and errors returned (never raised)."""

import json
import os
import shutil
import time

import pytest

from pi_ansible.agent import tools as t
from pi_ansible.agent.tools import ToolContext, run_tool

RG = shutil.which("rg")


@pytest.fixture
def project(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("import os\n\ndef main():\n    return 'Hello World'\n")
    (tmp_path / "src" / "util.py").write_text("def helper():\n    return 42  # TODO tidy\n")
    (tmp_path / "README.md").write_text("# Demo\nTODO: write docs\n")
    (tmp_path / ".hidden").write_text("TODO secret\n")
    (tmp_path / "blob.bin").write_bytes(b"\0\1\2TODO")
    return tmp_path


@pytest.fixture
def ctx(project):
    return ToolContext(cwd=project)


def call(ctx, name, **args):
    return run_tool(ctx, name, json.dumps(args))


# --- read


def test_read_whole_file(ctx):
    out = call(ctx, "read", path="src/app.py")
    assert not out.is_error
    assert out.text == "import os\n\ndef main():\n    return 'Hello World'\n"


def test_read_line_range(ctx):
    assert (
        call(ctx, "read", path="src/app.py", start_line=3, end_line=4).text
        == "def main():\n    return 'Hello World'\n"
    )
    assert call(ctx, "read", path="src/app.py", start_line=4).text == "    return 'Hello World'\n"
    assert call(ctx, "read", path="src/app.py", end_line=1).text == "import os\n"
    beyond = call(ctx, "read", path="src/app.py", start_line=50)
    assert "only 4 lines" in beyond.text


@pytest.mark.parametrize(
    "args, message",
    [
        ({"path": "missing.txt"}, "File not found"),
        ({"path": "src"}, "is a directory"),
        ({"path": "blob.bin"}, "binary file"),
        ({"path": "src/app.py", "start_line": 0}, "start_line must be"),
        ({"path": "src/app.py", "start_line": 3, "end_line": 2}, "before start_line"),
        ({"path": "src/app.py", "start_line": "2"}, "start_line must be"),
    ],
)
def test_read_errors_go_back_as_results(ctx, args, message):
    out = run_tool(ctx, "read", json.dumps(args))
    assert out.is_error
    assert message in out.text


def test_read_is_capped_with_a_note(ctx, project, monkeypatch):
    monkeypatch.setattr(t, "READ_CAP", 1000)
    (project / "big.txt").write_text("".join(f"line {n:04d} " + "x" * 40 + "\n" for n in range(1, 201)))
    out = call(ctx, "read", path="big.txt")
    assert not out.is_error
    assert len(out.text) < 1300
    assert "file cut" in out.text and "start_line=" in out.text
    last_full = out.text.split("\n[")[0].splitlines()[-1]
    assert last_full.endswith("x" * 40)  # cut at a line end
    nxt = int(out.text.rsplit("start_line=", 1)[1].split()[0])
    assert call(ctx, "read", path="big.txt", start_line=nxt, end_line=nxt).text.startswith(f"line {nxt:04d}")
    ranged = call(ctx, "read", path="big.txt", start_line=10, end_line=200)
    assert "cut at 1000 bytes" in ranged.text


def test_read_absolute_path(ctx, project):
    assert "Demo" in call(ctx, "read", path=str(project / "README.md")).text


# --- list


def test_list(ctx):
    out = call(ctx, "list")
    assert out.text.splitlines() == [".hidden", "README.md", "blob.bin", "src/"]
    assert call(ctx, "list", path="src").text == "app.py\nutil.py"


def test_list_errors_and_empty(ctx, project):
    assert call(ctx, "list", path="nope").is_error
    assert "Directory not found" in call(ctx, "list", path="nope").text
    assert call(ctx, "list", path="README.md").is_error
    (project / "empty").mkdir()
    assert call(ctx, "list", path="empty").text == "(empty directory)"


def test_list_cap(ctx, project, monkeypatch):
    monkeypatch.setattr(t, "LIST_CAP", 5)
    many = project / "many"
    many.mkdir()
    for n in range(12):
        (many / f"f{n:02d}").write_text("")
    out = call(ctx, "list", path="many")
    assert out.text.splitlines()[:5] == ["f00", "f01", "f02", "f03", "f04"]
    assert "7 more entries not shown" in out.text


# --- bash


def test_bash_output_and_exit_code(ctx):
    out = call(ctx, "bash", command="echo hi; echo err >&2")
    assert not out.is_error
    assert out.text == "hi\nerr\n\n[exit code 0]"
    failed = call(ctx, "bash", command="echo nope; exit 3")
    assert failed.is_error
    assert failed.text == "nope\n\n[exit code 3]"
    assert call(ctx, "bash", command="true").text == "[exit code 0, no output]"


def test_bash_runs_in_the_working_directory(ctx, project):
    assert call(ctx, "bash", command="pwd").text.startswith(str(project))


def test_bash_timeout_kills_the_command(ctx):
    start = time.monotonic()
    out = call(ctx, "bash", command="echo started; sleep 30", timeout=1)
    assert time.monotonic() - start < 10
    assert out.is_error
    assert "started" in out.text and "timed out after 1 s" in out.text


def test_bash_output_is_capped_head_and_tail(ctx, monkeypatch):
    monkeypatch.setattr(t, "OUTPUT_CAP", 2000)
    out = call(ctx, "bash", command="echo FIRST; head -c 200000 /dev/zero | tr '\\0' x; echo; echo LAST")
    assert not out.is_error
    assert out.text.startswith("FIRST")
    assert "LAST" in out.text and "cut from the middle" in out.text
    assert len(out.text) < 5000


def test_bash_does_not_see_the_api_keys_and_results_are_scrubbed(project, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-secret")
    monkeypatch.setenv("PI_API_KEY", "pi-env-secret")
    ctx = ToolContext(cwd=project, secrets=("sk-given-secret",))
    out = call(ctx, "bash", command="env; echo sk-given-secret")
    assert "sk-env-secret" not in out.text and "pi-env-secret" not in out.text
    assert "sk-given-secret" not in out.text and "[redacted]" in out.text


def test_bash_rejects_bad_arguments(ctx):
    assert call(ctx, "bash", command="").is_error
    assert call(ctx, "bash", command="true", timeout=-1).is_error


# --- glob


def test_glob(ctx):
    assert call(ctx, "glob", pattern="**/*.py").text == "src/app.py\nsrc/util.py"
    assert call(ctx, "glob", pattern="*").text.splitlines() == [".hidden", "README.md", "blob.bin", "src/"]
    assert call(ctx, "glob", pattern="*.py", path="src").text == "app.py\nutil.py"
    assert call(ctx, "glob", pattern="*.rs").text == "No files found matching the pattern"
    assert call(ctx, "glob", pattern="*", path="nope").is_error


def test_glob_skips_git_internals(ctx, project):
    (project / ".git").mkdir()
    (project / ".git" / "HEAD").write_text("ref")
    assert ".git" not in call(ctx, "glob", pattern="**/*").text
    assert ".git/HEAD" in call(ctx, "glob", pattern=".git/*").text


# --- rg, with ripgrep and with the built-in search: the same answers


@pytest.fixture(params=["ripgrep", "builtin"])
def search_ctx(request, project):
    if request.param == "ripgrep":
        if not RG:
            pytest.skip("ripgrep not on PATH")
        return ToolContext(cwd=project, ripgrep=RG)
    return ToolContext(cwd=project, ripgrep=None)


def lines(text):
    return sorted(text.splitlines())


def test_rg_matches(search_ctx):
    assert lines(call(search_ctx, "rg", args="TODO").text) == [
        "README.md:2:TODO: write docs",
        "src/util.py:2:    return 42  # TODO tidy",
    ]
    assert lines(call(search_ctx, "rg", args="-l TODO").text) == ["README.md", "src/util.py"]
    assert lines(call(search_ctx, "rg", args="-i hello src/").text) == [
        "src/app.py:4:    return 'Hello World'"
    ]
    assert lines(call(search_ctx, "rg", args="--hidden -l secret").text) == [".hidden"]
    assert lines(call(search_ctx, "rg", args="-t py -c return").text) == ["src/app.py:1", "src/util.py:1"]
    assert lines(call(search_ctx, "rg", args="-g '*.md' TODO").text) == ["README.md:2:TODO: write docs"]
    assert lines(call(search_ctx, "rg", args="-F 'Hello World'").text) == [
        "src/app.py:4:    return 'Hello World'"
    ]
    assert lines(call(search_ctx, "rg", args="-N -w helper").text) == ["src/util.py:def helper():"]


def test_rg_no_match_and_errors(search_ctx):
    assert call(search_ctx, "rg", args="zebra").text == "No matches found"
    assert not call(search_ctx, "rg", args="zebra").is_error
    assert call(search_ctx, "rg", args="TODO nope/").is_error
    assert call(search_ctx, "rg", args="'unclosed").is_error
    assert call(search_ctx, "rg", args="").is_error


def test_builtin_search_refuses_unknown_options(project):
    out = call(ToolContext(cwd=project, ripgrep=None), "rg", args="--pcre2 x")
    assert out.is_error and "not supported by the built-in search" in out.text


def test_builtin_search_bad_regex(project):
    out = call(ToolContext(cwd=project, ripgrep=None), "rg", args="'('")
    assert out.is_error and "bad regular expression" in out.text


# --- run_tool: whatever the model sends, a result comes back


@pytest.mark.parametrize(
    "name, args, message",
    [
        ("delete", "{}", "Unknown tool"),
        ("read", "{not json", "not valid JSON"),
        ("read", "[1]", "must be a JSON object"),
        ("read", "{}", "Missing required argument(s) for read: path"),
        ("read", '{"path": "a", "mode": "w"}', "Unknown argument(s) mode"),
        ("read", '{"path": 5}', "path must be a string"),
    ],
)
def test_run_tool_never_raises(ctx, name, args, message):
    out = run_tool(ctx, name, args)
    assert out.is_error
    assert message in out.text


def test_empty_arguments_mean_defaults(ctx):
    assert not run_tool(ctx, "list", "").is_error


def test_os_errors_become_results(ctx, project):
    locked = project / "locked.txt"
    locked.write_text("x")
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as root: permissions are not enforced")
        out = call(ctx, "read", path="locked.txt")
        assert out.is_error and "Permission denied" in out.text
    finally:
        locked.chmod(0o600)


def test_cut_says_what_was_left_out():
    assert t.cut("abc", 10) == "abc"
    assert t.cut("a" * 30, 10) == "a" * 10 + "\n[... output cut: 20 more characters not shown ...]"
    assert "cut from the middle" in t.cut("a" * 30, 10, keep_tail=True)


def test_tool_schemas_are_well_formed():
    import jsonschema

    for tool in t.TOOLS.values():
        jsonschema.Draft202012Validator.check_schema(tool.parameters)
        assert set(tool.parameters["required"]) <= set(tool.parameters["properties"])
    assert list(t.TOOLS) == ["read", "list", "bash", "glob", "rg"]
