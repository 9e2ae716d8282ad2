"""The fault-injection suite: interrupts, dropped links, crashes and reboots, concurrency, hostile input, secrets.

Each test injects a fault on lab pods and checks the promise: nothing half-written, local state and pod
agree, re-running converges, errors are one line with the fix, secrets never leak. Pods used here are
made for this suite (`faults-*`) and removed at its end. See README.md beside this file for the table.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from ..conftest import PI, run_pi
from .conftest import (
    SMALL,
    make_env,
    model_running,
    override_catalog,
    pod_model_files,
    run_until_line_then,
    sigint,
    ssh,
    state_is_whole,
)

pytestmark = pytest.mark.lab


# -------------------------------------------------------------------------------------------- interrupts

@pytest.mark.parametrize("marker", ["Gather GPU facts with nvidia-smi", "Install uv from its wheel"])
def test_sigint_during_pod_setup_leaves_state_whole_and_a_rerun_converges(lab, tmp_path, marker):
    run_pi("lab", "up", "--profile", "faults-b=h100x2")
    try:
        pod = next(p for p in json.loads(run_pi("lab", "status", "--json").stdout)["pods"] if p["name"] == "faults-b")
        env = make_env(tmp_path)
        rc, err = run_until_line_then(["pods", "setup", "fb", pod["ssh"], "--models-path", "/mnt/models"], env,
                                      marker, sigint)
        assert rc == 130 and "interrupted" in err and "Traceback" not in err
        state_is_whole(env)
        assert json.loads(run_pi("pods", "--json", env=env).stdout)["pods"] == [], "no pod saved before success"
        secrets = ssh(pod, "stat -c '%a %U' /etc/pi-ansible/secrets.env 2>/dev/null || echo absent").stdout.split()
        assert secrets in (["absent"], ["600", "root"])
        out = json.loads(run_pi("pods", "setup", "fb", pod["ssh"], "--models-path", "/mnt/models", "--json",
                                env=env).stdout)
        assert out["vllm_version"] == "0.33.0+lab"
        again = json.loads(run_pi("pods", "setup", "fb", pod["ssh"], "--models-path", "/mnt/models", "--json",
                                  env=env).stdout)
        assert again["changed"] == 0
    finally:
        run_pi("lab", "down", "--pod", "faults-b", check=False)


# After the plan (pi start plans before its run; the start task then takes the placement lock), as the start
# task begins (lock, files, download), and while the engine starts (its log is followed: the health wait).
@pytest.mark.parametrize("marker", ["Plan under the pod's placement lock", "Start the model with the plan pi sent",
                                    "Starting to load model"])
def test_sigint_during_start_then_the_same_command_converges(pods, set_up, marker):
    pod = pods["faults-a"]
    rc, err = run_until_line_then(["start", SMALL, "--name", "tiny"], set_up, marker, sigint)
    assert rc == 130 and "run the same command again" in err and "Traceback" not in err
    state_is_whole(set_up)
    manifests, units = pod_model_files(pod)
    assert manifests == units, f"manifest and unit exist together or not at all: {manifests} vs {units}"
    run_pi("list", env=set_up)  # reads the pod and repairs the local cache
    out = json.loads(run_pi("start", SMALL, "--name", "tiny", "--json", env=set_up).stdout)
    assert out["name"] == "tiny" and model_running(set_up, "tiny")["state"] == "running"
    run_pi("stop", "tiny", env=set_up)
    assert pod_model_files(pod) == (set(), set())


# ------------------------------------------------------------------------------------------- links

@contextlib.contextmanager
def slow_engine(env: dict, seconds: int = 8):
    """The engine double takes SECONDS to load weights for this test: the start task is surely mid-flight
    when the fault lands (a start otherwise finishes within a second of the engine's first log line)."""
    catalog = Path(env["PI_CONFIG_DIR"]) / "models.json"
    before = catalog.read_bytes() if catalog.exists() else None
    override_catalog(Path(env["PI_CONFIG_DIR"]), SMALL, {"PI_LAB_VLLM_LOAD_SECONDS": str(seconds)})
    try:
        yield
    finally:
        if before is None:
            catalog.unlink(missing_ok=True)
        else:
            catalog.write_bytes(before)


def test_a_dropped_link_mid_run_is_a_clear_error_and_a_rerun_converges(pods, set_up):
    def cut(_proc):
        subprocess.run(["ip", "-n", "pilab-faults-a", "link", "set", "eth0", "down"], check=True)

    with slow_engine(set_up):
        try:
            rc, err = run_until_line_then(["start", SMALL, "--name", "linked"], set_up, "Starting to load model", cut,
                                          timeout=180)
        finally:
            subprocess.run(["ip", "-n", "pilab-faults-a", "link", "set", "eth0", "up"], check=True)
        assert rc == 1 and "Traceback" not in err
        assert "lost the SSH connection to fa" in err
        time.sleep(2)
        out = json.loads(run_pi("start", SMALL, "--name", "linked", "--json", env=set_up).stdout)
        assert model_running(set_up, out["name"])["state"] == "running"
        run_pi("stop", "linked", env=set_up)


def test_a_cut_link_under_a_live_master_connection_is_a_warning_in_bounded_time(pods, set_up):
    """`pi list` reuses the pod's master connection; when the link is cut under it, the master notices within
    3 keepalives 3 s apart (9-12 s), ssh then tries a connection of its own (ConnectTimeout 10 s), and `pi list`
    says so inside its 30 s limit."""
    run_pi("list", env=set_up)  # the master is up
    subprocess.run(["ip", "-n", "pilab-faults-a", "link", "set", "eth0", "down"], check=True)
    try:
        began = time.monotonic()
        proc = run_pi("list", "--json", env=set_up, check=False, timeout=60)
        took = time.monotonic() - began
    finally:
        subprocess.run(["ip", "-n", "pilab-faults-a", "link", "set", "eth0", "up"], check=True)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    errors = json.loads(proc.stdout)["errors"]
    assert len(errors) == 1 and errors[0].startswith("cannot read pod fa"), errors
    assert took < 26, f"pi list took {took:.1f} s on a cut link"
    time.sleep(1)
    assert json.loads(run_pi("list", "--json", env=set_up).stdout)["errors"] == []  # a new connection


def test_a_killed_ssh_session_mid_run_is_a_clear_error(pods, set_up):
    pod = pods["faults-a"]

    def kill_sessions(_proc):
        ssh(pod, "pkill -f 'sshd: root@notty' || true", check=False)

    with slow_engine(set_up):
        rc, err = run_until_line_then(["start", SMALL, "--name", "killed"], set_up, "Starting to load model",
                                      kill_sessions, timeout=180)
    if rc == 0:  # the session was between tasks: the next task opened a new one and the run finished
        assert model_running(set_up, "killed")["state"] == "running"
    else:
        assert rc == 1 and "fa" in err and "Traceback" not in err
    out = json.loads(run_pi("start", SMALL, "--name", "killed", "--json", env=set_up).stdout)
    assert out["name"] == "killed"
    run_pi("stop", "killed", env=set_up)


# ---------------------------------------------------------------------------------- crashes and reboots

def test_an_engine_that_crashes_on_every_start_ends_crashed_with_its_log(pods, tmp_path):
    env = make_env(tmp_path, PI_LAB_VLLM_CRASH_AFTER_SECONDS="3")
    run_pi("pods", "setup", "fa", pods["faults-a"]["ssh"], "--models-path", "/mnt/models", env=env)
    run_pi("stop", env=env)
    run_pi("start", SMALL, "--name", "crashy", "--no-verify", env=env)
    try:
        deadline = time.monotonic() + 180
        settled = None
        while time.monotonic() < deadline and settled is None:
            m = model_running(env, "crashy")
            failed = ssh(pods["faults-a"], "systemctl is-failed pi-model-crashy", check=False).returncode == 0
            if m and m["state"] == "crashed" and failed:
                time.sleep(8)
                again = model_running(env, "crashy")
                if again["restarts"] == m["restarts"]:
                    settled = again  # the restart cap stopped the loop
            time.sleep(2)
        assert settled, "the engine should end crashed, its restarts capped"
        assert 4 <= settled["restarts"] <= 6, settled
        log = settled["last_log"]
        assert any("EngineCore encountered a fatal error" in line for line in log), log  # the engine's own cause
        assert any("repeated too quickly" in line for line in log), log  # and why systemd gave up
        shown = run_pi("list", env=env).stdout
        assert "crashed" in shown and "EngineCore encountered a fatal error" in shown, shown
    finally:
        run_pi("stop", env=env, check=False)


# ------------------------------------------------------------------------------------------ concurrency

def test_two_starts_at_once_get_distinct_gpus_and_ports(pods, set_up):
    run_pi("stop", env=set_up)  # both GPUs free
    procs = [subprocess.Popen([PI, "start", SMALL, "--name", n, "--json"], env={**os.environ, **set_up},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in ("left", "right")]
    try:
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-2000:]
            outs.append(json.loads(out))
        assert outs[0]["port"] != outs[1]["port"]
        assert set(outs[0]["gpus"]).isdisjoint(outs[1]["gpus"])
        cache = json.loads((Path(set_up["PI_CONFIG_DIR"]) / "pi-ansible.json").read_text())["models"]["fa"]
        assert {"left", "right"} <= set(cache), "neither run lost the other's state change"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        run_pi("stop", env=set_up, check=False)
