"""`pi start` plans before its Ansible run (one SSH read of the pod, outside the placement lock) and the start
task checks under the lock that the pod did not change meanwhile: the state digest, the lock, the read's
parsing and when the CLI leaves planning to the playbook's locked path. The race itself runs on a lab pod in
tests/e2e/test_models.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pi_ansible import pod_status
from pi_ansible.lab.gpu_profiles import profile
from pi_ansible.model_ops import _inventory, plan_ahead
from pi_ansible.planning.gpu_facts_parse import SMI_CALLS, facts_from_runs, gather
from pi_ansible.sshargs import parse_ssh

MODEL = "Qwen/Qwen3-8B"
POD_JSON = {"engine": {"venv": "/opt/pi-ansible/venv"},
            "storage": {"hf_home": "/mnt/models/huggingface", "hf_endpoint": "http://10.77.0.1:9000"}}


def etc(tmp_path, manifests: dict[str, dict]) -> str:
    root = tmp_path / "etc"
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "pod.json").write_text(json.dumps(POD_JSON))
    for name, m in manifests.items():
        (root / "models" / f"{name}.json").write_text(json.dumps(m))
    return str(root)


def test_the_digest_changes_with_any_manifest_or_the_pod_setup_and_only_then(tmp_path):
    root = etc(tmp_path, {"a": {"name": "a", "port": 8001}})
    first = pod_status.state_digest(root)
    assert pod_status.state_digest(root) == first, "the same files give the same digest"
    (tmp_path / "etc" / "models" / "a.env").write_text("VLLM_API_KEY=x\n")
    assert pod_status.state_digest(root) == first, "env files are not reservations"
    (tmp_path / "etc" / "models" / "b.json").write_text('{"name": "b", "port": 8002}')
    with_b = pod_status.state_digest(root)
    assert with_b != first, "another start's manifest"
    (tmp_path / "etc" / "models" / "b.json").write_text('{"name": "b", "port": 8003}')
    assert pod_status.state_digest(root) not in (first, with_b), "a manifest rewritten"
    (tmp_path / "etc" / "models" / "b.json").unlink()
    assert pod_status.state_digest(root) == first
    (tmp_path / "etc" / "pod.json").write_text(json.dumps({**POD_JSON, "engine": {"venv": "/opt/other"}}))
    assert pod_status.state_digest(root) != first, "a setup that changed the pod"
    # a manifest renamed with the same bytes is another reservation
    (tmp_path / "etc" / "pod.json").write_text(json.dumps(POD_JSON))
    os.rename(tmp_path / "etc" / "models" / "a.json", tmp_path / "etc" / "models" / "c.json")
    assert pod_status.state_digest(root) != first


def test_the_placement_lock_is_exclusive_waits_and_clears_a_stale_one(tmp_path):
    lock = str(tmp_path / "run" / "placement.lock")
    assert pod_status.take_placement_lock("tok1", 1, lock) == 0
    assert (tmp_path / "run" / "placement.lock" / "owner").read_text() == "tok1\n"
    started = time.monotonic()
    assert pod_status.take_placement_lock("tok2", 0.3, lock) is None, "held by another start"
    assert 0.3 <= time.monotonic() - started < 2
    assert (tmp_path / "run" / "placement.lock" / "owner").read_text() == "tok1\n", "not taken over"
    old = time.time() - pod_status.LOCK_STALE_S - 5
    os.utime(lock, (old, old))
    assert pod_status.take_placement_lock("tok3", 1, lock) == 0, "a lock left by a run that died"
    assert (tmp_path / "run" / "placement.lock" / "owner").read_text() == "tok3\n"


def test_the_placement_read_runs_on_a_python3_and_reports_what_the_planner_needs(tmp_path):
    # The script as `pi start` sends it (stdin of python3, `placement ARGS`), with a PATH whose nvidia-smi
    # prints a captured real output: the controller parses it exactly as the fact module would.
    fixtures = os.path.join(os.path.dirname(__file__), "..", "fixtures", "nvidia-smi")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\ncase \"$1\" in\n"
                   f"  --query-gpu=*) cat {fixtures}/h100-590.48.01.query-gpu-idle.csv ;;\n"
                   f"  --query-compute-apps=*) cat {fixtures}/h100-590.48.01.compute-apps-idle.csv ;;\n"
                   f"  *) cat {fixtures}/h100-590.48.01.table-idle.txt ;;\nesac\n")
    smi.chmod(0o755)
    script = Path(pod_status.__file__).read_text()
    proc = subprocess.run([sys.executable, "-", "placement", json.dumps(SMI_CALLS)], input=script, text=True,
                          capture_output=True, timeout=60,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) == {"pod", "digest", "models", "python", "nvidia_smi"}
    assert data["python"] == sys.executable
    assert set(data["nvidia_smi"]) == set(SMI_CALLS) and all(r[0] == 0 for r in data["nvidia_smi"].values())
    facts = facts_from_runs(data["nvidia_smi"])

    def run(args):  # what the fact module would have seen for the same calls
        out = subprocess.run([str(smi), *args], capture_output=True, text=True)
        return out.returncode, out.stdout, out.stderr

    assert facts == gather(run) and facts["gpus"] and facts["failure"] is None
    assert set(data["models"]) == {"models", "listening_ports", "gpu_processes"}


def read(models=None, digest="d" * 64, pod=None):
    return {"pod": pod if pod is not None else POD_JSON, "gpus": {"gpus": profile("h100x2")["gpus"], "processes": []},
            "models": models or {"models": {}, "listening_ports": [22]}, "digest": digest,
            "python": "/usr/bin/python3"}


def request(**kw):
    return {"model": MODEL, "name": "qwen", "memory": "45%", "context": "16k", "gpus": None, "vllm_args": None,
            "verify": True, "started_by": "pi start (test)", "lock_token": "abc", "existing": "resume", **kw}


def test_plan_ahead_is_the_playbooks_plan_with_the_digest_it_was_made_against():
    from pi_ansible.planning.start_request import model_service_vars

    ahead = plan_ahead("h100", request(), read())
    assert ahead["state_digest"] == "d" * 64
    assert ahead["plan"] == model_service_vars(request(), read()["gpus"], read()["models"],
                                               venv=POD_JSON["engine"]["venv"], pod="h100")
    assert ahead["plan"]["model_service_action"] == "start" and ahead["plan"]["model_service_port"] == 8001
    assert ahead["pod"] == {"engine": {"venv": "/opt/pi-ansible/venv"},
                            "storage": {"hf_home": "/mnt/models/huggingface", "hf_endpoint": "http://10.77.0.1:9000"}}


@pytest.mark.parametrize(("why", "req", "got"), [
    ("the read failed", request(), None),
    ("no digest", request(), read(digest="")),
    ("a model the catalog does not know (its config.json is read on the pod)", request(model="acme/unknown-7b"), read()),
    ("a request the planner refuses (the playbook says why)", request(memory="5%", context="1000k"), read()),
    ("a pod.json without the engine's venv", request(), read(pod={"storage": {}})),
])
def test_plan_ahead_leaves_planning_to_the_locked_playbook(why, req, got):
    assert plan_ahead("h100", req, got) is None, why


def test_the_inventory_names_the_python_the_pod_reported_and_nothing_odd():
    target = parse_ssh("ssh root@10.0.0.5")
    host = lambda py: _inventory("p", target, py)["all"]["hosts"]["p"]["ansible_python_interpreter"]  # noqa: E731
    assert host("/usr/bin/python3") == "/usr/bin/python3"
    assert host(None) == host("") == host("python3; rm -rf /") == host("relative/python3") == "auto_silent"
