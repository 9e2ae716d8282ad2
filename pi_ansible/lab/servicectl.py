"""Start, stop and report the lab's services on the bridge: the package index and the hub double.

They run as one detached process (`python -m pi_ansible.lab.services`) with a pidfile in the lab dir,
so they outlive `pi lab up` and are stopped by `pi lab down`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import net
from .errors import LabError
from .layout import LabLayout

INDEX_PORT = 8480
HUB_PORT = 8481
MODELS_DIR = Path(__file__).parent / "hub_models"


def lab_service_urls(host: str = net.HOST_IP) -> dict[str, str]:
    return {"index": f"http://{host}:{INDEX_PORT}/simple", "hub": f"http://{host}:{HUB_PORT}"}


def _pid(lab: LabLayout) -> int | None:
    try:
        pid = int((lab.root / "services.pid").read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path(f"/proc/{pid}/cmdline").exists() else b""
    return pid if b"pi_ansible.lab.services" in cmdline else None  # a recycled pid is not ours


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((net.HOST_IP, port), timeout=0.5):
        return True
    return False


def build_wheels(lab: LabLayout, log=print) -> Path:
    """The wheelhouse pods install from: real wheels from PyPI (cached) plus the engine double."""
    from .doubles.build import build_wheel
    from .wheelhouse import build_wheelhouse

    doubles = lab.root / "doubles"
    doubles.mkdir(parents=True, exist_ok=True)
    engine = build_wheel(doubles)
    log("Preparing the lab package index (real wheels, downloaded once)")
    return build_wheelhouse(lab.wheelhouse, [engine])


def ensure_services(lab: LabLayout, log=print) -> None:
    wheel_dir = build_wheels(lab, log=log)
    if _pid(lab) and _listening(INDEX_PORT) and _listening(HUB_PORT):
        return
    stop_services(lab)
    cmd = [sys.executable, "-m", "pi_ansible.lab.services", "--bind", net.HOST_IP,
           "--index-port", str(INDEX_PORT), "--hub-port", str(HUB_PORT),
           "--models-dir", str(MODELS_DIR), "--wheel-dir", str(wheel_dir)]
    token_file = lab.root / "hub-access-tokens"
    if token_file.exists():
        cmd += ["--access-token-file", str(token_file)]
    with open(lab.root / "services.log", "ab") as logf:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=str(Path(__file__).resolve().parents[2]))
    (lab.root / "services.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (lab.root / "services.log").read_text(errors="replace")[-1500:]
            raise LabError(f"the lab services exited (code {proc.returncode}):\n{tail}")
        if _listening(INDEX_PORT) and _listening(HUB_PORT):
            return
        time.sleep(0.1)
    raise LabError(f"the lab services did not listen within 20 s; see {lab.root}/services.log")


def stop_services(lab: LabLayout) -> None:
    pid = _pid(lab)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    (lab.root / "services.pid").unlink(missing_ok=True)


def services_status(lab: LabLayout) -> dict:
    urls = lab_service_urls()
    return {
        "pid": _pid(lab),
        "index": {"url": urls["index"], "listening": _listening(INDEX_PORT)},
        "hub": {"url": urls["hub"], "listening": _listening(HUB_PORT)},
    }
