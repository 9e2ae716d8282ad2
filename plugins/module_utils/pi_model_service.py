"""What a model's service is on a pod, as files and steps: its manifest, env file and unit; the Hub download
with a record of what completed; systemd; waiting for /health; and pi_model_service's whole run (`reconcile`).
Stdlib only: runs on the pod inside the `pi_model_files` and `pi_model_service` modules, and under the
pi_model_service action plugin's lean runner (no AnsibleModule)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from ansible.module_utils.engine_failures import classify, describe
from ansible.module_utils.pi_pod_status import STALE_PLAN, state_digest, take_placement_lock, unit_name
from ansible.module_utils.pi_pod_status import _healthy as healthy
from ansible.module_utils.pi_tool_calls import verdict

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


# --- the module's run -------------------------------------------------------------------------------------------

SPEC = {
    "name": {"type": "str", "required": True},
    "etc_dir": {"type": "path", "default": "/etc/pi-ansible"},
    "manifest": {"type": "dict"},
    "env": {"type": "str", "no_log": True},
    "unit": {"type": "str"},
    "restart": {"type": "bool", "default": False},
    "unlock": {"type": "str", "default": ""},
    "lock_digest": {"type": "str", "default": ""},
    "lock_wait": {"type": "int", "default": 180},
    "model": {"type": "str", "default": ""},
    "download": {"type": "bool", "default": True},
    "download_timeout": {"type": "int", "default": 7200},
    "run_id": {"type": "str", "default": ""},
    "venv": {"type": "path", "default": "/opt/pi-ansible/venv"},
    "hf_home": {"type": "path", "default": "/mnt/models/huggingface"},
    "hf_endpoint": {"type": "str", "default": ""},
    "wait": {"type": "bool", "default": True},
    "port": {"type": "int", "default": 8001},
    "wait_timeout": {"type": "int", "default": 900},
    "verify": {"type": "bool", "default": False},
    "served_name": {"type": "str", "default": ""},
    "engine_args": {"type": "list", "elements": "str", "default": []},
    "api_key": {"type": "str", "default": "", "no_log": True},
}
REQUIRED_TOGETHER = [("manifest", "env", "unit")]


def reconcile(p, check_mode=False):
    """pi_model_service's whole run, from its validated parameters: the module's result (``failed`` set on failure).
    The module calls it under AnsibleModule; its action plugin runs it without (see plugins/action)."""
    try:
        _reconcile(p, check_mode)
    except _Exit as done:
        return done.result
    raise AssertionError("unreachable: _reconcile ends with done() or fail()")


class _Exit(Exception):
    def __init__(self, result):
        super().__init__()
        self.result = result


def _reconcile(p, check_mode):
    if not NAME.match(p["name"]):
        raise _Exit({"failed": True, "msg": f"model name {p['name']!r} is not a DNS label"})
    if not RUN_ID.match(p["run_id"]):
        raise _Exit({"failed": True, "msg": f"run_id {p['run_id']!r} must be up to 32 letters, digits and hyphens"})
    unit = unit_name(p["name"])
    started = time.monotonic()
    result = {"changed_files": [], "downloaded": False, "restarted": False, "enabled": False}

    def done(**kw):
        result.update(kw)
        result["elapsed"] = round(time.monotonic() - started, 2)
        raise _Exit({"changed": bool(result["changed_files"] or result["restarted"] or result["enabled"]), **result})

    def fail(failure, msg, **kw):
        raise _Exit({"failed": True, "msg": msg, "failure": failure, **result,
                     "elapsed": round(time.monotonic() - started, 2), **kw})

    if p["lock_digest"] and not check_mode:
        if not p["unlock"]:
            raise _Exit({"failed": True, "msg": "lock_digest needs unlock: the placement lock to take"})
        if take_placement_lock(p["run_id"] or "ansible-playbook", p["lock_wait"], p["unlock"]) is None:
            fail("locked", f"another start has held the placement lock {p['unlock']} for over {p['lock_wait']} s; "
                           "wait for it, or remove the lock on the pod if no start is running")
        if state_digest(p["etc_dir"]) != p["lock_digest"]:
            shutil.rmtree(p["unlock"], ignore_errors=True)
            fail("stale", f"{STALE_PLAN} (another start ran in between): nothing was written; plan again")
    try:
        if p["manifest"] is not None:
            result["changed_files"] = write_files(p["etc_dir"], p["name"],
                                                  wanted_files(p["manifest"], p["env"], p["unit"]), check_mode)
    finally:
        if p["unlock"] and not check_mode:
            shutil.rmtree(p["unlock"], ignore_errors=True)
    restart = bool(result["changed_files"]) or p["restart"]
    if check_mode:
        state = unit_state(unit)
        result["restarted"] = restart or state.get("ActiveState") != "active"
        done()

    if p["download"] and p["model"] and not weights_complete(p["hf_home"], p["model"]):
        token = env_value(file_paths(p["etc_dir"], p["name"])["env"], "HF_TOKEN")
        rc, log = download(p["model"], p["venv"], p["hf_home"], p["hf_endpoint"], token,
                           download_log_path(p["name"], p["run_id"]), p["download_timeout"])
        result["downloaded"] = True
        if rc != 0:
            fail("download", f"downloading {p['model']} failed (rc {rc})", download_log=log)
        record_weights(p["hf_home"], p["model"])

    cursor = journal_cursor(unit)  # only the engine's new log lines explain a failure of this start
    state = unit_state(unit)
    enable = state.get("UnitFileState") != "enabled"
    if enable:  # symlinks for boot only: the running manager needs no reload for them
        systemctl("enable", "--no-reload", unit)
    if restart and state.get("NeedDaemonReload") == "yes":
        # Only a unit systemd has loaded goes stale; a new one is read from disk when started (a reload is ~0.15 s).
        systemctl("daemon-reload")
    if state.get("ActiveState") == "failed" or state.get("Result", "success") != "success":
        systemctl("reset-failed", unit)  # systemd refuses to start a unit past its restart cap
    if restart or state.get("ActiveState") != "active":
        proc = systemctl("restart", unit)
        if proc.returncode != 0:
            fail("unit", f"systemctl restart {unit} failed: {proc.stderr.strip()}")
        result["restarted"] = True
    result["enabled"] = enable

    if p["wait"]:
        failed = wait_healthy(p["name"], p["port"], p["wait_timeout"], cursor, classify, describe)
        if failed:
            fail(failed[0], failed[1])
        if p["verify"]:
            response, error = post_json(f"http://127.0.0.1:{p['port']}/v1/chat/completions",
                                        tool_call_probe(p["served_name"] or p["name"]), p["api_key"])
            if error:
                fail("verify", f"the tool-call check request to model {p['name']} failed: {error}")
            result["verify_response"] = response
            problem = verdict(response, p["engine_args"])
            if problem:
                fail("tool_calls", problem)
    done()

