"""Build hook: the wheel carries pi-ansible's Ansible content as `pi_ansible/_content/`.

`ansible.cfg`, `playbooks/`, `roles/` and `plugins/` live at the repository root, where a checkout uses
them in place (`pi_ansible.paths.content_root()` falls back to the root). At wheel-build time they are
copied into the build tree under `pi_ansible/_content/`, with symlinks resolved (the
`plugins/module_utils/*.py` files are symlinks into `pi_ansible/`), so an installed `pi` finds them
inside its own package. Nothing under `pi_ansible/_content/` is kept in git. Editable installs skip the
copy: they run from the checkout. Everything else about the project is in pyproject.toml.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CONTENT = ("ansible.cfg", "playbooks", "roles", "plugins")
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".retry")


def content_files(root: Path = ROOT) -> list[tuple[Path, str]]:
    """(source file, path under _content/) for every shipped file; a missing or dangling item is an error."""
    out: list[tuple[Path, str]] = []
    for name in CONTENT:
        top = root / name
        if top.is_file():
            out.append((top, name))
            continue
        if not top.is_dir():
            raise SystemExit(f"pi-ansible build: {top} is missing; the wheel would have no Ansible content")
        for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            for fn in sorted(filenames):
                if fn.endswith(SKIP_SUFFIXES):
                    continue
                src = Path(dirpath) / fn
                if not src.exists():
                    raise SystemExit(f"pi-ansible build: {src} is a dangling symlink")
                out.append((src, src.relative_to(root).as_posix()))
    return out


class BuildPyWithContent(build_py):
    def _content_dir(self) -> Path:
        return Path(self.build_lib) / "pi_ansible" / "_content"

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dest = self._content_dir()
        shutil.rmtree(dest, ignore_errors=True)
        for src, rel in content_files():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, target)  # follows symlinks: a copy of the file, never a link

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        return outputs + [str(self._content_dir() / rel) for _, rel in content_files()]


setup(cmdclass={"build_py": BuildPyWithContent})
