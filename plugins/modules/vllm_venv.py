#!/usr/bin/python
"""Ansible module: the engine's venv in one task (its Python, `uv venv`, `uv pip install`, the installed version)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: vllm_venv
short_description: Create a venv with uv and install packages into it, in one task
description:
  - Picks the venv's Python (the one given; otherwise the system C(/usr/bin/python3) when it is 3.11 or newer;
    otherwise a uv-managed 3.12), creates the venv with C(uv venv) when it has no interpreter, runs
    C(uv pip install) into it, and reads the installed version of one package.
  - One module run on the host where four tasks used to be four (each costs the host a Python start and
    Ansible's module imports, and the controller a round trip).
  - Idempotent. uv says C(Installed)/C(Uninstalled) only when it changed the venv; a re-run changes nothing.
  - Check mode changes nothing; C(changed) says whether a real run would (C(uv pip install --dry-run)).
options:
  uv:
    description: The uv binary.
    type: path
    default: /usr/local/bin/uv
  venv:
    description: The venv's directory.
    type: path
    required: true
  python:
    description: Python for a new venv (a path or a version uv can provide); empty picks one as described above.
    type: str
    default: ""
  install_args:
    description:
      - Arguments of C(uv pip install) after the interpreter option, as a list (never through a shell)
        such as C([--index-url, URL, vllm==0.33.0, hf_xet]).
    type: list
    elements: str
    required: true
  reinstall:
    description: Delete the venv first and build it from nothing.
    type: bool
    default: false
  version_of:
    description: The distribution whose installed version is returned.
    type: str
    default: vllm
author: pi-ansible
"""

EXAMPLES = r"""
- name: Install vLLM and the Hub client into the venv
  vllm_venv:
    venv: /opt/pi-ansible/venv
    install_args: [--index-url, https://pypi.org/simple, vllm==0.33.0, huggingface_hub>=1.0, hf_xet]
"""

RETURN = r"""
python:
  description: The Python the venv was (or would be) created with.
  returned: always
  type: str
version:
  description: The installed version of I(version_of); empty in check mode when the venv does not exist yet.
  returned: always
  type: str
created:
  description: Whether the venv was (or would be) created.
  returned: always
  type: bool
installed:
  description: Whether uv installed or removed packages (or would).
  returned: always
  type: bool
stderr:
  description: What C(uv pip install) printed (its summary of what it did).
  returned: always
  type: str
"""

import os
import re
import shutil

from ansible.module_utils.basic import AnsibleModule

SYSTEM_PYTHON = "/usr/bin/python3"
MANAGED_PYTHON = "3.12"
CHANGED = re.compile(r"^\s*(Installed|Uninstalled) ", re.MULTILINE)
WOULD_CHANGE = re.compile(r"^\s*Would (install|uninstall) ", re.MULTILINE)


def pick_python(wanted, system_version):
    """The venv's Python: WANTED, else the system one when SYSTEM_VERSION ("3.11") is 3.11 or newer."""
    if wanted:
        return wanted
    try:
        major, minor = (int(x) for x in (system_version or "").split(".")[:2])
    except ValueError:
        return MANAGED_PYTHON
    return SYSTEM_PYTHON if (major, minor) >= (3, 11) else MANAGED_PYTHON


def tail(text, lines=12):
    return "\n".join(text.strip().splitlines()[-lines:])


def main():
    module = AnsibleModule(
        argument_spec={
            "uv": {"type": "path", "default": "/usr/local/bin/uv"},
            "venv": {"type": "path", "required": True},
            "python": {"type": "str", "default": ""},
            "install_args": {"type": "list", "elements": "str", "required": True},
            "reinstall": {"type": "bool", "default": False},
            "version_of": {"type": "str", "default": "vllm"},
        },
        supports_check_mode=True,
    )
    p = module.params
    venv_python = os.path.join(p["venv"], "bin", "python")
    system_version = ""
    if not p["python"] and os.access(SYSTEM_PYTHON, os.X_OK):
        rc, out, _ = module.run_command([SYSTEM_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        system_version = out.strip() if rc == 0 else ""
    python = pick_python(p["python"], system_version)
    result = {"python": python, "version": "", "created": False, "installed": False, "stderr": ""}

    def finish(**kw):
        result.update(kw)
        changed = result["created"] or result["installed"] or p["reinstall"]
        if os.path.exists(venv_python):
            rc, out, err = module.run_command(
                [venv_python, "-c", "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))", p["version_of"]])
            if rc != 0 and not module.check_mode:
                module.fail_json(msg=f"{p['version_of']} is not installed in {p['venv']}: {tail(err, 3)}",
                                 changed=changed, **result)
            result["version"] = out.strip() if rc == 0 else ""
        module.exit_json(changed=changed, **result)

    if module.check_mode:
        if p["reinstall"] or not os.path.exists(venv_python):
            finish(created=True, installed=True)
        rc, _, err = module.run_command([p["uv"], "pip", "install", "--dry-run", "--python", venv_python,
                                         *p["install_args"]])
        if rc != 0:
            module.fail_json(msg=f"uv pip install --dry-run into {p['venv']} failed (rc {rc}): {tail(err)}", **result)
        finish(installed=bool(WOULD_CHANGE.search(err)), stderr=err)

    if p["reinstall"] and os.path.lexists(p["venv"]):
        shutil.rmtree(p["venv"])
    if not os.path.exists(venv_python):
        rc, _, err = module.run_command([p["uv"], "venv", "--python", python, p["venv"]])
        if rc != 0:
            module.fail_json(msg=f"uv venv --python {python} {p['venv']} failed (rc {rc}): {tail(err)}",
                             changed=p["reinstall"], **result)
        result["created"] = True
    rc, _, err = module.run_command([p["uv"], "pip", "install", "--python", venv_python, *p["install_args"]])
    if rc != 0:
        module.fail_json(msg=f"uv pip install into {p['venv']} failed (rc {rc}): {tail(err)}",
                         changed=result["created"] or p["reinstall"], **{**result, "stderr": err})
    finish(installed=bool(CHANGED.search(err)), stderr=err)


if __name__ == "__main__":
    main()
