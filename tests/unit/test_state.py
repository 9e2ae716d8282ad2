"""Local state: schema, atomic writes, the lock, malformed files, permissions, and pi's pods.json import."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pi_ansible import state as state_mod
from pi_ansible.errors import PiError
from pi_ansible.sshargs import parse_ssh
from pi_ansible.state import (
    FILE_NAME,
    State,
    StateStore,
    check_document,
    import_pi_pods,
    pod_record,
    read_pi_pods,
)

REPO = Path(__file__).resolve().parents[2]
H100 = {"index": 0, "uuid": "GPU-00000000-0000-0000-0000-000000000000", "name": "NVIDIA H100 80GB HBM3",
        "memory_total_mib": 81559}


def record(ssh: str = "ssh -p 2222 root@10.77.0.2", **kw) -> dict:
    kw.setdefault("gpus", [H100, {**H100, "index": 1}])
    kw.setdefault("driver_version", "590.48.01")
    kw.setdefault("cuda_version", "13.1")
    kw.setdefault("vllm_version", "0.33.0")
    kw.setdefault("models_path", "/mnt/models")
    return pod_record(parse_ssh(ssh), **kw)


def good_doc() -> dict:
    return {"version": 1, "active": "dc1", "pods": {"dc1": record()},
            "models": {"dc1": {"qwen": {"model": "Qwen/Qwen3-Coder-30B-A3B-Instruct", "port": 8001}}}}


@pytest.fixture
def store(tmp_path) -> StateStore:
    return StateStore(tmp_path / "cfg" / FILE_NAME, lock_timeout=5)


def write_raw(store: StateStore, text: str | bytes) -> bytes:
    store.path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    store.path.write_bytes(data)
    return data


# ---- basics --------------------------------------------------------------------------------------------------

def test_default_path_follows_pi_config_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("PI_CONFIG_DIR", str(tmp_path / "x"))
    assert StateStore().path == tmp_path / "x" / "pi-ansible.json"
    monkeypatch.setenv("PI_CONFIG_DIR", "")  # empty means unset, as in pi
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert StateStore().path == tmp_path / "home" / ".pi" / "pi-ansible.json"


def test_missing_file_is_empty_state(store):
    assert store.load() == State()
    assert not store.path.exists()


def test_read_only_transaction_writes_nothing(store):
    with store.transaction() as st:
        assert st == State()
    assert not store.path.exists()


def test_transaction_writes_schema_valid_0600_file_in_0700_dir(store):
    old_umask = os.umask(0)  # even a permissive umask must not widen the modes
    try:
        with store.transaction() as st:
            st.add_pod("dc1", record())
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.lock_path.stat().st_mode) == 0o600
    doc = json.loads(store.path.read_text())
    assert doc["version"] == 1 and doc["active"] == "dc1"
    assert check_document(doc) is None
    assert store.load().pods["dc1"]["gpus"][1]["index"] == 1
    assert not list(store.path.parent.glob(".*.tmp"))


def test_rewrite_restores_0600_on_a_widened_file(store):
    with store.transaction() as st:
        st.add_pod("dc1", record())
    os.chmod(store.path, 0o644)
    with store.transaction() as st:
        st.add_pod("dc2", record())
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_existing_config_dir_mode_is_left_alone(tmp_path):
    shared = tmp_path / "pi"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    (shared / "pods.json").write_text('{"pods": {}}')
    store = StateStore(shared / FILE_NAME)
    with store.transaction() as st:
        st.add_pod("dc1", record())
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert (shared / "pods.json").read_text() == '{"pods": {}}'  # pi's file is never touched


def test_exception_in_transaction_writes_nothing(store):
    with store.transaction() as st:
        st.add_pod("dc1", record())
    before = store.path.read_bytes()
    with pytest.raises(RuntimeError), store.transaction() as st:
        st.add_pod("dc2", record())
        raise RuntimeError("boom")
    assert store.path.read_bytes() == before


def test_unchanged_state_is_not_rewritten(store):
    with store.transaction() as st:
        st.add_pod("dc1", record())
    inode = store.path.stat().st_ino
    with store.transaction() as st:
        st.set_active("dc1")
    assert store.path.stat().st_ino == inode


def test_invalid_state_is_never_written(store):
    with store.transaction() as st:
        st.add_pod("dc1", record())
    before = store.path.read_bytes()
    with pytest.raises(PiError, match=r"refusing to write invalid local state.*gpus"), store.transaction() as st:
        st.pods["dc1"]["gpus"] = "two"
    assert store.path.read_bytes() == before


def test_transaction_is_not_reentrant(store):
    with store.transaction(), pytest.raises(RuntimeError, match="reentrant"), store.transaction():
        pass


# ---- State helpers ------------------------------------------------------------------------------------------

def test_first_pod_becomes_active_and_later_ones_do_not():
    st = State()
    st.add_pod("a", record())
    st.add_pod("b", record())
    assert st.active == "a"
    st.set_active("b")
    assert st.active == "b"


def test_remove_pod_clears_active_and_model_cache():
    st = State()
    st.add_pod("a", record())
    st.models["a"] = {"m": {}}
    st.remove_pod("a")
    assert st == State()


def test_unknown_pod_lists_known_ones():
    st = State()
    st.add_pod("a", record())
    with pytest.raises(PiError, match=r"no pod named 'x' \(known pods: a\)"):
        st.set_active("x")
    with pytest.raises(PiError, match="none yet"):
        State().pod("x")


def test_add_pod_validates_the_name():
    with pytest.raises(PiError, match=r"invalid pod name 'Bad_Name'.*'bad-name'"):
        State().add_pod("Bad_Name", record())


def test_target_round_trips():
    st = State()
    st.add_pod("a", record("ssh -i /k -o A=b ubuntu@h"))
    assert st.target("a") == parse_ssh("ssh -i /k -o A=b ubuntu@h")


# ---- malformed files ------------------------------------------------------------------------------------------

MALFORMED_JSON = [
    ("", "line 1 column 1"),
    ("{", "line 1 column 2"),
    ('{"version": 1,\n "pods": {,}}', "line 2 column 11"),
    ("\xff\xfe", "not UTF-8"),
]


@pytest.mark.parametrize(("text", "where"), MALFORMED_JSON)
def test_malformed_json_names_the_file_and_position_and_is_untouched(store, text, where):
    data = write_raw(store, text.encode("latin-1"))
    for action in (store.load, lambda: store.transaction().__enter__()):
        with pytest.raises(PiError) as info:
            action()
        message = str(info.value)
        assert str(store.path) in message and where in message and "left as it is" in message
        assert store.path.read_bytes() == data


def _broken(edit) -> dict:
    doc = good_doc()
    edit(doc)
    return doc


SCHEMA_ERRORS = [
    (lambda d: d.pop("version"), "'version' is a required property"),
    (lambda d: d.update(version=2), "version 2 was written by a newer pi-ansible"),
    (lambda d: d.update(version="1"), "at version"),
    (lambda d: d.update(extra=1), "Additional properties"),
    (lambda d: d["pods"]["dc1"]["gpus"][0].update(memory_total_mib="80GB"), "pods.dc1.gpus[0].memory_total_mib"),
    (lambda d: d["pods"]["dc1"]["gpus"][1].pop("uuid"), "at pods.dc1.gpus[1]: 'uuid' is a required property"),
    (lambda d: d["pods"]["dc1"].update(engine_variant="turbo"), "at pods.dc1.engine_variant"),
    (lambda d: d["pods"]["dc1"].update(models_path="relative/path"), "at pods.dc1.models_path"),
    (lambda d: d["pods"]["dc1"]["target"].update(port=70000), "at pods.dc1.target.port"),
    (lambda d: d["pods"].update(Bad=d["pods"]["dc1"]), "at pods"),
    (lambda d: d["pods"].update({"bad\n": d["pods"]["dc1"]}), "'bad\\n' is not a valid pod name"),
    (lambda d: d.update(active="nope"), "at active: 'nope' is not one of the pods"),
    (lambda d: d["models"].update(ghost={}), "at models.ghost: there is no pod named 'ghost'"),
    (lambda d: d["pods"]["dc1"].update(ssh="ssh root@h; reboot"), "at pods.dc1.ssh"),
    (lambda d: d["pods"]["dc1"]["target"].update(host="other"), "at pods.dc1.target: the fields do not match"),
    (lambda d: d.update(pods=[]), "at pods"),
]


@pytest.mark.parametrize(("edit", "fragment"), SCHEMA_ERRORS)
def test_schema_errors_name_the_field_and_leave_the_file(store, edit, fragment):
    data = write_raw(store, json.dumps(_broken(edit), indent=2))
    with pytest.raises(PiError) as info:
        store.load()
    assert fragment in str(info.value)
    assert str(store.path) in str(info.value)
    with pytest.raises(PiError), store.transaction():
        pass
    assert store.path.read_bytes() == data


def test_top_level_not_an_object(store):
    write_raw(store, "[]")
    with pytest.raises(PiError, match=r"at \(top level\)"):
        store.load()


def test_good_document_loads(store):
    write_raw(store, json.dumps(good_doc()))
    st = store.load()
    assert st.active == "dc1" and st.models["dc1"]["qwen"]["port"] == 8001


def test_unreadable_file(store):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    write_raw(store, "{}")
    os.chmod(store.path, 0)
    with pytest.raises(PiError, match="cannot read the local state file"):
        store.load()


# ---- the lock -----------------------------------------------------------------------------------------------

HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from pi_ansible.state import StateStore
    with StateStore(sys.argv[1]).transaction():
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def test_lock_timeout_names_the_holder(store):
    store.path.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(store.path), "30"], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        quick = StateStore(store.path, lock_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(PiError) as info, quick.transaction():
            pass
        assert time.monotonic() - started < 5
        assert f"another pi command is changing local state (pid {holder.pid}); wait for it" in str(info.value)
    finally:
        holder.kill()
        holder.wait(10)
    with StateStore(store.path, lock_timeout=5).transaction() as st:  # a killed holder releases the lock
        st.add_pod("dc1", record())


def test_waiter_proceeds_when_the_holder_finishes(store):
    store.path.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(store.path), "0.5"], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with StateStore(store.path, lock_timeout=10).transaction() as st:
            st.add_pod("dc1", record())
    finally:
        holder.wait(10)
    assert "dc1" in store.load().pods


def _add_pods(path: str, prefix: str, count: int) -> None:
    store = StateStore(path, lock_timeout=60)
    for i in range(count):
        with store.transaction() as st:
            st.add_pod(f"{prefix}{i}", record(f"ssh -p {1000 + i} root@10.0.0.{i % 250 + 1}"))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_processes_adding_50_pods_each_lose_nothing(store):
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_add_pods, args=(str(store.path), p, 50)) for p in ("a", "b")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(90)
        assert w.exitcode == 0
    pods = store.load().pods
    assert sorted(pods) == sorted([f"a{i}" for i in range(50)] + [f"b{i}" for i in range(50)])


# ---- atomicity under kill -9 -------------------------------------------------------------------------------

KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from pi_ansible import state
    from pi_ansible.sshargs import parse_ssh
    stop_at = sys.argv[2]
    def hook(stage):
        if stage == stop_at:
            print(stage, flush=True)
            time.sleep(60)
    state._test_hook = hook
    with state.StateStore(sys.argv[1]).transaction() as st:
        st.add_pod("new", state.pod_record(parse_ssh("root@10.0.0.9")))
    print("done", flush=True)
""")


@pytest.mark.parametrize(("stage", "expect_new"), [("partial", False), ("written", False), ("replaced", True)])
def test_kill_9_mid_write_leaves_old_or_new_never_truncated(store, stage, expect_new):
    with store.transaction() as st:
        st.add_pod("old", record())
    old = store.path.read_bytes()
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(store.path), stage], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == stage
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.wait(10)
    pods = store.load().pods  # always a complete, valid document
    if expect_new:
        assert set(pods) == {"old", "new"}
    else:
        assert store.path.read_bytes() == old
    # the next writer removes the killed writer's temp file
    with store.transaction() as st:
        st.add_pod("later", record())
    assert not list(store.path.parent.glob(".*.tmp"))
    assert "later" in store.load().pods


LOOPING_WRITER = textwrap.dedent("""
    import sys
    from pi_ansible import state
    from pi_ansible.sshargs import parse_ssh
    store = state.StateStore(sys.argv[1])
    i = 0
    print("go", flush=True)
    while True:
        with store.transaction() as st:
            st.pods.clear(); st.active = None
            for j in range(200):
                st.add_pod(f"p{j}", state.pod_record(parse_ssh(f"root@10.0.{j % 250}.{i % 250 + 1}")))
        i += 1
""")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_kill_9_at_random_moments_never_leaves_a_broken_file(store):
    import random

    rng = random.Random(8)
    for _ in range(8):
        writer = subprocess.Popen([sys.executable, "-c", LOOPING_WRITER, str(store.path)], cwd=REPO,
                                  stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "go"
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(10)
        if store.path.exists():
            assert len(store.load().pods) == 200


# ---- import from the TypeScript pi ------------------------------------------------------------------------

PI_PODS_JSON = {
    "pods": {
        "dc1": {
            "ssh": "ssh root@1.2.3.4",
            "gpus": [{"id": 0, "name": "NVIDIA H100 80GB HBM3", "memory": "81559 MiB"},
                     {"id": 1, "name": "NVIDIA H100 80GB HBM3", "memory": "81559 MiB"}],
            "models": {"qwen": {"model": "Qwen/Qwen2.5-Coder-32B-Instruct", "port": 8001, "gpu": [0], "pid": 12345}},
            "modelsPath": "/mnt/hf-models",
            "vllmVersion": "release",
        },
        "RunPod_A": {"ssh": "ssh -p 40123 -i ~/.ssh/runpod root@ssh.runpod.io", "gpus": [], "models": {},
                     "vllmVersion": "gpt-oss"},
        "broken": {"ssh": "ssh root@1.2.3.4 -t; rm -rf /", "gpus": [], "models": {}},
        "nossh": {"gpus": []},
        "odd": {"ssh": "ssh -p 22 ubuntu@10.0.0.5", "gpus": [{"id": "x", "name": "RTX 4090", "memory": "lots"}, 7],
                "modelsPath": "models", "vllmVersion": "weird"},
    },
    "active": "RunPod_A",
}


def write_pi_pods(tmp_path, doc) -> Path:
    path = tmp_path / "pods.json"
    path.write_text(json.dumps(doc, indent=2) if not isinstance(doc, str) else doc)
    return path


def test_read_pi_pods_translates_and_explains(tmp_path):
    found = read_pi_pods(write_pi_pods(tmp_path, PI_PODS_JSON))
    assert sorted(found.pods) == ["dc1", "odd", "runpod-a"]
    dc1 = found.pods["dc1"]
    assert dc1["ssh"] == "ssh root@1.2.3.4" and dc1["models_path"] == "/mnt/hf-models"
    assert dc1["gpus"][1] == {"index": 1, "uuid": None, "name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559}
    assert dc1["origin"] == "pi-import" and dc1["set_up_at"] is None and dc1["driver_version"] is None
    runpod = found.pods["runpod-a"]
    assert runpod["engine_variant"] == "gpt-oss" and runpod["target"]["port"] == 40123
    assert runpod["target"]["identity_file"] == "~/.ssh/runpod"
    odd = found.pods["odd"]
    assert odd["engine_variant"] == "release" and odd["models_path"] is None
    assert odd["gpus"] == [{"index": 0, "uuid": None, "name": "RTX 4090", "memory_total_mib": None}]
    assert found.active == "runpod-a"
    notes = "\n".join(found.notes)
    assert "'RunPod_A': not a valid pod name; imported as 'runpod-a'" in notes
    assert "'broken': skipped" in notes and "';'" in notes
    assert "'nossh': it has no SSH string; skipped" in notes
    assert "'dc1': its 1 model record(s) are not imported" in notes
    assert "'odd': models path 'models' is not an absolute path; dropped" in notes
    assert "odd: GPU entry 1 is not an object; skipped" in notes


def test_import_adds_pods_keeps_existing_and_never_writes_pods_json(tmp_path, store):
    pods_json = write_pi_pods(tmp_path, PI_PODS_JSON)
    original = pods_json.read_bytes()
    with store.transaction() as st:
        st.add_pod("dc1", record())
        st.active = None
    report = import_pi_pods(pods_json, store)
    assert sorted(report.added) == ["odd", "runpod-a"]
    assert any("'dc1': already in pi-ansible's state; kept as it is" in n for n in report.notes)
    st = store.load()
    assert st.pods["dc1"]["driver_version"] == "590.48.01"  # ours was kept
    assert st.active == "runpod-a"  # pi's active pod, since we had none
    assert pods_json.read_bytes() == original
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_import_keeps_our_active_pod(tmp_path, store):
    with store.transaction() as st:
        st.add_pod("mine", record())
    import_pi_pods(write_pi_pods(tmp_path, PI_PODS_JSON), store)
    assert store.load().active == "mine"


def test_import_name_collision_after_renaming(tmp_path):
    found = read_pi_pods(write_pi_pods(tmp_path, {"pods": {"a_b": {"ssh": "root@h"}, "a-b": {"ssh": "root@h"}}}))
    assert list(found.pods) == ["a-b"]
    assert "'a_b': not a valid pod name, and 'a-b' is taken; skipped" in found.notes


@pytest.mark.parametrize(("content", "fragment"), [
    ("{not json", "is not valid JSON (line 1 column 2"),
    ("[]", "does not look like pi's pods.json"),
    ('{"pods": []}', "does not look like pi's pods.json"),
])
def test_import_of_a_broken_pods_json_is_an_error(tmp_path, store, content, fragment):
    path = write_pi_pods(tmp_path, content)
    with pytest.raises(PiError, match=fragment.replace("(", r"\(")):
        import_pi_pods(path, store)
    assert not store.path.exists()


def test_import_of_a_missing_pods_json(tmp_path, monkeypatch):
    monkeypatch.setenv("PI_CONFIG_DIR", str(tmp_path))
    with pytest.raises(PiError, match=r"there is no .*pods\.json"):
        read_pi_pods()


def test_hook_is_off_by_default():
    assert state_mod._test_hook is None


# --- the hand-written check on read (no jsonschema import) against the schema itself --------------------------

_ODD_VALUES = [None, True, False, 0, 1, -1, 70000, 1.5, "", "x", "Bad_Name", "ok\n", "/abs", "rel", [], [""],
               [["a"]], [["a", ""]], [["a", "b"]], {}, {"k": 1}, "a" * 64]


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _mutations(doc):
    """Every path of DOC set to every odd value, removed, and given an unknown sibling key."""
    import copy

    for path in _paths(doc):
        if not path:
            continue
        *parent_path, last = path
        for value in [*_ODD_VALUES, "__remove__", "__extra__"]:
            d = copy.deepcopy(doc)
            parent = d
            for p in parent_path:
                parent = parent[p]
            if value == "__remove__":
                parent.pop(last)
            elif value == "__extra__":
                if not isinstance(parent, dict):
                    continue
                parent["unknown-key"] = {}
            else:
                parent[last] = value
            yield path, value, d


def test_hand_check_never_accepts_what_the_schema_refuses():
    import jsonschema

    validator = state_mod._validator()
    base = good_doc()
    base["pods"]["dc2"] = record("ssh -i /k -o ConnectTimeout=5 admin@gpu.example.com")
    base["pods"]["dc2"]["models_path"] = None
    assert state_mod.conforms(base) and validator.is_valid(base)
    checked = disagreed = 0
    for path, value, doc in _mutations(base):
        schema_ok = validator.is_valid(doc)
        hand_ok = state_mod.conforms(doc)
        checked += 1
        assert not hand_ok or schema_ok, f"hand check accepts {path}={value!r}, the schema does not"
        disagreed += schema_ok and not hand_ok
        if not schema_ok:  # the message still comes from jsonschema
            assert check_document(doc) is not None
    assert checked > 1000
    # Conservative only in corners (e.g. 1.0 for an integer): then jsonschema decides and the file is accepted.
    assert disagreed < checked // 20
    assert jsonschema  # imported here, never by the read path (test_read_path_does_not_import_jsonschema)


def test_read_path_does_not_import_jsonschema(store):
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_text(json.dumps(good_doc()))
    code = ("import sys; from pi_ansible.state import StateStore; "
            f"StateStore({str(store.path)!r}).load(); print('jsonschema' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
