"""Fixtures and helpers of the fault-injection suite: its own lab pods, a set-up pod, and ways to inject."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from pi_ansible.catalog import load_builtin_catalog
from pi_ansible.lab.servicectl import lab_service_urls

from ..conftest import PI, run_pi

SMALL = "Qwen/Qwen3-0.6B"


@pytest.fixture(scope="session")
def pods(lab):
    """Fresh pods for this suite: a (interrupts, links), b (setup interrupts, recreated per run)."""
    run_pi("lab", "up", "--profile", "faults-a=h100x2")
    status = json.loads(run_pi("lab", "status", "--json").stdout)
    yield {p["name"]: p for p in status["pods"]}
    run_pi("lab", "down", "--pod", "faults-a", check=False)


def make_env(tmp_path: Path, **catalog_env) -> dict:
    urls = lab_service_urls()
    env = {"PI_CONFIG_DIR": str(tmp_path / "pi"), "HF_TOKEN": "hf_faults_token", "PI_API_KEY": "pikey-faults-3c1",
           "PI_INDEX_URL": urls["index"], "HF_ENDPOINT": urls["hub"]}
    if catalog_env:
        override_catalog(Path(env["PI_CONFIG_DIR"]), SMALL, catalog_env)
    return env


def override_catalog(config_dir: Path, model: str, engine_env: dict) -> None:
    """A user catalog entry whose configs pass lab knobs to the engine double (load time, crashes)."""
    entry = load_builtin_catalog().get(model)
    configs = [{"gpu_count": c.gpu_count, "gpu_types": list(c.gpu_types), "args": list(c.args),
                "env": {**c.env, **engine_env}} for c in entry.configs]
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "models.json").write_text(json.dumps({"version": 1, "models": [{"id": model, "configs": configs}]}))


def ssh(pod: dict, command: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*pod["ssh"].split(), command], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"{command!r}: {proc.stderr}")
    return proc


def pod_model_files(pod: dict) -> tuple[set[str], set[str]]:
    """(models with a manifest, models with a unit) on the pod."""
    out = ssh(pod, "ls /etc/pi-ansible/models/ 2>/dev/null; ls /etc/systemd/system/ | grep '^pi-model-' || true").stdout
    manifests = {f[:-5] for f in out.split() if f.endswith(".json")}
    units = {f[len("pi-model-"):-len(".service")] for f in out.split() if f.startswith("pi-model-")}
    return manifests, units


def run_until_line_then(args: list[str], env: dict, marker: str, action, timeout: float = 240):
    """Run `pi ARGS`; when a stderr line contains MARKER, call action(proc); return (rc, stderr)."""
    proc = subprocess.Popen([PI, *args], env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    fired = threading.Event()

    def pump():
        for line in proc.stderr:
            lines.append(line)
            if marker in line and not fired.is_set():
                fired.set()
                action(proc)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
        t.join(timeout=10)
    assert fired.is_set(), f"never saw {marker!r}:\n{''.join(lines)}"
    return proc.returncode, "".join(lines)


def sigint(proc) -> None:
    proc.send_signal(signal.SIGINT)


def state_is_whole(env: dict) -> None:
    d = Path(env["PI_CONFIG_DIR"])
    state = d / "pi-ansible.json"
    if state.exists():
        json.loads(state.read_text())  # never truncated
    assert not list(d.glob("*.tmp")) and not list(d.glob(".pi-ansible.json.*")), "no temp file left behind"


@pytest.fixture(scope="session")
def set_up(pods, tmp_path_factory) -> dict:
    env = make_env(tmp_path_factory.mktemp("faults"), PI_LAB_VLLM_LOAD_SECONDS="6")
    run_pi("pods", "setup", "fa", pods["faults-a"]["ssh"], "--models-path", "/mnt/models", env=env)
    return env


def model_running(env: dict, name: str) -> dict | None:
    models = {m["name"]: m for m in json.loads(run_pi("list", "--json", env=env).stdout)["models"]}
    return models.get(name)


