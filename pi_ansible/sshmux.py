"""One SSH master connection per pod, shared by pi's direct SSH calls and the Ansible runs it starts.

A new SSH connection costs ~0.3 s (key exchange, authentication); a session over a live master ~0.03 s. So every
batch SSH call of pi (`pi list`, log followers, the reachability probe) and every playbook run through pi uses
`ControlMaster=auto` with one ControlPath: the first call opens the master, later ones (Ansible's included) reuse it
for 60 s after the last session ends. A master whose pod went away fails as fast as ssh notices: at once when the
pod's sshd closed the connection, after 3 unanswered keepalives 3 s apart (9-12 s) when the link is cut; a call
waiting on it then tries a connection of its own (ConnectTimeout), so a cut link costs `pi list` about 20 s.

The sockets live in $ANSIBLE_SSH_CONTROL_PATH_DIR when set, else in a runtime directory of this user named for the
config directory: $XDG_RUNTIME_DIR (or /tmp)/pi-ssh-UID/<12 hex of $PI_CONFIG_DIR's path>, mode 0700. Not in
the config directory itself: sockets there would break copying or backing it up, and its path can be too long for
ssh (a ControlPath plus the master's temporary suffix must fit a socket address: 108 bytes).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path

from .sshargs import SshTarget

PERSIST = "60s"
# sun_path holds 108 bytes; ssh binds "<path>.<16 random chars>" before renaming: 108 - 1 - 17 - 41 ("/" + %C) = 49.
MAX_DIR_LEN = 48
SHARED = f"pi-ssh-{os.getuid()}"  # this user's, under $XDG_RUNTIME_DIR or /tmp
# What the ControlPath looks like to Ansible: its control_path setting, %-formatted with the directory.
ANSIBLE_CONTROL_PATH = "%(directory)s/%%C"


def _usable(path: Path) -> bool:
    """A directory of ours that nobody else can enter (created 0700 when missing)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def control_dir(config_dir: Path, env: dict | None = None) -> Path | None:
    """Where the master sockets go, or None when no safe, short enough directory is at hand (then no master)."""
    env = os.environ if env is None else env
    given = env.get("ANSIBLE_SSH_CONTROL_PATH_DIR")
    if given:
        path = Path(given).expanduser()
    else:
        runtime = env.get("XDG_RUNTIME_DIR") or ""
        name = hashlib.sha1(str(config_dir.absolute()).encode()).hexdigest()[:12]
        base = Path(runtime) if runtime.startswith("/") and Path(runtime).is_dir() else Path(tempfile.gettempdir())
        if len(str(base / SHARED / name)) > MAX_DIR_LEN:
            base = Path(tempfile.gettempdir())
        if not _usable(base / SHARED):  # another user's directory, or a link: no master, not a foreign socket
            return None
        path = base / SHARED / name
    if len(str(path)) > MAX_DIR_LEN or "%" in str(path) or not path.is_absolute() or not _usable(path):
        return None
    return path


def ssh_options(target: SshTarget, cdir: Path | None) -> list[str]:
    """`-o` options that put a batch ssh call on the pod's master; none when the SSH string brings its own."""
    if cdir is None or any(key.lower().startswith("control") for key, _ in target.options):
        return []
    return ["-o", "ControlMaster=auto", "-o", f"ControlPath={cdir}/%C", "-o", f"ControlPersist={PERSIST}",
            "-o", "ServerAliveInterval=3", "-o", "ServerAliveCountMax=3"]


def ansible_env(cdir: Path | None, env: dict | None = None) -> dict[str, str]:
    """Settings that make Ansible's ssh connection use the same sockets (a user's own control path is kept)."""
    env = os.environ if env is None else env
    if cdir is None or env.get("ANSIBLE_SSH_CONTROL_PATH"):
        return {}
    return {"ANSIBLE_SSH_CONTROL_PATH_DIR": str(cdir), "ANSIBLE_SSH_CONTROL_PATH": ANSIBLE_CONTROL_PATH}
