"""plugins/modules/pi_files.py, run as Ansible runs a module (its arguments in a JSON file): directories and whole
files with their modes, written only where they differ, never readable by others on the way, content never shown."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import threading

from ..conftest import REPO

MODULE = REPO / "plugins" / "modules" / "pi_files.py"
CANARY = "pi_canary_files_7c1e"


def run(tmp_path, check=False, **args) -> dict:
    (tmp_path / "args.json").write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check}}))
    proc = subprocess.run([sys.executable, str(MODULE), str(tmp_path / "args.json")], capture_output=True, text=True,
                          timeout=60)
    assert CANARY not in proc.stdout + proc.stderr, "file content must never be shown"
    return json.loads(proc.stdout)


def mode(path) -> str:
    return oct(stat.S_IMODE(os.stat(path).st_mode))


def layout(tmp_path, content=f"KEY={CANARY}\n"):
    etc = tmp_path / "etc" / "pi"
    return {"directories": [{"path": str(etc)}, {"path": str(etc / "sub"), "mode": "0700"}],
            "files": [{"path": str(etc / "secrets.env"), "content": content, "mode": "0600"},
                      {"path": str(etc / "pod.json"), "content": "{}\n"}]}, etc


def test_creates_writes_then_a_second_run_changes_nothing(tmp_path):
    args, etc = layout(tmp_path)
    would = run(tmp_path, check=True, **args)
    assert would["changed"] and len(would["changed_paths"]) == 4 and not etc.exists()

    first = run(tmp_path, **args)
    assert first["changed"] and first["changed_paths"] == [str(etc), str(etc / "sub"), str(etc / "secrets.env"),
                                                           str(etc / "pod.json")]
    assert (etc / "secrets.env").read_text() == f"KEY={CANARY}\n" and (etc / "pod.json").read_text() == "{}\n"
    assert (mode(etc), mode(etc / "sub"), mode(etc / "secrets.env"), mode(etc / "pod.json")) == \
        ("0o755", "0o700", "0o600", "0o644")
    assert sorted(p.name for p in etc.iterdir()) == ["pod.json", "secrets.env", "sub"], "no temporary file is left"

    again = run(tmp_path, **args)
    assert again == {**again, "changed": False, "changed_paths": []}
    assert run(tmp_path, check=True, **args)["changed"] is False


def test_only_what_differs_changes_and_check_mode_touches_nothing(tmp_path):
    args, etc = layout(tmp_path)
    run(tmp_path, **args)
    os.chmod(etc / "pod.json", 0o666)
    inode = os.stat(etc / "secrets.env").st_ino
    fixed = run(tmp_path, **args)
    assert fixed["changed_paths"] == [str(etc / "pod.json")] and mode(etc / "pod.json") == "0o644"
    assert os.stat(etc / "secrets.env").st_ino == inode, "an unchanged file is not rewritten"

    changed, _ = layout(tmp_path, content=f"KEY={CANARY}-2\n")
    would = run(tmp_path, check=True, **changed)
    assert would["changed_paths"] == [str(etc / "secrets.env")]
    assert (etc / "secrets.env").read_text() == f"KEY={CANARY}\n"
    assert run(tmp_path, **changed)["changed_paths"] == [str(etc / "secrets.env")]
    assert (etc / "secrets.env").read_text() == f"KEY={CANARY}-2\n" and mode(etc / "secrets.env") == "0o600"


def test_a_new_secret_file_is_never_readable_by_others_while_written(tmp_path):
    """Watch the directory while the module writes a 0600 file: every name in it, temporary ones included, is
    0600 or stricter whenever it can be seen."""
    args, etc = layout(tmp_path)
    etc.mkdir(parents=True)
    seen, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            for entry in os.scandir(etc):
                if entry.name != "pod.json" and entry.is_file():
                    with contextlib.suppress(FileNotFoundError):  # renamed away meanwhile
                        seen.append(stat.S_IMODE(entry.stat().st_mode))

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        run(tmp_path, files=[args["files"][0]])
    finally:
        stop.set()
        t.join(5)
    assert seen and all(m & 0o077 == 0 for m in seen), sorted(set(map(oct, seen)))


def test_clear_errors_change_nothing_more(tmp_path):
    (tmp_path / "taken").write_text("a file")
    out = run(tmp_path, directories=[{"path": str(tmp_path / "taken")}])
    assert out.get("failed") and out["msg"] == f"{tmp_path / 'taken'} exists and is not a directory: remove it, then run again"
    out = run(tmp_path, files=[{"path": str(tmp_path / "nowhere" / "f"), "content": CANARY}])
    assert out.get("failed") and "is not a directory (list it in directories)" in out["msg"]
    assert not (tmp_path / "nowhere").exists()
