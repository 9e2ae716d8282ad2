"""`pi list`: what runs on the pods, read over one SSH call per pod (in parallel), no Ansible start-up.

The pods are the source of truth: their manifests (written by `pi start` or by plain ansible-playbook)
are read on each call, and the local cache of models is repaired to match what the pods said.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .errors import PiError
from .ssh import batch_argv
from .sshargs import SshTarget
from .state import StateStore

STATUS_SCRIPT = Path(__file__).with_name("pod_status.py")
LIST_TIMEOUT_S = 30


@dataclass
class PodModels:
    pod: str
    host: str
    models: dict  # name -> {"manifest": …, "status": …}
    listening_ports: list
    error: str | None = None


def query_pod(pod: str, target: SshTarget, timeout: int = LIST_TIMEOUT_S) -> PodModels:
    """Run pod_status.py on the pod (sent on stdin to its python3) and parse the JSON it prints."""
    argv = batch_argv(target, "python3 -")
    try:
        proc = subprocess.run(argv, input=STATUS_SCRIPT.read_text(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return PodModels(pod, target.host, {}, [], f"pod {pod} did not answer within {timeout} s")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return PodModels(pod, target.host, {}, [], f"cannot read pod {pod} ({last})")
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        return PodModels(pod, target.host, {}, [], f"pod {pod} sent an unreadable status")
    return PodModels(pod, target.host, data.get("models", {}), data.get("listening_ports", []))


def list_models(pod: str | None = None, store: StateStore | None = None) -> list[PodModels]:
    store = store or StateStore()
    state = store.load()
    names = [pod] if pod else sorted(state.pods)
    if pod:
        state.pod(pod)  # unknown pod: a clear error
    if not names:
        raise PiError('no pods yet: set one up with `pi pods setup NAME "ssh root@HOST" --models-path /mnt/models`')
    targets = {n: state.target(n) for n in names}
    with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        results = list(pool.map(lambda n: query_pod(n, targets[n]), names))
    answered = [r for r in results if r.error is None]
    if answered:
        with store.transaction() as st:
            for r in answered:
                if r.pod in st.pods:
                    st.models[r.pod] = {n: m["manifest"] for n, m in r.models.items()}
                    if not st.models[r.pod]:
                        del st.models[r.pod]
    return results


def rows(results: list[PodModels]) -> list[dict]:
    """One flat row per model, as `pi list --json` prints them."""
    out = []
    for r in results:
        for name, m in sorted(r.models.items()):
            man, st = m["manifest"], m["status"]
            out.append({
                "pod": r.pod, "name": name, "model": man.get("model"), "port": man.get("port"),
                "gpus": man.get("gpus", []), "state": st.get("state"), "healthy": st.get("healthy"),
                "restarts": st.get("restarts", 0), "gpu_memory_used_mib": st.get("gpu_memory_used_mib"),
                "uptime_s": st.get("uptime_s"), "url": f"http://{r.host}:{man.get('port')}/v1",
                "served_name": man.get("served_name", name), "started_by": man.get("started_by"),
                **({"last_log": st["last_log"]} if st.get("last_log") else {}),
            })
    return out


def format_uptime(seconds) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
