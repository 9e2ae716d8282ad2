"""Property-based fuzzing of the parsers behind every command's input: SSH strings, names, sizes, model ids,
--vllm passthrough. Whatever the text, the answer is a value or a PiError (the CLI's one-line error), never
another exception."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from pi_ansible.errors import PiError
from pi_ansible.model_ops import validate_request
from pi_ansible.planning.cmdline import parse_context, parse_memory
from pi_ansible.sshargs import parse_ssh, validate_name

HOSTILE = st.sampled_from([";", "|", "&", "$(", "`", "\n", "\x00", "../", "/", " ", "'", '"', "\\", "%", "-", "--",
                           "k", "32k", "1e309", "nan", "inf", "-0", "0x10", "١٢", "ｋ", "root@", "-p", "-o"])
TEXT = st.one_of(st.text(max_size=60), st.lists(HOSTILE, max_size=12).map("".join))


def only_pierror(fn, *args):
    try:
        return fn(*args)
    except PiError as e:
        assert str(e) and "\n" not in str(e).strip(), "one line"
        return None


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_names_are_valid_dns_labels_or_a_pierror(text):
    name = only_pierror(validate_name, text, "model")
    if name is not None:
        assert name == text and re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", name)


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_ssh_strings_parse_or_a_pierror(text):
    target = only_pierror(parse_ssh, text)
    if target is not None:
        assert not set(target.host) & set(";|&$` \n\x00'\"")


@settings(max_examples=300, deadline=None)
@given(TEXT, TEXT)
def test_sizes_parse_into_range_or_a_pierror(memory, context):
    fraction = only_pierror(parse_memory, memory)
    if fraction is not None:
        assert 0 < fraction <= 1
    tokens = only_pierror(parse_context, context)
    if tokens is not None:
        assert isinstance(tokens, int) and tokens > 0


@settings(max_examples=300, deadline=None)
@given(TEXT, TEXT, st.one_of(st.none(), TEXT), st.one_of(st.none(), TEXT),
       st.one_of(st.none(), st.integers(min_value=-2**70, max_value=2**70)),
       st.one_of(st.none(), st.lists(TEXT, max_size=5)))
def test_a_whole_start_request_is_checked_or_a_pierror(model, name, memory, context, gpus, vllm_args):
    request = only_pierror(validate_request, model, name, memory, context, gpus, vllm_args)
    if request is not None:
        assert "/" in request["model"] and ".." not in request["model"]
        assert gpus is None or 1 <= gpus <= 64
