"""Canary secrets through setup, start, list, logs, agent and stop: never in artifacts, logs, the journal,
`ps` on either side, or a file that is not 0600 and root-owned; every endpoint refuses a request without
the key (401)."""

from __future__ import annotations

import base64
import io
import json
import pickle
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from ..conftest import run_pi
from ..helpers.ps import PsSampler
from .conftest import SMALL, make_env, ssh

pytestmark = pytest.mark.lab

HF_CANARY = "hf_CANARYfaults0d41c9b7e2"
KEY_CANARY = "pikey-CANARY-faults-77a0c3"


def status_without_key(url: str, key: str | None) -> int:
    req = urllib.request.Request(url + "/v1/models", headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def test_canary_secrets_never_leak_and_endpoints_need_the_key(pods, tmp_path):
    pod = pods["faults-a"]
    env = make_env(tmp_path)
    env.update(HF_TOKEN=HF_CANARY, PI_API_KEY=KEY_CANARY)
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("the build is green\n")
    with PsSampler(lambda: ssh(pod, "ps -eo args", check=False).stdout) as ps:
        run_pi("pods", "setup", "fa", pod["ssh"], "--models-path", "/mnt/models", env=env)
        run_pi("stop", env=env)
        out = json.loads(run_pi("start", SMALL, "--name", "secret", "--json", env=env).stdout)
        listed = run_pi("list", "--json", env=env).stdout
        logs = run_pi("logs", "secret", env=env).stdout
        agent = run_pi("agent", "secret", "--json", "read notes.txt and say what it says", env=env, cwd=project)
    try:
        assert out["name"] == "secret" and ps.samples
        for text in (json.dumps(out), listed, logs, agent.stdout, agent.stderr):
            assert HF_CANARY not in text and KEY_CANARY not in text
        assert "--show-key" not in json.dumps(out) or KEY_CANARY not in json.dumps(out)

        # Every endpoint refuses requests without the key, or with a wrong one; the key works.
        url = out["base_url"].removesuffix("/v1")
        assert status_without_key(url, None) == 401
        assert status_without_key(url, "wrong-key") == 401
        assert status_without_key(url, KEY_CANARY) == 200
        for pod_model in json.loads(listed)["models"]:
            assert status_without_key(pod_model["url"].removesuffix("/v1"), None) == 401
    finally:
        run_pi("stop", "secret", env=env)

    # ps on either side, at any moment of the run
    for sample in ps.samples:
        assert HF_CANARY not in sample and KEY_CANARY not in sample
    # local files: the state directory (state, ansible-runner artifacts, sessions) holds no secret
    # (the state directory holds the runs' artifacts; /dev/shm the runner's secret vars files while they run;
    # ~/.ansible Ansible's own temporary files and its connection sockets)
    local = subprocess.run(["grep", "-rlsI", "-e", HF_CANARY, "-e", KEY_CANARY, env["PI_CONFIG_DIR"], "/dev/shm",
                            str(Path.home() / ".ansible")], capture_output=True, text=True).stdout.split()
    assert local == [], f"secrets in local files: {local}"
    # grep -I skips binary files: the caches kept between runs are read whole (the module payloads unzipped)
    kept = [*Path.home().glob(".ansible/tmp/pi-ansiballz/*/*"), *Path(env["PI_CONFIG_DIR"]).glob("cache/ansible/*")]
    assert any("pi_model_service" in p.name for p in kept), kept
    for path in kept:
        texts = [path.read_bytes()]
        if "pi_model_service" in path.name:
            with path.open("rb") as fh:
                entry = pickle.load(fh)  # ansible-core's own cache format: the module's zip, base64
            with zipfile.ZipFile(io.BytesIO(base64.b64decode(entry.zip_data))) as zf:
                texts += [zf.read(n) for n in zf.namelist()]
        assert not any(c.encode() in t for c in (HF_CANARY, KEY_CANARY) for t in texts), path
    # the pod: only root-owned 0600 files hold them (its secrets file, a model's env file)
    found = ssh(pod, f"grep -rlsI -e {HF_CANARY} -e {KEY_CANARY} / --exclude-dir=proc --exclude-dir=sys "
                     "--exclude-dir=dev | xargs -r stat -c '%a %U %n'").stdout.splitlines()
    assert found, "the pod's secrets file holds them"
    for line in found:
        mode, owner, path = line.split(" ", 2)
        assert (mode, owner) == ("600", "root"), line
        assert path.startswith("/etc/pi-ansible/"), line
    # the journals, on the pod and here
    for journal in (ssh(pod, "journalctl --no-pager -o cat").stdout,
                    subprocess.run(["journalctl", "--no-pager", "-o", "cat", "--since", since],
                                   capture_output=True, text=True).stdout):
        assert HF_CANARY not in journal and KEY_CANARY not in journal
    # the ansible-runner artifacts exist (so the grep above looked at something)
    assert list(Path(env["PI_CONFIG_DIR"], "ansible-runs").glob("*/artifacts/*/stdout"))
