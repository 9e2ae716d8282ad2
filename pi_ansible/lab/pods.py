"""`pi lab up/down/status`: test pods on this machine.

Each pod is a systemd-nspawn container (real systemd as PID 1, real OpenSSH) in its own network
namespace on the lab bridge, with its own files (an overlay over the cached rootfs) and a GPU
profile that drives its `nvidia-smi` double. See ../../shared/notes/test-pods.md for why each
step is done this way on a host whose PID 1 is not systemd.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from ..paths import write_atomic
from . import net
from .errors import LabError
from .gpu_profiles import DEFAULT_ORDER, PROFILES
from .layout import LabLayout
from .rootfs import ensure_rootfs

DOUBLES = Path(__file__).parent / "doubles"
SSH_WAIT_S = 60


@dataclass
class Pod:
    name: str
    profile: str
    slot: int
    ip: str
    pid: int  # the systemd-nspawn process

    def ssh_string(self, lab: LabLayout) -> str:
        return f"ssh -i {lab.key} -o UserKnownHostsFile={lab.known_hosts} root@{self.ip}"


# ---------------------------------------------------------------------------------------------- state


def _read_state(lab: LabLayout) -> dict[str, Pod]:
    if not lab.state.exists():
        return {}
    try:
        data = json.loads(lab.state.read_text())
        return {p["name"]: Pod(**p) for p in data["pods"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise LabError(f"{lab.state} is not a lab state file ({exc}). Run `pi lab down` to clean up.") from exc


def _write_state(lab: LabLayout, pods: dict[str, Pod]) -> None:
    write_atomic(lab.state, json.dumps({"pods": [asdict(p) for p in sorted(pods.values(), key=lambda p: p.slot)]},
                                        indent=2))


LOCK_WAIT_S = 600


@contextlib.contextmanager
def _locked(lab: LabLayout, wait_s: float = LOCK_WAIT_S):
    """One `pi lab` change at a time: a second one waits (saying so) rather than failing, up to wait_s."""
    lab.root.mkdir(parents=True, exist_ok=True)
    with open(lab.root / ".lock", "w") as fh:
        deadline, told = time.monotonic() + wait_s, False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LabError(f"another `pi lab` command has held the lab for {wait_s:.0f} s; wait for it "
                                   "to finish (or find it with `pgrep -af 'pi lab'`)") from None
                if not told:
                    print("Waiting for another `pi lab` command to finish...", file=sys.stderr, flush=True)
                    told = True
                time.sleep(0.5)
        yield


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError(
            "pi lab needs root: it creates network namespaces, overlay mounts and containers. "
            "Run it as root (for example `sudo pi lab up`)."
        )


# ---------------------------------------------------------------------------------------------- probes


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not a running container.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _port_open(ip: str, port: int = 22, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def _ssh_ok(lab: LabLayout, pod: Pod, timeout: int = 5) -> bool:
    proc = subprocess.run(
        ["ssh", "-F", str(lab.ssh_config), "-o", f"ConnectTimeout={timeout}", "-o", "BatchMode=yes",
         "-o", "ControlMaster=no", "-o", "ControlPath=none", f"lab-{pod.name}", "true"],
        capture_output=True, text=True, timeout=timeout + 5,
    )
    return proc.returncode == 0


def _init_pid(nspawn_pid: int) -> int | None:
    """The container's PID 1 (systemd), seen from the host: the child of systemd-nspawn."""
    try:
        children = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


# ---------------------------------------------------------------------------------------------- up


def _ensure_key(lab: LabLayout) -> None:
    if not lab.key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pi-ansible-lab", "-f", str(lab.key)],
                       check=True)


def _host_key(pod_dir: Path) -> tuple[Path, str]:
    key = pod_dir / "ssh_host_ed25519_key"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pi-lab-pod", "-f", str(key)], check=True)
    return key, (key.with_suffix(".pub")).read_text().split()[1]


def _mount_overlay(lab: LabLayout, rootfs: Path, pod: str) -> Path:
    d = lab.pod_dir(pod)
    for sub in ("upper", "work", "merged"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    merged = d / "merged"
    if not os.path.ismount(merged):
        subprocess.run(
            ["mount", "-t", "overlay", f"pilab-{pod}", "-o",
             f"lowerdir={rootfs},upperdir={d / 'upper'},workdir={d / 'work'}", str(merged)],
            check=True, capture_output=True,
        )
    return merged


def _personalise(lab: LabLayout, merged: Path, pod: str, profile: str) -> str:
    """Write what makes this pod itself: hostname, keys, GPU profile and the GPU double."""
    (merged / "etc/hostname").write_text(pod + "\n")
    # systemd would derive the same id for every pod on this VM; a pod is a machine of its own.
    if not (merged / "etc/machine-id").read_text().strip():
        (merged / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    (merged / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {pod}\n")
    ssh_dir = merged / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    auth = ssh_dir / "authorized_keys"
    auth.write_text(lab.key.with_suffix(".pub").read_text())
    auth.chmod(0o600)
    key, pub = _host_key(lab.pod_dir(pod))
    shutil.copyfile(key, merged / "etc/ssh/ssh_host_ed25519_key")
    (merged / "etc/ssh/ssh_host_ed25519_key").chmod(0o600)
    shutil.copyfile(key.with_suffix(".pub"), merged / "etc/ssh/ssh_host_ed25519_key.pub")
    lab_etc = merged / "etc/pi-lab"
    lab_etc.mkdir(exist_ok=True)
    (lab_etc / "gpu-profile.json").write_text(json.dumps(PROFILES[profile], indent=2) + "\n")
    (lab_etc / "README").write_text(
        "This is a pi-ansible LAB pod. /usr/bin/nvidia-smi is a GPU double driven by gpu-profile.json;\n"
        "the vllm installed from the lab index is an engine double. None of this exists on a real pod.\n"
    )
    smi = merged / "usr/bin/nvidia-smi"
    shutil.copyfile(DOUBLES / "nvidia_smi.py", smi)
    smi.chmod(0o755)
    return pub


def _launch(lab: LabLayout, pod: str, merged: Path) -> int:
    """Boot the container; return the systemd-nspawn PID.

    nspawn wants a host systemd for its scope; without one it boots with --register=no
    --keep-unit once its launching shell sits in a cgroup of its own (test-pods.md, step 4).
    """
    cg = f"pilab-{pod}"
    script = (
        f"for h in systemd unified; do mkdir -p /sys/fs/cgroup/$h/{cg} && echo $$ > /sys/fs/cgroup/$h/{cg}/cgroup.procs; done; "
        f"exec systemd-nspawn -q -b -D {merged} --register=no --keep-unit --machine={pod} "
        f"--network-namespace-path=/run/netns/{net.netns_name(pod)} --resolv-conf=off --timezone=off "
        f"--link-journal=no --console=read-only"
    )
    with open(lab.pod_dir(pod) / "console.log", "ab") as log:
        proc = subprocess.Popen(["sh", "-c", script], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return proc.pid


def _write_access_files(lab: LabLayout, pods: dict[str, Pod], host_keys: dict[str, str]) -> None:
    known = {}
    if lab.known_hosts.exists():
        for line in lab.known_hosts.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                known[parts[0]] = line
    for name, pub in host_keys.items():
        known[pods[name].ip] = f"{pods[name].ip} ssh-ed25519 {pub}"
    write_atomic(lab.known_hosts, "".join(known[p.ip] + "\n" for p in pods.values() if p.ip in known))

    blocks = []
    for p in sorted(pods.values(), key=lambda p: p.slot):
        blocks.append(
            f"Host lab-{p.name}\n"
            f"  HostName {p.ip}\n"
            "  User root\n"
            f"  IdentityFile {lab.key}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {lab.known_hosts}\n"
            "  StrictHostKeyChecking yes\n"
            "  ControlMaster auto\n"
            f"  ControlPath {lab.root}/cm-%C\n"
            "  ControlPersist 60s\n"
        )
    write_atomic(lab.ssh_config, "# pi-ansible lab pods (written by `pi lab up`)\n" + "\n".join(blocks), 0o600)

    from .servicectl import lab_service_urls  # only needed once pods exist

    urls = lab_service_urls()
    hosts = {p.name: {"ansible_host": p.ip, "pi_lab_profile": p.profile}
             for p in sorted(pods.values(), key=lambda p: p.slot)}
    inventory = {
        "all": {"children": {"lab": {
            "hosts": hosts,
            "vars": {
                "ansible_user": "root",
                "ansible_python_interpreter": "/usr/bin/python3",
                "ansible_ssh_private_key_file": str(lab.key),
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={lab.known_hosts} -o StrictHostKeyChecking=yes",
                "pi_lab_hf_endpoint": urls["hub"],
                "pi_lab_index_url": urls["index"],
            },
        }}}
    }
    write_atomic(lab.inventory, json.dumps(inventory, indent=2) + "\n")


def _wait_ssh(lab: LabLayout, pods: list[Pod]) -> None:
    deadline = time.monotonic() + SSH_WAIT_S
    pending = list(pods)
    while pending and time.monotonic() < deadline:
        for p in list(pending):
            if not _alive(p.pid):
                tail = (lab.pod_dir(p.name) / "console.log").read_text(errors="replace")[-1500:]
                raise LabError(f"pod {p.name} stopped while booting; its console said:\n{tail}")
            if _port_open(p.ip) and _ssh_ok(lab, p):
                pending.remove(p)
        if pending:
            time.sleep(0.2)
    if pending:
        raise LabError(f"pods did not answer SSH within {SSH_WAIT_S} s: {', '.join(p.name for p in pending)}; "
                       f"see {lab.root}/pods/<pod>/console.log")


_POD_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,22}[a-z0-9])?$")


def pick_profiles(count: int | None, profiles: list[str] | None) -> list[tuple[str, str]]:
    """(pod name, GPU profile) pairs: `PROFILE` (a pod named after it) or `NAME=PROFILE` (more pods of one
    profile), else the first COUNT profiles of the default order."""
    if profiles:
        pairs = []
        for spec in profiles:
            name, _, profile = spec.partition("=") if "=" in spec else (spec, "", spec)
            if profile not in PROFILES:
                raise LabError(f"unknown GPU profile {profile!r}; known: {', '.join(PROFILES)}")
            if not _POD_NAME.match(name):
                raise LabError(f"lab pod name {name!r} must be lowercase letters, digits and '-' (at most 24)")
            pairs.append((name, profile))
        return list(dict(pairs).items())
    count = 3 if count is None else count
    if not 1 <= count <= len(DEFAULT_ORDER):
        raise LabError(f"--pods must be between 1 and {len(DEFAULT_ORDER)} (one pod per GPU profile)")
    return [(p, p) for p in DEFAULT_ORDER[:count]]


def up(lab: LabLayout, profiles: list[tuple[str, str]], log=print) -> list[Pod]:
    """Bring up the (name, profile) pods; running pods are kept, so running it twice changes nothing."""
    require_root()
    with _locked(lab):
        lab.root.mkdir(parents=True, exist_ok=True)
        rootfs = ensure_rootfs(lab.cache, log=log)
        _ensure_key(lab)
        from .servicectl import ensure_services

        net.ensure_bridge()
        ensure_services(lab, log=log)
        pods = _read_state(lab)
        # Pods whose container died (a host reboot, a kill) are cleaned and made again.
        for p in list(pods.values()):
            if not _alive(p.pid):
                log(f"pod {p.name}: container gone, recreating")
                _teardown_pod(lab, p)
                del pods[p.name]
        used_slots = {p.slot for p in pods.values()}
        new: list[Pod] = []
        host_keys: dict[str, str] = {}
        for name, profile in profiles:
            if name in pods:
                if pods[name].profile != profile:
                    raise LabError(f"lab pod {name} runs profile {pods[name].profile}, not {profile}; "
                                   "`pi lab down` first or pick another name")
                continue
            slot = min(set(range(254 - net.FIRST_POD_HOST)) - used_slots)
            used_slots.add(slot)
            merged = _mount_overlay(lab, rootfs, name)
            host_keys[name] = _personalise(lab, merged, name, profile)
            ip = net.create_pod_net(name, slot)
            pid = _launch(lab, name, merged)
            pods[name] = Pod(name=name, profile=profile, slot=slot, ip=ip, pid=pid)
            new.append(pods[name])
            _write_state(lab, pods)
        _write_access_files(lab, pods, host_keys)
        if new:
            log(f"Booting {len(new)} pod(s): {', '.join(p.name for p in new)}")
            _wait_ssh(lab, new)
        return [pods[n] for n, _ in profiles]


def restart(lab: LabLayout, name: str, log=print) -> Pod:
    """Power a pod's container off and boot it again with the same files and address (a pod reboot)."""
    require_root()
    with _locked(lab):
        pods = _read_state(lab)
        if name not in pods:
            raise LabError(f"no lab pod named {name!r}; running: {', '.join(pods) or 'none'}")
        pod = pods[name]
        _stop_container(pod)
        _kill_cgroup(f"pilab-{name}")
        log(f"Rebooting pod {name}")
        pod.pid = _launch(lab, name, lab.pod_dir(name) / "merged")
        _write_state(lab, pods)
        _wait_ssh(lab, [pod])
        return pod


# ---------------------------------------------------------------------------------------------- down


def _rmdir_tree(path: Path) -> None:
    if not path.is_dir():
        return
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


def _kill_cgroup(cg: str) -> None:
    """Kill whatever is left in the pod's cgroups (a container that ignored SIGTERM)."""
    for h in ("systemd", "unified"):
        base = Path(f"/sys/fs/cgroup/{h}/{cg}")
        if not base.is_dir():
            continue
        for procs in base.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)


def _stop_container(pod: Pod) -> None:
    if _alive(pod.pid):
        os.kill(pod.pid, signal.SIGTERM)  # nspawn powers the container off cleanly
        deadline = time.monotonic() + 15
        while _alive(pod.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pod.pid):
            os.kill(pod.pid, signal.SIGKILL)


def _teardown_pod(lab: LabLayout, pod: Pod) -> None:
    _stop_container(pod)
    cg = f"pilab-{pod.name}"
    _kill_cgroup(cg)
    time.sleep(0.1)
    merged = lab.pod_dir(pod.name) / "merged"
    if os.path.ismount(merged):
        # nspawn may leave mounts under the tree (proc, sys, /run): unmount recursively.
        subprocess.run(["umount", "-R", str(merged)], capture_output=True)
        if os.path.ismount(merged):
            subprocess.run(["umount", "-l", str(merged)], capture_output=True)
    net.delete_pod_net(pod.name, pod.slot)
    for h in ("systemd", "unified"):
        _rmdir_tree(Path(f"/sys/fs/cgroup/{h}/{cg}"))
    shutil.rmtree(lab.pod_dir(pod.name), ignore_errors=True)


def down(lab: LabLayout, log=print, only: list[str] | None = None) -> list[str]:
    """Remove every pod (and the lab's services and bridge), or just the pods named in ONLY."""
    require_root()
    with _locked(lab):
        pods = _read_state(lab)
        if only:
            unknown = sorted(set(only) - set(pods))
            if unknown:
                raise LabError(f"no lab pod named {', '.join(unknown)}; running: {', '.join(pods) or 'none'}")
            for name in only:
                log(f"Stopping pod {name}")
                _teardown_pod(lab, pods.pop(name))
            _write_state(lab, pods)
            _write_access_files(lab, pods, {})
            return list(only)
        for p in pods.values():
            log(f"Stopping pod {p.name}")
            _teardown_pod(lab, p)
        from .servicectl import stop_services

        stop_services(lab)
        net.delete_bridge()
        for f in (lab.state, lab.ssh_config, lab.inventory, lab.known_hosts):
            f.unlink(missing_ok=True)
        for cm in lab.root.glob("cm-*"):
            cm.unlink(missing_ok=True)
        shutil.rmtree(lab.root / "pods", ignore_errors=True)
        return list(pods)


# ---------------------------------------------------------------------------------------------- status


def status(lab: LabLayout) -> dict:
    pods = _read_state(lab)
    from .servicectl import services_status

    rows = []
    for p in sorted(pods.values(), key=lambda p: p.slot):
        running = _alive(p.pid)
        rows.append({
            "name": p.name,
            "profile": p.profile,
            "ip": p.ip,
            "ssh": p.ssh_string(lab),
            "alias": f"lab-{p.name}",
            "container": "running" if running else "stopped",
            "ssh_port_open": running and _port_open(p.ip),
            "init_pid": _init_pid(p.pid) if running else None,
        })
    return {
        "lab_dir": str(lab.root),
        "ssh_config": str(lab.ssh_config) if lab.ssh_config.exists() else None,
        "inventory": str(lab.inventory) if lab.inventory.exists() else None,
        "services": services_status(lab),
        "pods": rows,
    }
