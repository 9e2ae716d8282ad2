"""The pod-side helpers of the pi_model_service module: files, and when a download can be skipped."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from pi_ansible import pod_status
from pi_ansible.planning import engine_failures, tool_calls

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def svc():
    # On the pod AnsiballZ (or the action plugin's runner) provides ansible.module_utils.*; here the same files.
    sys.modules.setdefault("ansible.module_utils.pi_pod_status", pod_status)
    sys.modules.setdefault("ansible.module_utils.engine_failures", engine_failures)
    sys.modules.setdefault("ansible.module_utils.pi_tool_calls", tool_calls)
    spec = importlib.util.spec_from_file_location("pi_model_service_utils",
                                                  REPO / "plugins" / "module_utils" / "pi_model_service.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def hub(tmp_path, svc, monkeypatch):
    monkeypatch.setattr(svc, "WEIGHTS_DIR", str(tmp_path / "weights"))
    home = tmp_path / "hf"
    repo = home / "hub" / "models--Org--Tiny"
    rev = "a" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    (repo / "blobs").mkdir()
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True)
    for name, data in (("config.json", b"{}"), ("model.safetensors", b"x" * 100)):
        blob = repo / "blobs" / f"blob-{name}"
        blob.write_bytes(data)
        (snap / name).symlink_to(os.path.relpath(blob, snap))
    return str(home), repo, snap


def test_weights_count_as_complete_only_after_a_recorded_download(svc, hub):
    home, _repo, _snap = hub
    assert not svc.weights_complete(home, "Org/Tiny"), "files on disk alone are not a finished download"
    svc.record_weights(home, "Org/Tiny")
    assert svc.weights_complete(home, "Org/Tiny")
    assert not svc.weights_complete(home, "Org/Other") and not svc.weights_complete(home + "2", "Org/Tiny")


@pytest.mark.parametrize("damage", ["blob_removed", "blob_truncated", "new_revision", "snapshot_gone"])
def test_a_damaged_or_changed_copy_is_downloaded_again(svc, hub, damage):
    home, repo, snap = hub
    svc.record_weights(home, "Org/Tiny")
    if damage == "blob_removed":
        (repo / "blobs" / "blob-model.safetensors").unlink()
    elif damage == "blob_truncated":
        (repo / "blobs" / "blob-model.safetensors").write_bytes(b"x" * 10)
    elif damage == "new_revision":
        (repo / "refs" / "main").write_text("b" * 40)
    else:
        for p in snap.iterdir():
            p.unlink()
        snap.rmdir()
    assert not svc.weights_complete(home, "Org/Tiny")


def test_files_are_written_with_modes_and_only_when_they_differ(svc, tmp_path, monkeypatch):
    unit_dir = tmp_path / "systemd"
    unit_dir.mkdir()
    real = svc.file_paths
    monkeypatch.setattr(svc, "file_paths", lambda etc, name: {**real(etc, name),
                                                              "unit": str(unit_dir / f"pi-model-{name}.service")})
    wanted = svc.wanted_files({"name": "m", "port": 8001}, "VLLM_API_KEY=k\n", "[Unit]\n")
    etc = str(tmp_path / "etc")
    assert svc.write_files(etc, "m", wanted) == ["manifest", "env", "unit"]
    assert svc.write_files(etc, "m", wanted) == []
    paths = svc.file_paths(etc, "m")
    assert oct(os.stat(paths["env"]).st_mode & 0o777) == "0o600"
    assert json.loads(Path(paths["manifest"]).read_text()) == {"name": "m", "port": 8001}
    assert svc.env_value(paths["env"], "VLLM_API_KEY") == "k" and svc.env_value(paths["env"], "HF_TOKEN") == ""
    os.chmod(paths["env"], 0o644)
    assert svc.write_files(etc, "m", wanted) == ["env"], "a loosened mode is put back"
    assert svc.remove_files(etc, "m") == ["unit", "env", "manifest"] and svc.remove_files(etc, "m") == []


def test_each_run_downloads_into_a_log_of_its_own_that_is_gone_once_read(svc, tmp_path, monkeypatch):
    monkeypatch.setattr(svc, "RUN_DIR", str(tmp_path / "run"))
    assert svc.download_log_path("coder") == str(tmp_path / "run" / "download-coder.log")
    log = svc.download_log_path("coder", "0a1b2c3d4e5f6a7b")
    assert log == str(tmp_path / "run" / "download-coder-0a1b2c3d4e5f6a7b.log")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    hf = venv / "bin" / "hf"  # a Hub client that prints progress and fails, as `hf download` does on a 404
    hf.write_text('#!/bin/sh\necho "Fetching 3 files: 33%"\necho "404 Client Error: Not Found for url" >&2\nexit 1\n')
    hf.chmod(0o755)
    rc, text = svc.download("Org/Missing", str(venv), str(tmp_path / "hf"), "", "hf_canary", log, 30)
    assert rc == 1 and "Fetching 3 files" in text and "404 Client Error" in text
    assert not os.path.exists(log), "the log is returned to the caller, not left in /run"
    assert svc.RUN_ID.match("0a1b2c3d4e5f6a7b") and svc.RUN_ID.match("")
    assert not svc.RUN_ID.match("../x") and not svc.RUN_ID.match("a" * 33)
