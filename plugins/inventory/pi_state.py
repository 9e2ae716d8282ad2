"""Inventory plugin: the pods pi-ansible's CLI knows, from its local state, with their SSH options."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable

try:
    import pi_ansible  # noqa: F401
except ImportError:  # a checkout used without `pip install`: the package sits beside plugins/
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pi_ansible.errors import PiError
from pi_ansible.inventory import state_inventory
from pi_ansible.paths import config_dir

DOCUMENTATION = r"""
---
name: pi_state
short_description: The GPU pods pi-ansible's CLI knows (its local state file)
description:
  - One host per pod of pi-ansible's local state (C($PI_CONFIG_DIR/pi-ansible.json), default C(~/.pi)), in the
    group O(group), with the SSH options of its C(pi pods setup) string as connection variables.
  - The setup the CLI recorded becomes host variables (C(vllm_env_variant), C(model_storage_models_path)), so
    that C(playbooks/site.yml) keeps the pods as they were set up; C(pi_pod) holds the rest (GPUs, driver,
    engine version). C(pi inventory --json) prints the same inventory.
  - The configuration file's name must end in C(.pi_state.yml) or C(.pi_state.yaml).
options:
  plugin:
    description: The name of this plugin.
    required: true
    choices: ["pi_state", "piansible.pods.pi_state"]
  state_file:
    description: The state file; empty takes C($PI_CONFIG_DIR/pi-ansible.json), or C(~/.pi/pi-ansible.json).
    type: str
    default: ""
  group:
    description: The group every pod joins.
    type: str
    default: pi_pods
extends_documentation_fragment:
  - constructed
author: pi-ansible
"""

EXAMPLES = r"""
# inventory/pods.pi_state.yml
plugin: pi_state
# Group the pods by GPU model: gpu_NVIDIA_H100_80GB_HBM3, ...
keyed_groups:
  - prefix: gpu
    key: pi_pod.gpus[0].name | default('none')
"""

class InventoryModule(BaseInventoryPlugin, Constructable):
    NAME = "pi_state"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith((".pi_state.yml", ".pi_state.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        option = self.get_option("state_file")
        state_file = Path(option).expanduser() if option else config_dir() / "pi-ansible.json"
        try:
            doc = json.loads(state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            doc = None  # no pod set up yet: an empty inventory
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AnsibleParserError(f"cannot read pi-ansible's state {state_file}: {exc}") from None
        group = self.get_option("group")
        try:
            listing = state_inventory(doc, group)
        except PiError as exc:
            raise AnsibleParserError(f"{state_file}: {exc}") from None
        strict = self.get_option("strict")
        if group in listing:
            self.inventory.add_group(group)
        for host in listing.get(group, {}).get("hosts", []):
            self.inventory.add_host(host, group=group)
            hostvars = listing["_meta"]["hostvars"][host]
            for key, value in hostvars.items():
                self.inventory.set_variable(host, key, value)
            self._set_composite_vars(self.get_option("compose"), hostvars, host, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), hostvars, host, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, host, strict=strict)
