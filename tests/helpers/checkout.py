"""A copy of the checkout as a clean clone would have it (tracked and new files, nothing git ignores)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def clean_copy(dest: Path) -> Path | None:
    """Copy the checkout into dest; None when this is not a git checkout."""
    ls = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "-co", "--exclude-standard"],
                        capture_output=True, text=True)
    if ls.returncode != 0:
        return None
    for rel in filter(None, ls.stdout.split("\0")):
        path = REPO / rel
        if not os.path.lexists(path):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            os.symlink(os.readlink(path), dest / rel)
        else:
            shutil.copy2(path, dest / rel)
    return dest
