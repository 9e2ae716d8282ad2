"""The GPUs the double "sees": the lab's GPU profile, CUDA_VISIBLE_DEVICES, the GPU process registry.

Contracts (pi_ansible/lab/README.md): the profile is JSON at $PI_LAB_GPU_PROFILE (default
/etc/pi-lab/gpu-profile.json); every engine holding GPU memory writes $PI_LAB_GPU_STATE/<pid>.json
(default dir /run/pi-lab/gpu) and removes it on exit; files whose pid is dead are ignored.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PROFILE = "/etc/pi-lab/gpu-profile.json"
DEFAULT_STATE_DIR = "/run/pi-lab/gpu"
PROCESS_NAME = "VLLM::EngineCore"


@dataclass(frozen=True)
class Device:
    """One device as CUDA enumerates it: a whole GPU, or a MIG instance of one."""

    index: int  # CUDA ordinal in the full enumeration
    name: str
    uuid: str  # GPU-… or MIG-…
    parent_uuid: str  # the physical GPU (what the registry and nvidia-smi use)
    total_mib: int
    reserved_mib: int
    compute_cap: str


def profile_path() -> str:
    return os.environ.get("PI_LAB_GPU_PROFILE") or DEFAULT_PROFILE


def state_dir() -> Path:
    return Path(os.environ.get("PI_LAB_GPU_STATE") or DEFAULT_STATE_DIR)


def load_profile(path: str | None = None) -> dict | None:
    try:
        with open(path or profile_path()) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def driver_works(profile: dict | None) -> bool:
    """What pynvml would say: an NVML that initialises and counts at least one GPU."""
    return bool(profile) and not profile.get("failure") and bool(profile.get("gpus"))


def cuda_devices(profile: dict) -> list[Device]:
    out: list[Device] = []
    for gpu in sorted(profile.get("gpus", []), key=lambda g: g.get("index", 0)):
        if gpu.get("mig") and gpu.get("mig_devices"):
            for mig in gpu["mig_devices"]:
                out.append(
                    Device(
                        len(out),
                        f"{gpu['name']} MIG {mig.get('profile', '')}".strip(),
                        mig["uuid"],
                        gpu["uuid"],
                        int(mig["memory_total_mib"]),
                        0,
                        str(gpu.get("compute_cap", "")),
                    )
                )
        else:
            out.append(
                Device(
                    len(out),
                    gpu["name"],
                    gpu["uuid"],
                    gpu["uuid"],
                    int(gpu["memory_total_mib"]),
                    int(gpu.get("memory_reserved_mib", 0)),
                    str(gpu.get("compute_cap", "")),
                )
            )
    return out


def visible(devices: list[Device], env_value: str | None) -> list[Device]:
    """CUDA_VISIBLE_DEVICES as the CUDA runtime applies it: indices or (prefixes of) UUIDs,
    enumeration stops at the first entry that names no device (or one already listed)."""
    if env_value is None:
        return list(devices)
    out: list[Device] = []
    for entry in env_value.split(","):
        entry = entry.strip()
        found = None
        if entry.lstrip("-").isdigit():
            i = int(entry)
            found = devices[i] if 0 <= i < len(devices) else None
        elif entry.startswith(("GPU-", "MIG-")):
            matches = [
                d
                for d in devices
                if d.uuid.startswith(entry)
                or (entry.startswith("GPU-") and d.parent_uuid.startswith(entry) and d.uuid == d.parent_uuid)
            ]
            found = matches[0] if len(matches) == 1 else None
        if found is None or found in out:
            break
        out.append(found)
    return out


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def others_used_mib(own_pid: int, directory: Path | None = None) -> dict[str, int]:
    """MiB held on each physical GPU by the other live processes in the registry."""
    used: dict[str, int] = {}
    directory = directory or state_dir()
    try:
        files = sorted(directory.glob("*.json"))
    except OSError:
        return used
    for path in files:
        try:
            data = json.loads(path.read_text())
            pid = int(data.get("pid", path.stem))
        except (OSError, ValueError, TypeError):
            continue
        if pid == own_pid or not _alive(pid):
            continue
        for g in data.get("gpus", []):
            try:
                used[g["uuid"]] = used.get(g["uuid"], 0) + int(g["used_mib"])
            except (KeyError, TypeError, ValueError):
                continue
    return used


class Registration:
    """This process's entry in the GPU process registry."""

    def __init__(self, pid: int, directory: Path | None = None):
        self.pid = pid
        self.directory = directory or state_dir()
        self.path = self.directory / f"{pid}.json"
        self.active = False

    def write(self, gpus: dict[str, int]) -> str | None:
        """Write or update the entry; returns an error text when the directory is not writable."""
        doc = {
            "pid": self.pid,
            "process_name": PROCESS_NAME,
            "gpus": [{"uuid": u, "used_mib": int(m)} for u, m in gpus.items()],
        }
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.pid}.", dir=self.directory)
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except OSError as e:
            return str(e)
        self.active = True
        return None

    def remove(self) -> None:
        if not self.active:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            return
        self.active = False
