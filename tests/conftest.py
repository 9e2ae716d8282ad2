"""Shared fixtures: the local lab (test pods) and helpers to reach them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PI = str(Path(sys.executable).with_name("pi"))
LAB_PROFILES = ["h100x2", "rtx4090", "h200x8", "h100-mig", "mismatch", "nodevices"]


def run_pi(*args: str, env: dict | None = None, check: bool = True, timeout: int = 600, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([PI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=kw.pop("cwd", REPO), **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"pi {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@dataclass
class Lab:
    status: dict

    @property
    def ssh_config(self) -> str:
        return self.status["ssh_config"]

    @property
    def inventory(self) -> str:
        return self.status["inventory"]

    def pod(self, name: str) -> dict:
        return next(p for p in self.status["pods"] if p["name"] == name)

    def ssh(self, pod: str, command: str, check: bool = True, timeout: int = 120,
            input: str | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(["ssh", "-F", self.ssh_config, f"lab-{pod}", command], capture_output=True,
                              text=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"ssh {pod} {command!r} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc


def _need_root() -> None:
    if os.geteuid() != 0 or shutil.which("systemd-nspawn") is None:
        msg = "the lab needs root and systemd-nspawn (run scripts/test.sh as root)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def lab_up() -> Lab:
    args = ["lab", "up", "--json"]
    for p in LAB_PROFILES:
        args += ["--profile", p]
    return Lab(json.loads(run_pi(*args, timeout=1200).stdout))


@pytest.fixture(scope="session")
def lab() -> Lab:
    """The lab pods, up for the whole session (one per GPU profile) and down at its end."""
    _need_root()
    up = lab_up()
    yield up
    if not os.environ.get("PI_TEST_KEEP_LAB"):  # developers keep it up between runs
        run_pi("lab", "down", check=False)
