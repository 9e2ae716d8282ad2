"""Role tests: one molecule scenario per role (and one for playbooks/pod_setup.yml) against the lab pods.

Each runs `molecule -c molecule/base.yml test -s <scenario>` (prepare, converge, idempotence, verify; the
pods are shared and long-lived, so no create/destroy). Scenarios that write to the same pod run one
after another; the two pods' lanes run side by side, which keeps the whole set near two minutes.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..conftest import REPO

pytestmark = pytest.mark.lab

# Lanes: the scenarios in a lane run in this order, one at a time (they write to the same pod).
LANES = {
    "h100-mig": ["model_storage", "pod_setup"],
    # gpu_facts only reads (h100-mig, mismatch, nodevices); it runs here to balance the lanes.
    "h200x8": ["gpu_facts", "pod_secrets", "vllm_env"],
}
SCENARIOS = [s for lane in LANES.values() for s in lane]
TIMEOUT = 600
ANSI = re.compile(r"\x1b\[[0-9;]*m|\x1b\]8;;[^\x1b]*\x1b\\")


@dataclass
class Run:
    scenario: str
    rc: int
    output: str
    seconds: float
    log: Path

    def step_ok(self, step: str) -> bool:
        return re.search(rf"{self.scenario} (?:>|➜) {step}\]?:? Executed: Successful", self.output) is not None

    def tail(self, n: int = 80) -> str:
        return "\n".join(self.output.splitlines()[-n:])


class MoleculeRuns:
    """Starts the wanted scenarios, lane by lane, in background threads; `wait` gives one's result."""

    def __init__(self, env: dict, logs: Path, wanted: set[str]):
        self.env, self.logs = env, logs
        self.results: dict[str, Run] = {}
        self.done = {s: threading.Event() for s in SCENARIOS}
        self.threads = []
        for lane in LANES.values():
            todo = [s for s in lane if s in wanted]
            if todo:
                t = threading.Thread(target=self._lane, args=(todo,), daemon=True)
                t.start()
                self.threads.append(t)

    def _lane(self, scenarios: list[str]) -> None:
        for s in scenarios:
            try:
                self.results[s] = self._run(s)
            finally:
                self.done[s].set()

    def _run(self, scenario: str) -> Run:
        log = self.logs / f"{scenario}.log"
        start = time.monotonic()
        molecule = [str(Path(sys.executable).with_name("molecule")), "-c", "molecule/base.yml"]
        try:
            # The pods outlive molecule's state: without a reset, a second run skips prepare
            # ("instances already prepared"). reset only removes molecule's ephemeral directory.
            out = ""
            for cmd in ([*molecule, "reset", "-s", scenario], [*molecule, "test", "-s", scenario]):
                proc = subprocess.run(cmd, cwd=REPO, env=self.env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT)
                rc, out = proc.returncode, out + proc.stdout
                if rc != 0:
                    break
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            rc, out = -1, out + f"\n(timed out after {TIMEOUT} s)"
        out = ANSI.sub("", out)
        log.write_text(out)
        return Run(scenario, rc, out, time.monotonic() - start, log)

    def wait(self, scenario: str) -> Run:
        assert self.done[scenario].wait(TIMEOUT * len(SCENARIOS)), f"{scenario} never finished"
        return self.results[scenario]


@pytest.fixture(scope="session")
def molecule_runs(lab, request, tmp_path_factory):
    wanted = {item.callspec.params["scenario"] for item in request.session.items
              if getattr(item, "originalname", None) == "test_molecule_scenario" and hasattr(item, "callspec")}
    bindir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PI_LAB_DIR": str(Path(lab.inventory).parent),  # molecule/base.yml links the lab's inventory.json
        # Canaries: pod_secrets' verify checks the pod holds exactly these, and only in the 0600 file.
        "HF_TOKEN": f"hf_molecule_{secrets.token_hex(8)}",
        "PI_API_KEY": f"pi-molecule-{secrets.token_hex(8)}",
        "NO_COLOR": "1",
        "ANSIBLE_NOCOLOR": "1",
    }
    env.pop("ANSIBLE_CONFIG", None)  # molecule/base.yml points it at the repository's ansible.cfg
    runs = MoleculeRuns(env, tmp_path_factory.mktemp("molecule"), wanted)
    yield runs
    for t in runs.threads:
        t.join(TIMEOUT)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(molecule_runs, scenario):
    run = molecule_runs.wait(scenario)
    print(f"molecule test -s {scenario}: rc {run.rc} in {run.seconds:.1f} s (log: {run.log})")
    assert run.rc == 0, f"molecule test -s {scenario} failed (rc {run.rc}, log {run.log}):\n{run.tail()}"
    assert run.step_ok("converge"), f"{scenario}: converge did not run:\n{run.tail()}"
    assert run.step_ok("idempotence"), f"{scenario}: the second converge changed something:\n{run.tail()}"
    assert run.step_ok("verify"), f"{scenario}: verify did not pass:\n{run.tail()}"


def test_every_scenario_is_tested():
    on_disk = {p.parent.name for p in (REPO / "molecule").glob("*/molecule.yml")}
    assert on_disk == set(SCENARIOS)
