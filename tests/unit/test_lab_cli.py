"""The lab's CLI checks that need no pods."""

from __future__ import annotations

import os

from click.testing import CliRunner

from pi_ansible.cli import cli


def test_lab_needs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("PI_LAB_DIR", str(tmp_path / "lab"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = CliRunner().invoke(cli, ["lab", "up"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: pi lab needs root")
    assert not (tmp_path / "lab").exists(), "nothing is created before the check"
