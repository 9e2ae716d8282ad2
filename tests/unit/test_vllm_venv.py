"""plugins/modules/vllm_venv.py: the engine venv's one task, run as Ansible runs a module (its arguments in a JSON
file), with the real uv against the lab's package index serving small wheels."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from ..conftest import REPO
from .test_package_index import _uv, index, make_wheel, uv_env  # noqa: F401  (index is a fixture)

MODULE = REPO / "plugins" / "modules" / "vllm_venv.py"


def load_module():
    spec = importlib.util.spec_from_file_location("vllm_venv", MODULE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_venv_python_is_the_one_given_else_a_recent_system_one_else_uvs_312():
    pick = load_module().pick_python
    assert pick("/opt/py/bin/python3.12", "3.11") == "/opt/py/bin/python3.12"
    assert pick("", "3.11") == pick("", "3.13") == "/usr/bin/python3"
    assert pick("", "3.10") == pick("", "") == pick("", "garbage") == pick("", "2") == "3.12"


@pytest.fixture
def run(tmp_path, index):  # noqa: F811
    uv = _uv()
    if uv is None:
        pytest.skip("uv not found")
    url, wheels = index
    make_wheel(wheels, version="1.0")
    env = uv_env(tmp_path)

    def call(*packages: str, check: bool = False, **args) -> dict:
        params = {"uv": uv, "venv": str(tmp_path / "venv"), "python": sys.executable, "version_of": "pi-lab-tiny",
                  "install_args": ["--index-url", f"{url}/simple", *packages], "_ansible_check_mode": check, **args}
        (tmp_path / "args.json").write_text(json.dumps({"ANSIBLE_MODULE_ARGS": params}))
        proc = subprocess.run([sys.executable, str(MODULE), str(tmp_path / "args.json")], env=env,
                              capture_output=True, text=True, timeout=300)
        return json.loads(proc.stdout)

    call.venv, call.wheels = tmp_path / "venv", wheels
    return call


def test_create_install_then_nothing_to_do_and_check_mode_changes_nothing(run):
    would = run("pi-lab-tiny==1.0", check=True)
    assert would["changed"] and would["created"] and would["version"] == "" and not run.venv.exists()

    first = run("pi-lab-tiny==1.0")
    assert (first["changed"], first["created"], first["installed"], first["version"]) == (True, True, True, "1.0")
    assert first["python"] == sys.executable and "Installed 1 package" in first["stderr"]

    again = run("pi-lab-tiny==1.0")
    assert (again["changed"], again["created"], again["installed"], again["version"]) == (False, False, False, "1.0")
    assert run("pi-lab-tiny==1.0", check=True)["changed"] is False

    make_wheel(run.wheels, version="2.0")
    would = run("pi-lab-tiny==2.0", check=True)
    assert would["changed"] and would["installed"] and not would["created"] and would["version"] == "1.0"
    upgraded = run("pi-lab-tiny==2.0")
    assert upgraded["changed"] and not upgraded["created"] and upgraded["version"] == "2.0"


def test_reinstall_rebuilds_the_venv_from_nothing(run):
    run("pi-lab-tiny==1.0")
    (run.venv / "left-behind").write_text("x")
    rebuilt = run("pi-lab-tiny==1.0", reinstall=True)
    assert rebuilt["changed"] and rebuilt["created"] and rebuilt["version"] == "1.0"
    assert not (run.venv / "left-behind").exists()


def test_failures_say_what_failed_with_uvs_own_words(run, tmp_path):
    missing = run("no-such-package==9")
    assert missing.get("failed") and missing["msg"].startswith(f"uv pip install into {run.venv} failed (rc ")
    assert "no-such-package" in missing["msg"], missing["msg"]
    assert missing["created"], "the venv it made before the install failed is reported"

    other = run("pi-lab-tiny==1.0", version_of="vllm")
    assert other.get("failed") and other["msg"].startswith(f"vllm is not installed in {run.venv}")

    bad_python = run("pi-lab-tiny==1.0", venv=str(tmp_path / "v2"), python=str(tmp_path / "no-python"))
    assert bad_python.get("failed") and bad_python["msg"].startswith("uv venv --python ")
    assert not (tmp_path / "v2" / "bin" / "python").exists()
