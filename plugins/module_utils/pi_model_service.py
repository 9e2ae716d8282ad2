"""What a model's service is on a pod, as files and steps: its manifest, env file and unit; the Hub download
with a record of what completed; systemd; waiting for /health. Stdlib only: runs on the pod inside the
`pi_model_files` and `pi_model_service` modules."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from ansible.module_utils.pi_pod_status import _healthy as healthy
from ansible.module_utils.pi_pod_status import unit_name

NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
FILES = ("manifest", "env", "unit")  # write order: the reservation other planners see first, systemd's last
MODES = {"manifest": 0o644, "env": 0o600, "unit": 0o644}
RUN_DIR = "/run/pi-ansible"
WEIGHTS_DIR = "/var/lib/pi-ansible/weights"


def file_paths(etc_dir, name):
    models = os.path.join(etc_dir, "models")
    return {"manifest": os.path.join(models, name + ".json"), "env": os.path.join(models, name + ".env"),
            "unit": f"/etc/systemd/system/{unit_name(name)}"}


RUN_ID = re.compile(r"^[A-Za-z0-9-]{0,32}$")


def download_log_path(name, run_id=""):
    """Where one run's `hf download` output goes (a caller follows it by this name)."""
    return os.path.join(RUN_DIR, f"download-{name}-{run_id}.log" if run_id else f"download-{name}.log")


def _read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def write_atomic(path, data, mode):
    """A temp file beside the target, fsync, chmod, rename: readers see the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".pi-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def wanted_files(manifest, env, unit):
    return {"manifest": (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(),
            "env": env.encode(), "unit": unit.encode()}


def write_files(etc_dir, name, wanted, check_mode=False):
    """Write what differs (content or mode); returns which of manifest, env, unit changed."""
    paths = file_paths(etc_dir, name)
    changed = [k for k in FILES if _read(paths[k]) != wanted[k] or (os.stat(paths[k]).st_mode & 0o777) != MODES[k]]
    if changed and not check_mode:
        os.makedirs(os.path.dirname(paths["manifest"]), mode=0o755, exist_ok=True)
        for k in FILES:
            if k in changed:
                write_atomic(paths[k], wanted[k], MODES[k])
    return changed


def remove_files(etc_dir, name, check_mode=False):
    paths = file_paths(etc_dir, name)
    gone = [k for k in ("unit", "env", "manifest") if os.path.exists(paths[k])]
    if not check_mode:
        for k in gone:
            os.unlink(paths[k])
    return gone


def env_value(env_file, key):
    """One KEY=value line of a model's env file (read here, on the pod: never on a command line)."""
    for line in (_read(env_file) or b"").decode("utf-8", "replace").splitlines():
        if line.startswith(key + "="):
            return line[len(key) + 1:]
    return ""


# --- weights -------------------------------------------------------------------------------------------------

def _repo_dir(hf_home, model):
    return os.path.join(hf_home, "hub", "models--" + model.replace("/", "--"))


def _marker(hf_home, model):
    key = hashlib.sha256(f"{hf_home}\0{model}".encode()).hexdigest()[:12]
    return os.path.join(WEIGHTS_DIR, f"{model.replace('/', '--')}-{key}.json")


def _snapshot_files(hf_home, model):
    """(revision, {relative path: size}) of the snapshot refs/main points at, or (None, {})."""
    repo = _repo_dir(hf_home, model)
    revision = (_read(os.path.join(repo, "refs", "main")) or b"").decode().strip()
    snap = os.path.join(repo, "snapshots", revision)
    if not revision or not os.path.isdir(snap):
        return None, {}
    files = {}
    for root, _dirs, names in os.walk(snap):
        for n in names:
            path = os.path.join(root, n)
            try:
                files[os.path.relpath(path, snap)] = os.stat(path).st_size  # follows the link into blobs/
            except FileNotFoundError:
                return None, {}  # a dangling link: a blob was removed
    return revision, files


def weights_complete(hf_home, model):
    """True when a download of MODEL into HF_HOME finished and every file it left is still there, same size:
    then a start need not ask the Hub again (the download runs whenever this is not certain)."""
    try:
        with open(_marker(hf_home, model)) as fh:
            done = json.load(fh)
    except (OSError, ValueError):
        return False
    revision, files = _snapshot_files(hf_home, model)
    return bool(files) and revision == done.get("revision") and all(
        files.get(rel) == size for rel, size in (done.get("files") or {}).items()) and bool(done.get("files"))


def record_weights(hf_home, model):
    revision, files = _snapshot_files(hf_home, model)
    if revision and files:
        os.makedirs(WEIGHTS_DIR, mode=0o755, exist_ok=True)
        doc = {"model": model, "hf_home": hf_home, "revision": revision, "files": files}
        write_atomic(_marker(hf_home, model), (json.dumps(doc, sort_keys=True) + "\n").encode(), 0o644)


def download(model, venv, hf_home, hf_endpoint, hf_token, log_path, timeout):
    """`hf download MODEL` (resumable), output to LOG_PATH for progress; returns (rc, log tail)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update({"HF_HOME": hf_home, "HF_XET_HIGH_PERFORMANCE": "1"})
    if hf_endpoint:
        env["HF_ENDPOINT"] = hf_endpoint
    if hf_token:
        env["HF_TOKEN"] = hf_token  # in the environment of a root process, not on its command line
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "wb") as log:
        try:
            # its own session: a dropped SSH connection (SIGHUP) does not cut the download short
            rc = subprocess.run([os.path.join(venv, "bin", "hf"), "download", model], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, timeout=timeout,
                                start_new_session=True).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    text = (_read(log_path) or b"").decode("utf-8", "replace")
    with contextlib.suppress(OSError):
        os.unlink(log_path)  # read and returned: nothing of this run stays behind in /run
    if rc == 124:
        text += f"\ndownload did not finish within {timeout} s"
    return rc, text[-20000:]


# --- systemd and the engine ----------------------------------------------------------------------------------

def systemctl(*args):
    return subprocess.run(["systemctl", *args], capture_output=True, text=True)


def unit_state(unit):
    out = systemctl("show", unit, "-p", "ActiveState,SubState,NRestarts,Result,UnitFileState,NeedDaemonReload").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def journal_cursor(unit):
    out = subprocess.run(["journalctl", "-u", unit, "-n", "0", "--show-cursor", "-q", "--no-pager"],
                         capture_output=True, text=True).stdout
    m = re.search(r"cursor: (.*)", out)
    return m.group(1).strip() if m else ""


def journal(unit, cursor):
    argv = ["journalctl", "-u", unit, "-o", "cat", "--no-pager"]
    argv += ["--after-cursor", cursor] if cursor else ["-n", "300"]
    return subprocess.run(argv, capture_output=True, text=True).stdout


def wait_healthy(name, port, timeout, cursor, classify, describe, poll=0.2, first_poll=0.05, first_s=10):
    """None when /health answers 200, else (failure kind, message): a recognised engine failure ends the wait
    at once (restarting will not cure it), an unknown one gets systemd's retries until the unit gives up."""
    unit = unit_name(name)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if healthy(port):
            return None
        state = unit_state(unit)
        exited = state.get("ActiveState") == "failed" or state.get("SubState") in ("auto-restart", "dead", "failed")
        if exited or int(state.get("NRestarts") or 0) > 0:
            log = journal(unit, cursor)
            if classify(log) or state.get("ActiveState") in ("failed", "inactive"):
                return (classify(log) or ("unknown", ""))[0], describe(log, f"model {name} failed to start")
        # often at first (a small model or a warm restart answers within a second), then every POLL
        time.sleep(first_poll if time.monotonic() - started < first_s else poll)
    return "timeout", describe(journal(unit, cursor), f"model {name} did not answer /health within {timeout} s")


def tool_call_probe(served_name):
    """The tool-call check: a request any agentic model answers with one call of get_weather."""
    return {
        "model": served_name,
        "max_tokens": 256,
        "messages": [{"role": "user",
                      "content": "What is the weather in Paris? Call the get_weather tool with `Paris`."}],
        "tools": [{"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "tool_choice": "auto",
    }


def post_json(url, body, api_key, timeout=120):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read().decode("utf-8", "replace")), None
    except urllib.error.HTTPError as exc:
        return None, f"HTTP {exc.code}: {exc.read().decode('utf-8', 'replace')[:500]}"
    except (OSError, ValueError) as exc:
        return None, str(exc)
