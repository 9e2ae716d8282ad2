#!/usr/bin/python
"""Ansible module: the models pi-ansible runs on this pod (manifests, units, health, GPU memory, ports)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pi_models_facts
short_description: Facts about the models pi-ansible runs on a pod
description:
  - Reads the model manifests in /etc/pi-ansible/models, their systemd units, /health, the GPU memory of
    each model's processes and the pod's listening TCP ports, and sets C(ansible_facts.pi_models).
  - Read-only; the same code answers C(pi list) over one SSH call.
options: {}
author: pi-ansible
"""

EXAMPLES = r"""
- name: Read the models on the pod
  pi_models_facts:
"""

RETURN = r"""
ansible_facts:
  description: C(pi_models) with models (manifest and status per name), listening_ports and gpu_processes.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.pi_pod_status import collect


def main():
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    module.exit_json(changed=False, ansible_facts={"pi_models": collect()})


if __name__ == "__main__":
    main()
