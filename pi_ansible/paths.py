"""Where things live: the Ansible content shipped with pi-ansible, and the local state directory."""

from __future__ import annotations

import os
from pathlib import Path


def content_root() -> Path:
    """The directory holding ansible.cfg, playbooks/, roles/ and plugins/.

    In a source checkout it is the repository root; an installed wheel carries a copy inside the package.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "_content", here.parent):
        if (candidate / "ansible.cfg").is_file() and (candidate / "playbooks").is_dir():
            return candidate
    raise RuntimeError(f"pi-ansible's Ansible content is missing (looked in {here / '_content'} and {here.parent})")


def config_dir() -> Path:
    """Local state: $PI_CONFIG_DIR, default ~/.pi (shared with the TypeScript pi, whose files we never touch)."""
    env = os.environ.get("PI_CONFIG_DIR")
    return Path(env).expanduser() if env else Path.home() / ".pi"


def runs_dir() -> Path:
    return config_dir() / "ansible-runs"
