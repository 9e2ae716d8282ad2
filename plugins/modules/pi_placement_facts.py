#!/usr/bin/python
"""Ansible module: everything a start plans from, under the pod's placement lock, in one round trip."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pi_placement_facts
short_description: Take a pod's placement lock and gather what placing a model needs
description:
  - Reads C(/etc/pi-ansible/pod.json) (fails, naming the fix, on a pod that was never set up), takes the
    placement lock C(/run/pi-ansible/placement.lock) (waiting for another start to release it; a lock older
    than two minutes was left by a run that died and is removed), then gathers C(pi_gpus) as
    M(nvidia_smi_facts) and C(pi_models) as M(pi_models_facts) do.
  - The lock stays taken when this module succeeds; M(pi_model_service) (its I(unlock) option) or the
    playbook releases it. On failure it is released here.
options:
  pod: {description: The pod's name for messages., type: str, default: this pod}
  lock_token: {description: Written into the lock so an interrupted caller can release its own lock., type: str, default: ansible-playbook}
  lock_wait: {description: Seconds to wait for another start's lock., type: int, default: 180}
author: pi-ansible
"""

EXAMPLES = r"""
- name: Lock the pod and read what placement needs
  pi_placement_facts:
    pod: "{{ inventory_hostname }}"
"""

RETURN = r"""
ansible_facts:
  description: C(pi_pod) (pod.json), C(pi_gpus) and C(pi_models).
  returned: success
  type: dict
waited:
  description: Seconds spent waiting for the lock.
  returned: success
  type: float
"""

import json
import shutil

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.gpu_facts_parse import gather
from ansible.module_utils.pi_pod_status import PLACEMENT_LOCK as LOCK
from ansible.module_utils.pi_pod_status import POD_FILE, collect, take_placement_lock


def main():
    module = AnsibleModule(
        argument_spec={"pod": {"type": "str", "default": "this pod"},
                       "lock_token": {"type": "str", "default": "ansible-playbook"},
                       "lock_wait": {"type": "int", "default": 180}},
        supports_check_mode=True,
    )
    p = module.params
    try:
        with open(POD_FILE) as fh:
            pod = json.load(fh)
    except FileNotFoundError:
        module.fail_json(msg=f"{p['pod']} is not set up for pi-ansible (no {POD_FILE}): run `pi pods setup` "
                             "(or playbooks/pod_setup.yml) on it first")
    except (OSError, ValueError) as exc:
        module.fail_json(msg=f"{POD_FILE} on {p['pod']} cannot be read ({exc}): run `pi pods setup` on it again")
    waited = 0.0
    if not module.check_mode:
        waited = take_placement_lock(p["lock_token"], p["lock_wait"])
        if waited is None:
            module.fail_json(msg=f"another start on {p['pod']} has held the placement lock for over {p['lock_wait']} s; "
                                 f"wait for it, or remove {LOCK} on the pod if no start is running")
    try:
        smi = module.get_bin_path("nvidia-smi")
        if not smi:
            raise RuntimeError("nvidia-smi was not found on this pod: install the NVIDIA driver and run `pi pods setup` again")
        gpus = gather(lambda args: module.run_command([smi, *args], environ_update={"LC_ALL": "C", "LANG": "C"}))
        if gpus.get("failure"):
            raise RuntimeError(gpus["failure"]["message"])
        models = collect()
    except Exception as exc:  # the lock must not outlive a failed gather
        if not module.check_mode:
            shutil.rmtree(LOCK, ignore_errors=True)
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, waited=waited, ansible_facts={"pi_pod": pod, "pi_gpus": gpus, "pi_models": models})


if __name__ == "__main__":
    main()
