"""The lab's network: one bridge on the host and a network namespace per pod, joined by a veth pair.

Pods get no route anywhere but the bridge: what they need from outside (packages, the model hub)
is served by the lab's services on the bridge address.
"""

from __future__ import annotations

import subprocess

from .errors import LabError

BRIDGE = "pilab0"
NET_PREFIX = "10.77.0"
HOST_IP = f"{NET_PREFIX}.1"
FIRST_POD_HOST = 11


def pod_ip(slot: int) -> str:
    return f"{NET_PREFIX}.{FIRST_POD_HOST + slot}"


def netns_name(pod: str) -> str:
    return f"pilab-{pod}"


def veth_name(slot: int) -> str:
    return f"pilabv{slot}"  # host side; interface names are capped at 15 bytes


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise LabError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc


def link_exists(name: str) -> bool:
    return _ip("link", "show", name, check=False).returncode == 0


def ensure_bridge() -> None:
    if not link_exists(BRIDGE):
        _ip("link", "add", BRIDGE, "type", "bridge")
    if f"{HOST_IP}/24" not in _ip("-o", "addr", "show", "dev", BRIDGE).stdout:
        _ip("addr", "add", f"{HOST_IP}/24", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")


def delete_bridge() -> None:
    if link_exists(BRIDGE):
        _ip("link", "del", BRIDGE, check=False)


def netns_exists(pod: str) -> bool:
    return netns_name(pod) in _ip("netns", "list", check=False).stdout.split()


def create_pod_net(pod: str, slot: int) -> str:
    """Make the pod's namespace with eth0 on the bridge; return its address."""
    ns, veth, ip = netns_name(pod), veth_name(slot), pod_ip(slot)
    delete_pod_net(pod, slot)  # leftovers from a run that died half-way
    _ip("netns", "add", ns)
    _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    _ip("link", "set", veth, "master", BRIDGE, "up")
    _ip("-n", ns, "link", "set", "lo", "up")
    _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
    _ip("-n", ns, "link", "set", "eth0", "up")
    _ip("-n", ns, "route", "add", "default", "via", HOST_IP)
    return ip


def delete_pod_net(pod: str, slot: int) -> None:
    if netns_exists(pod):
        _ip("netns", "del", netns_name(pod), check=False)
    if link_exists(veth_name(slot)):
        _ip("link", "del", veth_name(slot), check=False)
    # A pod re-created on the same address otherwise waits ~15 s on a stale neighbour entry.
    if link_exists(BRIDGE):
        _ip("neigh", "flush", "to", pod_ip(slot), "dev", BRIDGE, check=False)


def set_link(pod: str, up: bool) -> None:
    """Cut or restore a pod's link (used by the fault tests)."""
    _ip("-n", netns_name(pod), "link", "set", "eth0", "up" if up else "down")
