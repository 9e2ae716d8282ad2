"""The lab pods' root filesystem: a Debian bookworm tree built once with debootstrap and cached.

Every pod mounts it read-only as the lower layer of its own overlay, so building it is the only slow
step of `pi lab up` and happens once per machine (the cache survives `pi lab down`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from .errors import LabError

# Bump when the package list or the post-processing changes: an older cache is rebuilt.
ROOTFS_VERSION = "3"
MIRROR = os.environ.get("PI_LAB_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "iproute2", "sudo",
    "procps", "ca-certificates", "less",
]


def rootfs_ready(rootfs: Path) -> bool:
    stamp = rootfs / ".pi-lab-rootfs"
    return stamp.is_file() and stamp.read_text().strip() == ROOTFS_VERSION


def ensure_rootfs(cache_dir: Path, log=print) -> Path:
    """Return the cached rootfs, building it first if it is missing or stale."""
    rootfs = cache_dir / "rootfs"
    if rootfs_ready(rootfs):
        return rootfs
    if shutil.which("debootstrap") is None:
        raise LabError("debootstrap is not installed. Install it with: apt-get install -y debootstrap systemd-container openssh-server")
    tmp = cache_dir / "rootfs.tmp"
    # A build cut short (Ctrl+C, a dropped mirror) leaves only rootfs.tmp; start it again.
    shutil.rmtree(tmp, ignore_errors=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    log(f"Building the lab rootfs (Debian {SUITE}, once; about a minute) in {rootfs}")
    started = time.monotonic()
    cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(tmp), MIRROR]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        shutil.rmtree(tmp, ignore_errors=True)
        raise LabError(f"debootstrap failed (exit {proc.returncode}); check that {MIRROR} is reachable:\n{tail}")
    _post_process(tmp)
    (tmp / ".pi-lab-rootfs").write_text(ROOTFS_VERSION + "\n")
    if rootfs.exists():
        shutil.rmtree(rootfs)
    tmp.rename(rootfs)
    log(f"Rootfs ready in {time.monotonic() - started:.0f} s")
    return rootfs


def _post_process(root: Path) -> None:
    """Make the tree boot fast and cleanly under systemd-nspawn with no network."""
    (root / "etc/machine-id").write_text("")  # a fresh transient id per pod at boot
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("")  # no DNS in the lab: lookups must fail fast, not time out
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    # Host keys are made per pod at `up`; the ones debootstrap generated would be shared by all pods.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/ssh/sshd_config.d").mkdir(exist_ok=True)
    (root / "etc/ssh/sshd_config.d/pi-lab.conf").write_text(
        "# pi-ansible lab: key-only root login, one host key made per pod, no DNS lookups\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "HostKey /etc/ssh/ssh_host_ed25519_key\n"
        "UseDNS no\n"
        "MaxStartups 100:30:200\n"
        "MaxSessions 100\n"
    )
    # Units that only slow a container's boot or reach for the network.
    wants = root / "etc/systemd/system"
    for unit in ("apt-daily.timer", "apt-daily-upgrade.timer", "systemd-timesyncd.service",
                 "e2scrub_all.timer", "fstrim.timer", "getty@tty1.service", "console-getty.service"):
        link = wants / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    apt_lists = root / "var/lib/apt/lists"
    for f in apt_lists.glob("*_Packages"):
        f.unlink()
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
