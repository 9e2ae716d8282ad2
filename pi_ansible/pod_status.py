"""What runs on a pod, read on the pod itself in one go: model manifests, their systemd units, /health,
GPU memory per model, listening ports.

Stdlib only, and runs on the pod's python3: the `pi_models_facts` module imports it (as module_utils),
and `pi list` sends this file over one SSH call (no Ansible start-up on the read-only path).
Decisions that need no I/O (the state of a model) are pure functions at the top.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

ETC = "/etc/pi-ansible"
MODELS_DIR = ETC + "/models"
POD_FILE = ETC + "/pod.json"
PLACEMENT_LOCK = "/run/pi-ansible/placement.lock"
LOCK_STALE_S = 120  # a lock this old was left by a run that died
UNIT_PREFIX = "pi-model-"
SHOW_PROPS = ("Id", "LoadState", "ActiveState", "SubState", "Result", "NRestarts", "MainPID",
              "ActiveEnterTimestampMonotonic", "UnitFileState")


def unit_name(model_name: str) -> str:
    return f"{UNIT_PREFIX}{model_name}.service"


def parse_show(text: str) -> dict[str, dict[str, str]]:
    """`systemctl show A B -p …` output (blocks split by blank lines) -> {unit id: {prop: value}}."""
    units: dict[str, dict[str, str]] = {}
    for block in text.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if props.get("Id"):
            units[props["Id"]] = props
    return units


def model_state(unit: dict[str, str] | None, healthy: bool) -> str:
    """starting | running | crashed | stopped, from systemd's view of the unit and /health."""
    if not unit or unit.get("LoadState") in (None, "not-found"):
        return "stopped"
    active, sub, result = unit.get("ActiveState"), unit.get("SubState"), unit.get("Result")
    if active == "active" and sub == "running":
        return "running" if healthy else "starting"
    if active == "activating" and sub == "auto-restart":
        return "crashed"  # died, systemd will try again
    if active == "activating":
        return "starting"
    if active == "failed" or result not in (None, "", "success"):
        return "crashed"
    return "stopped"


_ERROR_LINE = re.compile(r"Error|ERROR|Traceback|fatal|died|Killed|out of memory")
_SYSTEMD_WHY = re.compile(r"repeated too quickly|Main process exited|Failed with result|Killed|oom-kill")


def parse_journal_json(text: str) -> list[tuple[str, str]]:
    """`journalctl -o json` lines -> [(SYSLOG_IDENTIFIER, MESSAGE)]; a MESSAGE journald stored as bytes is decoded."""
    entries = []
    for line in text.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        msg = e.get("MESSAGE")
        if isinstance(msg, list):
            msg = bytes(b for b in msg if isinstance(b, int) and 0 <= b < 256).decode("utf-8", "replace")
        if isinstance(msg, str):
            entries.append((str(e.get("SYSLOG_IDENTIFIER") or ""), msg))
    return entries


def crash_log(entries: list[tuple[str, str]], model_name: str, lines: int = 8) -> list[str]:
    """The lines that say why a crashed model died: the first error lines of the engine's last run (the
    cause comes first; the tracebacks of the shutdown that follow it bury it), then systemd's last two words
    on the unit. Without error lines, the last lines of that run."""
    ident = UNIT_PREFIX + model_name
    starts = [i for i, (who, m) in enumerate(entries) if who != ident and m.startswith("Started ")]
    last_run = entries[starts[-1] + 1:] if starts else entries
    engine = [m for who, m in last_run if who == ident]
    system = [m for who, m in last_run if who != ident] or [m for who, m in entries if who != ident]
    # systemd's words on why the unit stopped, before its bookkeeping ("Stopped …", "Scheduled restart …")
    why = [m for m in system if _SYSTEMD_WHY.search(m)] or system
    errors = list(dict.fromkeys(m for m in engine if _ERROR_LINE.search(m)))
    keep = max(lines - 2, 1)
    return (errors[:keep] if errors else engine[-keep:]) + why[-2:]


def parse_listening_ports(tables: list[str]) -> list[int]:
    """Ports in LISTEN state (0A) from /proc/net/tcp and tcp6 contents."""
    ports = set()
    for text in tables:
        for line in text.splitlines()[1:]:
            parts = line.split()
            if len(parts) > 3 and parts[3] == "0A":
                ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


# ------------------------------------------------------------------------------------------ I/O (on the pod)


def _run(argv: list[str], timeout: float = 10) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "LC_ALL": "C", "SYSTEMD_PAGER": ""}).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1.5) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False


def _descendants(pid: int) -> set[int]:
    """pid and every process under it (vLLM's EngineCore and workers are children of the API server)."""
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
        except (OSError, IndexError, ValueError):
            continue
    seen, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo.extend(children.get(p, []))
    return seen


def _gpu_processes() -> list[dict]:
    out = _run(["nvidia-smi", "--query-compute-apps=pid,gpu_uuid,used_memory", "--format=csv,noheader,nounits"])
    procs = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit():
            procs.append({"pid": int(parts[0]), "gpu_uuid": parts[1],
                          "used_memory_mib": int(parts[2]) if parts[2].isdigit() else None})
    return procs


def _read_manifests() -> dict[str, dict]:
    manifests = {}
    for path in sorted(glob.glob(MODELS_DIR + "/*.json")):
        try:
            with open(path) as fh:
                m = json.load(fh)
            manifests[m["name"]] = m
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a half-written manifest is not a model (the role writes them atomically)
    return manifests


def _uptime_s(unit: dict[str, str]) -> float | None:
    try:
        since = int(unit.get("ActiveEnterTimestampMonotonic") or 0)
    except ValueError:
        return None
    if not since or unit.get("ActiveState") != "active":
        return None
    return round(time.clock_gettime(time.CLOCK_MONOTONIC) - since / 1e6, 1)


def collect(log_lines: int = 8) -> dict:
    """Everything `pi list` and the placement need from this pod."""
    manifests = _read_manifests()
    units = parse_show(_run(["systemctl", "show", *[unit_name(n) for n in manifests],
                             "-p", ",".join(SHOW_PROPS)])) if manifests else {}
    gpu_procs = _gpu_processes()
    models = {}
    for name, manifest in manifests.items():
        unit = units.get(unit_name(name))
        healthy = bool(unit) and unit.get("ActiveState") == "active" and _healthy(int(manifest.get("port", 0)))
        state = model_state(unit, healthy)
        main_pid = int((unit or {}).get("MainPID") or 0)
        pids = _descendants(main_pid) if main_pid else set()
        used = [p for p in gpu_procs if p["pid"] in pids]
        status = {
            "state": state,
            "healthy": healthy,
            "active_state": (unit or {}).get("ActiveState"),
            "sub_state": (unit or {}).get("SubState"),
            "restarts": int((unit or {}).get("NRestarts") or 0),
            "pid": main_pid or None,
            "uptime_s": _uptime_s(unit or {}),
            "gpu_memory_used_mib": sum(p["used_memory_mib"] or 0 for p in used),
            "enabled": (unit or {}).get("UnitFileState") == "enabled",
        }
        if state == "crashed":
            journal = _run(["journalctl", "-u", unit_name(name), "-n", "300", "-o", "json", "--no-pager"])
            status["last_log"] = crash_log(parse_journal_json(journal), name, log_lines)
        models[name] = {"manifest": manifest, "status": status}
    tables = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                tables.append(fh.read())
        except OSError:
            pass
    return {"models": models, "listening_ports": parse_listening_ports(tables), "gpu_processes": gpu_procs}


# In the failure of a start whose plan was made outside the lock and no longer holds (the CLI plans again).
STALE_PLAN = "the pod's models changed after this start was planned"


def state_digest(etc_dir: str = ETC) -> str:
    """What a placement depends on that another start or a setup changes, as one hash: pod.json and every
    model manifest (name and bytes). A plan made outside the placement lock records it; the start compares it
    under the lock."""
    h = hashlib.sha256()
    for path in [os.path.join(etc_dir, "pod.json"), *sorted(glob.glob(os.path.join(etc_dir, "models", "*.json")))]:
        try:
            with open(path, "rb") as fh:
                h.update(os.path.relpath(path, etc_dir).encode() + b"\0" + hashlib.sha256(fh.read()).digest())
        except OSError:
            continue
    return h.hexdigest()


def take_placement_lock(token: str, wait: float, lock: str = PLACEMENT_LOCK) -> float | None:
    """Seconds waited for the pod's placement lock (a directory: mkdir is atomic, exactly one start gets it),
    or None when another start held it for longer than WAIT. The owner file names TOKEN, so an interrupted
    caller can release its own lock."""
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    started = time.monotonic()
    while True:
        try:
            os.mkdir(lock)
        except FileExistsError:
            try:
                if time.time() - os.stat(lock).st_mtime > LOCK_STALE_S:
                    shutil.rmtree(lock, ignore_errors=True)
                    continue
            except FileNotFoundError:
                continue
            if time.monotonic() - started > wait:
                return None
            time.sleep(0.1)
            continue
        with open(os.path.join(lock, "owner"), "w") as fh:
            fh.write(token + "\n")
        return round(time.monotonic() - started, 2)


def _nvidia_smi_start(args: list[str]):
    try:
        return subprocess.Popen(["nvidia-smi", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "LC_ALL": "C", "LANG": "C"})
    except OSError as exc:
        return exc


def _nvidia_smi_result(proc) -> list:
    if isinstance(proc, OSError):
        return [127, "", str(proc)]
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return [124, "", "nvidia-smi did not answer within 30 s"]
    return [proc.returncode, out, err]


def placement_inputs(smi_calls: dict) -> dict:
    """What `pi start` plans from, read in one SSH call without the lock: pod.json (None when missing or
    unreadable), the models as collect() sees them, the raw output of each nvidia-smi call in SMI_CALLS
    ({key: argv}; the controller parses it), state_digest() and this python's path."""
    try:
        with open(POD_FILE) as fh:
            pod = json.load(fh)
    except (OSError, ValueError):
        pod = None
    digest = state_digest()
    # nvidia-smi is slow (50-300 ms a call): the calls run side by side, and beside collect()
    procs = {key: _nvidia_smi_start([str(a) for a in argv]) for key, argv in smi_calls.items()}
    models = collect()
    return {"pod": pod, "digest": digest, "models": models, "python": sys.executable,
            "nvidia_smi": {key: _nvidia_smi_result(proc) for key, proc in procs.items()}}


if __name__ == "__main__":
    if sys.argv[1:2] == ["placement"]:
        json.dump(placement_inputs(json.loads(sys.argv[2])), sys.stdout)
    else:
        json.dump(collect(), sys.stdout)
