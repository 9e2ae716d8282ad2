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
  - Its action plugin runs the same code (C(reconcile) in module_utils/pi_model_service.py) on the pod without
    AnsibleModule when the pod's Python is known, arguments checked on the controller against this spec.
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

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.pi_model_service import REQUIRED_TOGETHER, SPEC, reconcile


def main():
    module = AnsibleModule(argument_spec=SPEC, required_together=REQUIRED_TOGETHER, supports_check_mode=True)
    result = reconcile(module.params, module.check_mode)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
