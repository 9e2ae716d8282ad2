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


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Readers never see a half-written file, even while another process writes it (a temp file, then rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)  # an older temp file of the same name keeps its mode through O_CREAT
    os.replace(tmp, path)
