"""ansible_launcher: its cache of ansible-core's parsed routing table, and its exit without the interpreter's teardown."""

from __future__ import annotations

import os
import subprocess
import sys

from pi_ansible.ansible_launcher import cached_meta_parser, exit_code

from ..conftest import REPO


def counting(result):
    calls = []

    def parse(data, content_id):
        calls.append(content_id)
        return result(data) if callable(result) else result

    return parse, calls


def test_a_table_is_parsed_once_then_read_back(tmp_path):
    real, calls = counting(lambda data: {"plugin_routing": {"modules": {"x": {"redirect": data.decode()}}}})
    parse = cached_meta_parser(real, str(tmp_path / "c"))
    first = parse(b"one", ("ansible", "builtin"))
    assert parse(b"one", ("ansible", "builtin")) == first and calls == [("ansible", "builtin")]
    assert parse(b"two", ("ansible", "builtin"))["plugin_routing"]["modules"]["x"]["redirect"] == "two"
    assert len(calls) == 2, "another table (another ansible-core) is parsed afresh"
    assert oct(os.stat(tmp_path / "c").st_mode & 0o777) == "0o700"


def test_a_damaged_entry_is_parsed_again_and_an_unwritable_cache_is_only_slower(tmp_path):
    real, calls = counting({"a": "b"})
    parse = cached_meta_parser(real, str(tmp_path))
    parse(b"t", None)
    (entry,) = tmp_path.glob("routing-*.marshal")
    entry.write_bytes(b"\x00garbage")
    assert parse(b"t", None) == {"a": "b"} and len(calls) == 2
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    parse = cached_meta_parser(real, str(blocked / "sub"))
    assert parse(b"t", None) == {"a": "b"} and parse(b"t", None) == {"a": "b"} and len(calls) == 4


def test_the_launcher_runs_ansible_playbook_and_fills_the_cache(tmp_path):
    play = tmp_path / "p.yml"
    play.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
                    "    - ansible.builtin.debug: {msg: launched}\n")
    env = {**os.environ, "PI_ANSIBLE_CACHE": str(tmp_path / "cache"), "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
           "ANSIBLE_NOCOLOR": "1"}
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-m", "pi_ansible.ansible_launcher", str(play), "-i", "localhost,",
                               "-c", "local"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "msg: launched" in proc.stdout, proc.stdout + proc.stderr
    assert len(list((tmp_path / "cache").glob("routing-*.marshal"))) == 1


def launch(tmp_path, tasks: str, *args: str) -> subprocess.CompletedProcess:
    play = tmp_path / "p.yml"
    play.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n" + tasks)
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "local-tmp"), "ANSIBLE_LOG_PATH": str(tmp_path / "ansible.log")}
    return subprocess.run([sys.executable, "-m", "pi_ansible.ansible_launcher", str(play), "-i", "localhost,",
                           "-c", "local", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_the_quick_exit_keeps_the_status_the_output_and_the_exit_handlers(tmp_path):
    ok = launch(tmp_path, "    - ansible.builtin.debug: {msg: launched}\n")
    assert ok.returncode == 0 and "localhost" in ok.stdout.rsplit("PLAY RECAP", 1)[1], ok.stdout + ok.stderr
    # ansible-core's exit handlers ran: its per-run temporary directory is gone, its log is complete.
    assert list((tmp_path / "local-tmp").iterdir()) == []
    assert "PLAY RECAP" in (tmp_path / "ansible.log").read_text()

    failed = launch(tmp_path, "    - ansible.builtin.fail: {msg: on purpose}\n")
    assert failed.returncode == 2 and "on purpose" in failed.stdout and "failed=1" in failed.stdout
    assert launch(tmp_path, "", "--no-such-option").returncode == 2  # ansible-playbook's own usage error
    assert list((tmp_path / "local-tmp").iterdir()) == []


def test_exit_codes_are_what_sys_exit_gives(capsys):
    assert (exit_code(None), exit_code(0), exit_code(4)) == (0, 0, 4)
    assert exit_code("stopped: bad input") == 1 and capsys.readouterr().err == "stopped: bad input\n"
