"""Fleets with plain ansible-playbook, without a pod: the converge decisions (pi_ansible.fleet), the converge
mode of model_service_vars, the inventory of the CLI's state (pi_ansible.inventory, the pi_state plugin,
`pi inventory`), and that the example fleet's group_vars reach its hosts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pi_ansible import fleet
from pi_ansible.cli import cli
from pi_ansible.errors import PiError
from pi_ansible.inventory import as_yaml_inventory, state_inventory
from pi_ansible.lab.gpu_profiles import profile
from pi_ansible.planning.start_request import existing_decision, model_service_vars, request_key
from pi_ansible.sshargs import parse_ssh
from pi_ansible.state import StateStore, pod_record

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
VENV = "/opt/pi-ansible/venv"


def gpus(name: str) -> dict:
    return {"gpus": profile(name)["gpus"], "processes": []}


def on_pod(*plans, state="running") -> dict:
    """pi_models facts for a pod running these plans (model_service vars), as pi_models_facts reports them."""
    models = {p["model_service_name"]: {"manifest": {"name": p["model_service_name"], "model": p["model_service_model"],
                                                      "port": p["model_service_port"], "gpus": p["model_service_gpus"],
                                                      "args": p["model_service_args"],
                                                      "served_name": p["model_service_served_name"],
                                                      **p["model_service_manifest_extra"]},
                                        "status": {"state": state}} for p in plans}
    return {"models": models, "listening_ports": [22] + [p["model_service_port"] for p in plans]}


CODER = {"name": "coder", "model": "Qwen/Qwen3-Coder-30B-A3B-Instruct", "context": "64k"}
QUICK = {"name": "quick", "model": "Qwen/Qwen3-8B", "context": "32k", "memory": "80%"}


def plan(request, pod="h100x2", models=None):
    return model_service_vars(dict(request), gpus(pod), models or {"models": {}}, venv=VENV)


# --- the converge mode of model_service_vars ------------------------------------------------------------


def test_request_key_normalises_what_pi_start_accepts():
    assert request_key({"model": "Qwen/Qwen3-8B", "memory": "50%", "context": "32k", "gpus": "2"}) == \
        request_key({"model": "Qwen/Qwen3-8B", "memory": 0.5, "context": 32768, "gpus": 2})
    assert request_key({"model": "m/x"}) == {"model": "m/x", "memory": None, "context": None, "gpus": None,
                                             "vllm_args": None}
    assert request_key({"model": "m/x", "vllm_args": []})["vllm_args"] == []


def test_the_manifest_records_the_request_and_the_cli_still_refuses_a_name_that_runs():
    a = plan(CODER)
    assert a["model_service_action"] == "start"
    assert a["model_service_manifest_extra"]["request"] == request_key(CODER)
    with pytest.raises(PiError, match="already runs"):
        plan(CODER, models=on_pod(a))
    with pytest.raises(PiError, match="already runs"):
        plan({**CODER, "existing": "error"}, models=on_pod(a))
    with pytest.raises(PiError, match="existing 'bogus'"):
        plan({**CODER, "existing": "bogus"}, models=on_pod(a))


def test_keep_mode_keeps_the_same_request_without_planning_and_replaces_a_different_one():
    a = plan(CODER)
    kept = plan({**CODER, "context": 65536, "existing": "keep"}, models=on_pod(a))
    assert kept["model_service_action"] == "keep" and kept["model_service_port"] == a["model_service_port"]
    assert "model_service_args" not in kept  # nothing planned
    for change, why in (({"context": "32k"}, "context"), ({"memory": "50%"}, "memory"),
                        ({"model": "Qwen/Qwen3-8B"}, "runs Qwen/Qwen3-Coder"), ({"vllm_args": ["--x"]}, "vllm_args")):
        out = plan({**CODER, **change, "existing": "keep"}, models=on_pod(a))
        assert out["model_service_action"] == "replace" and why in out["reason"], (change, out)
    crashed = plan({**CODER, "existing": "keep"}, models=on_pod(a, state="crashed"))
    assert crashed["model_service_action"] == "replace" and "crashed" in crashed["reason"]


def test_a_model_started_without_a_recorded_request_is_replaced():
    a = plan(CODER)
    del a["model_service_manifest_extra"]["request"]
    assert existing_decision(CODER, on_pod(a)["models"]["coder"])[0] == "replace"


# --- a host's converge --------------------------------------------------------------------------------


def test_declared_models_are_checked_like_pi_start_options():
    for bad, msg in (("coder", "must be a list"), ([{"name": "a"}], "needs both name and model"),
                     ([{"name": "A_b", "model": "x/y"}], "invalid model name"),
                     ([{"name": "a", "model": "nope"}], "not a Hugging Face model id"),
                     ([{"name": "a", "model": "x/y", "memory": "300%"}], "outside"),
                     ([{"name": "a", "model": "x/y", "context": "lots"}], "not a token count"),
                     ([{"name": "a", "model": "x/y", "gpus": 0}], "gpus 0"),
                     ([{"name": "a", "model": "x/y", "vllm_args": "--x"}], "list of strings"),
                     ([{"name": "a", "model": "x/y", "port": 1}], "unknown key"),
                     ([{"name": "a", "model": "x/y"}, {"name": "a", "model": "x/z"}], "declared twice")):
        with pytest.raises(PiError, match=msg):
            fleet.declared_requests(bad)
    assert fleet.declared_requests(None) == []


def test_actions_keep_replace_start_and_the_switch_for_undeclared_models():
    a, q = plan(CODER), plan(QUICK, models=on_pod(plan(CODER)))
    old = plan({"name": "old", "model": "Qwen/Qwen3-0.6B"}, pod="h200x8")
    facts = on_pod(a, q, old)
    same = fleet.converge_actions([CODER, QUICK], facts)
    assert same["keep"] == ["coder", "quick"] and same["start"] == [] and same["stop"] == []
    assert same["undeclared"] == ["old"]
    assert fleet.converge_actions([CODER, QUICK], facts, stop_undeclared=True)["stop"] == ["old"]
    changed = fleet.converge_actions([{**CODER, "context": "32k"}], facts, stop_undeclared=True)
    assert changed["keep"] == [] and set(changed["replace"]) == {"coder"}
    assert changed["stop"] == ["coder", "old", "quick"]
    assert [r["name"] for r in changed["start"]] == ["coder"]
    assert fleet.converge_actions([{"name": "x", "model": "someorg/unknown-model"}], {})["fetch_config"] == \
        ["someorg/unknown-model"]


def test_plans_are_made_in_order_each_seeing_the_ones_before_it():
    plans = fleet.plan_models(fleet.declared_requests([CODER, QUICK]), gpus("h100x2"), {"models": {}, "listening_ports": [22]},
                              venv=VENV, pod="p")
    assert [p["model_service_gpus"] for p in plans] == [[0], [1]]
    assert [p["model_service_port"] for p in plans] == [8001, 8002]
    # ... the same as two `pi start`s one after the other would get
    first = plan(CODER)
    assert plans[0]["model_service_args"] == first["model_service_args"]
    assert plans[1]["model_service_args"] == plan(QUICK, models=on_pod(first))["model_service_args"]
    assert plans[0]["model_service_manifest_extra"]["started_by"] == "ansible-playbook site.yml"
    with pytest.raises(PiError, match="not enough GPU memory"):
        fleet.plan_models(fleet.declared_requests([CODER, QUICK, {"name": "third", "model": "Qwen/Qwen3-32B"}]),
                          gpus("h100x2"), {"models": {}}, venv=VENV)


# --- the inventory of the CLI's state ----------------------------------------------------------------


SSH = "ssh -p 2222 -i ~/.ssh/id_pods -o StrictHostKeyChecking=accept-new root@203.0.113.7"


def state_doc(tmp_path) -> tuple[StateStore, dict]:
    store = StateStore(tmp_path / "pi-ansible.json")
    with store.transaction() as st:
        st.add_pod("dc1", pod_record(parse_ssh(SSH), gpus=profile("h100x2")["gpus"], engine_variant="nightly",
                                     models_path="/mnt/models", driver_version="590.48.01"))
        st.add_pod("dc2", pod_record(parse_ssh("ssh root@198.51.100.9"), engine_variant="release"))
    return store, store.load().to_dict()


def test_state_inventory_has_the_ssh_options_and_the_recorded_setup(tmp_path):
    _, doc = state_doc(tmp_path)
    inv = state_inventory(doc)
    assert inv["all"]["children"] == ["pi_pods", "ungrouped"] and inv["pi_pods"]["hosts"] == ["dc1", "dc2"]
    dc1 = inv["_meta"]["hostvars"]["dc1"]
    assert {k: dc1[k] for k in ("ansible_host", "ansible_port", "ansible_user", "ansible_ssh_private_key_file",
                                "ansible_ssh_common_args")} == {
        "ansible_host": "203.0.113.7", "ansible_port": 2222, "ansible_user": "root",
        "ansible_ssh_private_key_file": "~/.ssh/id_pods", "ansible_ssh_common_args": "-o StrictHostKeyChecking=accept-new"}
    assert dc1["vllm_env_variant"] == "nightly" and dc1["model_storage_models_path"] == "/mnt/models"
    assert dc1["pi_pod"]["active"] and not inv["_meta"]["hostvars"]["dc2"]["pi_pod"]["active"]
    assert "model_storage_models_path" not in inv["_meta"]["hostvars"]["dc2"]
    assert state_inventory(None) == {"_meta": {"hostvars": {}}, "all": {"children": ["ungrouped"]},
                                     "ungrouped": {"hosts": []}}
    yml = as_yaml_inventory(inv)
    assert yml["all"]["children"]["pi_pods"]["hosts"]["dc2"]["ansible_host"] == "198.51.100.9"


def test_state_inventory_refuses_what_it_cannot_trust():
    with pytest.raises(PiError, match=r"pod 'dc1'.*bad SSH string"):
        state_inventory({"version": 1, "pods": {"dc1": {"ssh": "ssh root@x; rm -rf /"}}})
    with pytest.raises(PiError, match="newer pi-ansible"):
        state_inventory({"version": 9, "pods": {}})


def test_pi_inventory_and_the_pi_state_plugin_print_the_same(tmp_path, monkeypatch):
    store, _ = state_doc(tmp_path)
    monkeypatch.setenv("PI_CONFIG_DIR", str(tmp_path))
    out = CliRunner().invoke(cli, ["inventory", "--json"])
    assert out.exit_code == 0, out.output
    printed = json.loads(out.output)
    assert printed == state_inventory(store.load().to_dict())
    text = CliRunner().invoke(cli, ["inventory"])
    assert yaml.safe_load(text.output) == as_yaml_inventory(printed)

    config = tmp_path / "pods.pi_state.yml"
    config.write_text("plugin: pi_state\nkeyed_groups:\n  - prefix: variant\n    key: vllm_env_variant\n")
    env = {**os.environ, "PI_CONFIG_DIR": str(tmp_path), "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    proc = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(config), "--list"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "WARNING" not in proc.stderr, proc.stderr
    listed = json.loads(proc.stdout)
    assert sorted(listed["pi_pods"]["hosts"]) == ["dc1", "dc2"]
    assert listed["variant_nightly"]["hosts"] == ["dc1"] and listed["variant_release"]["hosts"] == ["dc2"]

    def plain(v):  # ansible-inventory marks inventory-plugin strings as unsafe
        if isinstance(v, dict):
            return plain(v["__ansible_unsafe"]) if set(v) == {"__ansible_unsafe"} else {k: plain(x) for k, x in v.items()}
        return [plain(x) for x in v] if isinstance(v, list) else v

    for host in ("dc1", "dc2"):
        assert plain(listed["_meta"]["hostvars"][host]) == printed["_meta"]["hostvars"][host]

    # A broken state file is an inventory error that says which file and why, not an empty fleet.
    (tmp_path / "pi-ansible.json").write_text("{not json")
    proc = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(config), "--list"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert "cannot read pi-ansible's state" in proc.stderr


# --- the example fleet and site.yml ------------------------------------------------------------------


def test_the_example_fleet_gets_its_group_vars(tmp_path):
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    proc = subprocess.run([str(BIN / "ansible-inventory"), "-i", "inventory/lab-fleet.yml", "--list"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    hv = json.loads(proc.stdout)["_meta"]["hostvars"]
    assert set(hv) == {"fleet-h100", "fleet-h200", "fleet-4090"}
    names = {h: [m["name"] for m in v["pi_fleet_models"]] for h, v in hv.items()}
    assert names == {"fleet-h100": ["coder", "quick"], "fleet-h200": ["reasoner", "oss"], "fleet-4090": ["assistant"]}
    for v in hv.values():
        fleet.declared_requests(v["pi_fleet_models"])  # valid declarations
        assert v["pi_fleet_stop_undeclared"] is True and v["model_storage_models_path"] == "/mnt/models"
        assert v["ansible_host"] == "lab-{{ inventory_hostname }}" and "ssh_config" in v["ansible_ssh_common_args"]
        assert set(v["vllm_env_index_urls"]) == {"pypi", "vllm_variant", "vllm_nightly", "vllm_nightly_variant",
                                                 "pytorch"}
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "inventory/lab-fleet.yml", "playbooks/site.yml",
                           "--syntax-check"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_site_yml_plans_with_the_same_filters_as_the_cli():
    text = (REPO / "playbooks" / "site.yml").read_text()
    assert "import_playbook: pod_setup.yml" in text
    assert "pi_fleet_plan(" in text and "pi_fleet_actions(" in text and "tasks_from: files.yml" in text
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("pi_fleet_filter", REPO / "plugins" / "filter" / "pi_fleet.py")
    mod = module_from_spec(spec)
    spec.loader.exec_module(mod)
    filters = mod.FilterModule().filters()
    from ansible.errors import AnsibleFilterError

    with pytest.raises(AnsibleFilterError, match="declared twice"):
        filters["pi_fleet_actions"]([CODER, CODER], {})
    plans = filters["pi_fleet_plan"]([CODER], gpus("h100x2"), {"models": {}}, VENV, "p")
    assert plans[0]["model_service_args"] == plan(CODER)["model_service_args"]


def test_resume_mode_starts_the_same_request_again_in_place_and_refuses_another():
    a = plan(CODER)
    for state in ("running", "starting", "stopped", "crashed"):
        again = plan({**CODER, "existing": "resume"}, models=on_pod(a, state=state))
        assert again["model_service_action"] == "resume", state
        for key in ("model_service_port", "model_service_gpus", "model_service_args", "model_service_env",
                    "model_service_verify_tool_call"):
            assert again[key] == a[key], (state, key)
        assert again["model_service_manifest_extra"] == a["model_service_manifest_extra"]
    for change, why in (({"context": "32k"}, "context"), ({"model": "Qwen/Qwen3-8B"}, "runs Qwen/Qwen3-Coder")):
        with pytest.raises(PiError, match=f"already runs.*{why}.*pi stop coder"):
            plan({**CODER, **change, "existing": "resume"}, models=on_pod(a))
