"""An Ansible inventory of the pods the CLI knows (its local state): `pi inventory` and the pi_state plugin.

Pure: a state document in, an inventory out, in the shape of `ansible-inventory --list`. Each pod's SSH
options become its connection variables through SshTarget.ansible_vars(), as for the CLI's own runs, and
the setup `pi pods setup` recorded becomes the pod setup roles' variables, so that playbooks/site.yml on
these hosts keeps the pods as the CLI set them up (host_vars/ files override them).
"""

from __future__ import annotations

from pi_ansible.errors import PiError
from pi_ansible.sshargs import parse_ssh, validate_name

GROUP = "pi_pods"
STATE_VERSION = 1


def pod_hostvars(name: str, pod: dict) -> dict:
    """One pod's host variables: connection, the setup the CLI recorded, and pi_pod (what it knows)."""
    try:
        validate_name(name, "pod")
        target = parse_ssh(pod["ssh"])
    except (PiError, KeyError, TypeError) as exc:
        raise PiError(f"pod {name!r} in the local state cannot be an inventory host: {exc}") from None
    out: dict = {**target.ansible_vars(), "ansible_python_interpreter": "auto_silent"}
    if pod.get("engine_variant"):
        out["vllm_env_variant"] = pod["engine_variant"]
    if pod.get("models_path"):
        out["model_storage_models_path"] = pod["models_path"]
    out["pi_pod"] = {"name": name, "ssh": target.display(),
                     **{k: pod.get(k) for k in ("gpus", "driver_version", "cuda_version", "engine_variant",
                                                "vllm_version", "models_path", "set_up_at", "origin")}}
    return out


def state_inventory(doc: dict | None, group: str = GROUP) -> dict:
    """The `ansible-inventory --list` shape for a state document (pi-ansible.json; None: no pods yet)."""
    doc = doc or {}
    if not isinstance(doc, dict):
        raise PiError("the local state is not a JSON object")
    version = doc.get("version", STATE_VERSION)
    if isinstance(version, int) and version > STATE_VERSION:
        raise PiError(f"the local state has version {version}, written by a newer pi-ansible "
                      f"(this one reads version {STATE_VERSION}); upgrade pi-ansible")
    pods = doc.get("pods") or {}
    if not isinstance(pods, dict):
        raise PiError("the local state's pods are not an object")
    hostvars = {name: pod_hostvars(name, pod) for name, pod in sorted(pods.items())}
    active = doc.get("active")
    for name, hv in hostvars.items():
        hv["pi_pod"]["active"] = name == active
    listing = {"_meta": {"hostvars": hostvars}, "all": {"children": ["ungrouped"]}, "ungrouped": {"hosts": []}}
    if hostvars:
        listing["all"]["children"].insert(0, group)
        listing[group] = {"hosts": sorted(hostvars)}
    return listing


def as_yaml_inventory(listing: dict, group: str = GROUP) -> dict:
    """The same inventory as a YAML inventory file (`pi inventory > inventory/pods.yml`)."""
    hosts = {h: listing["_meta"]["hostvars"][h] for h in listing.get(group, {}).get("hosts", [])}
    return {"all": {"children": {group: {"hosts": hosts}}}} if hosts else {"all": {"hosts": {}}}
