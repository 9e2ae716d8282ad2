#!/usr/bin/python
"""Ansible module: a role's directories and small files, with their modes and owners, in one module run."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pi_files
short_description: Directories and small whole files with their modes and owners, in one task
description:
  - Creates the I(directories) (parents too) and writes the I(files) whose content differs, each through a
    temporary file in its directory and a rename; then sets mode, owner and group where they differ.
  - One module run for what M(ansible.builtin.file) and M(ansible.builtin.copy) do in one run per directory
    and two per file (C(stat), then C(file)): each run costs the host a Python start and Ansible's module
    imports, and the controller a round trip.
  - File content is never shown in the task's result (it may hold secrets); use C(no_log) on the task as well.
  - Supports check mode.
options:
  directories:
    description: Directories, in order (a parent before its children).
    type: list
    elements: dict
    default: []
    suboptions:
      path: {description: The directory., type: path, required: true}
      mode: {description: Its mode (octal string)., type: raw, default: "0755"}
      owner: {description: Its owner; omitted keeps the current one., type: str}
      group: {description: Its group; omitted keeps the current one., type: str}
  files:
    description: Files and their whole content; their directory must exist or be in I(directories).
    type: list
    elements: dict
    default: []
    suboptions:
      path: {description: The file., type: path, required: true}
      content: {description: Its whole content (text)., type: str, required: true, no_log: true}
      mode: {description: Its mode (octal string)., type: raw, default: "0644"}
      owner: {description: Its owner; omitted keeps the current one., type: str}
      group: {description: Its group; omitted keeps the current one., type: str}
author: pi-ansible
"""

EXAMPLES = r"""
- name: Write the secrets file, root-only, in pi-ansible's directory
  pi_files:
    directories: [{path: /etc/pi-ansible, mode: "0755", owner: root, group: root}]
    files: [{path: /etc/pi-ansible/secrets.env, content: "HF_TOKEN=...\n", mode: "0600", owner: root, group: root}]
  no_log: true
"""

RETURN = r"""
changed_paths:
  description: The directories created and the files written, or whose mode or owner changed.
  returned: always
  type: list
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule


def _read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _attributes(module, path, spec, changed):
    """Mode, owner and group where they differ (AnsibleModule's own setters: check mode included)."""
    args = module.load_file_common_arguments({"mode": spec["mode"], "owner": spec.get("owner"),
                                              "group": spec.get("group")}, path=path)
    return module.set_fs_attributes_if_different(args, changed)


def main():
    entry = {"path": {"type": "path", "required": True}, "mode": {"type": "raw"},
             "owner": {"type": "str"}, "group": {"type": "str"}}
    module = AnsibleModule(
        argument_spec={
            "directories": {"type": "list", "elements": "dict", "default": [],
                            "options": {**entry, "mode": {"type": "raw", "default": "0755"}}},
            "files": {"type": "list", "elements": "dict", "default": [],
                      "options": {**entry, "mode": {"type": "raw", "default": "0644"},
                                  "content": {"type": "str", "required": True, "no_log": True}}},
        },
        supports_check_mode=True,
    )
    changed_paths = []
    for d in module.params["directories"]:
        path = d["path"]
        if os.path.isdir(path):
            if _attributes(module, path, d, False):
                changed_paths.append(path)
            continue
        if os.path.lexists(path):
            module.fail_json(msg=f"{path} exists and is not a directory: remove it, then run again",
                             changed=bool(changed_paths), changed_paths=changed_paths)
        changed_paths.append(path)
        if not module.check_mode:
            os.makedirs(path, mode=0o755, exist_ok=True)
            _attributes(module, path, d, True)

    for f in module.params["files"]:
        path, content = f["path"], f["content"].encode("utf-8")
        if _read(path) == content:
            if _attributes(module, path, f, False):
                changed_paths.append(path)
            continue
        changed_paths.append(path)
        if module.check_mode:
            continue
        folder = os.path.dirname(path)
        if not os.path.isdir(folder):
            module.fail_json(msg=f"cannot write {path}: {folder} is not a directory (list it in directories)",
                             changed=len(changed_paths) > 1, changed_paths=changed_paths[:-1])
        fd, part = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.")
        try:
            os.fchmod(fd, 0o600)  # nothing readable by others before its mode is set
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
            _attributes(module, part, f, True)
            os.replace(part, path)
        except BaseException:
            if os.path.exists(part):
                os.unlink(part)
            raise
    module.exit_json(changed=bool(changed_paths), changed_paths=changed_paths)


if __name__ == "__main__":
    main()
