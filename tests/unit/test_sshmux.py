"""Where pi's SSH master sockets go, and when there is none (sshmux)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pi_ansible.ssh import batch_argv
from pi_ansible.sshargs import parse_ssh
from pi_ansible.sshmux import ANSIBLE_CONTROL_PATH, MAX_DIR_LEN, ansible_env, control_dir, ssh_options


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_the_sockets_live_in_a_private_runtime_directory_named_for_the_config_dir(tmp_path, monkeypatch):
    runtime = Path("/tmp") / f"pmr{os.getpid()}"
    runtime.mkdir(mode=0o700)
    try:
        env = {"XDG_RUNTIME_DIR": str(runtime)}
        monkeypatch.chdir(tmp_path)
        a, b = control_dir(Path("c"), env=env), control_dir(tmp_path / ("b" * 60), env=env)
        assert a == control_dir(tmp_path / "c", env=env), "a relative PI_CONFIG_DIR is made absolute"
        assert a != b and a.parent == b.parent == runtime / f"pi-ssh-{os.getuid()}"
        for cdir in (a, b):
            assert _mode(cdir) == 0o700 and _mode(cdir.parent) == 0o700 and len(str(cdir)) <= MAX_DIR_LEN
        assert not (tmp_path / "c").exists(), "nothing in the config dir: a socket there breaks copying it"
        # the longest socket name ssh makes (path + "." + 16 random characters) still fits sun_path (108 bytes)
        assert len(f"{a}/{'0' * 40}.{'x' * 16}") < 108
        # without a runtime directory, or with one too deep for a socket path: the same under /tmp
        tmp_shared = Path("/tmp") / f"pi-ssh-{os.getuid()}"
        assert control_dir(tmp_path / "c", env={}).parent == tmp_shared
        assert control_dir(tmp_path / "c", env={"XDG_RUNTIME_DIR": str(tmp_path)}).parent == tmp_shared
    finally:
        for d in sorted(runtime.rglob("*"), reverse=True):
            d.rmdir()
        runtime.rmdir()


def test_ansibles_control_path_dir_is_honoured_and_a_long_one_means_no_master(tmp_path):
    given = tmp_path / "cp"
    if len(str(given)) <= MAX_DIR_LEN:
        assert control_dir(tmp_path / "elsewhere", env={"ANSIBLE_SSH_CONTROL_PATH_DIR": str(given)}) == given
    assert control_dir(tmp_path, env={"ANSIBLE_SSH_CONTROL_PATH_DIR": "/tmp/" + "x" * 60}) is None
    assert control_dir(tmp_path, env={"ANSIBLE_SSH_CONTROL_PATH_DIR": "/tmp/100%"}) is None  # ssh would expand %


def test_a_directory_others_can_enter_or_do_not_own_is_not_used(tmp_path):
    runtime = Path("/tmp") / f"pmo{os.getpid()}"
    runtime.mkdir(mode=0o700)
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    try:
        cp = runtime / f"pi-ssh-{os.getuid()}"
        cp.mkdir(mode=0o700)
        cp.chmod(0o777)
        assert control_dir(tmp_path, env=env) is None, "a world-writable socket directory"
        cp.chmod(0o700)
        assert control_dir(tmp_path, env=env).parent == cp
        os.chown(cp, 65534, 65534)
        if os.lstat(cp).st_uid != os.getuid():
            assert control_dir(tmp_path, env=env) is None, "another user's directory"
        os.chown(cp, os.getuid(), os.getgid())
        for d in cp.iterdir():
            d.rmdir()
        cp.rmdir()
        cp.symlink_to(tmp_path)
        assert control_dir(tmp_path, env=env) is None, "a link"
    finally:
        for p in sorted(runtime.rglob("*"), reverse=True):
            p.unlink() if p.is_symlink() or not p.is_dir() else p.rmdir()
        runtime.rmdir()


def test_batch_ssh_calls_use_the_master_unless_the_ssh_string_brings_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("PI_CONFIG_DIR", "/tmp/pi-mux-unit")
    monkeypatch.setenv("ANSIBLE_SSH_CONTROL_PATH_DIR", "/tmp/pi-mux-unit/cp")
    target = parse_ssh("ssh -p 2222 -i /k root@203.0.113.7")
    argv = batch_argv(target, "python3 -")
    assert argv[0] == "ssh" and argv[-3:] == ["--", "root@203.0.113.7", "python3 -"]
    opts = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv[:-3]) if a == "-o")
    assert opts["ControlMaster"] == "auto" and opts["ControlPath"] == "/tmp/pi-mux-unit/cp/%C"
    assert opts["ControlPersist"] == "60s" and opts["BatchMode"] == "yes" and opts["ConnectTimeout"] == "10"
    # options come before the user's own: the first value ssh sees wins, so ours must not hide the user's
    own = parse_ssh("ssh -o ControlPath=~/.ssh/cm-%r@%h:%p root@h")
    assert ssh_options(own, Path("/tmp/pi-mux-unit/cp")) == []
    assert not any("ControlMaster" in a for a in batch_argv(own, "true"))


def test_ansible_shares_the_sockets_unless_the_user_set_a_control_path():
    cdir = Path("/tmp/pi-mux-unit/cp")
    env = ansible_env(cdir, env={})
    assert env == {"ANSIBLE_SSH_CONTROL_PATH_DIR": str(cdir), "ANSIBLE_SSH_CONTROL_PATH": ANSIBLE_CONTROL_PATH}
    # Ansible %-formats the setting with the directory; ssh then expands %C as our own calls do
    assert ANSIBLE_CONTROL_PATH % {"directory": str(cdir)} == f"{cdir}/%C"
    assert ansible_env(cdir, env={"ANSIBLE_SSH_CONTROL_PATH": "/x/%(directory)s"}) == {}
    assert ansible_env(None, env={}) == {}
