"""The local lab end to end: pods, the GPU double, the package index, the hub double, the engine double.

Everything here runs against real test pods over real SSH (see tests/conftest.py for the `lab` fixture).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pi_ansible.lab.gpu_profiles import PROFILES
from pi_ansible.lab.servicectl import lab_service_urls
from pi_ansible.planning import gpu_facts_parse as parse

from ..conftest import LAB_PROFILES, run_pi

pytestmark = pytest.mark.lab
URLS = lab_service_urls()
VENV = "/opt/pi-lab-test/venv"
KEY = "lab-canary-key-3f9a"


def test_pods_answer_ssh_with_their_own_identity(lab):
    for name in LAB_PROFILES:
        out = lab.ssh(name, "hostname; systemctl is-system-running; cat /etc/machine-id").stdout.split()
        assert out[0] == name
        assert out[1] == "running"
    ids = {lab.ssh(n, "cat /etc/machine-id").stdout for n in LAB_PROFILES}
    assert len(ids) == len(LAB_PROFILES), "each pod boots with its own machine id"
    # The ssh string `pi lab up` prints works as it is (that is what users paste into `pi pods setup`).
    ssh = lab.pod("h100x2")["ssh"].split()
    assert subprocess.run([*ssh, "true"], capture_output=True, timeout=30).returncode == 0


def test_pods_have_their_own_files(lab):
    lab.ssh("h100x2", "echo only-here > /root/marker")
    assert lab.ssh("rtx4090", "test -e /root/marker", check=False).returncode == 1


@pytest.mark.parametrize("name", ["h100x2", "rtx4090", "h200x8", "h100-mig"])
def test_nvidia_smi_prints_the_profile_in_real_formats(lab, name):
    profile = PROFILES[name]
    csv = lab.ssh(name, "nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,memory.free "
                        "--format=csv").stdout
    header = csv.splitlines()[0]
    assert header == "index, uuid, name, memory.total [MiB], memory.used [MiB], memory.free [MiB]"
    assert re.search(r", \d+ MiB, \d+ MiB, \d+ MiB$", csv.splitlines()[1])
    fields = ["index", "uuid", "name", "memory.total", "memory.used", "memory.free"]
    raw = lab.ssh(name, f"nvidia-smi --query-gpu={','.join(fields)} --format=csv,noheader,nounits").stdout
    gpus = parse.parse_query_gpu(raw, fields)
    assert [g["uuid"] for g in gpus] == [g["uuid"] for g in profile["gpus"]]
    assert [g["name"] for g in gpus] == [g["name"] for g in profile["gpus"]]
    assert [g["memory_total_mib"] for g in gpus] == [g["memory_total_mib"] for g in profile["gpus"]]
    assert parse.parse_query_gpu(csv) == gpus, "header and units do not change the parsed values"

    table = lab.ssh(name, "nvidia-smi").stdout
    assert parse.parse_header_versions(table) == (profile["driver_version"], profile["cuda_version"])
    assert "No running processes found" in table

    xml = ET.fromstring(lab.ssh(name, "nvidia-smi -q -x").stdout)
    assert xml.findtext("driver_version") == profile["driver_version"]
    assert xml.findtext("cuda_version") == profile["cuda_version"]
    assert len(xml.findall("gpu")) == len(profile["gpus"])

    apps = lab.ssh(name, "nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv").stdout
    assert apps == "pid, gpu_uuid, used_gpu_memory [MiB]\n"
    mig = lab.ssh(name, "nvidia-smi --query-gpu=mig.mode.current --format=csv,noheader").stdout.split()
    assert set(mig) == ({"Enabled"} if name == "h100-mig" else {"Disabled"} if "H" in profile["gpus"][0]["name"] else {"[N/A]"})


@pytest.mark.parametrize(("name", "rc", "first_line"), [
    ("mismatch", 18, "Failed to initialize NVML: Driver/library version mismatch"),
    ("nodevices", 6, "No devices were found"),
])
def test_nvidia_smi_failure_profiles(lab, name, rc, first_line):
    for args in ("", "--query-gpu=index,name --format=csv,noheader"):
        proc = lab.ssh(name, f"nvidia-smi {args}", check=False)
        assert proc.returncode == rc
        assert proc.stdout.splitlines()[0] == first_line
        kind, message = parse.classify_failure(proc.stdout, proc.returncode)
        assert kind != "ok" and message


@pytest.fixture(scope="module")
def pod_venv(lab):
    """uv from the lab index (the wheel's binary, no script piped into a shell), then vllm into a venv."""
    script = f"""
set -e
mkdir -p /opt/pi-lab-test && cd /opt/pi-lab-test
python3 - <<'PY'
import re, urllib.request, zipfile, io, os
index = "{URLS['index']}/uv/"
page = urllib.request.urlopen(index, timeout=10).read().decode()
href = [h for h in re.findall(r'href="([^"]+)"', page) if "manylinux" in h and "x86_64" in h][-1]
data = urllib.request.urlopen(urllib.parse.urljoin(index, href), timeout=60).read()
with zipfile.ZipFile(io.BytesIO(data)) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/uv"))
    open("uv", "wb").write(z.read(name))
os.chmod("uv", 0o755)
PY
./uv --version
./uv venv -q --clear --python /usr/bin/python3 {VENV}
VIRTUAL_ENV={VENV} ./uv pip install -q --index-url {URLS['index']} vllm
"""
    started = time.monotonic()
    lab.ssh("h100x2", "bash -s", input=script, timeout=300)
    return time.monotonic() - started


def test_uv_installs_the_engine_double_from_the_lab_index(lab, pod_venv):
    out = lab.ssh("h100x2", f"{VENV}/bin/vllm --version").stdout.strip()
    assert out.endswith("0.33.0+lab")
    freeze = lab.ssh("h100x2", f"/opt/pi-lab-test/uv pip freeze --python {VENV}/bin/python").stdout
    assert "vllm==0.33.0+lab" in freeze
    assert "huggingface-hub==" in freeze


def test_hf_download_fetches_a_real_config_through_the_hub_double(lab, pod_venv):
    out = lab.ssh("h100x2", f"HF_ENDPOINT={URLS['hub']} HF_HOME=/tmp/hf {VENV}/bin/hf download "
                            "Qwen/Qwen3-0.6B config.json --quiet").stdout.strip().splitlines()[-1]
    config = json.loads(lab.ssh("h100x2", f"cat {out}").stdout)
    local = json.loads((Path(__file__).parents[2] / "pi_ansible/lab/hub_models/Qwen/Qwen3-0.6B/config.json").read_text())
    assert config == local
    assert config["num_hidden_layers"] == 28 and config["num_key_value_heads"] == 8


def _start_engine(lab, pod: str, unit: str, model: str, args: str, env: dict[str, str]) -> None:
    env_lines = "".join(f"{k}={v}\n" for k, v in env.items())
    lab.ssh(pod, f"umask 077; cat > /root/{unit}.env", input=env_lines)
    lab.ssh(pod, f"systemctl reset-failed {unit} 2>/dev/null; systemd-run --unit={unit} "
                 f"-p EnvironmentFile=/root/{unit}.env {VENV}/bin/vllm serve {model} {args}")


def _wait_health(url: str, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url}/health never answered")


def test_engine_double_serves_tool_calls_to_the_openai_sdk(lab, pod_venv):
    import openai

    pod = lab.pod("h100x2")
    _start_engine(lab, "h100x2", "lab-vllm", "Qwen/Qwen3-0.6B",
                  "--host 0.0.0.0 --port 8001 --served-model-name qwen3 --enable-auto-tool-choice "
                  "--tool-call-parser hermes --gpu-memory-utilization 0.5",
                  {"HF_ENDPOINT": URLS["hub"], "HF_HOME": "/tmp/hf", "VLLM_API_KEY": KEY,
                   "CUDA_VISIBLE_DEVICES": "1"})
    try:
        base = f"http://{pod['ip']}:8001"
        _wait_health(base)
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY)
        tools = [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
        reply = client.chat.completions.create(
            model="qwen3", tools=tools,
            messages=[{"role": "user", "content": "Call get_weather for `Paris`."}])
        call = reply.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}

        with pytest.raises(openai.AuthenticationError) as err:
            openai.OpenAI(base_url=f"{base}/v1", api_key="wrong").models.list()
        assert err.value.status_code == 401

        # The engine's memory shows on the GPU it was given, and only there.
        apps = lab.ssh("h100x2", "nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory "
                                 "--format=csv,noheader,nounits").stdout
        rows = parse.parse_compute_apps(apps, ["pid", "gpu_uuid", "used_memory"])
        assert {r["gpu_uuid"] for r in rows} == {PROFILES["h100x2"]["gpus"][1]["uuid"]}
        journal = lab.ssh("h100x2", "journalctl -u lab-vllm --no-pager").stdout
        assert "Application startup complete." in journal
        assert KEY not in journal
    finally:
        lab.ssh("h100x2", "systemctl stop lab-vllm; rm -f /root/lab-vllm.env", check=False)
    assert lab.ssh("h100x2", "nvidia-smi --query-compute-apps=pid --format=csv,noheader").stdout == ""


def test_engine_double_refuses_a_model_too_large_for_its_gpus(lab, pod_venv):
    # Qwen3-235B-A22B in bf16 is ~470 GB of weights: it cannot load on one 80 GB H100.
    proc = lab.ssh("h100x2", f"HF_ENDPOINT={URLS['hub']} HF_HOME=/tmp/hf VLLM_API_KEY={KEY} CUDA_VISIBLE_DEVICES=0 "
                             f"timeout 60 {VENV}/bin/vllm serve Qwen/Qwen3-235B-A22B --port 8002", check=False)
    assert proc.returncode != 0
    assert "Failed to load model - not enough GPU memory" in proc.stdout + proc.stderr


def test_lab_up_twice_is_a_no_op_and_down_leaves_nothing(lab):
    now = json.loads(run_pi("lab", "status", "--json").stdout)  # other tests may have rebooted a pod
    before = {p["name"]: p["init_pid"] for p in now["pods"]}
    started = time.monotonic()
    again = json.loads(run_pi("lab", "up", "--json", *[a for p in LAB_PROFILES for a in ("--profile", p)]).stdout)
    assert time.monotonic() - started < 10
    assert {p["name"]: p["init_pid"] for p in again["pods"]} == before

    status = json.loads(run_pi("lab", "status", "--json").stdout)
    assert all(p["container"] == "running" and p["ssh_port_open"] for p in status["pods"])
    assert status["services"]["index"]["listening"] and status["services"]["hub"]["listening"]

    run_pi("lab", "down")
    assert _leftovers() == {}
    # Bring it back for the tests that come after (the rootfs is cached: this is the warm path).
    from ..conftest import lab_up

    lab.status = lab_up().status


def _leftovers() -> dict:
    found = {}
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    if "pilab-" in netns:
        found["netns"] = netns
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    if "pilab" in links:
        found["links"] = [line for line in links.splitlines() if "pilab" in line]
    mounts = Path("/proc/mounts").read_text()
    if "pilab" in mounts or "pi-ansible/lab/pods" in mounts:
        found["mounts"] = [m for m in mounts.splitlines() if "pilab" in m or "lab/pods" in m]
    for h in ("systemd", "unified"):
        cg = [p.name for p in Path(f"/sys/fs/cgroup/{h}").iterdir() if p.name.startswith("pilab-")]
        if cg:
            found[f"cgroup-{h}"] = cg
    procs = subprocess.run(["pgrep", "-a", "-f", "systemd-nspawn|pi_ansible.lab.services"],
                           capture_output=True, text=True).stdout
    live = [line for line in procs.splitlines() if "pgrep" not in line and not _zombie(int(line.split()[0]))]
    if live:
        found["processes"] = live
    neigh = subprocess.run(["ip", "neigh"], capture_output=True, text=True).stdout
    if "10.77.0." in neigh:
        found["neigh"] = neigh
    return found


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"
    except (OSError, IndexError):
        return True
