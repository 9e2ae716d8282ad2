"""`--mount "CMD"` (pi's form: a whole `mount` command) translated into a plan for `ansible.posix.mount`.

The TypeScript pi ran the string with `eval` after the install and never wrote fstab, so the mount was lost
on reboot. Here the command is parsed instead of run, and every accepted form becomes an fstab entry:
- nfs:     `[sudo] mount [-t nfs|nfs4] [-o OPTS] HOST:/EXPORT /PATH`
- bind:    `[sudo] mount --bind|-B [-o OPTS] /SRC /PATH` (RunPod's network volume at /workspace, for example)
- command: `[sudo] mount [-t TYPE] [-o OPTS] /dev/... /PATH`, any other plain mount of a device or label
Anything else (other commands, `&&`, pipes, variables, loops) is refused.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass

from ..errors import PiError
from ..sshargs import normalize_host

FORM = "[sudo] mount [-t TYPE] [-o OPTIONS] [--bind] SOURCE /TARGET"
EXAMPLE = "mount -t nfs -o nconnect=16 10.0.0.5:/share /mnt/models"

_METACHARS = frozenset(";|&$`<>(){}\\!*?#")
_OPTS_RE = re.compile(r"[A-Za-z0-9_.,=:/@+-]+")
_FSTYPE_RE = re.compile(r"[a-z0-9][a-z0-9._+-]{0,31}")
_PATH_RE = re.compile(r"/[A-Za-z0-9_.,@+:=/-]*")
_DEVICE_RE = re.compile(r"(?:/dev/[A-Za-z0-9_./:-]+|(?:LABEL|UUID|PARTUUID|PARTLABEL)=[A-Za-z0-9_.-]+)")
# Mounting over these would hide the system itself.
_PROTECTED = {"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root",
              "/run", "/sbin", "/sys", "/tmp", "/usr", "/var"}
# Secrets in mount options would land in /etc/fstab (world-readable) and in ps output.
_SECRET_OPTS = ("password=", "pass=", "passwd=", "secret=")


@dataclass(frozen=True)
class MountPlan:
    kind: str  # "nfs", "bind" or "command" (another plain mount)
    src: str
    path: str
    fstype: str
    opts: str
    fstab_line: str

    def module_args(self) -> dict[str, str]:
        """Arguments for ansible.posix.mount: mounted now and recorded in /etc/fstab for reboots."""
        return {"src": self.src, "path": self.path, "fstype": self.fstype, "opts": self.opts, "state": "mounted"}


def _bad(what: str) -> PiError:
    return PiError(f"cannot use --mount: {what}. Accepted form: {FORM}, for example: {EXAMPLE}")


def _abs_path(text: str, what: str) -> str:
    if not _PATH_RE.fullmatch(text):
        raise _bad(f"{what} {text!r} must be an absolute path of plain characters (no spaces)")
    norm = posixpath.normpath(text)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    if any(part == ".." for part in text.split("/")):
        raise _bad(f"{what} {text!r} must not contain '..'")
    return norm


def _tokens(command: str) -> list[str]:
    if not isinstance(command, str) or not command.strip():
        raise _bad("it is empty")
    for ch in command:
        if ch in _METACHARS:
            raise _bad(f"it contains {ch!r}; give a single mount command (pi-ansible creates the directory itself)")
        if ch != " " and not ch.isprintable():
            raise _bad(f"it contains the control character {ch!r}; put it on one line")
    try:
        return shlex.split(command)
    except ValueError as exc:
        raise _bad(f"its quoting is broken ({exc})") from exc


def parse_mount(command: str) -> MountPlan:
    """Translate pi's `--mount` command, or raise PiError saying what is accepted."""
    tokens = _tokens(command)
    if tokens and tokens[0] == "sudo":
        tokens = tokens[1:]  # Ansible becomes root itself
    if not tokens or tokens[0] not in ("mount", "/bin/mount", "/usr/bin/mount"):
        shown = tokens[0] if tokens else "sudo"
        raise _bad(f"only `mount` commands can be translated, not {shown!r}")
    fstype = None
    opts: list[str] = []
    bind = False
    positional: list[str] = []
    args = iter(tokens[1:])
    for tok in args:
        value = None
        if tok in ("-t", "--types", "-o", "--options"):
            value = next(args, None)
            if value is None:
                raise _bad(f"{tok} needs a value")
            key = tok
        elif tok.startswith(("--types=", "--options=")):
            key, _, value = tok.partition("=")
        elif tok.startswith(("-t", "-o")) and len(tok) > 2:
            key, value = tok[:2], tok[2:]
        elif tok in ("--bind", "-B"):
            bind = True
            continue
        elif tok.startswith("-"):
            raise _bad(f"mount option {tok!r} is not supported (only -t, -o and --bind are)")
        else:
            positional.append(tok)
            continue
        if key in ("-t", "--types"):
            if fstype is not None:
                raise _bad("the filesystem type is given twice")
            if not _FSTYPE_RE.fullmatch(value):
                raise _bad(f"{value!r} is not a filesystem type")
            fstype = value
        else:
            if not _OPTS_RE.fullmatch(value):
                raise _bad(f"mount options {value!r} must be comma-separated words, without spaces")
            opts += [o for o in value.split(",") if o]
    if len(positional) != 2:
        raise _bad(f"expected a source and a target, got {len(positional)} argument(s)")
    if any(o.lower().startswith(_SECRET_OPTS) for o in opts):
        raise _bad("a password in the mount options would be stored in /etc/fstab; "
                   "use a credentials file option instead (for CIFS: credentials=/root/.smbcredentials)")
    src, target = positional
    path = _abs_path(target, "the target")
    if path in _PROTECTED:
        raise _bad(f"mounting over {path} would hide part of the system; use a directory like /mnt/models")

    if bind or "bind" in opts or "rbind" in opts:
        if fstype not in (None, "none"):
            raise _bad(f"--bind with -t {fstype} makes no sense; drop -t")
        src = _abs_path(src, "the bind source")
        if src == path:
            raise _bad("the bind source and target are the same directory")
        if "bind" not in opts and "rbind" not in opts:
            opts.insert(0, "bind")
        return _plan("bind", src, path, "none", opts)

    if fstype in ("nfs", "nfs4") or (fstype is None and ":" in src and not src.startswith("/")):
        host, sep, export = src.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not sep or normalize_host(host) is None:
            raise _bad(f"NFS source {src!r} must be HOST:/EXPORT, for example 10.0.0.5:/share")
        export = _abs_path(export, "the NFS export")
        host = normalize_host(host)
        # no unreachable server may stall the boot (and with it SSH); model units wait for the mount instead
        for extra in ("_netdev", "nofail"):
            if extra not in opts:
                opts.append(extra)
        shown_host = f"[{host}]" if ":" in host else host
        return _plan("nfs", f"{shown_host}:{export}", path, fstype or "nfs", opts)

    if fstype in ("nfs", "nfs4", "none"):
        raise _bad(f"-t {fstype} does not fit source {src!r}")
    if not _DEVICE_RE.fullmatch(src):
        raise _bad(f"source {src!r} is neither HOST:/EXPORT (NFS), nor a directory with --bind, "
                   "nor a device (/dev/..., LABEL=..., UUID=...)")
    return _plan("command", src, path, fstype or "auto", opts)


def _plan(kind: str, src: str, path: str, fstype: str, opts: list[str]) -> MountPlan:
    joined = ",".join(opts) or "defaults"
    return MountPlan(kind=kind, src=src, path=path, fstype=fstype, opts=joined,
                     fstab_line=f"{src} {path} {fstype} {joined} 0 0")


def models_path(mount_plan: MountPlan | None, models_path_option: str | None) -> str:
    """Where models live: --models-path when given, else the mount target (as pi did)."""
    if models_path_option:
        return _abs_path_option(models_path_option)
    if mount_plan is not None:
        return mount_plan.path
    raise PiError("--models-path is required (or give --mount, whose target becomes the models path); "
                  "for example --models-path /mnt/models")


def _abs_path_option(text: str) -> str:
    try:
        path = _abs_path(text, "--models-path")
    except PiError as exc:
        raise PiError(f"--models-path {text!r} must be an absolute path of plain characters without '..', "
                      "for example /mnt/models") from exc
    if path in _PROTECTED:
        raise PiError(f"--models-path {path} is a system directory; use one like /mnt/models or /workspace/models")
    return path
