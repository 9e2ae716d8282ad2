#!/usr/bin/env python3
"""Side-by-side benchmark: our `pi` against the TypeScript `pi` 0.70.6 (npm) and the raw-SSH floor, on lab pods.

    .venv/bin/python bench/run.py [--rounds N] [--quick] [--only SECTION,...] [--write-readme]

Sections (in this order): setup, local, start, list, fleet, planning. Every loop is bounded by the rounds,
every command has a timeout, and no round starts after --budget seconds (default 900). Ours and theirs are
interleaved within each round (who goes first alternates). Results are printed as a table, kept in bench/.cache/last-run.json, and with --write-readme put in
bench/README.md. Nothing here is asserted in tests. Both tools get their own PI_CONFIG_DIR under /tmp (removed at
the end); the SSH strings pin the bench pods' host keys (see Lab).

Pods (created by the harness with `pi lab up --profile bench-a=h100x2 … bench-d=h100x2`, idempotent):
  bench-a  ours (setup, start/stop, list), first of the fleet
  bench-b  theirs (prepared once with bench/tspi_lab_setup.sh: /root/venv with the engine double and hf)
  bench-c, bench-d  the rest of our fleet (1, 2 and 3 pods at once)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
CACHE = BENCH / ".cache"
PI = str(REPO / ".venv" / "bin" / "pi")
PY = str(REPO / ".venv" / "bin" / "python")
ANSIBLE_PLAYBOOK = str(REPO / ".venv" / "bin" / "ansible-playbook")
TS_VERSION = "0.70.6"
TS_DIR = CACHE / "tspi"
TS_PKG = TS_DIR / "node_modules" / "@mariozechner" / "pi"
# Our Python's bytecode cache, kept here (PYTHONPYCACHEPREFIX) so nothing is written into the repo or the venv. An
# installed pi has its .pyc files (pip compiles them); without them every run re-compiles click, jsonschema, … .
PYC = CACHE / "pycache"

PROFILES = ["bench-a=h100x2", "bench-b=h100x2", "bench-c=h100x2", "bench-d=h100x2"]
OURS, THEIRS, FLEET = "bench-a", "bench-b", ["bench-a", "bench-c", "bench-d"]
# A model in both catalogs, with the same engine flags in both (tool parser qwen3_coder, 1 GPU). Four of them
# fit on the pod's 2 × H100 at 45 % each with a 16k context.
MODEL = "Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8"
START_FLAGS = ["--memory", "45%", "--context", "16k"]
MODELS_PATH = "/mnt/models"
HF_TOKEN, PI_API_KEY = "hf_bench_test_token", "pikey-bench-test"
SECTIONS = ["local", "setup", "start", "list", "fleet", "planning"]
COLD_LIST = "pi list, 1 model, cold (no master connection open)"
NOPYC_PODS = "pi pods (list pods, local) § (no bytecode cache, as this machine's env)"

R: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
NOTES: list[str] = []
LAB = None  # the Lab, once up: out_of_time() checks its pods before every round
# The whole run's wall-clock budget (main sets it from --budget): a round that would start after it is skipped.
DEADLINE = float("inf")


class BenchError(RuntimeError):
    pass


class LabGone(BenchError):
    """A bench pod was removed or recreated under us (someone's whole-lab `pi lab down`): the run stops."""


def out_of_time(what: str) -> bool:
    """True (and a note) when the run's budget is spent: the caller skips the rest of its rounds. Raises LabGone
    when a bench pod is no longer the one this run started with (checked before every round)."""
    if LAB is not None:
        LAB.check()
    if time.monotonic() < DEADLINE:
        return False
    NOTES.append(f"the run's time budget was spent: {what} skipped")
    log(f"out of time: {what} skipped")
    return True


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(argv, *, env=None, timeout=120, check=True, input=None, cwd=REPO) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, env=env, timeout=timeout, input=input, cwd=cwd, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        raise BenchError(f"timed out after {timeout} s: {shlex.join(map(str, argv))[:300]}") from None
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise BenchError(f"exit {proc.returncode}: {shlex.join(map(str, argv))[:300]}\n{tail}")
    return proc


def timed(argv, **kw) -> float:
    t0 = time.perf_counter()
    run(argv, **kw)
    return time.perf_counter() - t0


def timed_parallel(argvs, *, env=None, timeout=600) -> float:
    """Wall time of several commands started together; all must succeed."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(a, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for a in argvs]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=max(1, timeout - (time.perf_counter() - t0)))[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise BenchError(f"parallel run timed out after {timeout} s") from None
    wall = time.perf_counter() - t0
    for p, out, a in zip(procs, outs, argvs, strict=True):
        if p.returncode != 0:
            raise BenchError(f"exit {p.returncode}: {shlex.join(a)[:200]}\n" + "\n".join(out.splitlines()[-15:]))
    return wall


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children and the children they waited for."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def machine_busy() -> float:
    """CPU seconds the whole machine spent working (user, nice, system, irq, softirq; not idle, iowait or steal):
    the controller and the lab pods together, which share these cores."""
    with open("/proc/stat") as fh:
        fields = fh.readline().split()[1:]
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (0, 1, 2, 5, 6)) / ticks


# ------------------------------------------------------------------------------------------------ lab


class Lab:
    """The bench pods. Other work shares the lab: a whole-lab `pi lab down` + `pi lab up` elsewhere can give a
    bench pod's address to another pod. So every SSH string here pins the bench pods' own host keys (a known_hosts
    file of this run, StrictHostKeyChecking=yes), Ansible gets a private ControlPath directory (no reuse of
    another run's master connection to the same address), and check() stops the run when a pod changed."""

    NAMES = (OURS, THEIRS, *FLEET)

    def __init__(self, env: dict, workdir: Path):
        self.env = env
        log("lab: pi lab up " + " ".join(f"--profile {p}" for p in PROFILES) + " (idempotent; other pods kept)")
        run([PI, "lab", "up", *[x for p in PROFILES for x in ("--profile", p)]], env=env, timeout=600)
        self.pods = self._status()
        for name in self.NAMES:
            if name not in self.pods or not self.pods[name]["ssh_port_open"]:
                raise BenchError(f"lab pod {name} is not up")
        lab_known = Path(re.search(r"UserKnownHostsFile=(\S+)", self.pods[OURS]["ssh"])[1])
        keys = {ln.split()[0]: ln for ln in lab_known.read_text().splitlines() if len(ln.split()) == 3}
        self.known_hosts = workdir / "known_hosts"
        self.known_hosts.write_text("".join(keys[self.pods[n]["ip"]] + "\n" for n in dict.fromkeys(self.NAMES)))
        self.ident = {n: (self.pods[n]["ip"], self.pods[n]["init_pid"]) for n in self.NAMES}
        exports = run([PI, "lab", "env"], env=env).stdout.splitlines()
        lab_env = dict(ln.removeprefix("export ").split("=", 1) for ln in exports if ln.startswith("export "))
        self.index_url, self.hf_endpoint = lab_env["PI_INDEX_URL"], lab_env["HF_ENDPOINT"]

    def _status(self) -> dict:
        return {p["name"]: p for p in json.loads(run([PI, "lab", "status", "--json"], env=self.env).stdout)["pods"]}

    def check(self) -> None:
        now = self._status()
        gone = [n for n in self.ident if n not in now or (now[n]["ip"], now[n]["init_pid"]) != self.ident[n]]
        if gone:
            raise LabGone(f"lab pod(s) {', '.join(gone)} were removed or recreated by other work during the run "
                          "(a whole-lab `pi lab down`?); stopping")

    def ssh(self, pod: str) -> str:
        key = re.search(r"-i (\S+)", self.pods[pod]["ssh"])[1]
        return (f"ssh -i {key} -o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes "
                f"root@{self.pods[pod]['ip']}")

    def ssh_argv(self, pod: str, command: str) -> list[str]:
        return [*self.ssh(pod).split(), command]

    def on(self, pod: str, command: str, **kw) -> subprocess.CompletedProcess:
        argv = self.ssh(pod).split()
        return run([argv[0], "-o", "BatchMode=yes", *argv[1:], command], **kw)


# ------------------------------------------------------------------------------------------ the tools


class Ours:
    def __init__(self, lab: Lab, cfg: Path):
        self.lab, self.cfg = lab, cfg
        self.env = {**os.environ, "PI_CONFIG_DIR": str(cfg), "HF_TOKEN": HF_TOKEN, "PI_API_KEY": PI_API_KEY,
                    "PI_INDEX_URL": lab.index_url, "HF_ENDPOINT": lab.hf_endpoint, "PYTHONPYCACHEPREFIX": str(PYC)}
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(cfg / "cp")
        # As this machine runs it: PYTHONDONTWRITEBYTECODE=1 and no .pyc anywhere (for one extra row only)
        self.env_nopyc = {**self.env, "PYTHONDONTWRITEBYTECODE": "1"}
        self.env_nopyc.pop("PYTHONPYCACHEPREFIX")
        self._catalog()
        self._compile()

    def _compile(self) -> None:
        """Untimed, once: the .pyc files an installed pi would have (the rest are written on first use)."""
        stamp = PYC / ".compiled"
        if stamp.exists():
            return
        log(f"ours: compiling the venv's and pi_ansible's bytecode into {PYC} (once)")
        site = next((REPO / ".venv" / "lib").glob("python3*/site-packages"))
        run([PY, "-m", "compileall", "-q", "-j", "0", "-x", r"ansible_collections|ansible_test|/pip/|_pytest|hypothesis",
             str(site), str(REPO / "pi_ansible")], env=self.env, timeout=600, check=False)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.touch()

    def _catalog(self) -> None:
        """A user catalog entry overriding MODEL's configs with the engine double's zero load time."""
        doc = json.loads((REPO / "pi_ansible" / "catalog" / "models.json").read_text())
        entry = next(e for e in doc["models"] if e["id"] == MODEL)
        configs = [{**c, "env": {**(c.get("env") or {}), "PI_LAB_VLLM_LOAD_SECONDS": "0"}} for c in entry["configs"]]
        (self.cfg / "models.json").write_text(json.dumps({"version": 1, "models": [{"id": MODEL, "configs": configs}]}))

    def pi(self, *args) -> list[str]:
        return [PI, *args]

    def setup_argv(self, pod: str) -> list[str]:
        return self.pi("pods", "setup", pod, self.lab.ssh(pod), "--models-path", MODELS_PATH)

    def start_argv(self, pod: str, name: str) -> list[str]:
        return self.pi("start", MODEL, "--name", name, "--pod", pod, *START_FLAGS)

    def stop_argv(self, pod: str, name: str | None = None) -> list[str]:
        return self.pi("stop", *([name] if name else []), "--pod", pod)

    def time(self, argv, timeout=300) -> float:
        return timed(argv, env=self.env, timeout=timeout)

    def close_masters(self) -> None:
        """Close the SSH master connections our pi keeps (untimed): the next call opens its own."""
        cp = self.cfg / "cp"
        for sock in (cp.iterdir() if cp.is_dir() else ()):
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "unused"], capture_output=True,
                           timeout=10, check=False)

    def wipe(self, pods: list[str]) -> None:
        """Make pods fresh again for a first-run setup: remove everything our setup and starts put there."""
        script = (
            "for u in $(systemctl list-unit-files --no-legend 'pi-model-*' | awk '{print $1}'); do "
            "systemctl disable --now \"$u\" >/dev/null 2>&1; done; "
            "rm -f /etc/systemd/system/pi-model-*.service; systemctl daemon-reload; systemctl reset-failed; "
            "rm -rf /etc/pi-ansible /opt/pi-ansible /usr/local/bin/uv /usr/local/bin/uvx /etc/profile.d/pi-ansible.sh "
            f"{MODELS_PATH} /root/.cache/uv /run/pi-ansible /tmp/pi-ansible-config /root/.ansible; true")
        timed_parallel([[*self.lab.ssh(p).split(), script] for p in pods], timeout=120)

    def inventory(self, pods: list[str], path: Path) -> Path:
        sys.path.insert(0, str(REPO))
        from pi_ansible.sshargs import parse_ssh
        hosts = {p: {**parse_ssh(self.lab.ssh(p)).ansible_vars(), "ansible_python_interpreter": "auto_silent"}
                 for p in pods}
        path.write_text(json.dumps({"all": {"hosts": hosts}}))
        return path

    def playbook_argv(self, playbook: str, inventory: Path, extravars: dict, secrets: dict, tmp: Path) -> list[str]:
        vars_file, secret_file = tmp / f"{playbook}.vars.json", tmp / f"{playbook}.secrets.json"
        vars_file.write_text(json.dumps(extravars))
        secret_file.write_text(json.dumps(secrets))
        secret_file.chmod(0o600)
        return [ANSIBLE_PLAYBOOK, "-i", str(inventory), str(REPO / "playbooks" / playbook),
                "-e", f"@{vars_file}", "-e", f"@{secret_file}"]

    @property
    def playbook_env(self) -> dict:
        return {**self.env, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}


class Theirs:
    """The TypeScript pi 0.70.6 from npm, run unchanged against a pod prepared with the layout it expects."""

    def __init__(self, lab: Lab, cfg: Path):
        self.lab, self.cfg = lab, cfg
        self.env = {k: v for k, v in os.environ.items() if k not in ("HF_ENDPOINT", "PI_INDEX_URL")}
        self.env.update({"PI_CONFIG_DIR": str(cfg), "HF_TOKEN": HF_TOKEN, "PI_API_KEY": PI_API_KEY})
        self.bin = self._install()

    @staticmethod
    def _install() -> str:
        pkg = TS_PKG / "package.json"
        if not pkg.exists() or json.loads(pkg.read_text()).get("version") != TS_VERSION:
            log(f"theirs: npm install @mariozechner/pi@{TS_VERSION} into {TS_DIR}")
            TS_DIR.mkdir(parents=True, exist_ok=True)
            run(["npm", "install", "--prefix", str(TS_DIR), "--no-audit", "--no-fund", "--loglevel=error",
                 f"@mariozechner/pi@{TS_VERSION}"], timeout=600)
        for name in ("pi-pods", "pi"):
            b = TS_DIR / "node_modules" / ".bin" / name
            if b.exists():
                return str(b)
        raise BenchError("the TypeScript pi has no pi-pods/pi bin")

    def pi(self, *args) -> list[str]:
        return [self.bin, *args]

    def time(self, argv, timeout=300) -> float:
        return timed(argv, env=self.env, timeout=timeout)

    def config(self) -> dict:
        path = self.cfg / "pods.json"
        return json.loads(path.read_text()) if path.exists() else {"pods": {}}

    def register(self, pod: str, gpu_lines: str) -> None:
        """What their `pi pods setup` saves after a successful setup (models kept)."""
        cfg = self.config()
        gpus = []
        for line in gpu_lines.strip().splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 3 and parts[0].isdigit():
                gpus.append({"id": int(parts[0]), "name": parts[1], "memory": parts[2]})
        old = cfg["pods"].get(pod, {})
        cfg["pods"][pod] = {"ssh": self.lab.ssh(pod), "gpus": gpus, "models": old.get("models", {}),
                            "modelsPath": MODELS_PATH, "vllmVersion": "release"}
        cfg.setdefault("active", pod)
        (self.cfg / "pods.json").write_text(json.dumps(cfg, indent=2))

    def setup_lab(self, pod: str) -> float:
        """Their setup flow (SSH test, copy the script, run it, GPU query, save) with the lab stand-in script."""
        t0 = time.perf_counter()
        run(self.lab.ssh_argv(pod, "echo 'SSH OK'"))
        run(self.lab.ssh_argv(pod, "cat > /tmp/pod_setup.sh"), input=(BENCH / "tspi_lab_setup.sh").read_text())
        run(self.lab.ssh_argv(pod, shlex.join(["bash", "/tmp/pod_setup.sh", MODELS_PATH, self.lab.index_url,
                                               self.lab.hf_endpoint, HF_TOKEN, PI_API_KEY])), timeout=600)
        gpus = run(self.lab.ssh_argv(pod, "nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader")).stdout
        self.register(pod, gpus)
        return time.perf_counter() - t0

    def prepare_pod(self, pod: str) -> None:
        """Once: the curl shim (lab pods have no curl), a pristine ~/.bashrc kept aside to make the pod fresh again."""
        shim = (BENCH / "lab_curl_shim.sh").read_text()
        self.lab.on(pod, "test -x /usr/bin/curl || { cat > /usr/local/bin/curl && chmod 755 /usr/local/bin/curl; }; "
                         "test -e /root/.bashrc.bench-orig || cp /root/.bashrc /root/.bashrc.bench-orig", input=shim)

    def wipe(self, pod: str) -> None:
        self.kill_engines(pod)
        self.lab.on(pod, "rm -rf /root/venv /root/.local/bin/uv /root/.local/bin/uvx /root/.cache/uv /root/.cache/vllm "
                         f"/root/.cache/huggingface /root/.vllm_logs {MODELS_PATH} /tmp/model_run_* /tmp/model_wrapper_*; "
                         "cp /root/.bashrc.bench-orig /root/.bashrc")

    def kill_engines(self, pod: str) -> int:
        """Their stop signals the wrapper; whatever is left (by PID) is killed here, untimed. Returns how many."""
        out = self.lab.on(pod, "pgrep -f '[m]odel_wrapper_|[v]llm serve|[m]odel_run_' || true").stdout.split()
        if out:
            self.lab.on(pod, f"kill -9 {' '.join(out)} 2>/dev/null; true")
        return len(out)

    def wait_gone(self, pod: str, port: int, limit_s: float = 20) -> bool:
        """Untimed: wait until the engine on PORT has exited (their stop returns at once). False: killed it."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            out = self.lab.on(pod, f"pgrep -f '[-]-port {port}( |$)' || true").stdout.split()
            if not out:
                return True
            time.sleep(0.3)
        pids = self.lab.on(pod, f"pgrep -f '[-]-port {port}( |$)' || true").stdout.split()
        if pids:
            self.lab.on(pod, f"kill -9 {' '.join(pids)}; true")
        return False

    def port_of(self, pod: str, name: str) -> int:
        return self.config()["pods"][pod]["models"][name]["port"]

    def ensure_no_models(self, pod: str) -> None:
        cfg = self.config()
        if cfg["pods"].get(pod, {}).get("models"):
            run(self.pi("stop"), env=self.env)
        self.kill_engines(pod)


# ------------------------------------------------------------------------------------------- sections


def floor(lab: Lab, pod: str) -> float:
    return timed(lab.ssh_argv(pod, "true"))


def section_local(ours: Ours, theirs: Theirs, rounds: int) -> None:
    log(f"local: --help and listing pods, {rounds} round(s)")
    for i in range(rounds * 2):
        if out_of_time(f"local rounds {i + 1}..{rounds * 2}"):
            break
        pairs = [("ours", ours, ours.pi), ("theirs", theirs, theirs.pi)]
        for tool, obj, pi in (pairs if i % 2 == 0 else pairs[::-1]):
            R["cli --help"][tool].append(obj.time(pi("--help"), timeout=60))
            R["pi pods (list pods, local)"][tool].append(obj.time(pi("pods"), timeout=60))
        R[NOPYC_PODS]["ours"].append(timed(ours.pi("pods"), env=ours.env_nopyc, timeout=60))
    R[NOPYC_PODS]["theirs"] = R["pi pods (list pods, local)"]["theirs"]
    NOTES.append("§ this machine sets PYTHONDONTWRITEBYTECODE=1 and the venv holds no .pyc files, so every `pi` run "
                 "would compile click, jsonschema, … from source; all our rows run with a bytecode cache "
                 "(PYTHONPYCACHEPREFIX=bench/.cache/pycache, compiled once, untimed), as an installed pi has. "
                 "The § row is `pi pods` without it.")


def section_setup(lab: Lab, ours: Ours, theirs: Theirs, rounds: int) -> None:
    log("setup: their real setup first (expected to fail in the lab), then timed rounds")
    proc = run(theirs.pi("pods", "setup", THEIRS, lab.ssh(THEIRS), "--models-path", MODELS_PATH), env=theirs.env,
               check=False, timeout=120)
    scp = next((ln for ln in (proc.stdout + proc.stderr).splitlines() if "cp:" in ln or "scp" in ln.lower()), "")
    NOTES.append(f"their `pi pods setup` (unchanged) exits {proc.returncode} before running anything: {scp.strip()} "
                 "(its scp takes the first non-dash token of the ssh string, here the -i key path, as the host)")
    script = (TS_PKG / "dist" / "scripts" / "pod_setup.sh").read_text()
    lab.on(THEIRS, "cat > /tmp/pod_setup_ts.sh", input=script)
    t0 = time.perf_counter()
    proc = lab.on(THEIRS, "bash /tmp/pod_setup_ts.sh --models-path /mnt/models --hf-token x --vllm-api-key y "
                          "--vllm release", check=False, timeout=300)
    err = next((ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("E:")), "no E: line")
    NOTES.append(f"their pod_setup.sh run unchanged on the pod fails after {time.perf_counter() - t0:.1f} s "
                 f"(exit {proc.returncode}): `apt install` without internet ({err.strip()}); it would next pipe "
                 "https://astral.sh/uv/install.sh into sh and fetch NVIDIA's cuda-keyring. † Timed as theirs instead: "
                 "bench/tspi_lab_setup.sh, their steps that can run offline (SSH test, copy, run, GPU query, save), "
                 "on every run a full re-install as theirs does (new venv, uv and vLLM re-installed from the lab "
                 "index, which holds only the small engine double, so this is far below what their real setup "
                 "costs: apt, CUDA toolkit and a multi-GB vLLM download); the ssh floor is the fair yardstick here.")
    theirs.prepare_pod(THEIRS)
    for i in range(rounds):
        if out_of_time(f"setup rounds {i + 1}..{rounds}"):
            break
        log(f"setup round {i + 1}/{rounds}")
        ours.wipe([OURS])
        theirs.wipe(THEIRS)
        steps = [("ours", lambda: ours.time(ours.setup_argv(OURS), timeout=600)),
                 ("theirs", lambda: theirs.setup_lab(THEIRS))]
        for tool, fn in (steps if i % 2 == 0 else steps[::-1]):
            R["setup, first run (fresh pod) †"][tool].append(fn())
        for tool, fn in (steps if i % 2 == 1 else steps[::-1]):
            R["setup, re-run (set-up pod) †"][tool].append(fn())
        R["setup, first run (fresh pod) †"]["floor"].append(floor(lab, OURS))
        R["setup, re-run (set-up pod) †"]["floor"].append(floor(lab, OURS))


def ensure_setup(lab: Lab, ours: Ours, theirs: Theirs) -> None:
    """Untimed: both pods set up and registered (when the setup section did not run)."""
    listed = json.loads(run(ours.pi("pods", "list", "--json"), env=ours.env).stdout)["pods"]
    if not any(p["name"] == OURS for p in listed):
        log(f"ensure: our setup of {OURS}")
        run(ours.setup_argv(OURS), env=ours.env, timeout=600)
    if THEIRS not in theirs.config()["pods"]:
        theirs.prepare_pod(THEIRS)
        has = lab.on(THEIRS, "test -x /root/venv/bin/vllm && test -x /root/venv/bin/hf && echo yes || true").stdout
        if "yes" in has:
            gpus = lab.on(THEIRS, "nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader").stdout
            theirs.register(THEIRS, gpus)
        else:
            log(f"ensure: their (lab stand-in) setup of {THEIRS}")
            theirs.setup_lab(THEIRS)


def clean_models(ours: Ours, theirs: Theirs) -> None:
    run(ours.stop_argv(OURS), env=ours.env, timeout=300)
    theirs.ensure_no_models(THEIRS)


def section_start(lab: Lab, ours: Ours, theirs: Theirs, rounds: int) -> None:
    log(f"start/stop: {MODEL} {' '.join(START_FLAGS)}, {rounds} round(s)")
    clean_models(ours, theirs)

    def ours_pair(name: str) -> tuple[float, float]:
        return ours.time(ours.start_argv(OURS, name)), ours.time(ours.stop_argv(OURS, name))

    def theirs_pair(name: str) -> tuple[float, float]:
        nonlocal leftovers
        start = theirs.time(theirs.pi("start", MODEL, "--name", name, *START_FLAGS), timeout=180)
        port = theirs.port_of(THEIRS, name)
        stop = theirs.time(theirs.pi("stop", name))
        leftovers += not theirs.wait_gone(THEIRS, port)
        return start, stop

    # Not recorded, one each: a first start after a fresh setup also fetches the weights from the hub (and the
    # pod's caches are cold); the recorded rounds measure starts with the weights in place for both tools.
    leftovers = 0
    warm = {"ours": ours_pair("w0")[0], "theirs": theirs_pair("w0")[0]}
    leftovers = 0
    NOTES.append(f"start/stop: one start and stop per tool before the rounds, not counted, so every counted start finds "
                 f"the weights on the pod (those first starts: ours {warm['ours']:.2f} s, theirs {warm['theirs']:.2f} s)")
    for i in range(rounds):
        if out_of_time(f"start/stop rounds {i + 1}..{rounds}"):
            break
        pairs = (("ours", ours_pair), ("theirs", theirs_pair))
        for tool, pair in (pairs if i % 2 == 0 else pairs[::-1]):
            start, stop = pair(f"s{i}")
            R["pi start → healthy"][tool].append(start)
            R["pi stop"][tool].append(stop)
        R["pi start → healthy"]["floor"].append(floor(lab, OURS))
        R["pi stop"]["floor"].append(floor(lab, OURS))
    if leftovers:
        NOTES.append(f"their `pi stop` left the engine running {leftovers} time(s) in {rounds} (killed by PID, untimed)")


def section_list(lab: Lab, ours: Ours, theirs: Theirs, rounds: int) -> None:
    clean_models(ours, theirs)
    names = ["l1", "l2", "l3", "l4"]
    for count, label in ((1, "pi list, 1 model"), (4, "pi list, 4 models")):
        have = len(theirs.config()["pods"][THEIRS]["models"])
        for n in names[have:count]:
            log(f"list: starting {n} on both (untimed)")
            run(ours.start_argv(OURS, n), env=ours.env, timeout=300)
            run(theirs.pi("start", MODEL, "--name", n, *START_FLAGS), env=theirs.env, timeout=180)
        log(f"list: {label}, {rounds * 2} round(s)")
        for i in range(rounds * 2):
            if out_of_time(f"{label} rounds {i + 1}..{rounds * 2}"):
                break
            steps = [("ours", lambda: ours.time(ours.pi("list", "--pod", OURS), timeout=60)),
                     ("theirs", lambda: theirs.time(theirs.pi("list"), timeout=60)),
                     ("floor", lambda: floor(lab, OURS))]
            if count == 1:
                steps.append(("cold", lambda: ours.close_masters() or ours.time(ours.pi("list", "--pod", OURS),
                                                                               timeout=60)))
            for tool, fn in (steps if i % 2 == 0 else steps[::-1]):
                if tool == "cold":
                    R[COLD_LIST]["ours"].append(fn())
                else:
                    R[label][tool].append(fn())
        if count == 1:
            R[COLD_LIST]["theirs"], R[COLD_LIST]["floor"] = R[label]["theirs"], R[label]["floor"]
            NOTES.append("`pi list` goes over the pod's SSH master connection, which any pi command (or Ansible run "
                         "through pi) opens and keeps 60 s after its last use; the cold row closes it first "
                         "(`ssh -O exit`, untimed): what a `pi list` after a minute of quiet costs.")
        out = run(theirs.pi("list"), env=theirs.env).stdout
        if "All processes verified" not in out and "✓" not in out:
            NOTES.append(f"their `pi list` with {count} model(s) did not verify every model: "
                         + " | ".join(ln.strip() for ln in out.splitlines()[-3:]))
    ports = [m["port"] for m in theirs.config()["pods"][THEIRS]["models"].values()]
    log("list: stopping every model on both (untimed)")
    run(ours.stop_argv(OURS), env=ours.env, timeout=300)
    run(theirs.pi("stop"), env=theirs.env, timeout=60)
    for p in ports:
        theirs.wait_gone(THEIRS, p)


FLEET_TOOLS = {  # how N pods are driven at once: column label
    "pi pods update": "`pi pods update A B C`: one pi, one playbook run",
    "ansible-playbook": "`ansible-playbook` over N hosts: one run",
    "pi ×N parallel": "`pi` ×N in parallel: N runs",
}


def section_fleet(lab: Lab, ours: Ours, rounds: int, tmp: Path) -> None:
    sys.path.insert(0, str(REPO))
    from pi_ansible.pod_setup import SetupRequest, extravars

    for i in range(rounds):
        for n in (1, 2, 3):
            if out_of_time(f"fleet round {i + 1}, {n} pod(s) and after"):
                return
            pods = FLEET[:n]
            log(f"fleet round {i + 1}/{rounds}: {n} pod(s) {pods}")
            ours.wipe(pods)

            def record(op: str, tool: str, fn, n=n) -> None:
                c0, b0 = children_cpu(), machine_busy()
                R[f"fleet: {op}, {n} pod(s)"][tool].append(fn())
                R[f"fleet: {op}, {n} pod(s)"][f"cpu {tool}"].append(children_cpu() - c0)
                R[f"fleet: {op}, {n} pod(s)"][f"busy {tool}"].append(machine_busy() - b0)

            def par(argvs):
                return lambda: timed_parallel(argvs, env=ours.env)

            def playbook(argv):
                return lambda: timed(argv, env=ours.playbook_env, timeout=600)

            record("setup first run", "pi ×N parallel", par([ours.setup_argv(p) for p in pods]))
            record("setup re-run", "pi ×N parallel", par([ours.setup_argv(p) for p in pods]))
            record("setup re-run", "pi pods update", lambda pods=pods: ours.time(ours.pi("pods", "update", *pods)))
            inv = ours.inventory(pods, tmp / f"inv{n}.json")
            req = SetupRequest(name="fleet", ssh=lab.ssh(pods[0]), models_path=MODELS_PATH,
                               index_url=lab.index_url, hf_endpoint=lab.hf_endpoint)
            argv = ours.playbook_argv("pod_setup.yml", inv, extravars(req),
                                      {"pod_secrets_hf_token": HF_TOKEN, "pod_secrets_api_key": PI_API_KEY}, tmp)
            record("setup re-run", "ansible-playbook", playbook(argv))
            name = f"f{i}"
            record("start", "pi ×N parallel", par([ours.start_argv(p, name) for p in pods]))
            record("stop", "pi ×N parallel", par([ours.stop_argv(p, name) for p in pods]))
            request = {"model": MODEL, "name": name + "p", "memory": "45%", "context": "16k", "gpus": None,
                       "vllm_args": None, "verify": True, "started_by": "bench/run.py"}
            secrets = {"model_service_api_key": PI_API_KEY, "model_service_hf_token": HF_TOKEN}
            argv = ours.playbook_argv("model_start.yml", inv, {"model_start": request}, secrets, tmp)
            record("start", "ansible-playbook", playbook(argv))
            argv = ours.playbook_argv("model_stop.yml", inv, {"model_stop_names": [name + "p"]}, {}, tmp)
            record("stop", "ansible-playbook", playbook(argv))
    NOTES.append(f"fleet: this machine has {os.cpu_count()} cores, shared by the controller (pi, ansible-playbook, "
                 "ssh) and the lab pods themselves (containers: sshd and Ansible's modules on the pod run on the "
                 "same cores). The controller CPU columns count pi/ansible-playbook and their children; the machine "
                 "CPU columns count everything (the pods' work too). N pods at once cannot take less than (their "
                 "machine CPU ÷ cores): the CPU floor printed with the targets is N × (one pod's machine CPU) ÷ "
                 "cores ÷ (one pod's time), the least the ratio can be on this machine when nothing is shared "
                 "between the N runs. Real pods do their own work on their own CPUs.")


def section_planning(theirs: Theirs | None, rounds: int) -> None:
    """Fit and placement for 64 GPUs (8 pods × 8 H100) × 100 models, in-process, milliseconds."""
    sys.path.insert(0, str(REPO))
    from pi_ansible.catalog import load_builtin_catalog
    from pi_ansible.planning.fit import estimate_fit
    from pi_ansible.planning.gpu_state import GpuState
    from pi_ansible.planning.placement import PlacementRequest, RunningModel, place
    from pi_ansible.planning.plan import plan_start

    catalog = load_builtin_catalog()
    entries = [e for e in catalog if e.arch is not None and min(e.gpu_counts) <= 8]
    pods = {f"p{k}": [GpuState(index=i, uuid=f"GPU-{k}-{i}", name="NVIDIA H100 80GB HBM3", memory_total_mib=81559,
                               memory_reserved_mib=479) for i in range(8)] for k in range(8)}
    one64 = [GpuState(index=i, uuid=f"GPU-{i}", name="NVIDIA H100 80GB HBM3", memory_total_mib=81559,
                      memory_reserved_mib=479) for i in range(64)]
    # each model asks for the share of a GPU its weights need, plus 6 GiB (so most of them share GPUs)
    share = {}
    for e in entries:
        c = min(e.configs, key=lambda c: c.gpu_count)
        need = (e.arch.weights_bytes / c.gpu_count + 6 * 2**30) / (81559 * 2**20)
        share[e.id] = f"{min(95, -(-int(need * 100) // 5) * 5)}%"
    log(f"planning: 64 GPUs × 100 models ({len(entries)} catalog models with a config of ≤ 8 GPUs), {rounds} round(s)")
    for _ in range(rounds):
        running = {p: [] for p in pods}
        placed = 0
        t0 = time.perf_counter()
        for i in range(100):
            e = entries[i % len(entries)]
            for pod, gpus in pods.items():
                try:
                    plan = plan_start(catalog, e.id, name=f"m{i}", gpus=gpus, venv="/opt/pi-ansible/venv",
                                      running_models=running[pod], memory=share[e.id], context="4k")
                except Exception:  # refused here: try the next pod
                    continue
                running[pod].append(RunningModel(name=f"m{i}", port=plan.placement.port,
                                                 gpus=plan.placement.gpu_indices, memory_fraction=plan.memory_fraction))
                placed += 1
                break
        R["planning: plan_start, 100 models onto 8 pods × 8 GPUs (ms)"]["ours"].append(
            (time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        for i in range(100):
            e = entries[i % len(entries)]
            c = min(e.configs, key=lambda c: c.gpu_count)
            estimate_fit(e.arch, one64, gpu_count=c.gpu_count, memory_fraction=0.9, max_model_len=4096)
        R["planning: estimate_fit ×100 on 64 GPUs (ms)"]["ours"].append((time.perf_counter() - t0) * 1000)
        models = []
        t0 = time.perf_counter()
        for i in range(100):
            p = place(PlacementRequest(f"m{i}", 1, 0.3), one64, models)
            models.append(RunningModel(name=f"m{i}", port=p.port, gpus=p.gpu_indices, memory_fraction=0.3))
        R["planning: place ×100 on 64 GPUs (ms)"]["ours"].append((time.perf_counter() - t0) * 1000)
    NOTES.append(f"planning: plan_start placed {placed} of 100 requests on 64 GPUs (each asking its weights' share "
                 "of a GPU + 6 GiB, 4k context; a request a pod refuses is tried on the next pod)")
    if theirs is not None:
        # Their whole "fit" is getModelConfig (GPU count + type name); their GPU choice is a count per GPU.
        js = ("import {getModelConfig} from '%s';"  # noqa: UP031
              "import {readFileSync} from 'fs';"
              "const ids=Object.keys(JSON.parse(readFileSync('%s','utf8')).models);"
              "const gpus=[...Array(64).keys()].map(i=>({id:i,name:'NVIDIA H100 80GB HBM3',memory:'81559 MiB'}));"
              "const out=[];for(let r=0;r<%d;r++){const t=performance.now();"
              "for(let i=0;i<100;i++){const id=ids[i%%ids.length];"
              "for(let c=gpus.length;c>=1;c--){if(getModelConfig(id,gpus,c))break;}}"
              "out.push(performance.now()-t);}console.log(JSON.stringify(out));"
              % (TS_PKG / "dist" / "model-configs.js", TS_PKG / "dist" / "models.json", rounds))
        out = run(["node", "--input-type=module", "-e", js], timeout=60).stdout
        R["planning: plan_start, 100 models onto 8 pods × 8 GPUs (ms)"]["theirs"].extend(json.loads(out))
        NOTES.append("planning, theirs: getModelConfig over GPU counts 64→1 for 100 models (their whole fit check: "
                     "GPU count and type name, no memory), in node")


# ------------------------------------------------------------------------------------------------ table


def fmt(xs: list[float]) -> str:
    if not xs:
        return "–"
    return f"{min(xs):.2f} / {statistics.median(xs):.2f}"


def ratio(a: list[float], b: list[float]) -> str:
    if not a or not b:
        return "–"
    return f"{statistics.median(a) / statistics.median(b):.2f}×"


def table() -> str:
    lines = ["| operation | ours min / median (s) | theirs min / median (s) | floor `ssh pod true` median (s) "
             "| ours ÷ theirs | ours ÷ floor |", "|---|---|---|---|---|---|"]
    for op, tools in R.items():
        if op.startswith("fleet"):
            continue
        ours, theirs, fl = tools.get("ours", []), tools.get("theirs", []), tools.get("floor", [])
        lines.append(f"| {op} | {fmt(ours)} | {fmt(theirs)} | {fmt(fl).split(' / ')[-1]} | {ratio(ours, theirs)} "
                     f"| {ratio(ours, fl) if fl else '–'} |")
    fleet = [op for op in R if op.startswith("fleet")]
    if fleet:
        lines += ["", "| fleet (ours) | how | min / median (s) | CPU: controller / machine (s) | ratio to 1 pod |",
                  "|---|---|---|---|---|"]
        for op in fleet:
            one = R.get(f"{op.rsplit(',', 1)[0]}, 1 pod(s)", {})
            for tool in FLEET_TOOLS:
                if R[op].get(tool):
                    cpu = " / ".join(fmt(R[op].get(f"{what} {tool}", [])).split(" / ")[-1] for what in ("cpu", "busy"))
                    lines.append(f"| {op} | {FLEET_TOOLS[tool]} | {fmt(R[op][tool])} | {cpu} "
                                 f"| {ratio(R[op][tool], one.get(tool, []))} |")
    return "\n".join(lines)


def med(op: str, tool: str) -> float | None:
    xs = R.get(op, {}).get(tool, [])
    return statistics.median(xs) if xs else None


def cpu_floor(kind: str, tool: str) -> str:
    """The least 3 at once ÷ 1 can be here if the three runs share nothing: 3 × one run's machine CPU ÷ cores, over
    one run's time (the pods' own work is on these cores too)."""
    one, busy = med(f"fleet: {kind}, 1 pod(s)", tool), med(f"fleet: {kind}, 1 pod(s)", f"busy {tool}")
    if not one or busy is None:
        return ""
    return f" [CPU floor on this machine: {3 * busy / (os.cpu_count() or 1) / one:.2f}×]"


def targets() -> str:
    """The issue's targets, each met or not, from the medians above."""
    out = ["Targets (medians):"]

    def check(label: str, value: float | None, limit: float, unit: str, strict: bool = False) -> None:
        if value is None:
            out.append(f"- {label}: not measured")
            return
        ok = value < limit if strict else value <= limit
        rel = "<" if strict else "≤"
        out.append(f"- {label}: {value:.2f}{unit} (target {rel} {limit:g}{unit}) — {'met' if ok else 'NOT met'}")

    def rel(op: str, a: str, b: str) -> float | None:
        x, y = med(op, a), med(op, b)
        return x / y if x is not None and y else None

    for op in ("pi list, 1 model", "pi list, 4 models"):
        check(f"{op}, ours ÷ theirs", rel(op, "ours", "theirs"), 1.0, "×")
        check(f"{op}, ours ÷ ssh floor", rel(op, "ours", "floor"), 3.0, "×")
    check("pi start → healthy, ours ÷ theirs", rel("pi start → healthy", "ours", "theirs"), 1.0, "×")
    for op in ("cli --help", "pi pods (list pods, local)"):
        check(f"{op}, ours ÷ theirs", rel(op, "ours", "theirs"), 2.0, "×")
    check("setup re-run on a set-up pod, ours", med("setup, re-run (set-up pod) †", "ours"), 15, " s", strict=True)
    for kind in ("setup re-run", "setup first run", "start"):
        for tool, how in FLEET_TOOLS.items():
            one, three = med(f"fleet: {kind}, 1 pod(s)", tool), med(f"fleet: {kind}, 3 pod(s)", tool)
            if one and three is not None:
                check(f"fleet {kind}, 3 pods at once ÷ 1 pod ({how}){cpu_floor(kind, tool)}"
                      + (" — the issue's fleet target" if kind == "setup re-run" else ""), three / one, 1.5, "×",
                      strict=True)
    return "\n".join(out)


def machine() -> str:
    mem = next((int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                if ln.startswith("MemTotal")), 0)
    osr = dict(ln.split("=", 1) for ln in Path("/etc/os-release").read_text().splitlines() if "=" in ln)
    return (f"{os.cpu_count()} cores, {mem / 2**20:.0f} GiB, {osr.get('PRETTY_NAME', '?').strip(chr(34))}, "
            f"Python {platform.python_version()}, node {run(['node', '--version']).stdout.strip()}, "
            "lab pods (systemd-nspawn, 2 × H100 profile)")


def write_readme(text: str) -> None:
    path = BENCH / "README.md"
    doc = path.read_text()
    start, end = "<!-- bench:table:start -->", "<!-- bench:table:end -->"
    if start in doc and end in doc:
        doc = doc[:doc.index(start) + len(start)] + "\n" + text + "\n" + doc[doc.index(end):]
    else:
        doc += f"\n{start}\n{text}\n{end}\n"
    path.write_text(doc)


def cleanup(lab: Lab, ours: Ours, theirs: Theirs, remote: bool) -> None:
    """Stop every model this run started (not when the pods changed under us: they are not ours any more)."""
    if not remote:
        log("cleanup: skipped (the bench pods changed under the run)")
        return
    log("cleanup: stopping every model this run started")
    listed = {p["name"] for p in json.loads(run(ours.pi("pods", "list", "--json"), env=ours.env,
                                                check=False).stdout or '{"pods": []}')["pods"]}
    for pod in FLEET:
        if pod in listed:
            run(ours.stop_argv(pod), env=ours.env, timeout=300, check=False)
    if THEIRS in theirs.config()["pods"]:
        run(theirs.pi("stop"), env=theirs.env, timeout=60, check=False)
    try:
        theirs.kill_engines(THEIRS)
    except BenchError as e:
        log(f"cleanup: could not check {THEIRS} for engines left running: {e}")


def main() -> int:
    global DEADLINE, LAB
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="rounds per timed operation (local and list: twice that)")
    ap.add_argument("--quick", action="store_true", help="2 rounds, 1 setup round, 1 fleet round")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections ({', '.join(SECTIONS)})")
    ap.add_argument("--setup-rounds", type=int, default=None, help="default: min(rounds, 2)")
    ap.add_argument("--fleet-rounds", type=int, default=1)
    ap.add_argument("--budget", type=float, default=900,
                    help="seconds for the whole run: rounds that would start later are skipped (default 900)")
    ap.add_argument("--note", action="append", default=[], help="a note to print with the table (repeatable)")
    ap.add_argument("--write-readme", action="store_true", help="put the table in bench/README.md")
    a = ap.parse_args()
    rounds = 2 if a.quick else max(1, min(a.rounds, 20))
    setup_rounds = 1 if a.quick else max(1, min(a.setup_rounds or min(rounds, 2), 10))
    fleet_rounds = 1 if a.quick else max(1, min(a.fleet_rounds, 5))
    only = [s.strip() for s in a.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s): {', '.join(sorted(unknown))}")

    NOTES.extend(a.note)
    load_start = os.getloadavg()[0]
    started = time.monotonic()
    DEADLINE = started + max(60.0, a.budget)
    # Our own config directories, under /tmp (never ~/.pi), removed at the end.
    tmp = Path(tempfile.mkdtemp(prefix="pi-bench-"))
    (tmp / "ours").mkdir()
    (tmp / "theirs").mkdir()
    CACHE.mkdir(parents=True, exist_ok=True)
    lab = LAB = Lab({**os.environ, "PI_CONFIG_DIR": str(tmp / "ours")}, tmp)
    ours, theirs = Ours(lab, tmp / "ours"), Theirs(lab, tmp / "theirs")
    log(f"config dirs: ours {ours.cfg}, theirs {theirs.cfg}")

    def section(name: str, fn, *args) -> None:
        if name not in only:
            return
        lab.check()
        try:
            fn(*args)
        except LabGone:
            raise
        except BenchError as e:  # the other sections still run; the failure is in the notes
            lab.check()  # … unless the failure came from a pod that changed under us
            log(f"{name}: FAILED: {e}")
            NOTES.append(f"section {name} failed: " + str(e).splitlines()[0][:300])

    aborted = None
    try:
        section("setup", section_setup, lab, ours, theirs, setup_rounds)
        if {"local", "start", "list"} & set(only):
            # both tools list one registered pod in `pi pods`; start and list need the pods set up
            lab.check()
            ensure_setup(lab, ours, theirs)
        section("local", section_local, ours, theirs, rounds)
        section("start", section_start, lab, ours, theirs, rounds)
        section("list", section_list, lab, ours, theirs, rounds)
        section("fleet", section_fleet, lab, ours, fleet_rounds, tmp)
        section("planning", section_planning, theirs, max(rounds, 3))
    except LabGone as e:
        aborted = str(e)
        log(f"ABORTED: {e}")
        NOTES.insert(0, f"ABORTED, results incomplete: {e}")
    finally:
        cleanup(lab, ours, theirs, remote=aborted is None)
        shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()[1]
    text = (f"Run {time.strftime('%Y-%m-%d %H:%M')} on {machine()}; load average (1 min) at the start "
            f"{load_start:.1f}, (5 min) at the end {load:.1f} (the machine is shared); {rounds} round(s) "
            f"({setup_rounds} for setup, {fleet_rounds} for the fleet), {time.monotonic() - started:.0f} s in all.\n\n"
            + table() + "\n\n" + targets()
            + ("\n\nNotes:\n" + "\n".join(f"- {n}" for n in NOTES) if NOTES else ""))
    print(text)
    (CACHE / "last-run.json").write_text(json.dumps({"results": R, "notes": NOTES, "text": text}, indent=1))
    if aborted:
        log("not writing bench/README.md: the run was aborted")
        return 1
    if a.write_readme:
        write_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
