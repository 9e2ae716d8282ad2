"""`pi start|stop|list|logs` end to end on the 2×H100 lab pod: placement, fit refusals, supervision, parity
with plain ansible-playbook, and bad input that changes nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import openai
import pytest

from pi_ansible.lab.gpu_profiles import PROFILES
from pi_ansible.lab.servicectl import lab_service_urls

from ..conftest import REPO, run_pi

pytestmark = pytest.mark.lab
POD = "h100x2"
KEY = "pikey-models-7d1c"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.fixture(scope="module")
def env(lab, tmp_path_factory) -> dict:
    urls = lab_service_urls()
    e = {"PI_CONFIG_DIR": str(tmp_path_factory.mktemp("pi")), "HF_TOKEN": "hf_models_test", "PI_API_KEY": KEY,
         "PI_INDEX_URL": urls["index"], "HF_ENDPOINT": urls["hub"]}
    run_pi("pods", "setup", "h100", lab.pod(POD)["ssh"], "--models-path", "/mnt/models", env=e)
    run_pi("stop", env=e)  # whatever other tests left running on this pod
    return e


def listed(env) -> dict:
    return {m["name"]: m for m in json.loads(run_pi("list", "--json", env=env).stdout)["models"]}


def pod_files(lab) -> str:
    return lab.ssh(POD, "ls /etc/pi-ansible/models/ /etc/systemd/system/ | grep -E 'pi-model|json|env' || true").stdout


def tool_call(base_url: str, name: str):
    client = openai.OpenAI(base_url=base_url, api_key=KEY)
    reply = client.chat.completions.create(model=name, tools=TOOLS, messages=[
        {"role": "user", "content": "Call get_weather for `Paris`."}])
    return reply.choices[0].message.tool_calls[0]


def test_two_models_get_their_own_gpus_and_ports_and_answer_tool_calls(lab, env):
    a = json.loads(run_pi("start", "Qwen/Qwen3-Coder-30B-A3B-Instruct", "--name", "coder", "--context", "32k",
                          "--json", env=env).stdout)
    b = json.loads(run_pi("start", "Qwen/Qwen3-8B", "--name", "qwen8", "--json", env=env).stdout)
    assert set(a["gpus"]).isdisjoint(b["gpus"]) and a["port"] != b["port"]
    for out in (a, b):
        call = tool_call(out["base_url"], out["served_name"])
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}

    models = listed(env)
    assert set(models) == {"coder", "qwen8"}
    uuids = [g["uuid"] for g in PROFILES[POD]["gpus"]]
    smi = lab.ssh(POD, "nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader,nounits").stdout
    for name, out in (("coder", a), ("qwen8", b)):
        m = models[name]
        assert m["state"] == "running" and m["healthy"] and m["port"] == out["port"] and m["gpus"] == out["gpus"]
        assert m["url"] == out["base_url"] and m["restarts"] == 0 and m["gpu_memory_used_mib"] > 0
        assert uuids[out["gpus"][0]] in smi
    unit = lab.ssh(POD, "systemctl cat pi-model-coder.service").stdout
    assert f"CUDA_VISIBLE_DEVICES={a['gpus'][0]}" in lab.ssh(POD, "cat /etc/pi-ansible/models/coder.env").stdout
    assert KEY not in unit and KEY not in lab.ssh(POD, "ps -eo args").stdout
    assert lab.ssh(POD, "stat -c %a /etc/pi-ansible/models/coder.env").stdout.strip() == "600"
    assert "StartLimitBurst=" in unit and "Restart=on-failure" in unit

    # A third model cannot fit next to them: refused before any download, with numbers, nothing changed.
    before = pod_files(lab)
    proc = run_pi("start", "Qwen/Qwen2.5-Coder-32B-Instruct", "--name", "big", "--memory", "90%", env=env,
                  check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "GiB" in proc.stderr and ("free" in proc.stderr or "does not fit" in proc.stderr)
    assert "download its weights" not in proc.stderr
    assert pod_files(lab) == before and set(listed(env)) == {"coder", "qwen8"}


def test_systemd_restarts_a_killed_engine_and_a_rebooted_pod_brings_models_back(lab, env):
    if "coder" not in listed(env):
        run_pi("start", "Qwen/Qwen3-Coder-30B-A3B-Instruct", "--name", "coder", "--context", "32k", env=env)
    pid = lab.ssh(POD, "systemctl show -p MainPID --value pi-model-coder.service").stdout.strip()
    lab.ssh(POD, f"kill -9 {pid}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = listed(env)["coder"]
        if m["restarts"] >= 1 and m["state"] == "running":
            break
        time.sleep(1)
    assert m["restarts"] >= 1 and m["state"] == "running"

    run_pi("lab", "restart", POD)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        models = listed(env)
        if models and all(m["state"] == "running" for m in models.values()):
            break
        time.sleep(1)
    assert models and all(m["state"] == "running" and m["healthy"] for m in models.values())


def test_stop_frees_the_gpus_and_leaves_nothing_and_logs_show_the_engine(lab, env):
    if "coder" not in listed(env):
        run_pi("start", "Qwen/Qwen3-Coder-30B-A3B-Instruct", "--name", "coder", "--context", "32k", env=env)
    logs = run_pi("logs", "coder", "-n", "200", env=env).stdout
    assert "Application startup complete." in logs and "(APIServer pid=" in logs
    run_pi("stop", env=env)
    assert listed(env) == {}
    assert lab.ssh(POD, "nvidia-smi --query-compute-apps=pid --format=csv,noheader").stdout == ""
    assert pod_files(lab).strip() == ""
    missing = run_pi("logs", "nope", env=env, check=False)
    assert missing.returncode == 1 and "no model named 'nope'" in missing.stderr


def plain_inventory(lab, tmp_path) -> Path:
    """The lab pod as a plain Ansible user would list it (no interpreter named: Ansible discovers it)."""
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": {"h100": {
        "ansible_host": lab.pod(POD)["ip"], "ansible_user": "root",
        "ansible_ssh_private_key_file": str(Path(lab.ssh_config).with_name("id_ed25519")),
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={Path(lab.ssh_config).with_name('known_hosts')}"}}}}))
    return inventory


def test_plain_ansible_playbook_plans_and_writes_the_same_unit_as_pi_start(lab, env, tmp_path):
    run_pi("stop", env=env)
    run_pi("start", "Qwen/Qwen3-8B", "--name", "same", "--memory", "45%", "--context", "16k", env=env)
    cli_unit = lab.ssh(POD, "cat /etc/systemd/system/pi-model-same.service").stdout
    cli_manifest = json.loads(lab.ssh(POD, "cat /etc/pi-ansible/models/same.json").stdout)
    run_pi("stop", "same", env=env)

    inventory = plain_inventory(lab, tmp_path)
    extra = json.dumps({"model_start": {"model": "Qwen/Qwen3-8B", "name": "same", "memory": "45%", "context": "16k"}})
    proc = subprocess.run([str(Path(os.sys.executable).with_name("ansible-playbook")), "-i", str(inventory),
                           "playbooks/model_start.yml", "-e", extra], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    ansible_unit = lab.ssh(POD, "cat /etc/systemd/system/pi-model-same.service").stdout
    ansible_manifest = json.loads(lab.ssh(POD, "cat /etc/pi-ansible/models/same.json").stdout)
    assert ansible_unit == cli_unit
    for key in ("gpus", "port", "args", "memory_fraction", "max_model_len", "gpu_uuids"):
        assert ansible_manifest[key] == cli_manifest[key], key
    assert ansible_manifest["started_by"] == "ansible-playbook"
    assert listed(env)["same"]["state"] == "running", "pi list shows models started by plain ansible-playbook"
    run_pi("stop", "same", env=env)


def test_a_start_planned_before_another_lands_is_planned_again_under_the_lock(lab, env, monkeypatch):
    """`pi start` plans from one read of the pod made outside the placement lock, and its start task checks under
    the lock that the pod's models did not change. Here another start lands between that read and the lock: the
    stale plan writes nothing and removes nothing, and pi plans again under the lock (another port)."""
    from pi_ansible import model_ops

    run_pi("stop", env=env)
    first = run_pi("start", "Qwen/Qwen3-0.6B", "--name", "first", env=env)
    assert re.search(r"skip +Plan under the pod's placement lock", first.stderr), first.stderr
    assert "Take the pod's placement lock" not in first.stderr, "a plain start plans before its run"
    run_pi("stop", "first", env=env)

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    real_result = model_ops.PlacementRead.result

    def read_then_another_start(self, timeout=30):
        got = real_result(self, timeout)
        run_pi("start", "Qwen/Qwen3-0.6B", "--name", "first", env=env)  # lands on the port this read saw free
        return got

    monkeypatch.setattr(model_ops.PlacementRead, "result", read_then_another_start)
    events = []
    try:
        out = model_ops.start_model("h100", model_ops.validate_request("Qwen/Qwen3-0.6B", "second", None, None, None,
                                                                      None), on_event=events.append)
        said = [(e.task, e.status, e.message) for e in events if e.status in ("ok", "failed")]
        stale = [m for _, status, m in said if status == "failed"]
        assert stale and all("changed after this start was planned" in m for m in stale), said
        assert ("Take the pod's placement lock and read its setup, GPUs and models", "ok", "") in said
        models = listed(env)
        assert models["first"]["state"] == models["second"]["state"] == "running", "the stale run removed nothing"
        assert out["port"] == models["second"]["port"] != models["first"]["port"] == 8001
    finally:
        run_pi("stop", env=env)


def test_a_process_on_8001_is_skipped_by_port_choice(lab, env):
    run_pi("stop", env=env)
    lab.ssh(POD, "systemd-run --unit=squatter python3 -m http.server 8001 --bind 0.0.0.0")
    try:
        time.sleep(1)
        out = json.loads(run_pi("start", "Qwen/Qwen3-0.6B", "--name", "small", "--json", env=env).stdout)
        assert out["port"] == 8002
    finally:
        lab.ssh(POD, "systemctl stop squatter", check=False)
        run_pi("stop", env=env)


BAD = [
    (["start", "Qwen/Qwen3-8B", "--name", "bad;name"], "invalid model name"),
    (["start", "Qwen/Qwen3-8B", "--name", "../etc"], "invalid model name"),
    (["start", "not a model", "--name", "x"], "not a Hugging Face model id"),
    (["start", "Qwen/Qwen3-8B", "--name", "x", "--memory", "-5%"], "--memory"),
    (["start", "Qwen/Qwen3-8B", "--name", "x", "--memory", "250%"], "--memory"),
    (["start", "Qwen/Qwen3-8B", "--name", "x", "--context", "999999999"], "--context"),
    (["start", "Qwen/Qwen3-0.6B", "--name", "x", "--gpus", "2"], "configs"),
    (["start", "Qwen/Qwen3-8B", "--name", "x", "--gpus", "3"], "the pod has 2 GPU"),
    (["start", "Qwen/Qwen3-8B", "--name", "x", "--pod", "nope"], "no pod named 'nope'"),
    (["start", "Qwen/Qwen3-235B-A22B", "--name", "x", "--gpus", "4"], "GPU"),
    (["start", "Qwen/Qwen3-8B", "--name", "x", "--vllm", "--api-key", "leak"], "--api-key"),
    (["stop", "nope"], "no model named nope"),
]


@pytest.mark.parametrize(("args", "says"), BAD)
def test_bad_input_is_one_clear_error_and_changes_nothing(lab, env, args, says):
    state = Path(env["PI_CONFIG_DIR"]) / "pi-ansible.json"
    before_state, before_pod = state.read_bytes(), pod_files(lab)
    proc = run_pi(*args, env=env, check=False)
    assert proc.returncode == 1, proc.stdout
    assert says in proc.stderr and "Traceback" not in proc.stderr
    assert state.read_bytes() == before_state and pod_files(lab) == before_pod


def test_name_taken_and_gated_model(lab, env):
    run_pi("stop", env=env)
    run_pi("start", "Qwen/Qwen3-0.6B", "--name", "taken", env=env)
    try:
        before = pod_files(lab)
        proc = run_pi("start", "Qwen/Qwen3-8B", "--name", "taken", env=env, check=False)
        assert proc.returncode == 1 and "already runs" in proc.stderr and pod_files(lab) == before
        gated = run_pi("start", "meta-llama/Llama-3.1-8B-Instruct", "--name", "llama", env=env, check=False)
        assert gated.returncode == 1 and "gated" in gated.stderr and "request access" in gated.stderr
        assert pod_files(lab) == before
    finally:
        run_pi("stop", env=env)


def test_tool_calls_that_come_back_as_text_fail_the_start_and_name_the_parser(lab, env):
    """The start task's tool-call check: with the wrong parser the engine writes its native call into the message
    text; the start fails saying which parser reads it, and the model is removed again."""
    run_pi("stop", env=env)
    before = pod_files(lab)
    proc = run_pi("start", "Qwen/Qwen3-0.6B", "--name", "parser", "--vllm", "--enable-auto-tool-choice",
                  "--tool-call-parser", "mistral", env=env, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "tool calls come back as text" in proc.stderr and "(tool-call parser: mistral)" in proc.stderr
    assert "--tool-call-parser hermes" in proc.stderr, proc.stderr
    assert pod_files(lab) == before and "parser" not in listed(env)


def test_the_role_alone_runs_its_start_module_the_normal_way_when_the_pods_python_is_unknown(lab, env, tmp_path):
    """pi_model_service's action plugin runs the module's code without AnsibleModule once the pod's Python is known;
    before that (the role as the play's first work, no interpreter in the inventory) it runs the module the normal
    way, AnsiballZ payload kept between runs, and the model starts the same."""
    run_pi("stop", env=env)
    play = tmp_path / "role.yml"
    play.write_text(json.dumps([{"hosts": "all", "gather_facts": False, "roles": [{"role": "model_service", "vars": {
        "model_service_name": "direct", "model_service_model": "Qwen/Qwen3-0.6B", "model_service_port": 8011,
        "model_service_gpus": [1], "model_service_hf_endpoint": env["HF_ENDPOINT"], "model_service_wait_timeout": 120,
        "model_service_args": ["--host", "0.0.0.0", "--port", "8011", "--served-model-name", "direct",
                               "--gpu-memory-utilization", "0.3", "--max-model-len", "4096"]}}]}]))
    local_tmp = tmp_path / "ansible-tmp"
    proc = subprocess.run([str(Path(os.sys.executable).with_name("ansible-playbook")), "-i",
                           str(plain_inventory(lab, tmp_path)), str(play)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **env, "ANSIBLE_LOCAL_TEMP": str(local_tmp)}, timeout=300)
    try:
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert list(local_tmp.glob("pi-ansiballz/*/ansible.legacy.pi_model_service-*")), "it ran as a module"
        model = listed(env)["direct"]
        assert model["state"] == "running" and model["port"] == 8011 and model["gpus"] == [1]
    finally:
        run_pi("stop", env=env)
