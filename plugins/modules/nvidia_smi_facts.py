#!/usr/bin/python
"""Ansible module: GPU facts from nvidia-smi, under one key (ansible_facts.pi_gpus)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nvidia_smi_facts
short_description: Gather NVIDIA GPU facts with nvidia-smi
description:
  - Runs C(nvidia-smi) (query CSV for GPUs and compute processes, and the table header for the CUDA version)
    and sets C(ansible_facts.pi_gpus) with the GPUs (index, uuid, name, memory total/used/free), driver and CUDA
    versions, MIG state and the processes using GPU memory.
  - A driver failure (no driver, driver/library mismatch, no devices) fails with what to do, unless
    I(fail_on_error=false), in which case C(pi_gpus.failure) says what went wrong.
options:
  nvidia_smi:
    description: Path to nvidia-smi; found on PATH when empty.
    type: str
    default: ""
  fail_on_error:
    description: Fail when nvidia-smi reports a driver problem or no GPUs.
    type: bool
    default: true
author: pi-ansible
"""

EXAMPLES = r"""
- name: Gather GPU facts
  nvidia_smi_facts:
"""

RETURN = r"""
ansible_facts:
  description: C(pi_gpus) with gpus, driver_version, cuda_version, mig_enabled, processes and failure.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.gpu_facts_parse import gather


def main():
    module = AnsibleModule(
        argument_spec={"nvidia_smi": {"type": "str", "default": ""}, "fail_on_error": {"type": "bool", "default": True}},
        supports_check_mode=True,
    )
    smi = module.params["nvidia_smi"] or module.get_bin_path("nvidia-smi")
    if not smi:
        msg = ("nvidia-smi was not found on this host: install the NVIDIA driver (on Ubuntu: "
               "`apt install nvidia-driver-580-server`, then reboot) and run the setup again")
        if module.params["fail_on_error"]:
            module.fail_json(msg=msg)
        module.exit_json(changed=False, ansible_facts={"pi_gpus": {"gpus": [], "failure": {"kind": "missing", "message": msg}}})
    facts = gather(lambda args: module.run_command([smi, *args], environ_update={"LC_ALL": "C", "LANG": "C"}))
    failure = facts.get("failure")
    if failure and module.params["fail_on_error"]:
        module.fail_json(msg=failure["message"], pi_gpus=facts)
    module.exit_json(changed=False, ansible_facts={"pi_gpus": facts})


if __name__ == "__main__":
    main()
