#!/usr/bin/python
"""Ansible module: wait until a model's /health answers, or recognise why its engine failed."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pi_model_wait
short_description: Wait for a pi-ansible model to become healthy, recognising start failures
description:
  - Polls C(http://127.0.0.1:PORT/health) and the model's systemd unit. Returns when /health answers 200.
  - When the engine exits, reads its journal (after I(cursor)) and fails with the recognised cause (out of
    memory, context too long, unknown parser, gated model, …) and what to try, plus the last log lines.
options:
  name:
    description: The model's name (unit pi-model-NAME.service).
    type: str
    required: true
  port:
    description: The model's HTTP port.
    type: int
    required: true
  timeout:
    description: Seconds to wait for /health.
    type: int
    default: 900
  cursor:
    description: Journal cursor from before the start; only later lines are read.
    type: str
    default: ""
author: pi-ansible
"""

EXAMPLES = r"""
- name: Wait for the model
  pi_model_wait:
    name: qwen
    port: 8001
"""

RETURN = r"""
elapsed:
  description: Seconds waited.
  returned: always
  type: float
"""

import subprocess
import time
import urllib.request

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.engine_failures import classify, describe


def _show(unit):
    out = subprocess.run(["systemctl", "show", unit, "-p", "ActiveState,SubState,NRestarts,Result"],
                         capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _journal(unit, cursor):
    argv = ["journalctl", "-u", unit, "-o", "cat", "--no-pager"]
    argv += ["--after-cursor", cursor] if cursor else ["-n", "300"]
    return subprocess.run(argv, capture_output=True, text=True).stdout


def _healthy(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False


def main():
    module = AnsibleModule(
        argument_spec={"name": {"type": "str", "required": True}, "port": {"type": "int", "required": True},
                       "timeout": {"type": "int", "default": 900}, "cursor": {"type": "str", "default": ""}},
        supports_check_mode=True,
    )
    p = module.params
    if module.check_mode:
        module.exit_json(changed=False, elapsed=0.0)
    unit = f"pi-model-{p['name']}.service"
    started = time.monotonic()
    while time.monotonic() - started < p["timeout"]:
        if _healthy(p["port"]):
            module.exit_json(changed=False, elapsed=round(time.monotonic() - started, 1))
        state = _show(unit)
        exited = state.get("ActiveState") == "failed" or state.get("SubState") in ("auto-restart", "dead", "failed")
        if exited or int(state.get("NRestarts") or 0) > 0:
            log = _journal(unit, p["cursor"])
            # A known cause will not go away by restarting; an unknown one gets systemd's retries.
            if classify(log) or state.get("ActiveState") in ("failed", "inactive"):
                module.fail_json(msg=describe(log, f"model {p['name']} failed to start"),
                                 failure=(classify(log) or ("unknown", ""))[0], elapsed=round(time.monotonic() - started, 1))
        time.sleep(1)
    log = _journal(unit, p["cursor"])
    module.fail_json(msg=describe(log, f"model {p['name']} did not answer /health within {p['timeout']} s"),
                     failure="timeout")


if __name__ == "__main__":
    main()
