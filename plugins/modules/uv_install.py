#!/usr/bin/python
"""Ansible module: install the uv binary from its wheel on a package index (no script piped into a shell)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: uv_install
short_description: Install uv from its wheel on a PEP 503 package index
description:
  - Reads the index page of the C(uv) project, picks the manylinux wheel for this machine (the requested
    version, or the newest), checks its sha256 from the index, and extracts the C(uv) and C(uvx) binaries.
  - Idempotent: nothing changes when the installed uv already has the wanted version.
options:
  index_url:
    description: The simple index root, e.g. https://pypi.org/simple.
    type: str
    default: https://pypi.org/simple
  version:
    description: The uv version to install; empty keeps any installed uv and otherwise takes the newest.
    type: str
    default: ""
  dest:
    description: Directory for the binaries.
    type: path
    default: /usr/local/bin
author: pi-ansible
"""

EXAMPLES = r"""
- name: Install uv
  uv_install:
    version: "0.13.9"
"""

RETURN = r"""
version:
  description: The uv version installed after the task.
  returned: always
  type: str
"""

import hashlib
import os
import platform
import re
import tempfile
import zipfile
from html.parser import HTMLParser
from urllib.parse import urljoin

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url

WHEEL = re.compile(r"^uv-(?P<version>[0-9][^-]*)-py3-none-(?P<plat>[^/]+)\.whl$")


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)


def _version_key(v):
    return tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.+]", v))


def pick_wheel(hrefs, version, machine):
    """(url, version, sha256) of the manylinux wheel for this machine, or None."""
    best = None
    for href in hrefs:
        url, _, frag = href.partition("#")
        m = WHEEL.match(url.rsplit("/", 1)[-1])
        if not m or "manylinux" not in m.group("plat") or not m.group("plat").endswith(machine):
            continue
        if version and m.group("version") != version:
            continue
        sha = frag.split("=", 1)[1] if frag.startswith("sha256=") else None
        if best is None or _version_key(m.group("version")) > _version_key(best[1]):
            best = (url, m.group("version"), sha)
    return best


def installed_version(module, dest):
    binary = os.path.join(dest, "uv")
    if not os.access(binary, os.X_OK):
        return None
    rc, out, _ = module.run_command([binary, "--version"])
    return out.split()[1] if rc == 0 and len(out.split()) > 1 else None


def main():
    module = AnsibleModule(
        argument_spec={
            "index_url": {"type": "str", "default": "https://pypi.org/simple"},
            "version": {"type": "str", "default": ""},
            "dest": {"type": "path", "default": "/usr/local/bin"},
        },
        supports_check_mode=True,
    )
    p = module.params
    current = installed_version(module, p["dest"])
    if current and (not p["version"] or current == p["version"]):
        module.exit_json(changed=False, version=current)
    page_url = p["index_url"].rstrip("/") + "/uv/"
    try:
        page = open_url(page_url, timeout=30).read().decode("utf-8", "replace")
    except Exception as exc:
        module.fail_json(msg=f"cannot read the uv index page {page_url}: {exc}. Check the pod's network or set the index URL.")
    links = _Links()
    links.feed(page)
    machine = platform.machine()
    picked = pick_wheel([urljoin(page_url, h) for h in links.hrefs], p["version"], machine)
    if not picked:
        wanted = p["version"] or "any version"
        module.fail_json(msg=f"no uv wheel for {machine} ({wanted}) on {page_url}")
    url, version, sha = picked
    if module.check_mode:
        module.exit_json(changed=True, version=version)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = os.path.join(tmp, "uv.whl")
        digest = hashlib.sha256()
        try:
            with open_url(url, timeout=300) as resp, open(wheel, "wb") as fh:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    digest.update(chunk)
                    fh.write(chunk)
        except Exception as exc:
            module.fail_json(msg=f"cannot download {url}: {exc}")
        if sha and digest.hexdigest() != sha:
            module.fail_json(msg=f"sha256 of {url} is {digest.hexdigest()}, the index says {sha}: refusing to install it")
        with zipfile.ZipFile(wheel) as zf:
            for name in ("uv", "uvx"):
                member = next((n for n in zf.namelist() if n.endswith(f".data/scripts/{name}")), None)
                if member is None:
                    continue
                target = os.path.join(p["dest"], name)
                part = target + ".part"
                with zf.open(member) as src, open(part, "wb") as dst:
                    dst.write(src.read())
                os.chmod(part, 0o755)
                os.replace(part, target)
    module.exit_json(changed=True, version=installed_version(module, p["dest"]) or version)


if __name__ == "__main__":
    main()
