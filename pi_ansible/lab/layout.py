"""Where the lab keeps its files: one directory (PI_LAB_DIR, default ~/.cache/pi-ansible/lab).

The rootfs and wheelhouse caches survive `pi lab down`; everything else is made by `up` and removed by `down`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LabLayout:
    root: Path

    @classmethod
    def default(cls) -> LabLayout:
        env = os.environ.get("PI_LAB_DIR")
        return cls(Path(env) if env else Path.home() / ".cache" / "pi-ansible" / "lab")

    @property
    def cache(self) -> Path:
        return self.root

    @property
    def state(self) -> Path:
        return self.root / "lab.json"

    @property
    def key(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.root / "ssh_config"

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.json"

    @property
    def wheelhouse(self) -> Path:
        return self.root / "wheelhouse"

    def pod_dir(self, pod: str) -> Path:
        return self.root / "pods" / pod
