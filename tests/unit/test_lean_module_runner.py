"""plugins/action/pi_model_service.py: the start module's code run on the pod without AnsiballZ."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

from ..conftest import REPO

spec = importlib.util.spec_from_file_location("pi_action_model_service", REPO / "plugins/action/pi_model_service.py")
lean = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lean)


def sources() -> dict:
    return {n: (REPO / "plugins/module_utils" / f"{n}.py").read_text() for n in lean._LEAN_UTILS}


def boot(job: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", "-c", lean._BOOT], input=json.dumps(job), capture_output=True,
                          text=True, timeout=60)


def test_bad_arguments_are_refused_before_anything_runs():
    v = lean.lean_validator(sources()["pi_model_service"])
    bad = v.validate({"name": "x", "port": "eighty", "manifest": {}, "colour": "red"})
    said = "; ".join(bad.error_messages)
    assert "colour" in said and "port" in said and "env, unit" in said.replace("'", "").replace(" and ", ", ")
    good = v.validate({"name": "x", "venv": "~/v"})
    assert not good.error_messages and good.validated_parameters["venv"] == "~/v"
    assert good.validated_parameters["port"] == 8001 and good.validated_parameters["engine_args"] == []


def test_the_pod_side_runner_imports_only_what_it_was_sent_and_prints_reconciles_result():
    params = lean.lean_validator(sources()["pi_model_service"]).validate({"name": "Bad_Name"}).validated_parameters
    proc = boot({"sources": sources(), "params": params, "check_mode": False})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"failed": True, "msg": "model name 'Bad_Name' is not a DNS label"}
    broken = {**sources(), "pi_tool_calls": "raise ImportError('sent module broke')\n"}
    proc = boot({"sources": broken, "params": params, "check_mode": False})
    assert proc.returncode == 1 and "sent module broke" in proc.stderr and proc.stdout == ""
