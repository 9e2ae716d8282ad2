"""Direct SSH to a pod (no Ansible): the reachability probe, `pi list`, log followers, `pi ssh`, `pi shell`.

Every call is an argv list built by SshTarget.argv (never a local shell string). Batch calls (no terminal)
go over the pod's master connection (sshmux), which the Ansible runs share.
"""

from __future__ import annotations

import subprocess

from .errors import PiError
from .sshargs import SshTarget

PROBE_TIMEOUT_S = 10

# What ssh prints (stderr, exit 255) -> what the user should know. First match wins.
_PROBE_CAUSES = (
    ("Permission denied", "the pod refused the SSH key ({auth}); check the user and the -i key, "
                          "or add the key's .pub to the pod's ~/.ssh/authorized_keys"),
    ("Host key verification failed", "the pod's host key does not match your known_hosts; "
                                     "if the pod was re-created, remove its old key with `ssh-keygen -R {host}`"),
    ("Connection refused", "nothing listens for SSH on {host} port {port}; check the port (-p) and that sshd runs"),
    ("Connection timed out", "SSH to {host} timed out after {timeout} s; check the address, the port and any firewall"),
    ("timed out", "SSH to {host} timed out after {timeout} s; check the address, the port and any firewall"),
    ("No route to host", "no route to {host}; check the address and that the pod is running"),
    ("Could not resolve hostname", "cannot resolve the host name {host}; check the SSH string"),
    ("Network is unreachable", "the network to {host} is unreachable; check the address"),
)


def batch_argv(target: SshTarget, command: str, connect_timeout: int = PROBE_TIMEOUT_S) -> list[str]:
    """ssh argv for a command without a terminal, on the pod's master connection when one can be used."""
    from .paths import config_dir
    from .sshmux import control_dir, ssh_options

    argv = target.argv(command)
    # BatchMode: a missing key must fail, not stop at a password prompt nobody will answer.
    opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
            *ssh_options(target, control_dir(config_dir()))]
    return [argv[0], *opts, *argv[1:]]


def probe_args(target: SshTarget, timeout: int = PROBE_TIMEOUT_S) -> list[str]:
    return batch_argv(target, "true", timeout)


def explain_probe_failure(target: SshTarget, stderr: str, timeout: int = PROBE_TIMEOUT_S) -> str:
    auth = f"key {target.identity_file}" if target.identity_file else "your default keys"
    for needle, text in _PROBE_CAUSES:
        if needle.lower() in stderr.lower():
            cause = text.format(auth=auth, host=target.host, port=target.port or 22, timeout=timeout)
            return f"cannot reach {target.destination} over SSH: {cause}"
    last = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
    return f"cannot reach {target.destination} over SSH ({last}); try `{' '.join(target.argv())}` by hand"


def probe(target: SshTarget, timeout: int = PROBE_TIMEOUT_S) -> None:
    """Raise PiError saying why, if the pod does not answer SSH."""
    try:
        proc = subprocess.run(probe_args(target, timeout), capture_output=True, text=True, timeout=timeout + 10,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise PiError(explain_probe_failure(target, "timed out", timeout)) from None
    if proc.returncode != 0:
        raise PiError(explain_probe_failure(target, proc.stderr, timeout))


def run_streaming(target: SshTarget, command: str) -> int:
    """Run a command on the pod with the terminal's stdio; return its exit code."""
    return subprocess.run(target.argv(command)).returncode
