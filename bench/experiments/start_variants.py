"""Experiment: `playbooks/model_start.yml` + `model_stop.yml` run by ansible-playbook from copies of the Ansible
content (bench/.cache/exp/<variant>, made here from the repo), interleaved, to measure changes before
proposing them:

  base      the repo's content as is (copied, symlinks resolved)
  fast      the same, but the download wait polls every 0.25 s instead of 2 s
  mitogen   base with mitogen 0.3.54's mitogen_linear strategy (pip install --target bench/.cache/mitogen mitogen)

    .venv/bin/python bench/experiments/start_variants.py POD_SSH_NAME ROUNDS [variant ...]
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXP = REPO / "bench" / ".cache" / "exp"
sys.path.insert(0, str(REPO))
from pi_ansible.sshargs import parse_ssh  # noqa: E402


def make_copies() -> None:
    import shutil
    for v in ("base", "fast"):
        d = EXP / v
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for part in ("playbooks", "roles", "plugins"):
            shutil.copytree(REPO / part, d / part, symlinks=False)
        shutil.copy(REPO / "ansible.cfg", d / "ansible.cfg")
    start = EXP / "fast" / "roles" / "model_service" / "tasks" / "start.yml"
    text = start.read_text()
    old = 'retries: "{{ (model_service_download_timeout | int / 2) | int }}"\n      delay: 2'
    assert old in text, "the download wait changed in the repo: update this experiment"
    start.write_text(text.replace(old, 'retries: "{{ (model_service_download_timeout | int * 4) | int }}"\n'
                                       '      delay: 0.25'))


make_copies()
pod, rounds, variants = sys.argv[1], int(sys.argv[2]), sys.argv[3:] or ["base", "fast", "mitogen"]
lab = {p["name"]: p for p in json.loads(subprocess.run([str(REPO / ".venv/bin/pi"), "lab", "status", "--json"],
                                                       capture_output=True, text=True, check=True).stdout)["pods"]}
tmp = Path(tempfile.mkdtemp())
inv = tmp / "inv.json"
inv.write_text(json.dumps({"all": {"hosts": {pod: {**parse_ssh(lab[pod]["ssh"]).ansible_vars(),
                                                   "ansible_python_interpreter": "auto_silent"}}}}))
secrets = tmp / "s.json"
secrets.write_text(json.dumps({"model_service_api_key": "pikey-bench-test", "model_service_hf_token": "hf_x"}))
times: dict[str, dict[str, list[float]]] = {v: {"start": [], "stop": []} for v in variants}
for r in range(min(rounds, 10)):
    for v in variants:
        content = EXP / ("base" if v == "mitogen" else v)
        env = {**os.environ, "ANSIBLE_CONFIG": str(content / "ansible.cfg")}
        if v == "mitogen":
            env.update(ANSIBLE_STRATEGY_PLUGINS=str(REPO / "bench/.cache/mitogen/ansible_mitogen/plugins/strategy"),
                       ANSIBLE_STRATEGY="mitogen_linear", PYTHONPATH=str(REPO / "bench/.cache/mitogen"))
        name = f"e{r}{v[0]}"
        req = {"model": "Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8", "name": name, "memory": "45%", "context": "16k",
               "gpus": None, "vllm_args": None, "verify": True, "started_by": "bench"}
        for op, pb, ev in (("start", "model_start.yml", {"model_start": req}),
                           ("stop", "model_stop.yml", {"model_stop_names": [name]})):
            t0 = time.perf_counter()
            p = subprocess.run([str(REPO / ".venv/bin/ansible-playbook"), "-i", str(inv),
                                str(content / "playbooks" / pb), "-e", json.dumps(ev), "-e", f"@{secrets}"],
                               env=env, cwd=content, capture_output=True, text=True, timeout=300)
            dt = time.perf_counter() - t0
            if p.returncode:
                print(p.stdout[-3000:], p.stderr[-2000:])
                raise SystemExit(f"{v} {op} failed")
            times[v][op].append(dt)
            print(f"round {r} {v:8} {op:5} {dt:6.2f} s", flush=True)
for v, ops in times.items():
    print(v, {op: f"min {min(t):.2f} median {statistics.median(t):.2f}" for op, t in ops.items()})
