"""The SSH strings `pi pods setup NAME "SSH"` accepts, parsed once into a target we can trust.

Accepted form (options in any order, each at most once, the leading `ssh` optional):

    [ssh] [-p PORT] [-i KEY] [-o Key=Value]... user@host

`-pPORT`, `-iKEY` and `-oKey=Value` (attached values) work as with OpenSSH.
The TypeScript pi splits the string on spaces with no quote handling, so quotes, and with them
`-o "Key Value"`, are refused: a string pi-ansible accepts means the same thing to pi.
The leading `ssh` is optional because pi's older `~/.pi_config` stored strings without it;
`display()` always writes it back.

Anything a shell would interpret is refused: the string is never given to a shell here, but users paste
it into one, and the TypeScript pi did (`eval`, `ssh -t`).
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass

from .errors import PiError

FORM = "ssh [-p PORT] [-i KEY] [-o Key=Value]... user@host"
EXAMPLE = 'ssh -p 2222 -i ~/.ssh/id_ed25519 root@203.0.113.7'

# Characters a shell treats specially. `~` stays allowed: ssh itself expands it in `-i ~/.ssh/key`.
# Quotes are refused as well, since pi would pass them on literally while a shell would strip them.
SHELL_METACHARS = frozenset(";|&$`<>(){}'\"\\!*?#")

# -o keywords refused (compared case-insensitively, as ssh does):
# they run local commands or load code, open tunnels or forwards, or change what `pi ssh` runs,
# or duplicate a field we keep elsewhere (then the message names the flag to use).
_REFUSED_OPTIONS = {
    "proxycommand": "it runs a local command",
    "localcommand": "it runs a local command",
    "permitlocalcommand": "it enables LocalCommand, which runs a local command",
    "knownhostscommand": "it runs a local command",
    "proxyjump": "jump hosts are not supported",
    "match": "it can run local commands (Match exec)",
    "include": "it reads other config files, which can run commands",
    "pkcs11provider": "it loads a shared library",
    "securitykeyprovider": "it loads a shared library",
    "localforward": "port forwarding is not supported",
    "remoteforward": "port forwarding is not supported",
    "dynamicforward": "port forwarding is not supported",
    "tunnel": "tunnels are not supported",
    "tunneldevice": "tunnels are not supported",
    "remotecommand": "pi chooses the remote command itself",
    "sessiontype": "pi chooses the remote command itself",
    "stdinnull": "pi needs stdin",
    "forkafterauthentication": "pi needs the session in the foreground",
    "controlcommand": "it is not an ssh option pi-ansible knows",
    "hostname": "give the host as user@host",
    "user": "give the user as user@host",
    "port": "use -p PORT",
    "identityfile": "use -i KEY",
}

_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PORT_RE = re.compile(r"[0-9]{1,5}")
_OPTION_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")
_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _bad(what: str) -> PiError:
    return PiError(f"bad SSH string: {what}. Accepted form: {FORM}, for example: {EXAMPLE}")


@dataclass(frozen=True)
class SshTarget:
    user: str
    host: str  # hostname (lowercased), IPv4, or IPv6 without brackets
    port: int | None = None  # None: not given, so ssh's default or ~/.ssh/config decides
    identity_file: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}"

    def _option_args(self) -> list[str]:
        args: list[str] = []
        if self.port is not None:
            args += ["-p", str(self.port)]
        if self.identity_file is not None:
            args += ["-i", self.identity_file]
        for key, value in self.options:
            args += ["-o", f"{key}={value}"]
        return args

    def argv(self, command: str | None = None, *, tty: bool = False) -> list[str]:
        """The argv for `ssh`; `--` ends option parsing so neither host nor command is read as an option.

        The remote side still runs `command` through the user's login shell: that is how ssh works.
        """
        args = ["ssh", *(["-t"] if tty else []), *self._option_args(), "--", self.destination]
        return [*args, command] if command is not None else args

    def ansible_vars(self) -> dict[str, str | int]:
        """Inventory variables for this host; ansible_ssh_common_args is shell-split by Ansible, hence the quoting."""
        out: dict[str, str | int] = {"ansible_host": self.host, "ansible_user": self.user}
        if self.port is not None:
            out["ansible_port"] = self.port
        if self.identity_file is not None:
            out["ansible_ssh_private_key_file"] = self.identity_file
        if self.options:
            out["ansible_ssh_common_args"] = " ".join(
                f"-o {shlex.quote(f'{k}={v}')}" for k, v in self.options)
        return out

    def display(self) -> str:
        """The canonical string: parse_ssh(t.display()) == t."""
        return " ".join(["ssh", *self._option_args(), self.destination])

    def to_record(self) -> dict:
        """The parsed fields as JSON-friendly values (for the local state file)."""
        return {"user": self.user, "host": self.host, "port": self.port,
                "identity_file": self.identity_file, "options": [list(o) for o in self.options]}


def normalize_host(text: str) -> str | None:
    """The host in canonical form, or None when it is not a hostname, IPv4 or IPv6 literal.

    Brackets around IPv6 are accepted and removed: OpenSSH keeps them in `user@[::1]` and then fails to resolve.
    """
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1]
        return _ipv6(inner)
    if ":" in text:
        return _ipv6(text)
    if re.fullmatch(r"[0-9.]+", text):
        # all digits and dots: only a real dotted-quad IPv4 (no leading zeros, no short forms like 10.1)
        try:
            return str(ipaddress.IPv4Address(text))
        except ValueError:
            return None
    if len(text) > 253 or not all(_LABEL_RE.fullmatch(label) for label in text.split(".")):
        return None
    return text.lower()


def _ipv6(text: str) -> str | None:
    # a zone index (fe80::1%eth0) is an interface name: keep it to plain characters
    if not text.isascii() or not re.fullmatch(r"[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?", text):
        return None
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        return None


def _check_chars(text: str) -> None:
    for ch in text:
        if ch in SHELL_METACHARS:
            raise _bad(f"it contains {ch!r}, which a shell would interpret; "
                       "give only the ssh command line, without quotes, pipes, redirections or variables")
        if ch != " " and not ch.isprintable():
            raise _bad(f"it contains the control or non-printing character {ch!r}; put it on one line")


def _port(text: str) -> int:
    if not _PORT_RE.fullmatch(text):
        raise _bad(f"port {text!r} is not a number from 1 to 65535")
    port = int(text)
    if not 1 <= port <= 65535:
        raise _bad(f"port {port} is out of range (1 to 65535)")
    return port


def _option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not value:
        raise _bad(f"-o {text!r} must be Key=Value, for example -o StrictHostKeyChecking=accept-new")
    if not _OPTION_KEY_RE.fullmatch(key):
        raise _bad(f"-o {text!r}: {key!r} is not an ssh option name")
    if "[" in value or "]" in value:
        raise _bad(f"-o {text!r}: brackets are not allowed in option values")
    reason = _REFUSED_OPTIONS.get(key.lower())
    if reason:
        raise _bad(f"-o {key} is refused: {reason}")
    return key, value


def parse_ssh(text: str) -> SshTarget:
    """Parse an SSH string in the form pi accepts, or raise PiError saying what is wrong and what is accepted."""
    if not isinstance(text, str) or not text.strip():
        raise _bad("it is empty")
    _check_chars(text)
    tokens = text.split()
    if tokens[0] == "ssh":
        tokens = tokens[1:]
    port: int | None = None
    identity: str | None = None
    options: list[tuple[str, str]] = []
    seen_keys: set[str] = set()
    destination: str | None = None
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if tok.startswith("-") and len(tok) >= 2 and tok[1] in "pio":
            flag, value = tok[1], tok[2:]
            if not value:
                if i >= len(tokens):
                    raise _bad(f"-{flag} needs a value")
                value = tokens[i]
                i += 1
            if value.startswith("-"):
                raise _bad(f"-{flag} needs a value, not {value!r}")
            if flag == "p":
                if port is not None:
                    raise _bad("-p is given twice")
                port = _port(value)
            elif flag == "i":
                if identity is not None:
                    raise _bad("-i is given twice; pi-ansible uses one key per pod")
                if "[" in value or "]" in value:
                    raise _bad(f"-i {value!r}: brackets are not allowed in the key path")
                identity = value
            else:
                key, val = _option(value)
                if key.lower() in seen_keys:
                    raise _bad(f"-o {key} is given twice")
                seen_keys.add(key.lower())
                options.append((key, val))
        elif tok.startswith("-"):
            raise _bad(f"option {tok!r} is not supported (only -p, -i and -o are; "
                       "-L, -R, -D, -J, -F and the like are refused)")
        elif destination is not None:
            raise _bad(f"{tok!r} follows the destination {destination!r}; "
                       "give exactly one user@host, after the options")
        else:
            destination = tok
    if destination is None:
        raise _bad("the destination user@host is missing")
    if "://" in destination:
        raise _bad(f"{destination!r} is a URL; write the port with -p, for example ssh -p 2222 root@host")
    user, at, host_text = destination.rpartition("@")
    if not at:
        raise _bad(f"{destination!r} has no user: write user@host, for example root@{destination}")
    if not user:
        raise _bad(f"the user before '@' in {destination!r} is empty")
    if not _USER_RE.fullmatch(user):
        raise _bad(f"user {user!r} is not a valid user name (letters, digits, '_', '.', '-')")
    host = normalize_host(host_text)
    if host is None and re.fullmatch(r"[^:]+:[0-9]+", host_text):
        raise _bad(f"{host_text!r}: ssh takes no host:port; write -p {host_text.rpartition(':')[2]} {user}@"
                   f"{host_text.rpartition(':')[0]}")
    if host is None:
        raise _bad(f"host {host_text!r} is not a valid hostname, IPv4 address or IPv6 address")
    return SshTarget(user=user, host=host, port=port, identity_file=identity, options=tuple(options))


def suggest_name(name: str) -> str:
    """A DNS label close to `name`: lowercase, other characters turned into '-', trimmed to 63."""
    fixed = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63].strip("-")
    return fixed or "pod-1"


def validate_name(name: str, what: str = "pod") -> str:
    """Pod and model names become hostnames, unit names and file names, so they must be DNS labels."""
    if isinstance(name, str) and _NAME_RE.fullmatch(name):
        return name
    shown = name if isinstance(name, str) else str(name)
    raise PiError(
        f"invalid {what} name {shown!r}: use lowercase letters, digits and hyphens, 1 to 63 characters, "
        f"not starting or ending with a hyphen; for example {suggest_name(shown)!r}")
