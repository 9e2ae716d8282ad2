"""Bad and hostile input, table-driven: every command, each a non-zero exit, one `Error:` line with the fix,
no traceback, and the state file and the pod's model files and units byte-for-byte unchanged.

Runs against the suite's set-up pod (`fa`, with a model running, so "unchanged" has something to keep).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ..conftest import run_pi
from .conftest import SMALL, ssh

pytestmark = pytest.mark.lab

GOOD = "Qwen/Qwen3-8B"
UNREACHABLE = "ssh -o ConnectTimeout=2 root@10.77.0.250"  # on the lab bridge, where no pod answers

# (id, pi arguments with {ssh} for the pod's SSH string, what the error says)
TABLE = [
    # pods setup: SSH strings, names, paths, mount commands, an unreachable and a closed host
    ("setup-ssh-injection", ["pods", "setup", "p2", "ssh root@10.77.0.11; rm -rf /", "--models-path", "/m"],
     "bad SSH string"),
    ("setup-ssh-subshell", ["pods", "setup", "p2", "ssh root@$(id)", "--models-path", "/m"], "bad SSH string"),
    ("setup-ssh-forward", ["pods", "setup", "p2", "ssh -L 80:localhost:80 root@10.77.0.11", "--models-path", "/m"],
     "bad SSH string"),
    ("setup-ssh-port", ["pods", "setup", "p2", "ssh -p 99999 root@10.77.0.11", "--models-path", "/m"],
     "out of range"),
    ("setup-ssh-empty", ["pods", "setup", "p2", "", "--models-path", "/m"], "bad SSH string"),
    ("setup-name-slash", ["pods", "setup", "a/b", "{ssh}", "--models-path", "/m"], "invalid pod name"),
    ("setup-name-shell", ["pods", "setup", "x;rm -rf /", "{ssh}", "--models-path", "/m"], "invalid pod name"),
    ("setup-name-subshell", ["pods", "setup", "$(id)", "{ssh}", "--models-path", "/m"], "invalid pod name"),
    ("setup-name-dots", ["pods", "setup", "..", "{ssh}", "--models-path", "/m"], "invalid pod name"),
    ("setup-models-path-relative", ["pods", "setup", "p2", "{ssh}", "--models-path", "rel/path"], "absolute path"),
    ("setup-models-path-subshell", ["pods", "setup", "p2", "{ssh}", "--models-path", "/mnt/$(id)"], "absolute path"),
    ("setup-models-path-dotdot", ["pods", "setup", "p2", "{ssh}", "--models-path", "/mnt/../etc"], "absolute path"),
    ("setup-mount-not-mount", ["pods", "setup", "p2", "{ssh}", "--mount", "rm -rf /"], "only `mount` commands"),
    ("setup-mount-chained", ["pods", "setup", "p2", "{ssh}", "--mount", "mount /dev/x /mnt/m && reboot"], "--mount"),
    ("setup-vllm-variant", ["pods", "setup", "p2", "{ssh}", "--models-path", "/m", "--vllm", "bogus"],
     "'bogus' is not one of"),
    ("setup-unreachable", ["pods", "setup", "p2", UNREACHABLE, "--models-path", "/m"], "10.77.0.250"),
    ("setup-closed-port", ["pods", "setup", "p2", "ssh -p 2 root@127.0.0.1", "--models-path", "/m"],
     "nothing listens for SSH"),
    ("setup-existing-name-other-host", ["pods", "setup", "fa", "ssh root@10.77.0.99", "--models-path", "/m"],
     "cannot reach root@10.77.0.99"),
    # pods, ssh, shell: unknown pods
    ("active-unknown", ["pods", "active", "nope"], "no pod named 'nope'"),
    ("remove-unknown", ["pods", "remove", "nope"], "no pod named 'nope'"),
    ("ssh-unknown", ["ssh", "nope", "true"], "no pod named 'nope'"),
    ("shell-unknown", ["shell", "nope"], "no pod named 'nope'"),
    ("list-unknown-pod", ["list", "--pod", "nope"], "no pod named 'nope'"),
    # start: names, sizes, models, pods, passthrough
    ("start-name-shell", ["start", GOOD, "--name", "a;b"], "invalid model name"),
    ("start-name-subshell", ["start", GOOD, "--name", "$(reboot)"], "invalid model name"),
    ("start-name-path", ["start", GOOD, "--name", "../../etc/passwd"], "invalid model name"),
    ("start-name-upper", ["start", GOOD, "--name", "Coder"], "invalid model name"),
    ("start-name-long", ["start", GOOD, "--name", "a" * 64], "invalid model name"),
    ("start-name-taken", ["start", GOOD, "--name", "keeper"], "already runs"),
    ("start-memory-negative", ["start", GOOD, "--name", "x", "--memory", "-5%"], "--memory"),
    ("start-memory-zero", ["start", GOOD, "--name", "x", "--memory", "0"], "--memory"),
    ("start-memory-huge", ["start", GOOD, "--name", "x", "--memory", "250%"], "--memory"),
    ("start-memory-overflow", ["start", GOOD, "--name", "x", "--memory", "1e309"], "--memory"),
    ("start-memory-word", ["start", GOOD, "--name", "x", "--memory", "lots"], "--memory"),
    ("start-context-negative", ["start", GOOD, "--name", "x", "--context", "-1"], "--context"),
    ("start-context-huge", ["start", GOOD, "--name", "x", "--context", "9" * 30], "--context"),
    ("start-context-word", ["start", GOOD, "--name", "x", "--context", "12q"], "--context"),
    ("start-context-over-model", ["start", GOOD, "--name", "x", "--context", "1000000"], "context"),
    ("start-gpus-negative", ["start", GOOD, "--name", "x", "--gpus", "-1"], "--gpus"),
    ("start-gpus-zero", ["start", GOOD, "--name", "x", "--gpus", "0"], "--gpus"),
    ("start-gpus-huge", ["start", GOOD, "--name", "x", "--gpus", "100000"], "--gpus"),
    ("start-gpus-more-than-pod", ["start", GOOD, "--name", "x", "--gpus", "3"], "the pod has 2 GPU"),
    ("start-model-path", ["start", "../../etc/passwd", "--name", "x"], "not a Hugging Face model id"),
    ("start-model-shell", ["start", "Qwen/Qwen3-8B;reboot", "--name", "x"], "not a Hugging Face model id"),
    ("start-model-unknown", ["start", "nobody/no-such-model", "--name", "x"], "does not exist on the Hub"),
    ("start-pod-unknown", ["start", GOOD, "--name", "x", "--pod", "nope"], "no pod named 'nope'"),
    ("start-does-not-fit", ["start", "Qwen/Qwen3-235B-A22B", "--name", "x"], "GPU"),
    ("start-vllm-port", ["start", GOOD, "--name", "x", "--vllm", "--port", "22"], "--vllm must not set --port"),
    ("start-vllm-api-key", ["start", GOOD, "--name", "x", "--vllm", "--api-key", "leak"], "VLLM_API_KEY"),
    ("start-vllm-shell", ["start", GOOD, "--name", "x", "--vllm", "--max-model-len", "$(reboot)"],
     "--max-model-len '$(reboot)' is not a token count"),
    # stop, logs, agent: names and unknown models
    ("stop-name-shell", ["stop", "a;b"], "invalid model name"),
    ("stop-unknown", ["stop", "nope"], "no model named nope"),
    ("logs-name-path", ["logs", "../x"], "invalid model name"),
    ("logs-unknown", ["logs", "nope"], "no model named 'nope' on pod fa"),
    ("agent-unknown", ["agent", "nope", "hi"], "no model named 'nope'"),
    ("agent-pod-unknown", ["agent", "keeper", "hi", "--pod", "nope"], "no pod named 'nope'"),
]


@pytest.fixture(scope="module")
def with_model(set_up):
    """The set-up pod with one model running (`keeper`), stopped at the end of the module."""
    run_pi("stop", env=set_up)
    run_pi("start", SMALL, "--name", "keeper", "--memory", "30%", "--no-verify", env=set_up)
    yield set_up
    run_pi("stop", "keeper", env=set_up, check=False)


@pytest.fixture(scope="module")
def baseline(pods, with_model):
    """(state file bytes, pod fingerprint) with `keeper` running, after `pi list` brought the cache up to date."""
    run_pi("list", env=with_model)
    return (Path(with_model["PI_CONFIG_DIR"]) / "pi-ansible.json").read_bytes(), pod_fingerprint(pods["faults-a"])


def pod_fingerprint(pod: dict) -> str:
    """The pod's model manifests, env files and units, and the units systemd has loaded: hashed."""
    out = ssh(pod, "cd / && sha256sum etc/pi-ansible/models/* etc/systemd/system/pi-model-* 2>/dev/null | sort; "
                   "systemctl list-units --all --no-legend --plain 'pi-model-*' | awk '{print $1, $3, $4}'").stdout
    return hashlib.sha256(out.encode()).hexdigest() + "\n" + out


def check_refused(proc, says: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, f"one Error: line, got:\n{proc.stderr}"
    assert says in proc.stderr, f"{says!r} not in:\n{proc.stderr}"


@pytest.mark.parametrize(("args", "says"), [pytest.param(a, s, id=i) for i, a, s in TABLE])
def test_bad_input_is_one_error_and_changes_nothing(pods, with_model, baseline, args, says):
    pod = pods["faults-a"]
    state = Path(with_model["PI_CONFIG_DIR"]) / "pi-ansible.json"
    before_state, before_pod = baseline  # each case leaves them as they were, so the next compares with the same
    argv = [a.replace("{ssh}", pod["ssh"]) for a in args]
    proc = run_pi(*argv, env=with_model, check=False, timeout=180, stdin=subprocess.DEVNULL)
    check_refused(proc, says)
    assert state.read_bytes() == before_state, "the state file changed"
    assert pod_fingerprint(pod) == before_pod, "the pod's models changed"


# ---------------------------------------------------------------- state files and catalogs that break

def copy_env(env: dict, tmp_path: Path) -> dict:
    """A private copy of the suite's state directory, to break without touching the suite's own."""
    target = tmp_path / "pi"
    shutil.copytree(env["PI_CONFIG_DIR"], target, ignore=shutil.ignore_patterns("ansible-runs", "*.lock"))
    return {**env, "PI_CONFIG_DIR": str(target)}


BROKEN_STATE = [
    ("truncated", '{"version": 1, "pods": {"fa": ', "pi-ansible.json"),
    ("not-json", "\x00\x01garbage", "pi-ansible.json"),
    ("foreign-typescript-pi", '{"pods": {"fa": {"ssh": "ssh root@10.77.0.11", "gpus": []}}, "active": "fa"}',
     "pi-ansible.json"),
    ("future-version", '{"version": 99, "pods": {}, "active": null}', "version"),
    ("wrong-types", '{"version": 1, "pods": [], "active": 7}', "pi-ansible.json"),
]

COMMANDS_ON_STATE = [["pods"], ["list"], ["start", SMALL, "--name", "x"], ["stop", "keeper"], ["logs", "keeper"],
                     ["agent", "keeper", "hi"], ["pods", "active", "fa"], ["inventory"],
                     ["pods", "setup", "p2", "ssh root@10.77.0.11", "--models-path", "/m"]]


@pytest.mark.parametrize(("content", "says"), [pytest.param(c, s, id=i) for i, c, s in BROKEN_STATE])
def test_a_corrupt_or_foreign_state_file_is_an_error_naming_it_and_is_left_as_is(pods, with_model, tmp_path,
                                                                                  content, says):
    env = copy_env(with_model, tmp_path)
    state = Path(env["PI_CONFIG_DIR"]) / "pi-ansible.json"
    state.write_text(content)
    before_pod = pod_fingerprint(pods["faults-a"])
    for args in COMMANDS_ON_STATE:
        proc = run_pi(*args, env=env, check=False, timeout=120)
        check_refused(proc, says)
        assert str(state) in proc.stderr, f"the error names the file: {proc.stderr}"
        assert state.read_text() == content, f"pi {' '.join(args)} rewrote the broken state file"
    assert pod_fingerprint(pods["faults-a"]) == before_pod


BROKEN_CATALOG = [
    ("not-json", "{", "models.json"),
    ("no-version", '{"models": []}', "version"),
    ("bad-entry", '{"version": 1, "models": [{"id": "acme/thing", "configs": "lots"}]}', "acme/thing"),
    ("bad-gpu-count", '{"version": 1, "models": [{"id": "acme/thing", "configs": [{"gpu_count": -2, "args": []}]}]}',
     "acme/thing"),
]


@pytest.mark.parametrize(("content", "says"), [pytest.param(c, s, id=i) for i, c, s in BROKEN_CATALOG])
def test_a_catalog_file_that_breaks_the_schema_is_an_error_naming_the_entry(pods, with_model, tmp_path,
                                                                          content, says):
    env = copy_env(with_model, tmp_path)
    (Path(env["PI_CONFIG_DIR"]) / "models.json").write_text(content)
    state = Path(env["PI_CONFIG_DIR"]) / "pi-ansible.json"
    before_state, before_pod = state.read_bytes(), pod_fingerprint(pods["faults-a"])
    for args in (["start", SMALL, "--name", "x"], ["start"]):
        proc = run_pi(*args, env=env, check=False, timeout=120)
        check_refused(proc, says)
    assert state.read_bytes() == before_state and pod_fingerprint(pods["faults-a"]) == before_pod


def test_an_unreachable_pod_is_named_and_nothing_changes(pods, with_model, tmp_path):
    """A pod the state knows whose host is gone: start, stop, logs and list say which pod and why."""
    env = copy_env(with_model, tmp_path)
    state = Path(env["PI_CONFIG_DIR"]) / "pi-ansible.json"
    data = json.loads(state.read_text())
    data["pods"]["fa"]["ssh"] = data["pods"]["fa"]["ssh"].replace(pods["faults-a"]["ip"], "10.77.0.250")
    data["pods"]["fa"]["target"]["host"] = "10.77.0.250"
    state.write_text(json.dumps(data))
    before = state.read_bytes()
    for args in (["start", SMALL, "--name", "x"], ["stop", "keeper"], ["logs", "keeper"], ["list"]):
        proc = run_pi(*args, env=env, check=False, timeout=120)
        assert "Traceback" not in proc.stderr and "fa" in proc.stderr, proc.stderr
        if args != ["list"]:
            check_refused(proc, "fa")
        else:  # pi list shows what it can and warns about the pod it cannot reach
            assert "fa" in proc.stderr and "10.77.0.250" in proc.stderr, proc.stderr
    assert state.read_bytes() == before
