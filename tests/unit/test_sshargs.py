"""SSH strings: the forms pi accepts, the ones refused, and the argv/inventory built from them."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pi_ansible.errors import PiError
from pi_ansible.sshargs import SHELL_METACHARS, SshTarget, parse_ssh, suggest_name, validate_name

GOOD = [
    ("ssh root@1.2.3.4", SshTarget("root", "1.2.3.4")),
    ("root@1.2.3.4", SshTarget("root", "1.2.3.4")),  # pi's older ~/.pi_config form
    ("  ssh   root@1.2.3.4  ", SshTarget("root", "1.2.3.4")),
    ("ssh -p 2222 root@1.2.3.4", SshTarget("root", "1.2.3.4", 2222)),
    ("ssh -p2222 root@1.2.3.4", SshTarget("root", "1.2.3.4", 2222)),
    ("ssh -p 022 root@h", SshTarget("root", "h", 22)),  # ssh reads leading zeros as decimal too
    ("ssh -p 65535 root@h", SshTarget("root", "h", 65535)),
    ("ssh -p 1 root@h", SshTarget("root", "h", 1)),
    ("ssh -i ~/.ssh/id_ed25519 root@h", SshTarget("root", "h", None, "~/.ssh/id_ed25519")),
    ("ssh -i/keys/pod.pem ubuntu@h", SshTarget("ubuntu", "h", None, "/keys/pod.pem")),
    ("ssh -o StrictHostKeyChecking=accept-new root@h",
     SshTarget("root", "h", options=(("StrictHostKeyChecking", "accept-new"),))),
    ("ssh -oUserKnownHostsFile=/dev/null root@h",
     SshTarget("root", "h", options=(("UserKnownHostsFile", "/dev/null"),))),
    ("ssh root@h -p 2222", SshTarget("root", "h", 2222)),  # options after the host, as ssh allows
    ("ssh -i k -p 5 -o A=b -o C=d root@h", SshTarget("root", "h", 5, "k", (("A", "b"), ("C", "d")))),
    ("ssh -o ControlPath=~/.ssh/cm-%r@%h:%p root@h",
     SshTarget("root", "h", options=(("ControlPath", "~/.ssh/cm-%r@%h:%p"),))),
    ("ssh -o Ciphers=aes128-ctr,aes256-ctr root@h",
     SshTarget("root", "h", options=(("Ciphers", "aes128-ctr,aes256-ctr"),))),
    ("ssh root@Pod-1.Example.COM", SshTarget("root", "pod-1.example.com")),
    ("ssh root@localhost", SshTarget("root", "localhost")),
    ("ssh root@2001:db8::1", SshTarget("root", "2001:db8::1")),
    ("ssh root@[2001:db8::1]", SshTarget("root", "2001:db8::1")),  # ssh keeps brackets; we drop them
    ("ssh root@2001:DB8:0:0:0:0:0:1", SshTarget("root", "2001:db8::1")),
    ("ssh root@fe80::1%eth0", SshTarget("root", "fe80::1%eth0")),
    ("ssh a.b_c-d@h", SshTarget("a.b_c-d", "h")),
    ("ssh 7@h", SshTarget("7", "h")),
    ("ssh -p 22 root@203.0.113.7", SshTarget("root", "203.0.113.7", 22)),
    ("ssh -p 40123 -i /root/.ssh/runpod root@ssh.runpod.io",
     SshTarget("root", "ssh.runpod.io", 40123, "/root/.ssh/runpod")),
]

BAD = [
    ("", "empty"),
    ("   ", "empty"),
    ("ssh", "destination user@host is missing"),
    ("ssh -p 22", "destination user@host is missing"),
    ("ssh 1.2.3.4", "has no user"),
    ("ssh @1.2.3.4", "is empty"),
    ("ssh root@", "not a valid hostname"),
    ("ssh root@1.2.3.4; rm -rf /", "';'"),
    ("ssh root@h | cat", "'|'"),
    ("ssh root@h && ls", "'&'"),
    ("ssh root@$HOST", "'$'"),
    ("ssh root@`hostname`", "'`'"),
    ("ssh root@h > /tmp/x", "'>'"),
    ("ssh root@h < /tmp/x", "'<'"),
    ("ssh root@h\nls", "control"),
    ("ssh root@h\rls", "control"),
    ("ssh\troot@h", "control"),
    ("ssh root@h\x00", "control"),
    ("ssh root@h\u2028", "control"),
    ("ssh -o 'User root' root@h", "\"'\""),
    ('ssh -o "User root" root@h', "'\"'"),
    ("ssh root@h\\", "'\\\\'"),
    ("ssh root@h*", "'*'"),
    ("ssh root@$(id)", "'$'"),
    ("ssh -L 8000:localhost:8000 root@h", "-L"),
    ("ssh -R 8000:localhost:8000 root@h", "-R"),
    ("ssh -D 1080 root@h", "-D"),
    ("ssh -J jump@bastion root@h", "-J"),
    ("ssh -F /tmp/cfg root@h", "-F"),
    ("ssh -t root@h", "-t"),
    ("ssh -A root@h", "-A"),
    ("ssh --help root@h", "--help"),
    ("ssh - root@h", "'-'"),
    ("ssh -o ProxyCommand=nc root@h", "ProxyCommand is refused"),
    ("ssh -oproxycommand=nc root@h", "proxycommand is refused"),
    ("ssh -o LocalCommand=id root@h", "LocalCommand is refused"),
    ("ssh -o PermitLocalCommand=yes root@h", "PermitLocalCommand is refused"),
    ("ssh -o KnownHostsCommand=x root@h", "KnownHostsCommand is refused"),
    ("ssh -o ProxyJump=b@c root@h", "ProxyJump is refused"),
    ("ssh -o LocalForward=1:h:2 root@h", "LocalForward is refused"),
    ("ssh -o PKCS11Provider=/x.so root@h", "PKCS11Provider is refused"),
    ("ssh -o Include=/etc/x root@h", "Include is refused"),
    ("ssh -o RemoteCommand=id root@h", "RemoteCommand is refused"),
    ("ssh -o Port=22 root@h", "use -p PORT"),
    ("ssh -o IdentityFile=/k root@h", "use -i KEY"),
    ("ssh -o StrictHostKeyChecking root@h", "Key=Value"),
    ("ssh -o A= root@h", "Key=Value"),
    ("ssh -o =b root@h", "not an ssh option name"),
    ("ssh -o 1A=b root@h", "not an ssh option name"),
    ("ssh -o A=b -o a=c root@h", "given twice"),
    ("ssh -o A=[x] root@h", "brackets"),
    ("ssh -o", "-o needs a value"),
    ("ssh -p 0 root@h", "out of range"),
    ("ssh -p 65536 root@h", "out of range"),
    ("ssh -p 99999 root@h", "out of range"),
    ("ssh -p 123456 root@h", "not a number"),
    ("ssh -p abc root@h", "not a number"),
    ("ssh -p -1 root@h", "needs a value"),
    ("ssh -p 2²2 root@h", "not a number"),
    ("ssh -p 1 -p 2 root@h", "-p is given twice"),
    ("ssh -p", "-p needs a value"),
    ("ssh -i root@h", "destination user@host is missing"),  # -i takes root@h as its value
    ("ssh -i -oProxyCommand=x root@h", "needs a value"),
    ("ssh -i a -i b root@h", "-i is given twice"),
    ("ssh -i [k] root@h", "brackets"),
    ("ssh root@h other@h2", "follows the destination"),
    ("ssh root@h ls", "follows the destination"),
    ("ssh -root@h", "not supported"),
    ("ssh root@-h", "not a valid hostname"),
    ("ssh ro ot@h", "follows the destination"),
    ("ssh -user@h", "not supported"),
    ("ssh .root@h", "not a valid user name"),
    ("ssh root@h_1", "not a valid hostname"),
    ("ssh root@h..com", "not a valid hostname"),
    ("ssh root@h.com.", "not a valid hostname"),
    ("ssh root@-a.com", "not a valid hostname"),
    ("ssh root@a-.com", "not a valid hostname"),
    ("ssh root@" + "a" * 64, "not a valid hostname"),
    ("ssh root@" + ".".join(["a" * 60] * 5), "not a valid hostname"),
    ("ssh root@1.2.3", "not a valid hostname"),
    ("ssh root@256.1.1.1", "not a valid hostname"),
    ("ssh root@01.2.3.4", "not a valid hostname"),
    ("ssh root@[1.2.3.4]", "not a valid hostname"),
    ("ssh root@[::1", "not a valid hostname"),
    ("ssh root@1:2:3", "not a valid hostname"),
    ("ssh root@::1%[", "not a valid hostname"),
    ("ssh root@h:22", "write -p 22 root@h"),
    ("ssh ssh://root@h:22", "is a URL"),
    ("ssh root@héllo", "not a valid hostname"),
    ("ssh rööt@h", "not a valid user name"),
    ("ssh root@h\u00a0", "control"),
]


@pytest.mark.parametrize(("text", "expected"), GOOD)
def test_good(text, expected):
    target = parse_ssh(text)
    assert target == expected
    assert parse_ssh(target.display()) == target  # display() is canonical and round-trips


@pytest.mark.parametrize(("text", "fragment"), BAD)
def test_bad(text, fragment):
    with pytest.raises(PiError) as info:
        parse_ssh(text)
    message = str(info.value)
    assert fragment in message
    assert "ssh [-p PORT] [-i KEY] [-o Key=Value]... user@host" in message  # the accepted form
    assert "for example: ssh -p 2222" in message  # and an example


def test_non_string_is_a_pierror():
    with pytest.raises(PiError):
        parse_ssh(None)  # type: ignore[arg-type]


def test_argv_full():
    t = parse_ssh("ssh -p 2222 -i ~/.ssh/k -o StrictHostKeyChecking=accept-new root@10.0.0.1")
    assert t.argv() == ["ssh", "-p", "2222", "-i", "~/.ssh/k", "-o", "StrictHostKeyChecking=accept-new",
                        "--", "root@10.0.0.1"]
    assert t.argv("nvidia-smi -L") == [*t.argv(), "nvidia-smi -L"]
    assert t.argv("echo hi", tty=True)[:2] == ["ssh", "-t"]


def test_argv_minimal_leaves_port_to_ssh_config():
    assert parse_ssh("root@h").argv() == ["ssh", "--", "root@h"]


def test_argv_command_starting_with_dash_is_not_an_option():
    argv = parse_ssh("root@h").argv("-oProxyCommand=x")
    assert argv.index("--") < argv.index("root@h") < argv.index("-oProxyCommand=x")


def test_ansible_vars_full():
    t = parse_ssh("ssh -p 2222 -i /k -o ControlPath=~/.ssh/cm-%r@%h:%p -o Compression=yes root@h")
    v = t.ansible_vars()
    assert v == {
        "ansible_host": "h", "ansible_port": 2222, "ansible_user": "root",
        "ansible_ssh_private_key_file": "/k",
        "ansible_ssh_common_args": "-o 'ControlPath=~/.ssh/cm-%r@%h:%p' -o Compression=yes",
    }
    # Ansible shlex-splits the common args: each -o comes back whole
    assert shlex.split(v["ansible_ssh_common_args"]) == ["-o", "ControlPath=~/.ssh/cm-%r@%h:%p",
                                                         "-o", "Compression=yes"]


def test_ansible_vars_minimal():
    assert parse_ssh("ssh ubuntu@[::1]").ansible_vars() == {"ansible_host": "::1", "ansible_user": "ubuntu"}


def test_display_canonical():
    assert parse_ssh("root@H -oA=b -p022 -i k").display() == "ssh -p 22 -i k -o A=b root@h"


def test_to_record():
    assert parse_ssh("ssh -p 2 -o A=b u@h").to_record() == {
        "user": "u", "host": "h", "port": 2, "identity_file": None, "options": [["A", "b"]]}


def test_target_is_frozen():
    t = parse_ssh("root@h")
    with pytest.raises(AttributeError):
        t.host = "x"  # type: ignore[misc]


# ---- names ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a", "dc1", "h100-x2", "0", "9a", "a" * 63, "qwen3-coder-30b"])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize(("name", "suggestion"), [
    ("", "pod-1"), ("-a", "a"), ("a-", "a"), ("A", "a"), ("My_Pod", "my-pod"), ("qwen2.5", "qwen2-5"),
    ("a b", "a-b"), ("a" * 64, "a" * 63), ("pod\n", "pod"), ("é", "pod-1"), ("--x--", "x"),
    ("a" * 62 + "-b", "a" * 62),
])
def test_invalid_names_suggest_a_fix(name, suggestion):
    with pytest.raises(PiError) as info:
        validate_name(name, "model")
    assert f"invalid model name {name!r}" in str(info.value)
    assert f"for example {suggestion!r}" in str(info.value)
    assert validate_name(suggestion) == suggestion


@given(st.text(max_size=80))
def test_suggest_name_is_always_valid(text):
    assert validate_name(suggest_name(text)) == suggest_name(text)


# ---- fuzzing ---------------------------------------------------------------------------------------------

_pieces = st.sampled_from([
    "ssh", "-p", "-p22", "22", "0", "70000", "-i", "~/.ssh/k", "-o", "-oA=b", "A=b", "ProxyCommand=x",
    "root@h", "root@1.2.3.4", "@h", "root@", "root@[::1]", "root@::1", "-L", "--", "-", ";", "|", "&&",
    "$x", "`id`", "'", '"', "\\", "\n", "\t", " ", "é", "[", "]", "%", "=", "u@h@h", "root@h.", "*",
])


def _check_result(text: str) -> None:
    try:
        target = parse_ssh(text)
    except PiError:
        return
    argv = target.argv("true")
    for element in argv[:-1]:  # the last element is our own command
        assert element and element[0] not in SHELL_METACHARS
        assert not any(ch in SHELL_METACHARS or not ch.isprintable() for ch in element)
    assert argv[argv.index("--") + 1] == target.destination
    assert parse_ssh(target.display()) == target
    shlex.split(target.ansible_vars().get("ansible_ssh_common_args", ""))


@settings(max_examples=600)
@given(st.text(max_size=120))
def test_fuzz_arbitrary_text_never_tracebacks(text):
    _check_result(text)


@settings(max_examples=600)
@given(st.lists(_pieces, max_size=10).map(" ".join))
def test_fuzz_token_soup_never_tracebacks(text):
    _check_result(text)


@settings(max_examples=300)
@given(st.lists(_pieces, max_size=8).map("".join))
def test_fuzz_glued_pieces_never_traceback(text):
    _check_result(text)
