"""`pi pods …`, `pi ssh`, end to end: the real CLI against lab pods over real SSH, through ansible-runner."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from pi_ansible.lab.gpu_profiles import PROFILES
from pi_ansible.lab.servicectl import lab_service_urls

from ..conftest import PI, run_pi
from ..helpers.ps import PsSampler

pytestmark = pytest.mark.lab
HF_CANARY = "hf_CANARYhf7b1d9e0c4a"
KEY_CANARY = "pikey-CANARY-5e2f8a19"


@pytest.fixture
def pi_env(tmp_path) -> dict:
    urls = lab_service_urls()
    return {"PI_CONFIG_DIR": str(tmp_path / "pi"), "HF_TOKEN": HF_CANARY, "PI_API_KEY": KEY_CANARY,
            "PI_INDEX_URL": urls["index"], "HF_ENDPOINT": urls["hub"]}


def setup(lab, name: str, pod: str, env: dict, *extra: str, check: bool = True):
    return run_pi("pods", "setup", name, lab.pod(pod)["ssh"], "--models-path", "/mnt/models", "--json", *extra,
                  env=env, check=check)


def state_bytes(env) -> bytes | None:
    p = Path(env["PI_CONFIG_DIR"]) / "pi-ansible.json"
    return p.read_bytes() if p.exists() else None


def test_setup_the_h100_pod_then_rerun_changes_nothing(lab, pi_env):
    with PsSampler(lambda: lab.ssh("h100x2", "ps -eo args", check=False).stdout) as ps:
        t0 = time.monotonic()
        first = json.loads(setup(lab, "h100", "h100x2", pi_env).stdout)
        first_s = time.monotonic() - t0
    t0 = time.monotonic()
    second = json.loads(setup(lab, "h100", "h100x2", pi_env).stdout)
    second_s = time.monotonic() - t0
    print(f"\nsetup timings: first {first_s:.1f} s, re-run {second_s:.1f} s")
    assert second["changed"] == 0, "a second setup on a set-up pod changes nothing"

    listed = json.loads(run_pi("pods", "--json", env=pi_env).stdout)
    pod = next(p for p in listed["pods"] if p["name"] == "h100")
    profile = PROFILES["h100x2"]
    assert [g["uuid"] for g in pod["gpus"]] == [g["uuid"] for g in profile["gpus"]]
    assert {g["name"] for g in pod["gpus"]} == {"NVIDIA H100 80GB HBM3"}
    assert (pod["driver_version"], pod["cuda_version"]) == (profile["driver_version"], profile["cuda_version"])
    assert pod["vllm_version"] == "0.33.0+lab" and pod["models_path"] == "/mnt/models"
    assert listed["active"] == "h100" and first["active"]

    # The pod's venv runs the engine double.
    out = run_pi("ssh", "h100", "/opt/pi-ansible/venv/bin/vllm --version", env=pi_env).stdout
    assert out.strip().endswith("0.33.0+lab")

    # Secrets: only in the pod's 0600 root-only file; nowhere else on either side.
    st = lab.ssh("h100x2", "stat -c '%a %U %G' /etc/pi-ansible/secrets.env").stdout.split()
    assert st == ["600", "root", "root"]
    on_pod = lab.ssh("h100x2", f"grep -rlsI -e {HF_CANARY} -e {KEY_CANARY} / --exclude-dir=proc --exclude-dir=sys "
                               "--exclude-dir=dev --exclude-dir=run || true").stdout.split()
    assert on_pod == ["/etc/pi-ansible/secrets.env"]
    journal = lab.ssh("h100x2", "journalctl --no-pager -o cat").stdout
    assert HF_CANARY not in journal and KEY_CANARY not in journal
    local = subprocess.run(["grep", "-rlsI", "-e", HF_CANARY, "-e", KEY_CANARY, pi_env["PI_CONFIG_DIR"]],
                           capture_output=True, text=True).stdout.split()
    assert local == [], f"secrets leaked into local files: {local}"
    assert ps.samples, "ps was sampled during the run"
    for sample in ps.samples:
        assert HF_CANARY not in sample and KEY_CANARY not in sample


def test_driver_too_old_gets_the_cu129_build_and_says_so(lab, pi_env):
    out = json.loads(setup(lab, "g4090", "rtx4090", pi_env).stdout)
    assert out["cuda_variant"] == "cu129"
    assert any("550.144.03" in n for n in out["notes"])


@pytest.mark.parametrize(("pod", "says"), [
    ("mismatch", "do not match the loaded kernel module"),
    ("nodevices", "sees no GPU"),
])
def test_broken_gpu_pods_fail_with_what_to_do_and_change_no_state(lab, pi_env, pod, says):
    setup(lab, "keep", "h100x2", pi_env)
    before = state_bytes(pi_env)
    proc = setup(lab, "broken", pod, pi_env, check=False)
    assert proc.returncode == 1
    assert says in proc.stderr and "Traceback" not in proc.stderr
    assert state_bytes(pi_env) == before


def test_a_failing_mount_fails_the_setup(lab, pi_env):
    proc = run_pi("pods", "setup", "mnt", lab.pod("h100x2")["ssh"], "--mount", "mount --bind /nonexistent /mnt/models",
                  env=pi_env, check=False)
    assert proc.returncode == 1
    assert "the mount `mount --bind /nonexistent /mnt/models` failed" in proc.stderr
    assert state_bytes(pi_env) is None
    assert "/nonexistent" not in lab.ssh("h100x2", "cat /etc/fstab").stdout


def test_a_bind_mount_becomes_the_models_path_and_survives_in_fstab(lab, pi_env):
    lab.ssh("h100x2", "mkdir -p /srv/models-src")
    out = json.loads(run_pi("pods", "setup", "bind", lab.pod("h100x2")["ssh"], "--mount",
                            "mount --bind /srv/models-src /mnt/shared", "--json", env=pi_env).stdout)
    assert out["models_path"] == "/mnt/shared"
    assert "/srv/models-src /mnt/shared none bind" in lab.ssh("h100x2", "cat /etc/fstab").stdout
    assert lab.ssh("h100x2", "findmnt -n -o TARGET /mnt/shared").stdout.strip() == "/mnt/shared"
    lab.ssh("h100x2", "umount /mnt/shared; sed -i '\\# /mnt/shared #d' /etc/fstab", check=False)


BAD_SSH = [
    "root@",
    "ssh",
    "ssh -p 99999 root@10.77.0.11",
    "ssh -o ProxyCommand=nc root@10.77.0.11",
    "ssh root@10.77.0.11; rm -rf /",
    "ssh -L 80:localhost:80 root@10.77.0.11",
    "ssh root@host name",
]


@pytest.mark.parametrize("bad", BAD_SSH)
def test_bad_ssh_strings_are_refused_before_anything_runs(pi_env, bad):
    proc = run_pi("pods", "setup", "p1", bad, "--models-path", "/mnt/models", env=pi_env, check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("Error:") and "Traceback" not in proc.stderr
    assert not (Path(pi_env["PI_CONFIG_DIR"]) / "ansible-runs").exists(), "no playbook ran"


def test_unreachable_and_refused_pods_say_which(lab, pi_env):
    closed = run_pi("pods", "setup", "p1", "ssh -p 2 root@127.0.0.1", "--models-path", "/m", env=pi_env, check=False)
    assert closed.returncode == 1 and "nothing listens for SSH" in closed.stderr
    wrong_key = lab.pod("h100x2")["ssh"].replace("id_ed25519", "no-such-key")
    refused = run_pi("pods", "setup", "p1", wrong_key, "--models-path", "/m", env=pi_env, check=False)
    assert refused.returncode == 1 and "refused the SSH key" in refused.stderr


def test_missing_secrets_say_how_to_set_them(lab, pi_env):
    env = {k: v for k, v in pi_env.items() if k != "HF_TOKEN"}
    proc = subprocess.run([PI, "pods", "setup", "p1", lab.pod("h100x2")["ssh"], "--models-path", "/m"],
                          capture_output=True, text=True, env={**{k: v for k, v in os.environ.items() if k != "HF_TOKEN"},
                                                               **env})
    assert proc.returncode == 1 and "export HF_TOKEN=" in proc.stderr


def test_unknown_pods_and_a_malformed_state_file(pi_env):
    for args in (["pods", "active", "nope"], ["pods", "remove", "nope"], ["ssh", "nope", "true"]):
        proc = run_pi(*args, env=pi_env, check=False)
        assert proc.returncode == 1 and "no pod named 'nope'" in proc.stderr
    state = Path(pi_env["PI_CONFIG_DIR"]) / "pi-ansible.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text('{"version": 1, "pods": ')
    for args in (["pods"], ["pods", "setup", "p1", "ssh root@10.77.0.11", "--models-path", "/m"]):
        proc = run_pi(*args, env=pi_env, check=False)
        assert proc.returncode == 1 and str(state) in proc.stderr and "Traceback" not in proc.stderr
    assert state.read_text() == '{"version": 1, "pods": '


def test_two_setups_at_once_lose_no_pod(lab, pi_env):
    procs = [subprocess.Popen([PI, "pods", "setup", name, lab.pod(pod)["ssh"], "--models-path", "/mnt/models"],
                              env={**os.environ, **pi_env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, pod in (("one", "h100x2"), ("two", "rtx4090"))]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    names = {p["name"] for p in json.loads(run_pi("pods", "--json", env=pi_env).stdout)["pods"]}
    assert names == {"one", "two"}


def test_update_reruns_the_setup_on_every_pod_at_once_in_one_run(lab, pi_env):
    setup(lab, "one", "h100x2", pi_env)
    setup(lab, "four", "rtx4090", pi_env)
    before = {p["name"]: p for p in json.loads(run_pi("pods", "--json", env=pi_env).stdout)["pods"]}
    runs = Path(pi_env["PI_CONFIG_DIR"]) / "ansible-runs"
    n_runs = len(list(runs.iterdir()))
    proc = run_pi("pods", "update", "--json", env=pi_env)
    out = {p["name"]: p for p in json.loads(proc.stdout)["pods"]}
    assert set(out) == {"one", "four"} and all(p["changed"] == 0 for p in out.values()), out
    assert out["four"]["cuda_variant"] == "cu129" and out["one"]["cuda_variant"] == "cu130"
    assert {n: (p["models_path"], p["engine_variant"], p["ssh"]) for n, p in out.items()} == \
        {n: (p["models_path"], p["engine_variant"], p["ssh"]) for n, p in before.items()}
    assert len(list(runs.iterdir())) == n_runs + 1, "one playbook run for both pods"
    assert "Updating 2 pod(s): four, one" in proc.stderr
    assert HF_CANARY not in proc.stdout + proc.stderr and KEY_CANARY not in proc.stdout + proc.stderr

    named = json.loads(run_pi("pods", "update", "one", "--json", env=pi_env).stdout)["pods"]
    assert [p["name"] for p in named] == ["one"]


def test_update_saves_the_pods_that_finished_when_another_fails(lab, pi_env):
    setup(lab, "one", "h100x2", pi_env)
    setup(lab, "four", "rtx4090", pi_env)
    state_file = Path(pi_env["PI_CONFIG_DIR"], "pi-ansible.json")
    state = json.loads(state_file.read_text())
    for pod in ("one", "four"):  # what an update rewrites from the pod's facts
        state["pods"][pod]["vllm_version"] = "0.0.1-stale"
    state_file.write_text(json.dumps(state))
    lab.ssh("rtx4090", "mv /usr/bin/nvidia-smi /usr/bin/nvidia-smi.away")
    try:
        proc = run_pi("pods", "update", env=pi_env, check=False)
    finally:
        lab.ssh("rtx4090", "mv /usr/bin/nvidia-smi.away /usr/bin/nvidia-smi")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "updating pods four, one (saved: one) failed" in proc.stderr and "four: Gather GPU facts" in proc.stderr
    after = json.loads(state_file.read_text())["pods"]
    assert after["four"] == state["pods"]["four"], "the failed pod's record is left as it was"
    assert after["one"]["vllm_version"] == "0.33.0+lab", "the pod that finished is saved"


def test_update_refuses_unknown_and_imported_pods_before_anything_runs(lab, pi_env):
    setup(lab, "one", "h100x2", pi_env)
    runs = Path(pi_env["PI_CONFIG_DIR"]) / "ansible-runs"
    n_runs, before = len(list(runs.iterdir())), state_bytes(pi_env)
    proc = run_pi("pods", "update", "one", "nope", env=pi_env, check=False)
    assert proc.returncode == 1 and "no pod named 'nope' (known pods: one)" in proc.stderr
    state = json.loads(before)
    state["pods"]["imported"] = {**state["pods"]["one"], "models_path": None, "origin": "pi-import"}
    Path(pi_env["PI_CONFIG_DIR"], "pi-ansible.json").write_text(json.dumps(state))
    proc = run_pi("pods", "update", env=pi_env, check=False)
    assert proc.returncode == 1 and "pod imported has no recorded models path" in proc.stderr
    assert "--models-path PATH" in proc.stderr and "Traceback" not in proc.stderr
    assert len(list(runs.iterdir())) == n_runs, "no playbook ran"
    empty = {**pi_env, "PI_CONFIG_DIR": str(Path(pi_env["PI_CONFIG_DIR"]) / "empty")}
    proc = run_pi("pods", "update", env=empty, check=False)
    assert proc.returncode == 1 and "no pods to update" in proc.stderr


def test_pi_ssh_streams_and_passes_the_exit_code(lab, pi_env):
    setup(lab, "h100", "h100x2", pi_env)
    proc = run_pi("ssh", "h100", "echo out; echo err >&2; exit 7", env=pi_env, check=False)
    assert proc.returncode == 7 and proc.stdout == "out\n" and "err" in proc.stderr
    run_pi("pods", "remove", "h100", env=pi_env)
    assert json.loads(run_pi("pods", "--json", env=pi_env).stdout)["pods"] == []


def test_pi_shell_opens_an_interactive_session(lab, pi_env):
    import pexpect

    setup(lab, "h100", "h100x2", pi_env)
    child = pexpect.spawn(PI, ["shell", "h100"], env={**os.environ, **pi_env}, encoding="utf-8", timeout=30)
    try:
        child.sendline("echo shell-$((6*7)); hostname")
        child.expect("shell-42")
        child.expect("h100x2")
        child.sendline("exit 0")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def _masters(cdir: Path) -> dict[str, int]:
    """Socket name -> PID of the live master behind it (`ssh -O check` asks the master itself)."""
    out = {}
    for sock in cdir.iterdir():
        proc = subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "check", "unused"], capture_output=True,
                              text=True, timeout=10)
        if proc.returncode == 0:
            out[sock.name] = int(proc.stderr.split("pid=")[1].split(")")[0])
    return out


def test_pi_list_and_the_ansible_runs_share_one_master_connection(lab, pi_env):
    from pi_ansible.sshmux import control_dir

    cdir = control_dir(Path(pi_env["PI_CONFIG_DIR"]))  # as pi finds it (the same environment but PI_*)
    assert not str(cdir).startswith(pi_env["PI_CONFIG_DIR"]), "sockets stay out of the config dir"
    setup(lab, "shared", "h100x2", pi_env)  # the probe opens the master, the setup playbook runs over it
    masters = _masters(cdir)
    assert len(masters) == 1, masters
    assert os.stat(cdir).st_mode & 0o777 == 0o700
    run_pi("list", env=pi_env)
    setup(lab, "shared", "h100x2", pi_env)  # a re-run: Ansible finds the same socket
    assert _masters(cdir) == masters, "pi list and both playbook runs went over the first master"
    proc = subprocess.run(["ssh", "-o", f"ControlPath={cdir / next(iter(masters))}", "-O", "exit", "unused"],
                          capture_output=True, timeout=10)
    assert proc.returncode == 0
    assert json.loads(run_pi("list", "--json", env=pi_env).stdout)["errors"] == []  # a new master, no error
    again = _masters(cdir)
    assert again.keys() == masters.keys() and again != masters
