"""plugins/action/pi_model_service.py: the module's AnsiballZ payload kept between runs, keyed by its sources."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

from ..conftest import REPO

spec = importlib.util.spec_from_file_location("pi_action_model_service", REPO / "plugins/action/pi_model_service.py")
keep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(keep)
ENTRY = "ansible.legacy.pi_model_service-ZIP_DEFLATED-none"


def test_only_this_modules_whole_entries_are_kept():
    assert keep._ours(ENTRY) and keep._ours("ansible.modules.pi_model_service-ZIP_STORED-coverage")
    assert not keep._ours(ENTRY + ".lock") and not keep._ours(ENTRY + ".123-part")
    assert not keep._ours("ansible.legacy.pi_model_files-ZIP_DEFLATED-none")
    assert not keep._ours("ansible.legacy.pi_model_service_x-ZIP_DEFLATED-none")


def test_entries_are_copied_only_where_missing(tmp_path):
    run, kept = tmp_path / "run", tmp_path / "kept"
    run.mkdir()
    (run / ENTRY).write_bytes(b"built")
    (run / (ENTRY + ".lock")).write_bytes(b"")
    (run / "ansible.legacy.other-ZIP_DEFLATED-none").write_bytes(b"other")
    keep._copy_missing(str(run), str(kept))
    assert sorted(p.name for p in kept.iterdir()) == [ENTRY] and (kept / ENTRY).read_bytes() == b"built"
    (run / ENTRY).write_bytes(b"rebuilt")
    keep._copy_missing(str(run), str(kept))
    assert (kept / ENTRY).read_bytes() == b"built", "an entry is never overwritten: its key names its sources"
    keep._copy_missing(str(tmp_path / "absent"), str(kept))


def test_the_key_follows_every_source_of_the_payload(tmp_path, monkeypatch):
    utils = tmp_path / "module_utils"
    utils.mkdir()
    (utils / "a.py").write_text("A = 1\n")
    module = tmp_path / "pi_model_service.py"
    module.write_text("from ansible.module_utils.a import A\n")
    monkeypatch.setattr(keep.C, "DEFAULT_MODULE_UTILS_PATH", [str(utils)], raising=False)
    first = keep._digest(str(module))
    assert keep._digest(str(module)) == first
    (utils / "a.py").write_text("A = 2\n")
    second = keep._digest(str(module))
    module.write_text("from ansible.module_utils.a import A  # edited\n")
    assert len({first, second, keep._digest(str(module))}) == 3
    monkeypatch.setattr(keep.ansible, "__version__", "9.9.9")
    assert keep._digest(str(module)) not in {first, second}



# -- the lean path: reconcile on the pod without AnsiballZ -------------------------------------------------------

def sources() -> dict:
    return {n: (REPO / "plugins/module_utils" / f"{n}.py").read_text() for n in keep._LEAN_UTILS}


def boot(job: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", "-c", keep._BOOT], input=json.dumps(job), capture_output=True,
                          text=True, timeout=60)


def test_bad_arguments_are_refused_before_anything_runs():
    v = keep.lean_validator(sources()["pi_model_service"])
    bad = v.validate({"name": "x", "port": "eighty", "manifest": {}, "colour": "red"})
    said = "; ".join(bad.error_messages)
    assert "colour" in said and "port" in said and "env, unit" in said.replace("'", "").replace(" and ", ", ")
    good = v.validate({"name": "x", "venv": "~/v"})
    assert not good.error_messages and good.validated_parameters["venv"] == "~/v"
    assert good.validated_parameters["port"] == 8001 and good.validated_parameters["engine_args"] == []


def test_the_pod_side_runner_imports_only_what_it_was_sent_and_prints_reconciles_result():
    params = keep.lean_validator(sources()["pi_model_service"]).validate({"name": "Bad_Name"}).validated_parameters
    proc = boot({"sources": sources(), "params": params, "check_mode": False})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"failed": True, "msg": "model name 'Bad_Name' is not a DNS label"}
    broken = {**sources(), "pi_tool_calls": "raise ImportError('sent module broke')\n"}
    proc = boot({"sources": broken, "params": params, "check_mode": False})
    assert proc.returncode == 1 and "sent module broke" in proc.stderr and proc.stdout == ""
