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

import json
import os
import re
import tempfile

from ansible.module_utils.basic import AnsibleModule

NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _write(path, data, mode):
    """Atomic replace: a temp file beside the target, fsync, chmod, rename."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".pi-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    models = os.path.join(p["etc_dir"], "models")
    paths = {
        "manifest": os.path.join(models, p["name"] + ".json"),
        "env": os.path.join(models, p["name"] + ".env"),
        "unit": f"/etc/systemd/system/pi-model-{p['name']}.service",
    }
    if p["state"] == "absent":
        gone = [k for k in ("unit", "env", "manifest") if os.path.exists(paths[k])]
        if not module.check_mode:
            for k in gone:
                os.unlink(paths[k])
        module.exit_json(changed=bool(gone), changed_files=gone)
    wanted = {
        "manifest": (json.dumps(p["manifest"], indent=2, sort_keys=True) + "\n").encode(),
        "env": p["env"].encode(),
        "unit": p["unit"].encode(),
    }
    modes = {"manifest": 0o644, "env": 0o600, "unit": 0o644}
    changed = [k for k in ("manifest", "env", "unit")
               if _read(paths[k]) != wanted[k] or (os.stat(paths[k]).st_mode & 0o777) != modes[k]]
    if changed and not module.check_mode:
        os.makedirs(models, mode=0o755, exist_ok=True)
        # manifest first (the reservation other planners see), unit last (what systemd acts on)
        for k in ("manifest", "env", "unit"):
            if k in changed:
                _write(paths[k], wanted[k], modes[k])
    module.exit_json(changed=bool(changed), changed_files=changed)


if __name__ == "__main__":
    main()
