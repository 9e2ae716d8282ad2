"""`--mount` translation into ansible.posix.mount plans, and the models path."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pi_ansible.errors import PiError
from pi_ansible.planning.mounts import MountPlan, models_path, parse_mount

GOOD = [
    # DataCrunch-style NFS, as pi's docs show it
    ("mount -t nfs -o nconnect=16 10.0.0.5:/share /mnt/models",
     ("nfs", "10.0.0.5:/share", "/mnt/models", "nfs", "nconnect=16,_netdev,nofail")),
    ("sudo mount -t nfs -o nconnect=16 10.0.0.5:/share /mnt/models",
     ("nfs", "10.0.0.5:/share", "/mnt/models", "nfs", "nconnect=16,_netdev,nofail")),
    ("mount 1.2.3.4:/x /mnt/x", ("nfs", "1.2.3.4:/x", "/mnt/x", "nfs", "_netdev,nofail")),
    ("mount -t nfs4 -o vers=4.1,rsize=1048576,_netdev nfs.example.com:/export/models /data/models",
     ("nfs", "nfs.example.com:/export/models", "/data/models", "nfs4", "vers=4.1,rsize=1048576,_netdev,nofail")),
    ("mount -tnfs -onconnect=8 10.0.0.5:/ /mnt/m", ("nfs", "10.0.0.5:/", "/mnt/m", "nfs", "nconnect=8,_netdev,nofail")),
    ("mount --types=nfs --options=ro 10.0.0.5:/s /mnt/m", ("nfs", "10.0.0.5:/s", "/mnt/m", "nfs", "ro,_netdev,nofail")),
    ("mount --types nfs --options ro,nofail 10.0.0.5:/s /mnt/m",
     ("nfs", "10.0.0.5:/s", "/mnt/m", "nfs", "ro,nofail,_netdev")),
    ("mount [fd00::5]:/share /mnt/m", ("nfs", "[fd00::5]:/share", "/mnt/m", "nfs", "_netdev,nofail")),
    ("mount NFS.Example.com:/share/ /mnt/models/", ("nfs", "nfs.example.com:/share", "/mnt/models", "nfs",
                                                     "_netdev,nofail")),
    ("/usr/bin/mount 10.0.0.5:/s /mnt/m", ("nfs", "10.0.0.5:/s", "/mnt/m", "nfs", "_netdev,nofail")),
    ("mount -o nconnect=16 -t nfs 10.0.0.5:/s '/mnt/models'", ("nfs", "10.0.0.5:/s", "/mnt/models", "nfs",
                                                               "nconnect=16,_netdev,nofail")),
    # RunPod: the network volume is at /workspace already
    ("mount --bind /workspace /mnt/models", ("bind", "/workspace", "/mnt/models", "none", "bind")),
    ("mount -B /workspace/models /mnt/models", ("bind", "/workspace/models", "/mnt/models", "none", "bind")),
    ("sudo mount --bind -o ro /workspace /mnt/models", ("bind", "/workspace", "/mnt/models", "none", "bind,ro")),
    ("mount -o bind /workspace /mnt/models", ("bind", "/workspace", "/mnt/models", "none", "bind")),
    ("mount -o rbind /workspace /mnt/models", ("bind", "/workspace", "/mnt/models", "none", "rbind")),
    ("mount -t none -o bind /workspace /mnt/models", ("bind", "/workspace", "/mnt/models", "none", "bind")),
    # other plain mounts of a device
    ("mount /dev/nvme1n1 /mnt/models", ("command", "/dev/nvme1n1", "/mnt/models", "auto", "defaults")),
    ("mount -t ext4 -o noatime /dev/disk/by-id/nvme-x /mnt/models",
     ("command", "/dev/disk/by-id/nvme-x", "/mnt/models", "ext4", "noatime")),
    ("mount -t xfs UUID=1234-abcd /data", ("command", "UUID=1234-abcd", "/data", "xfs", "defaults")),
    ("mount LABEL=models /srv/models", ("command", "LABEL=models", "/srv/models", "auto", "defaults")),
]

BAD = [
    ("", "it is empty"),
    ("   ", "it is empty"),
    ("sudo", "only `mount` commands"),
    ("mkdir -p /mnt/models && mount 10.0.0.5:/s /mnt/models", "'&'"),
    ("mount 10.0.0.5:/s /mnt/models; reboot", "';'"),
    ("mount 10.0.0.5:/s /mnt/models | tee", "'|'"),
    ("mount $SRC /mnt/models", "'$'"),
    ("mount `cat src` /mnt/models", "'`'"),
    ("mount 10.0.0.5:/s /mnt/models > /dev/null", "'>'"),
    ("mount 10.0.0.5:/s /mnt/models\nreboot", "control character"),
    ("mount 10.0.0.5:/s /mnt/m*", "'*'"),
    ("mount 'unterminated /mnt/m", "quoting is broken"),
    ("ln -s /workspace /mnt/models", "only `mount` commands can be translated, not 'ln'"),
    ("sshfs host:/x /mnt/x", "not 'sshfs'"),
    ("sudo sudo mount 10.0.0.5:/s /mnt/m", "not 'sudo'"),
    ("mount", "expected a source and a target, got 0"),
    ("mount /mnt/models", "got 1"),
    ("mount a:/b /mnt/c /mnt/d", "got 3"),
    ("mount -a", "'-a' is not supported"),
    ("mount --rbind /a /b", "'--rbind' is not supported"),
    ("mount -t", "-t needs a value"),
    ("mount -o", "-o needs a value"),
    ("mount -t nfs -t nfs4 a:/b /mnt/c", "given twice"),
    ("mount -t NFS a:/b /mnt/c", "not a filesystem type"),
    ("mount -o 'ro, noatime' a:/b /mnt/c", "without spaces"),
    ("mount -t cifs -o username=u,password=p //srv/share /mnt/c", "password in the mount options"),
    ("mount -t nfs 10.0.0.5:/s relative/path", "must be an absolute path"),
    ("mount -t nfs 10.0.0.5:/s /mnt/../etc", "must not contain '..'"),
    ("mount -t nfs 10.0.0.5:/s '/mnt/my models'", "no spaces"),
    ("mount -t nfs 10.0.0.5:/s /", "would hide part of the system"),
    ("mount -t nfs 10.0.0.5:/s /etc", "would hide part of the system"),
    ("mount --bind /workspace /usr/", "would hide part of the system"),
    ("mount --bind /workspace /mnt/m/..", "'..'"),
    ("mount --bind workspace /mnt/models", "the bind source 'workspace' must be an absolute path"),
    ("mount --bind /mnt/models /mnt/models", "are the same directory"),
    ("mount --bind -t ext4 /a /mnt/b", "--bind with -t ext4"),
    ("mount -t nfs /dev/sdb /mnt/m", "must be HOST:/EXPORT"),
    ("mount -t nfs host_1:/s /mnt/m", "must be HOST:/EXPORT"),
    ("mount -t nfs :/s /mnt/m", "must be HOST:/EXPORT"),
    ("mount bad..host:/s /mnt/m", "must be HOST:/EXPORT"),
    ("mount 10.0.0.5:share /mnt/m", "the NFS export 'share' must be an absolute path"),
    ("mount -t ext4 10.0.0.5:/s /mnt/m", "is neither HOST:/EXPORT"),
    ("mount -t none /dev/sdb /mnt/m", "-t none does not fit"),
    ("mount -t cifs //srv/share /mnt/m", "is neither HOST:/EXPORT"),
    ("mount /workspace /mnt/models", "is neither HOST:/EXPORT (NFS), nor a directory with --bind"),
    ("mount tmpfs /mnt/models", "is neither"),
]


@pytest.mark.parametrize(("command", "expected"), GOOD)
def test_good(command, expected):
    plan = parse_mount(command)
    _kind, src, path, fstype, opts = expected
    assert (plan.kind, plan.src, plan.path, plan.fstype, plan.opts) == expected
    assert plan.fstab_line == f"{src} {path} {fstype} {opts} 0 0"
    assert len(plan.fstab_line.split()) == 6  # a well-formed fstab line
    assert plan.module_args() == {"src": src, "path": path, "fstype": fstype, "opts": opts, "state": "mounted"}


@pytest.mark.parametrize(("command", "fragment"), BAD)
def test_bad(command, fragment):
    with pytest.raises(PiError) as info:
        parse_mount(command)
    message = str(info.value)
    assert fragment in message
    assert message.startswith("cannot use --mount: ")
    assert "for example: mount -t nfs -o nconnect=16 10.0.0.5:/share /mnt/models" in message


def test_plan_is_frozen():
    plan = parse_mount("mount 1.2.3.4:/x /mnt/x")
    assert isinstance(plan, MountPlan)
    with pytest.raises(AttributeError):
        plan.path = "/elsewhere"  # type: ignore[misc]


# ---- models path ------------------------------------------------------------------------------------------

def test_models_path_is_the_mount_target_by_default():
    assert models_path(parse_mount("mount 1.2.3.4:/x /mnt/x"), None) == "/mnt/x"


def test_models_path_option_wins():
    plan = parse_mount("mount --bind /workspace /mnt/models")
    assert models_path(plan, "/mnt/models/hf") == "/mnt/models/hf"
    assert models_path(None, "/data/models/") == "/data/models"


def test_models_path_required_without_mount():
    with pytest.raises(PiError, match="--models-path is required"):
        models_path(None, None)
    with pytest.raises(PiError, match="--models-path is required"):
        models_path(None, "")


@pytest.mark.parametrize(("option", "fragment"), [
    ("models", "must be an absolute path"), ("/mnt/../etc", "must be an absolute path"),
    ("/mnt/my models", "must be an absolute path"), ("/etc", "is a system directory"), ("/", "is a system directory"),
    ("/mnt/$x", "must be an absolute path"),
])
def test_bad_models_path(option, fragment):
    with pytest.raises(PiError, match=fragment):
        models_path(None, option)


# ---- fuzzing ---------------------------------------------------------------------------------------------

_pieces = st.sampled_from([
    "mount", "sudo", "-t", "nfs", "nfs4", "ext4", "none", "-o", "nconnect=16", "ro,noatime", "bind", "--bind", "-B",
    "--types=nfs", "--options=ro", "10.0.0.5:/share", "[::1]:/x", "host:/", "/mnt/models", "/workspace", "/", "/etc",
    "/dev/sdb", "UUID=ab", "..", "'", '"', ";", "&&", "$x", "\n", " ", "-x", "password=x", ":", "é",
])


def _check(command: str) -> None:
    try:
        plan = parse_mount(command)
    except PiError:
        return
    assert plan.kind in ("nfs", "bind", "command")
    assert plan.path.startswith("/") and ".." not in plan.path.split("/")
    assert len(plan.fstab_line.split()) == 6
    assert parse_mount(f"mount -t {plan.fstype} -o {plan.opts} {plan.src} {plan.path}" if plan.kind != "bind"
                       else f"mount -o {plan.opts} {plan.src} {plan.path}") == plan  # stable when re-parsed


@settings(max_examples=600)
@given(st.text(max_size=120))
def test_fuzz_arbitrary_text_never_tracebacks(text):
    _check(text)


@settings(max_examples=600)
@given(st.lists(_pieces, max_size=9).map(" ".join))
def test_fuzz_token_soup_never_tracebacks(text):
    _check(text)
