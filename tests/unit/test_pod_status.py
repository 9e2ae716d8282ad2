"""The pure parts of pod_status (what `pi list` and the placement read on a pod)."""

import json

import pytest

from pi_ansible.pod_status import (
    crash_log,
    model_state,
    parse_journal_json,
    parse_listening_ports,
    parse_show,
)

SHOW = """Id=pi-model-a.service
LoadState=loaded
ActiveState=active
SubState=running
NRestarts=0

Id=pi-model-b.service
LoadState=loaded
ActiveState=failed
SubState=failed
Result=start-limit-hit
NRestarts=5
"""


def test_parse_show_splits_units():
    units = parse_show(SHOW)
    assert set(units) == {"pi-model-a.service", "pi-model-b.service"}
    assert units["pi-model-b.service"]["Result"] == "start-limit-hit"
    assert parse_show("") == {}


@pytest.mark.parametrize("unit, healthy, state", [
    (None, False, "stopped"),
    ({"LoadState": "not-found"}, False, "stopped"),
    ({"LoadState": "loaded", "ActiveState": "active", "SubState": "running"}, True, "running"),
    ({"LoadState": "loaded", "ActiveState": "active", "SubState": "running"}, False, "starting"),
    ({"LoadState": "loaded", "ActiveState": "activating", "SubState": "auto-restart"}, False, "crashed"),
    ({"LoadState": "loaded", "ActiveState": "activating", "SubState": "start"}, False, "starting"),
    ({"LoadState": "loaded", "ActiveState": "failed", "SubState": "failed", "Result": "exit-code"}, False, "crashed"),
    ({"LoadState": "loaded", "ActiveState": "inactive", "SubState": "dead", "Result": "success"}, False, "stopped"),
])
def test_model_state(unit, healthy, state):
    assert model_state(unit, healthy) == state


def test_listening_ports_from_proc_net_tcp():
    tcp = ("  sl  local_address rem_address   st\n"
           "   0: 00000000:1F41 00000000:0000 0A 00000000:00000000\n"  # 8001 LISTEN
           "   1: 0100007F:0016 0100007F:D431 01 00000000:00000000\n")  # 22 ESTABLISHED
    tcp6 = ("  sl  local_address rem_address st\n"
            "   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A x\n")
    assert parse_listening_ports([tcp, tcp6]) == [22, 8001]


def journal(*entries):
    return "\n".join(json.dumps({"SYSLOG_IDENTIFIER": i, "MESSAGE": m}) for i, m in entries)


def test_journal_json_decodes_byte_messages_and_skips_junk():
    text = journal(("pi-model-a", "hello")) + "\nnot json\n" + json.dumps(
        {"SYSLOG_IDENTIFIER": "pi-model-a", "MESSAGE": list(b"caf\xc3\xa9 \xff")})
    assert parse_journal_json(text) == [("pi-model-a", "hello"), ("pi-model-a", "café \ufffd")]


def test_crash_log_keeps_the_first_errors_of_the_last_run_and_systemds_last_words():
    run = [("pi-model-a", "INFO Starting vLLM API server on http://0.0.0.0:8001"),
           ("pi-model-a", "ERROR [core.py:1131] EngineCore encountered a fatal error."),
           ("pi-model-a", "Traceback (most recent call last):"),
           ("pi-model-a", '  File "v1/engine/core.py", line 1122, in run_engine_core'),
           ("pi-model-a", "RuntimeError: CUDA error: an illegal memory access was encountered"),
           ("pi-model-a", "ERROR [async_llm.py:548] AsyncLLM output_handler failed."),
           ("pi-model-a", "Traceback (most recent call last):"),
           ("pi-model-a", "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue."),
           *[("pi-model-a", f"INFO shutdown line {i}") for i in range(30)],
           ("systemd", "pi-model-a.service: Main process exited, code=exited, status=1/FAILURE")]
    entries = parse_journal_json(journal(
        ("systemd", "Started pi-model-a.service - pi-ansible model a."),
        ("pi-model-a", "ERROR an older run's error"),
        ("systemd", "Started pi-model-a.service - pi-ansible model a."),
        *run,
        ("systemd", "pi-model-a.service: Scheduled restart job, restart counter is at 5."),
        ("systemd", "Stopped pi-model-a.service - pi-ansible model a."),
        ("systemd", "pi-model-a.service: Start request repeated too quickly."),
        ("systemd", "pi-model-a.service: Failed with result 'exit-code'."),
        ("systemd", "Failed to start pi-model-a.service - pi-ansible model a."),
    ))
    assert crash_log(entries, "a", 7) == [
        "ERROR [core.py:1131] EngineCore encountered a fatal error.",
        "Traceback (most recent call last):",
        "RuntimeError: CUDA error: an illegal memory access was encountered",
        "ERROR [async_llm.py:548] AsyncLLM output_handler failed.",
        "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue.",
        "pi-model-a.service: Start request repeated too quickly.",
        "pi-model-a.service: Failed with result 'exit-code'."]


def test_crash_log_without_error_lines_shows_the_engines_last_lines():
    entries = [("pi-model-a", f"line {i}") for i in range(20)] + [("systemd", "a.service: Failed.")]
    assert crash_log(entries, "a", 4) == ["line 18", "line 19", "a.service: Failed."]
    assert crash_log([], "a") == []
