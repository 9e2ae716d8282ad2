"""engine_command, parse_memory, parse_context: pi's options mapped right, secrets never in argv."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pi_ansible.catalog import CatalogConfig, load_builtin_catalog
from pi_ansible.errors import PiError
from pi_ansible.planning import vllm_args
from pi_ansible.planning.cmdline import (
    PASSTHROUGH_WARNING,
    engine_command,
    parse_context,
    parse_memory,
    parse_vllm_len,
    passthrough_settings,
    systemd_exec,
)

CATALOG = load_builtin_catalog()
VENV = "/opt/pi-ansible/venv"


def cmd(model="Qwen/Qwen3-Coder-30B-A3B-Instruct", config_index=0, **kw):
    e = CATALOG.get(model)
    args = dict(served_name="coder", port=8001, memory_fraction=None, max_model_len=None, gpus=[0],
                vllm_passthrough=None, venv=VENV) | kw
    return engine_command(e, e.configs[config_index], **args)


# --- parse_memory / parse_context ----------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [("90%", 0.9), ("90", 0.9), ("0.9", 0.9), (" 45 % ", 0.45), ("92.5%", 0.925),
                                           ("1", 1.0), ("100%", 1.0), (0.5, 0.5), (50, 0.5), ("1%", 0.01)])
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-10%", "0", "0%", "150%", "101", "0.001", "1e3", "nan", "inf",
                                  "90%%", True, None, "5 0"])
def test_parse_memory_rejects(text):
    with pytest.raises(PiError, match="--memory"):
        parse_memory(text)


@pytest.mark.parametrize("text,expected", [("4k", 4096), ("8k", 8192), ("16k", 16384), ("32k", 32768), ("64k", 65536),
                                           ("128k", 131072), ("256k", 262144), ("32K", 32768), ("32768", 32768),
                                           ("1m", 1048576), ("1.5k", 1536), (" 2k ", 2048), (4096, 4096)])
def test_parse_context_as_pi_maps_it_and_beyond(text, expected):
    assert parse_context(text) == expected


@pytest.mark.parametrize("text", ["", "k", "-4k", "0", "0k", "1.5", "32kb", "1e9", "99999999999", "17m", "auto",
                                  "nan", "inf", "9" * 400, True])
def test_parse_context_rejects(text):
    with pytest.raises(PiError, match="--context"):
        parse_context(text)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=20), st.integers(), st.floats(), st.none(), st.booleans()))
def test_parsers_never_raise_anything_but_pierror(value):
    for parse in (parse_memory, parse_context):
        try:
            out = parse(value)
        except PiError:
            continue
        assert (0 < out <= 1) if parse is parse_memory else (1 <= out <= 1 << 24)


def test_vllm_len_reads_k_as_vllm_does():
    assert parse_vllm_len("32k") == 32000 and parse_vllm_len("32K") == 32768 and parse_vllm_len("131072") == 131072
    with pytest.raises(PiError):
        parse_vllm_len("9" * 400 + "G")


# --- engine_command ------------------------------------------------------------------------------

def test_base_command_line():
    c = cmd()
    assert c.argv[:9] == [f"{VENV}/bin/vllm", "serve", "Qwen/Qwen3-Coder-30B-A3B-Instruct", "--host", "0.0.0.0",
                          "--port", "8001", "--served-model-name", "coder"]
    assert c.argv[9:] == ["--enable-auto-tool-choice", "--tool-call-parser", "qwen3_coder"]  # pi's args, in order
    assert c.env["CUDA_VISIBLE_DEVICES"] == "0" and c.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert c.env["VLLM_NO_USAGE_STATS"] == "1" and not c.warnings


def test_memory_and_context_become_vllm_flags():
    c = cmd(memory_fraction=0.9, max_model_len=32768)
    assert vllm_args.flag_value(c.argv, "--gpu-memory-utilization") == "0.9"
    assert vllm_args.flag_value(c.argv, "--max-model-len") == "32768"


def test_overriding_a_configs_flag_removes_its_value_too():
    # pi filtered only the flag token and left "0.95" / "32000" behind
    c = cmd("openai/gpt-oss-120b", 0, memory_fraction=0.8)
    assert c.argv.count("--gpu-memory-utilization") == 1 and "0.95" not in c.argv
    assert vllm_args.flag_value(c.argv, "--gpu-memory-utilization") == "0.8"
    e = CATALOG.get("Qwen/Qwen3-Coder-480B-A35B-Instruct")
    c = engine_command(e, e.configs[0], served_name="big", port=8001, memory_fraction=None, max_model_len=65536,
                       gpus=list(range(8)), vllm_passthrough=None, venv=VENV)
    assert "32000" not in c.argv and c.argv.count("--max-model-len") == 1


def test_config_values_stay_when_not_overridden():
    c = cmd("openai/gpt-oss-120b", 0)
    assert vllm_args.flag_value(c.argv, "--gpu-memory-utilization") == "0.95"


def test_multi_gpu_gets_cuda_visible_devices_and_matching_tensor_parallel():
    c = cmd("Qwen/Qwen3-Coder-30B-A3B-Instruct", 1, gpus=[2, 3])
    assert c.env["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert vllm_args.flag_value(c.argv, "--tensor-parallel-size") == "2"
    with pytest.raises(PiError, match="use --gpus 2"):
        cmd("Qwen/Qwen3-Coder-30B-A3B-Instruct", 1, gpus=[0])


def test_a_single_gpu_config_spread_over_gpus_gets_tensor_parallel():
    e = CATALOG.get("Qwen/Qwen3-8B")
    c = engine_command(e, CatalogConfig(2, (), ()), served_name="q", port=8001, memory_fraction=0.9,
                       max_model_len=None, gpus=[0, 1], vllm_passthrough=None, venv=VENV)
    assert vllm_args.flag_value(c.argv, "--tensor-parallel-size") == "2"


def test_data_parallel_config_uses_its_gpus():
    e = CATALOG.get("Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8")
    c = engine_command(e, e.configs[0], served_name="big", port=8001, memory_fraction=None, max_model_len=None,
                       gpus=list(range(8)), vllm_passthrough=None, venv=VENV)
    assert not vllm_args.has_flag(c.argv, "--tensor-parallel-size")
    assert c.env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7" and c.env["VLLM_USE_DEEP_GEMM"] == "1"


def test_entry_parsers_are_applied_and_win_over_config_args():
    c = cmd("openai/gpt-oss-20b")  # pi's config has no parser; the entry's openai parser is added
    assert vllm_args.flag_value(c.argv, "--tool-call-parser") == "openai"
    assert vllm_args.has_flag(c.argv, "--enable-auto-tool-choice")
    e = CATALOG.get("zai-org/GLM-4.5-Air-FP8")
    fixed = type(e)(**{**e.__dict__, "tool_call_parser": "glm47", "reasoning_parser": None})
    c = engine_command(fixed, e.configs[1], served_name="air", port=8001, memory_fraction=None, max_model_len=None,
                       gpus=[0], vllm_passthrough=None, venv=VENV)
    assert vllm_args.flag_value(c.argv, "--tool-call-parser") == "glm47" and c.argv.count("--tool-call-parser") == 1
    assert not vllm_args.has_flag(c.argv, "--reasoning-parser")
    assert c.env["VLLM_ATTENTION_BACKEND"] == "XFORMERS"


def test_trust_remote_code_follows_the_entry():
    assert vllm_args.has_flag(cmd("moonshotai/Kimi-K2-Instruct-0905", gpus=list(range(8))).argv, "--trust-remote-code")
    assert not vllm_args.has_flag(cmd("Qwen/Qwen3-8B").argv, "--trust-remote-code")


def test_every_catalog_config_builds_a_consistent_command():
    for e in CATALOG:
        for c in e.configs:
            out = engine_command(e, c, served_name="m", port=8001, memory_fraction=0.9, max_model_len=4096,
                                 gpus=list(range(c.gpu_count)), vllm_passthrough=None, venv=VENV)
            argv = out.argv
            assert vllm_args.world_size(argv[3:]) == c.gpu_count
            assert len(out.env["CUDA_VISIBLE_DEVICES"].split(",")) == c.gpu_count
            assert argv.count("--gpu-memory-utilization") == 1 and argv.count("--max-model-len") == 1
            assert "--api-key" not in argv and not any("KEY" in k or "TOKEN" in k for k in out.env)
            if e.tool_call_parser:
                assert vllm_args.flag_value(argv, "--tool-call-parser") == e.tool_call_parser


# --- --vllm passthrough --------------------------------------------------------------------------

def test_passthrough_replaces_the_catalog_flags():
    c = cmd(vllm_passthrough=["--tensor-parallel-size", "2", "--max-num-seqs", "8"], gpus=[0, 1])
    assert c.argv[9:] == ["--tensor-parallel-size", "2", "--max-num-seqs", "8"]
    assert c.env["CUDA_VISIBLE_DEVICES"] == "0,1"  # pi set none with --vllm
    assert any("--tool-call-parser qwen3_coder" in w for w in c.warnings)


def test_passthrough_mixed_with_memory_context_or_gpus_warns_as_pi_does():
    for kw in (dict(memory_fraction=0.5), dict(max_model_len=4096), dict(requested_gpu_count=1)):
        c = cmd(vllm_passthrough=["--enforce-eager"], **kw)
        assert PASSTHROUGH_WARNING in c.warnings
        assert not vllm_args.has_flag(c.argv, "--gpu-memory-utilization")
    assert PASSTHROUGH_WARNING not in cmd(vllm_passthrough=["--enforce-eager"]).warnings


@pytest.mark.parametrize("extra,words", [(["--api-key", "sk-1"], ["--api-key", "VLLM_API_KEY"]),
                                         (["--port=9000"], ["--port"]), (["--served_model_name", "x"], ["--served-model-name"]),
                                         (["--max-num-seqs", "8\nExecStartPre=/bin/sh"], ["newline"])])
def test_passthrough_refuses_managed_flags_secrets_and_newlines(extra, words):
    with pytest.raises(PiError) as err:
        cmd(vllm_passthrough=extra)
    for w in words:
        assert w in str(err.value)


def test_passthrough_settings_for_planning():
    s = passthrough_settings(["-tp", "2", "--gpu-memory-utilization=0.5", "--max-model-len", "16k",
                              "--kv-cache-dtype", "fp8"])
    assert (s["gpu_count"], s["memory_fraction"], s["max_model_len"], s["kv_cache_dtype"]) == (2, 0.5, 16000, "fp8")
    with pytest.raises(PiError):
        passthrough_settings(["--gpu-memory-utilization", "lots"])
    with pytest.raises(PiError):
        passthrough_settings(["--tensor-parallel-size", "0"])


# --- inputs that must never reach a command line --------------------------------------------------

@pytest.mark.parametrize("name", ["Coder", "-x", "a;rm -rf /", "a b", "", "x" * 64, "$(id)"])
def test_served_name_must_be_a_dns_label(name):
    with pytest.raises(PiError, match="DNS label"):
        cmd(served_name=name)


@pytest.mark.parametrize("kw", [dict(port=0), dict(port=70000), dict(gpus=[]), dict(gpus=[0, 0]), dict(gpus=[-1]),
                                dict(memory_fraction=1.5), dict(max_model_len=0)])
def test_bad_numbers_are_pierrors(kw):
    with pytest.raises(PiError):
        cmd(**kw)


def test_systemd_exec_escapes_specifiers_and_expansion():
    line = systemd_exec(["/v/bin/vllm", "serve", "a%b", "$HOME", 'say "hi"', "back\\slash"])
    assert line == '"/v/bin/vllm" "serve" "a%%b" "$$HOME" "say \\"hi\\"" "back\\\\slash"'
    with pytest.raises(PiError):
        systemd_exec(["a\nb"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=12), max_size=6))
def test_passthrough_fuzz_never_raises_anything_but_pierror(extra):
    try:
        out = cmd(vllm_passthrough=extra, gpus=[0])
    except PiError:
        return
    assert out.argv[9:] == extra and "--api-key" not in out.argv


# --- flag list helpers ----------------------------------------------------------------------------

def test_flag_forms_vllm_accepts():
    args = ["-tp", "4", "--max_model_len=8192", "--enable-expert-parallel", "--gpu-memory-utilization", "0.8"]
    assert vllm_args.parallelism(args) == (4, 1, 1, True)
    assert vllm_args.flag_value(args, "--max-model-len") == "8192"
    assert vllm_args.remove_flag(args, "--max-model-len") == ["-tp", "4", "--enable-expert-parallel",
                                                              "--gpu-memory-utilization", "0.8"]
    assert vllm_args.remove_flag(args, "--gpu-memory-utilization") == args[:4]
    assert vllm_args.flag_value(["--x", "-1"], "--x") == "-1"  # a negative number is a value
