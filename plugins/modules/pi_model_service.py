#!/usr/bin/python
"""Ansible module: bring one model's service to running in a single task (files, weights, systemd, /health)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pi_model_service
short_description: Reconcile a pi-ansible model on its pod in one round trip
description:
  - Writes the model's manifest, env file and unit (as M(pi_model_files)) when given, then releases the
    placement lock named by I(unlock), downloads the weights with the Hub client unless a finished download of
    the same revision is recorded and every file is still there, restarts the unit when its files changed (or
    I(restart)), otherwise starts it if it is not running and clears a crashed unit's failed state, enables it,
    waits for C(/health) while watching the journal for recognised engine failures, and sends the tool-call
    check request (I(verify)), failing when the answer carries no structured tool call.
  - Everything a start needs happens in this one task, so a start costs one SSH round trip of Ansible work.
  - It does not remove a model that failed to start; the role's rescue does (and explains the failure).
options:
  name: {description: The model's name (unit pi-model-NAME.service)., type: str, required: true}
  etc_dir: {description: pi-ansible's directory on the pod., type: path, default: /etc/pi-ansible}
  manifest: {description: The manifest to write (with env and unit; omit all three when already written)., type: dict}
  env: {description: The env file's content (secret)., type: str}
  unit: {description: The unit file's content., type: str}
  restart: {description: Restart even when no file changed here (the caller wrote them)., type: bool, default: false}
  unlock: {description: Placement lock directory to remove once the files are written., type: str, default: ""}
  lock_digest:
    description:
      - For a plan made outside the placement lock (C(pi start) reads the pod in one SSH call and plans on the
        controller) - take the lock I(unlock) first (owner I(run_id)), and go on only while the pod's pod.json
        and model manifests still hash to this value (C(state_digest) in module_utils/pi_pod_status.py).
      - Otherwise nothing is written, the lock is released and the task fails with failure C(stale)
        (C(locked) when another start held the lock past I(lock_wait)); the caller plans again.
    type: str
    default: ""
  lock_wait: {description: Seconds to wait for another start's lock (with I(lock_digest))., type: int, default: 180}
  model: {description: Hugging Face model id to download., type: str, default: ""}
  download: {description: Download the weights before starting., type: bool, default: true}
  download_timeout: {description: Seconds the download may take., type: int, default: 7200}
  run_id:
    description:
      - Names this run's download log C(/run/pi-ansible/download-NAME-RUN_ID.log) (C(download-NAME.log) when
        empty), so a caller following it never sees an earlier run's lines. The log is removed once read.
    type: str
    default: ""
  venv: {description: The engine's venv (its bin/hf downloads)., type: path, default: /opt/pi-ansible/venv}
  hf_home: {description: HF_HOME on the pod., type: path, default: /mnt/models/huggingface}
  hf_endpoint: {description: HF_ENDPOINT (empty for the real Hub)., type: str, default: ""}
  wait: {description: Wait for /health., type: bool, default: true}
  port: {description: The model's HTTP port., type: int, default: 8001}
  wait_timeout: {description: Seconds to wait for /health., type: int, default: 900}
  verify:
    description:
      - After /health, ask the model to call a tool (a chat request with one tool, as C(served_name)) and fail
        with failure C(tool_calls) when the call comes back as text in the message rather than as structured
        C(tool_calls), naming the tool-call parser that would read what the model wrote.
    type: bool
    default: false
  served_name: {description: The model name the endpoint serves (the check's request names it)., type: str, default: ""}
  engine_args: {description: The engine's arguments (a failed check names their tool-call parser)., type: list, elements: str, default: []}
  api_key: {description: The endpoint's API key for the check (secret)., type: str, default: ""}
author: pi-ansible
"""

EXAMPLES = r"""
- name: Start the model
  pi_model_service:
    name: qwen
    manifest: {name: qwen, model: Qwen/Qwen3-8B, port: 8001}
    env: "VLLM_API_KEY=...\n"
    unit: "[Unit]\n..."
    model: Qwen/Qwen3-8B
    port: 8001
"""

RETURN = r"""
changed_files: {description: Which of manifest, env, unit changed., returned: always, type: list}
downloaded: {description: Whether the Hub client ran (false when a complete download was recorded)., returned: always, type: bool}
restarted: {description: Whether the unit was restarted or started here., returned: always, type: bool}
enabled: {description: Whether the unit was enabled here (it starts on boot)., returned: always, type: bool}
verify_response: {description: The tool-call check's response., returned: when I(verify), type: dict}
download_log: {description: The Hub client's output, after a failed download., returned: on download failure, type: str}
failure:
  description: What failed (stale, locked, download, unit, a recognised engine failure, timeout, verify, tool_calls).
  returned: on failure
  type: str
"""

import shutil
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.engine_failures import classify, describe
from ansible.module_utils.pi_model_service import (
    NAME,
    RUN_ID,
    download,
    download_log_path,
    env_value,
    file_paths,
    journal_cursor,
    post_json,
    record_weights,
    systemctl,
    tool_call_probe,
    unit_name,
    unit_state,
    wait_healthy,
    wanted_files,
    weights_complete,
    write_files,
)
from ansible.module_utils.pi_pod_status import STALE_PLAN, state_digest, take_placement_lock
from ansible.module_utils.pi_tool_calls import verdict

SPEC = {
    "name": {"type": "str", "required": True},
    "etc_dir": {"type": "path", "default": "/etc/pi-ansible"},
    "manifest": {"type": "dict"},
    "env": {"type": "str", "no_log": True},
    "unit": {"type": "str"},
    "restart": {"type": "bool", "default": False},
    "unlock": {"type": "str", "default": ""},
    "lock_digest": {"type": "str", "default": ""},
    "lock_wait": {"type": "int", "default": 180},
    "model": {"type": "str", "default": ""},
    "download": {"type": "bool", "default": True},
    "download_timeout": {"type": "int", "default": 7200},
    "run_id": {"type": "str", "default": ""},
    "venv": {"type": "path", "default": "/opt/pi-ansible/venv"},
    "hf_home": {"type": "path", "default": "/mnt/models/huggingface"},
    "hf_endpoint": {"type": "str", "default": ""},
    "wait": {"type": "bool", "default": True},
    "port": {"type": "int", "default": 8001},
    "wait_timeout": {"type": "int", "default": 900},
    "verify": {"type": "bool", "default": False},
    "served_name": {"type": "str", "default": ""},
    "engine_args": {"type": "list", "elements": "str", "default": []},
    "api_key": {"type": "str", "default": "", "no_log": True},
}


def main():
    module = AnsibleModule(argument_spec=SPEC, required_together=[("manifest", "env", "unit")],
                           supports_check_mode=True)
    p = module.params
    if not NAME.match(p["name"]):
        module.fail_json(msg=f"model name {p['name']!r} is not a DNS label")
    if not RUN_ID.match(p["run_id"]):
        module.fail_json(msg=f"run_id {p['run_id']!r} must be up to 32 letters, digits and hyphens")
    unit = unit_name(p["name"])
    started = time.monotonic()
    result = {"changed_files": [], "downloaded": False, "restarted": False, "enabled": False}

    def done(**kw):
        result.update(kw)
        result["elapsed"] = round(time.monotonic() - started, 2)
        module.exit_json(changed=bool(result["changed_files"] or result["restarted"] or result["enabled"]), **result)

    def fail(failure, msg, **kw):
        module.fail_json(msg=msg, failure=failure, elapsed=round(time.monotonic() - started, 2), **result, **kw)

    if p["lock_digest"] and not module.check_mode:
        if not p["unlock"]:
            module.fail_json(msg="lock_digest needs unlock: the placement lock to take")
        if take_placement_lock(p["run_id"] or "ansible-playbook", p["lock_wait"], p["unlock"]) is None:
            fail("locked", f"another start has held the placement lock {p['unlock']} for over {p['lock_wait']} s; "
                           "wait for it, or remove the lock on the pod if no start is running")
        if state_digest(p["etc_dir"]) != p["lock_digest"]:
            shutil.rmtree(p["unlock"], ignore_errors=True)
            fail("stale", f"{STALE_PLAN} (another start ran in between): nothing was written; plan again")
    try:
        if p["manifest"] is not None:
            result["changed_files"] = write_files(p["etc_dir"], p["name"],
                                                  wanted_files(p["manifest"], p["env"], p["unit"]), module.check_mode)
    finally:
        if p["unlock"] and not module.check_mode:
            shutil.rmtree(p["unlock"], ignore_errors=True)
    restart = bool(result["changed_files"]) or p["restart"]
    if module.check_mode:
        state = unit_state(unit)
        result["restarted"] = restart or state.get("ActiveState") != "active"
        done()

    if p["download"] and p["model"] and not weights_complete(p["hf_home"], p["model"]):
        token = env_value(file_paths(p["etc_dir"], p["name"])["env"], "HF_TOKEN")
        rc, log = download(p["model"], p["venv"], p["hf_home"], p["hf_endpoint"], token,
                           download_log_path(p["name"], p["run_id"]), p["download_timeout"])
        result["downloaded"] = True
        if rc != 0:
            fail("download", f"downloading {p['model']} failed (rc {rc})", download_log=log)
        record_weights(p["hf_home"], p["model"])

    cursor = journal_cursor(unit)  # only the engine's new log lines explain a failure of this start
    state = unit_state(unit)
    enable = state.get("UnitFileState") != "enabled"
    if enable:  # symlinks for boot only: the running manager needs no reload for them
        systemctl("enable", "--no-reload", unit)
    if restart and state.get("NeedDaemonReload") == "yes":
        # Only a unit systemd has loaded goes stale; a new one is read from disk when started (a reload is ~0.15 s).
        systemctl("daemon-reload")
    if state.get("ActiveState") == "failed" or state.get("Result", "success") != "success":
        systemctl("reset-failed", unit)  # systemd refuses to start a unit past its restart cap
    if restart or state.get("ActiveState") != "active":
        proc = systemctl("restart", unit)
        if proc.returncode != 0:
            fail("unit", f"systemctl restart {unit} failed: {proc.stderr.strip()}")
        result["restarted"] = True
    result["enabled"] = enable

    if p["wait"]:
        failed = wait_healthy(p["name"], p["port"], p["wait_timeout"], cursor, classify, describe)
        if failed:
            fail(failed[0], failed[1])
        if p["verify"]:
            response, error = post_json(f"http://127.0.0.1:{p['port']}/v1/chat/completions",
                                        tool_call_probe(p["served_name"] or p["name"]), p["api_key"])
            if error:
                fail("verify", f"the tool-call check request to model {p['name']} failed: {error}")
            result["verify_response"] = response
            problem = verdict(response, p["engine_args"])
            if problem:
                fail("tool_calls", problem)
    done()


if __name__ == "__main__":
    main()
