#!/usr/bin/python
"""Ansible module: write (or remove) a model's manifest, env file and systemd unit in one step."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pi_model_files
short_description: Reconcile a pi-ansible model's manifest, env file and systemd unit together
description:
  - Writes C(ETC/models/NAME.json) (0644), C(ETC/models/NAME.env) (0600, holds the API key) and
    C(/etc/systemd/system/pi-model-NAME.service) (0644) in one task, each through a temporary file and a rename,
    so an interrupted run never leaves a unit without its manifest or the other way round.
  - With I(state=absent) the unit goes first, then the env file, then the manifest.
options:
  name:
    description: The model's name (a DNS label).
    type: str
    required: true
  state:
    description: present or absent.
    type: str
    default: present
    choices: [present, absent]
  etc_dir:
    description: pi-ansible's directory on the pod.
    type: path
    default: /etc/pi-ansible
  manifest:
    description: The manifest (JSON object).
    type: dict
  env:
    description: The env file's content.
    type: str
  unit:
    description: The unit file's content.
    type: str
author: pi-ansible
"""

EXAMPLES = r"""
- name: Write the model's files
  pi_model_files:
    name: qwen
    manifest: {name: qwen, model: Qwen/Qwen3-8B, port: 8001}
    env: "VLLM_API_KEY=...\n"
    unit: "[Unit]\n..."
  no_log: true
"""

RETURN = r"""
changed_files:
  description: Which of manifest, env, unit changed.
  returned: always
  type: list
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.pi_model_service import NAME, remove_files, wanted_files, write_files


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            "etc_dir": {"type": "path", "default": "/etc/pi-ansible"},
            "manifest": {"type": "dict"},
            "env": {"type": "str", "no_log": True},
            "unit": {"type": "str"},
        },
        required_if=[("state", "present", ("manifest", "env", "unit"))],
        supports_check_mode=True,
    )
    p = module.params
    if not NAME.match(p["name"]):
        module.fail_json(msg=f"model name {p['name']!r} is not a DNS label")
    if p["state"] == "absent":
        gone = remove_files(p["etc_dir"], p["name"], module.check_mode)
        module.exit_json(changed=bool(gone), changed_files=gone)
    changed = write_files(p["etc_dir"], p["name"], wanted_files(p["manifest"], p["env"], p["unit"]), module.check_mode)
    module.exit_json(changed=bool(changed), changed_files=changed)


if __name__ == "__main__":
    main()
