"""The vLLM engine double's pure parts: flags, model facts, memory rules, GPUs, families, policy, wheel.

The double's package is named `vllm`; it is imported here from its source dir and removed from
`sys.modules` again afterwards. Its server is exercised in test_vllm_double_server.py.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from pi_ansible.lab.doubles.build import build_wheel
from tests.helpers.engine import DOUBLE_DIR, QWEN3_0_6B_CONFIG, gpu_profile

REFERENCE_HELP = Path("/work/shared/reference/vllm-0.33.0-serve-help-all.txt")
GiB = 1 << 30


@pytest.fixture(scope="module")
def vd():
    sys.path.insert(0, str(DOUBLE_DIR))
    sys.path.insert(0, str(DOUBLE_DIR / "tools"))
    names = ["args", "model_info", "fit", "gpus", "families", "behaviour", "_serve_flags"]
    try:
        mods = {n: importlib.import_module(f"vllm.{n}") for n in names}
        mods["gen_flags"] = importlib.import_module("gen_flags")
        yield SimpleNamespace(**mods)
    finally:
        for key in [k for k in sys.modules if k == "vllm" or k.startswith("vllm.") or k == "gen_flags"]:
            del sys.modules[key]
        sys.path.remove(str(DOUBLE_DIR))
        sys.path.remove(str(DOUBLE_DIR / "tools"))


def _cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": str(DOUBLE_DIR), **(env or {})}
    return subprocess.run([sys.executable, "-m", "vllm", *argv], capture_output=True, text=True, env=environ,
                          timeout=30)


# -- flags ----------------------------------------------------------------------------------------
@pytest.mark.skipif(not REFERENCE_HELP.exists(), reason="reference help text not available")
def test_flag_table_is_generated_from_the_real_help(vd):
    text = REFERENCE_HELP.read_text()
    generated = vd.gen_flags.render(vd.gen_flags.parse_help(text), text)
    assert (DOUBLE_DIR / "vllm" / "_serve_flags.py").read_text() == generated
    assert len(vd._serve_flags.FLAGS) == 320


def _value_for(spec) -> list[str]:
    if spec["choices"]:
        return [spec["choices"][0]]
    return ["1"]


def test_every_real_flag_is_accepted(vd):
    positives, negatives = ["serve", "Qwen/Qwen3-0.6B"], ["serve", "Qwen/Qwen3-0.6B"]
    for spec in vd._serve_flags.FLAGS:
        if spec["dest"] in ("config", "model"):  # a YAML file; the positional model
            continue
        for i, opt in enumerate(spec["options"]):
            target = positives if i % 2 == 0 else negatives
            target += [opt] if spec["nargs"] == 0 else [opt, *_value_for(spec)]
        negatives += spec["negatives"][:1]
    for argv in (positives, negatives):
        ns = vd.args.parse(argv)
        assert ns.model == "Qwen/Qwen3-0.6B"


@pytest.mark.parametrize(("argv", "dest", "value"), [
    (["--max-model-len", "32k"], "max_model_len", 32000),
    (["--max-model-len", "32K"], "max_model_len", 32768),
    (["--max-model-len", "25.6k"], "max_model_len", 25600),
    (["--max-model-len", "auto"], "max_model_len", -1),
    (["--max-model-len", "-1"], "max_model_len", -1),
    (["--max_model_len", "1024"], "max_model_len", 1024),
    (["--max-model-len=2048"], "max_model_len", 2048),
    (["--max-num-batched-tokens", "8k"], "max_num_batched_tokens", 8000),
    (["--api-key", "a", "b"], "api_key", ["a", "b"]),
    (["--hf-token"], "hf_token", True),
    (["--hf_token", "hf_x"], "hf_token", "hf_x"),
    (["-tp", "2"], "tensor_parallel_size", 2),
    (["--tensor_parallel_size=4"], "tensor_parallel_size", 4),
    (["-pp", "2"], "pipeline_parallel_size", 2),
    (["-dp", "2"], "data_parallel_size", 2),
    (["-ep"], "enable_expert_parallel", True),
    (["--enable-prefix-caching"], "enable_prefix_caching", True),
    (["--no-enable-prefix-caching"], "enable_prefix_caching", False),
    (["--disable-prefix-caching"], "enable_prefix_caching", False),
    (["--no-async-scheduling"], "async_scheduling", False),
    (["--gpu-memory-utilization", "0.5"], "gpu_memory_utilization", 0.5),
    (["--device-memory-utilization", "0.6"], "gpu_memory_utilization", 0.6),
    (["--served-model-name", "a", "b"], "served_model_name", ["a", "b"]),
    (["--default-chat-template-kwargs", '{"enable_thinking": false}'], "default_chat_template_kwargs",
     {"enable_thinking": False}),
    (["--compilation-config.mode", "3"], "compilation_config", '{"mode": 3}'),
    (["-O3"], "optimization_level", "3"),
])
def test_value_forms(vd, argv, dest, value):
    ns = vd.args.parse(["serve", "m", *argv])
    assert getattr(ns, dest) == value


def test_model_option_moves_to_the_front(vd, capsys):
    ns = vd.args.parse(["serve", "-tp", "2", "--model", "org/x", "--port", "9"])
    assert (ns.model, ns.model_tag, ns.tensor_parallel_size, ns.port) == ("org/x", "org/x", 2, 9)
    assert "you should provide the model as a positional argument" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "tail"), [
    (["--swap-space", "4"], "vllm: error: unrecognized arguments: --swap-space 4\n"),
    (["--enable-reasoning"], "vllm: error: unrecognized arguments: --enable-reasoning\n"),
    (["--dtype", "fp4"], "vllm serve: error: argument --dtype: invalid choice: 'fp4' (choose from "),
    (["--max-model-len", "1.5K"], "vllm serve: error: argument --max-model-len: Decimals are not allowed with "
                                  "binary suffixes like K. Did you mean to use 1.5k instead?\n"),
    (["--port", "http"], "vllm serve: error: argument --port: invalid int value: 'http'\n"),
])
def test_bad_flags_fail_like_argparse_in_vllm(vd, capsys, argv, tail):
    with pytest.raises(SystemExit) as exc:
        vd.args.parse(["serve", "m", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: vllm ")
    assert tail in err and err.endswith("\n")


def test_unknown_flag_exits_2_from_the_console(tmp_path):
    proc = _cli("serve", "Qwen/Qwen3-0.6B", "--swap-space", "4")
    assert proc.returncode == 2
    assert proc.stderr.endswith("vllm: error: unrecognized arguments: --swap-space 4\n")
    assert proc.stderr.startswith("usage: vllm [-h] [-v]")


def test_version_and_help():
    assert _cli("--version").stdout == "0.33.0+lab\n"
    plain = _cli("serve", "--help")
    assert plain.returncode == 0 and plain.stdout.startswith("usage: vllm serve [model_tag] [options]")
    one = _cli("serve", "--help=max-model-len").stdout
    assert one.startswith("Arguments matching 'max-model-len':\n  --max-model-len MAX_MODEL_LEN")
    if REFERENCE_HELP.exists():
        assert _cli("serve", "--help=all").stdout == REFERENCE_HELP.read_text()


def test_auto_tool_choice_without_parser_is_the_real_type_error():
    proc = _cli("serve", "m", "--enable-auto-tool-choice")
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == "TypeError: Error: --enable-auto-tool-choice requires --tool-call-parser"
    assert proc.stderr.startswith("Traceback (most recent call last):")


def test_non_default_args_redact_secrets(vd):
    ns = vd.args.parse(["serve", "m", "--api-key", "sk-1", "--hf-token", "hf_2", "--port", "9000"])
    shown = vd.args.redact(vd.args.non_default_args(ns))
    assert shown == {"model_tag": "m", "api_key": "***", "port": 9000, "model": "m", "hf_token": "***"}


# -- model facts ----------------------------------------------------------------------------------
LLAMA_3_1_8B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
                "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
                "num_key_value_heads": 8, "max_position_embeddings": 131072, "vocab_size": 128256,
                "torch_dtype": "bfloat16",
                "rope_scaling": {"factor": 8.0, "rope_type": "llama3", "original_max_position_embeddings": 8192}}
DEEPSEEK_V3 = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": 7168,
               "intermediate_size": 18432, "moe_intermediate_size": 2048, "num_hidden_layers": 61,
               "num_attention_heads": 128, "num_key_value_heads": 128, "kv_lora_rank": 512, "q_lora_rank": 1536,
               "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128, "n_routed_experts": 256,
               "n_shared_experts": 1, "first_k_dense_replace": 3, "max_position_embeddings": 163840,
               "vocab_size": 129280, "torch_dtype": "bfloat16",
               "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}
QWEN3_30B_A3B = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 2048,
                 "intermediate_size": 6144, "moe_intermediate_size": 768, "num_hidden_layers": 48,
                 "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128,
                 "max_position_embeddings": 40960, "vocab_size": 151936, "tie_word_embeddings": False,
                 "dtype": "bfloat16"}


def test_kv_bytes_per_token(vd):
    mi = vd.model_info
    qwen = mi.facts("Qwen/Qwen3-0.6B", QWEN3_0_6B_CONFIG, None)
    assert mi.kv_bytes_per_token(qwen, tp=1, pp=1) == 28 * 2 * 8 * 128 * 2 == 114_688
    llama = mi.facts("meta-llama/Llama-3.1-8B-Instruct", LLAMA_3_1_8B, None)
    assert mi.kv_bytes_per_token(llama, tp=1, pp=1) == 131_072  # vllm-facts §5.2's worked check
    assert mi.kv_bytes_per_token(llama, tp=2, pp=1) == 65_536
    assert mi.kv_bytes_per_token(llama, tp=16, pp=1) == 16_384  # kv heads replicated past 8
    assert mi.kv_bytes_per_token(llama, tp=1, pp=2) == 65_536
    assert mi.kv_bytes_per_token(llama, tp=1, pp=1, kv_cache_dtype="fp8") == 65_536
    ds = mi.facts("deepseek-ai/DeepSeek-V3", DEEPSEEK_V3, None)
    assert ds.mla and mi.kv_bytes_per_token(ds, tp=8, pp=1) == 61 * 576 * 2 == 70_272  # MLA: not split by tp


def test_config_field_rules(vd):
    mi = vd.model_info
    assert mi.head_dim({"hidden_size": 4096, "num_attention_heads": 32}) == 128
    assert mi.head_dim({"hidden_size": 1024, "num_attention_heads": 16, "head_dim": 128}) == 128
    nested = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "torch_dtype": "bfloat16",
              "text_config": {"hidden_size": 2560, "num_hidden_layers": 34, "num_attention_heads": 8,
                              "num_key_value_heads": 4, "head_dim": 256, "max_position_embeddings": 131072}}
    f = mi.facts("google/gemma-3-4b-it", nested, None)
    assert (f.num_layers, f.num_kv_heads, f.head_dim, f.derived_max_len) == (34, 4, 256, 131072)
    assert mi.facts("x", {**QWEN3_0_6B_CONFIG, "torch_dtype": "float32"}, None).dtype == "bfloat16"
    assert mi.facts("x", {**QWEN3_0_6B_CONFIG, "torch_dtype": None, "dtype": "float16"}, None).dtype == "float16"
    assert mi.facts("x", QWEN3_0_6B_CONFIG, None, dtype_arg="half").dtype == "float16"
    assert mi.facts("x", {**QWEN3_0_6B_CONFIG, "num_key_value_heads": None, "multi_query_group_num": 2},
                    None).num_kv_heads == 2


def test_weights_from_index_or_estimate(vd):
    mi = vd.model_info
    qwen = mi.facts("Qwen/Qwen3-0.6B", QWEN3_0_6B_CONFIG, None)
    assert 0.59e9 < qwen.params < 0.61e9 and qwen.weight_source == "estimate"
    indexed = mi.facts("Qwen/Qwen3-0.6B", QWEN3_0_6B_CONFIG, {"metadata": {"total_size": 1_503_300_328}})
    assert (indexed.weight_bytes, indexed.weight_source) == (1_503_300_328, "index")
    moe = mi.facts("Qwen/Qwen3-30B-A3B", QWEN3_30B_A3B, None)
    assert moe.is_moe and 30.0e9 < moe.params < 31.0e9  # every expert is resident
    ds = mi.facts("deepseek-ai/DeepSeek-V3", DEEPSEEK_V3, None)
    assert 640e9 < ds.weight_bytes < 700e9  # ~671B parameters at one byte (fp8)


# -- memory rules ---------------------------------------------------------------------------------
def _devices(vd, count=1, **kw):
    return vd.gpus.cuda_devices(gpu_profile(count, **kw))


def test_free_memory_rule(vd):
    devs = _devices(vd)
    assert vd.fit.requested_bytes(81559, 0.92) == pytest.approx(73.28 * GiB, abs=0.01 * GiB)
    assert vd.fit.check_free(devs, {}, 0.92) is None
    short = vd.fit.check_free(devs, {devs[0].parent_uuid: 40000}, 0.92)
    assert (short.rank, vd.fit.gib(short.free), vd.fit.gib(short.total), vd.fit.gib(short.requested)) == \
        (0, 40.12, 79.65, 73.28)
    assert vd.fit.check_free(devs, {}, 0.995) is not None  # the driver's reserve is not free


def test_kv_plan_and_auto_length(vd):
    f = vd.model_info.facts("Qwen/Qwen3-0.6B", QWEN3_0_6B_CONFIG, None)
    devs = _devices(vd)
    limits = vd.fit.default_limits(81559, None, None)
    ok = vd.fit.plan_kv(devs, f, gmu=0.92, tp=1, pp=1, max_model_len=40960, limits=limits, kv_cache_dtype="auto",
                        enforce_eager=False, kv_cache_memory_bytes=None)
    assert ok.kv_tokens % 16 == 0 and ok.kv_tokens * 114_688 <= ok.available_kv
    short = vd.fit.plan_kv(devs, f, gmu=0.07, tp=1, pp=1, max_model_len=40960, limits=limits, kv_cache_dtype="auto",
                           enforce_eager=False, kv_cache_memory_bytes=None)
    assert isinstance(short, vd.fit.MaxLenTooLarge) and 0 < short.estimated < 40960
    auto = vd.fit.plan_kv(devs, f, gmu=0.07, tp=1, pp=1, max_model_len=-1, limits=limits, kv_cache_dtype="auto",
                          enforce_eager=False, kv_cache_memory_bytes=None)
    assert (auto.max_model_len, auto.auto_reduced_from) == (short.estimated, 40960)
    fixed = vd.fit.plan_kv(devs, f, gmu=0.07, tp=1, pp=1, max_model_len=40960, limits=limits, kv_cache_dtype="auto",
                           enforce_eager=False, kv_cache_memory_bytes=8 * GiB)
    assert fixed.available_kv == 8 * GiB
    none_left = vd.fit.plan_kv(devs, f, gmu=0.02, tp=1, pp=1, max_model_len=4096, limits=limits,
                               kv_cache_dtype="auto", enforce_eager=False, kv_cache_memory_bytes=None)
    assert isinstance(none_left, vd.fit.NoCacheMemory)


def test_weights_oom_rule(vd):
    f = vd.model_info.facts("meta-llama/Llama-3.1-8B-Instruct", LLAMA_3_1_8B, {"metadata": {"total_size": 140 * GiB}})
    devs = _devices(vd, 2)
    assert vd.fit.check_weights(devs[:1], {}, f, 1, 1) is not None
    assert vd.fit.check_weights(devs, {}, f, 2, 1) is None


# -- GPUs -----------------------------------------------------------------------------------------
def test_cuda_visible_devices(vd):
    devs = vd.gpus.cuda_devices(gpu_profile(4))
    vis = vd.gpus.visible
    assert vis(devs, None) == devs
    assert [d.index for d in vis(devs, "2,0")] == [2, 0]
    assert [d.index for d in vis(devs, "1,7,2")] == [1]  # CUDA stops at the first bad entry
    assert vis(devs, "9") == []
    assert [d.index for d in vis(devs, devs[3].uuid[:12])] == [3]  # a unique UUID prefix
    assert vis(devs, "GPU-") == []  # ambiguous


def test_mig_and_failures(vd):
    prof = gpu_profile(1)
    prof["gpus"][0]["mig"] = True
    prof["gpus"][0]["mig_devices"] = [{"uuid": "MIG-aaaa", "profile": "3g.40gb", "memory_total_mib": 40448},
                                      {"uuid": "MIG-bbbb", "profile": "1g.10gb", "memory_total_mib": 9984}]
    devs = vd.gpus.cuda_devices(prof)
    assert [(d.uuid, d.total_mib, d.parent_uuid) for d in devs] == [
        ("MIG-aaaa", 40448, prof["gpus"][0]["uuid"]), ("MIG-bbbb", 9984, prof["gpus"][0]["uuid"])]
    assert [d.uuid for d in vd.gpus.visible(devs, "MIG-bbbb")] == ["MIG-bbbb"]
    for failure in ("no_driver", "mismatch", "no_devices"):
        assert not vd.gpus.driver_works(gpu_profile(1, failure=failure))
    assert not vd.gpus.driver_works(None)
    assert not vd.gpus.driver_works({"failure": None, "gpus": []})


def test_registry_counts_live_processes_only(vd, tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        for pid, mib in ((live.pid, 1000), (dead.pid, 5000)):
            (tmp_path / f"{pid}.json").write_text(json.dumps({"pid": pid, "process_name": "x",
                                                              "gpus": [{"uuid": "GPU-a", "used_mib": mib}]}))
        (tmp_path / "junk.json").write_text("{")
        assert vd.gpus.others_used_mib(os.getpid(), tmp_path) == {"GPU-a": 1000}
        reg = vd.gpus.Registration(4242, tmp_path / "sub")
        assert reg.write({"GPU-a": 10}) is None
        assert json.loads(reg.path.read_text()) == {"pid": 4242, "process_name": "VLLM::EngineCore",
                                                    "gpus": [{"uuid": "GPU-a", "used_mib": 10}]}
        reg.remove()
        assert not reg.path.exists()
    finally:
        live.kill()
        live.wait()


# -- families and the model's behaviour -----------------------------------------------------------
@pytest.mark.parametrize(("model", "config", "fmt", "parser"), [
    ("Qwen/Qwen3-0.6B", QWEN3_0_6B_CONFIG, "hermes", "hermes"),
    ("Qwen/Qwen2.5-7B-Instruct", {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}, "hermes", "hermes"),
    ("Qwen/Qwen3-Coder-30B-A3B-Instruct", QWEN3_30B_A3B, "qwen3_coder", "qwen3_coder"),
    ("zai-org/GLM-4.5-Air", {"model_type": "glm4_moe", "architectures": ["Glm4MoeForCausalLM"]}, "glm45", "glm45"),
    ("openai/gpt-oss-20b", {"model_type": "gpt_oss", "architectures": ["GptOssForCausalLM"]}, "openai", "openai"),
    ("moonshotai/Kimi-K2-Instruct", {"model_type": "kimi_k2", "architectures": ["DeepseekV3ForCausalLM"]},
     "kimi_k2", "kimi_k2"),
    ("deepseek-ai/DeepSeek-V3.1", {"model_type": "deepseek_v3"}, "deepseek_v31", "deepseek_v31"),
    ("meta-llama/Llama-3.1-8B-Instruct", LLAMA_3_1_8B, "llama3_json", "llama3_json"),
])
def test_family_from_config(vd, model, config, fmt, parser):
    fam = vd.families.family_of(model, config)
    assert fam.name == fmt and parser in fam.parsers
    assert parser in vd.families.TOOL_PARSERS


def test_native_tool_call_texts(vd):
    r = vd.families.render_tool_call
    args = {"path": "a.txt"}
    assert r("hermes", "read", args) == '<tool_call>\n{"name": "read", "arguments": {"path": "a.txt"}}\n</tool_call>'
    assert r("qwen3_coder", "read", args) == ("<tool_call>\n<function=read>\n<parameter=path>\na.txt\n</parameter>\n"
                                               "</function>\n</tool_call>")
    assert r("glm45", "read", args) == "<tool_call>read\n<arg_key>path</arg_key>\n<arg_value>a.txt</arg_value>\n</tool_call>"
    assert r("kimi_k2", "read", args).startswith("<|tool_calls_section_begin|><|tool_call_begin|>functions.read:0")
    assert r("llama3_json", "read", args) == '{"name": "read", "parameters": {"path": "a.txt"}}'


TOOLS = [
    {"name": "read", "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}},
    {"name": "list", "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": []}},
    {"name": "grep", "parameters": {"type": "object", "properties": {"pattern": {"type": "string"},
                                                                     "path": {"type": "string"}},
                                    "required": ["pattern", "path"]}},
]


def test_policy_calls_named_tools_in_order_then_answers(vd):
    b = vd.behaviour
    q = "First grep for `TODO`, then read `notes.txt`."
    msgs = [b.Msg("user", q)]
    d1 = b.decide(msgs, TOOLS, "auto", "m")
    assert d1.calls == [("grep", {"pattern": "TODO", "path": "notes.txt"})]
    msgs += [b.Msg("assistant", "", [{"id": "c1", "name": "grep", "arguments": "{}"}]),
             b.Msg("tool", "x.py:1: TODO", tool_call_id="c1")]
    d2 = b.decide(msgs, TOOLS, "auto", "m")
    assert d2.calls == [("read", {"path": "."})]  # quoted strings used up: a path gets "."
    assert b.decide([b.Msg("user", q)], TOOLS, "none", "m").calls == []
    msgs += [b.Msg("assistant", "", [{"id": "c2", "name": "read", "arguments": "{}"}]),
             b.Msg("tool", "y" * 1000, tool_call_id="c2")]
    d3 = b.decide(msgs, TOOLS, "auto", "m")
    assert d3.calls == [] and d3.text == (f"Here is what the tools returned:\n- grep: x.py:1: TODO\n- read: {'y' * 400}")


def test_policy_without_tools_echoes(vd):
    b = vd.behaviour
    d = b.decide([b.Msg("system", "be brief"), b.Msg("user", "What is 2+2?")], [], "auto", "qwen3")
    assert d.text == "You asked: What is 2+2?\nThis is a deterministic answer from the vLLM lab double serving qwen3."
    assert b.decide([b.Msg("user", "hi")], TOOLS, {"type": "function", "function": {"name": "list"}}, "m").calls == \
        [("list", {})]
    assert b.decide([b.Msg("user", "hi")], TOOLS, "required", "m").calls == [("read", {"path": "."})]


def test_shaping_matches_or_leaves_text_in_content(vd):
    b, fams = vd.behaviour, vd.families.FAMILIES
    d = b.Decision("why", None, [("read", {"path": "a"})])
    parsed = b.shape(d, fams["qwen3"], thinking=True, reasoning_separated=True, structured_tools=True)
    assert (parsed.content, parsed.calls, parsed.reasoning, parsed.finish_reason) == \
        (None, [("read", {"path": "a"})], "why", "tool_calls")
    raw = b.shape(d, fams["qwen3"], thinking=True, reasoning_separated=False, structured_tools=False)
    assert raw.calls == [] and raw.reasoning is None
    assert raw.content == '<think>\nwhy\n</think>\n\n<tool_call>\n{"name": "read", "arguments": {"path": "a"}}\n</tool_call>'


# -- the wheel ------------------------------------------------------------------------------------
def test_wheel_is_deterministic_and_well_formed(tmp_path):
    one = build_wheel(tmp_path / "a")
    two = build_wheel(tmp_path / "b")
    assert one.name == "vllm-0.33.0+lab-py3-none-any.whl"
    assert one.read_bytes() == two.read_bytes()
    with zipfile.ZipFile(one) as zf:
        names = zf.namelist()
        assert "vllm/__main__.py" in names and "vllm/_serve_flags.py" in names
        assert not any("__pycache__" in n for n in names)
        meta = zf.read("vllm-0.33.0+lab.dist-info/METADATA").decode()
        assert "Name: vllm\nVersion: 0.33.0+lab\n" in meta
        assert "Requires-Python: >=3.11\nRequires-Dist: huggingface_hub>=1.0\n" in meta
        assert "LAB DOUBLE" in meta
        assert zf.read("vllm-0.33.0+lab.dist-info/entry_points.txt") == b"[console_scripts]\nvllm = vllm.cli:main\n"
        rows = zf.read("vllm-0.33.0+lab.dist-info/RECORD").decode().splitlines()
        assert len(rows) == len(names)
        for row in rows:
            path, digest, size = row.rsplit(",", 2)
            if path.endswith("RECORD"):
                assert (digest, size) == ("", "")
                continue
            data = zf.read(path)
            want = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert (digest, int(size)) == (want, len(data))


def _uv() -> str | None:
    local = Path(sys.executable).with_name("uv")
    return str(local) if local.exists() else shutil.which("uv")


@pytest.mark.skipif(_uv() is None, reason="uv not installed")
def test_wheel_installs_with_uv_and_runs(tmp_path):
    uv = _uv()
    wheel = build_wheel(tmp_path / "dist")
    venv = tmp_path / "venv"
    env = {**os.environ, "UV_NO_CONFIG": "1", "UV_CACHE_DIR": str(tmp_path / "uv-cache")}
    subprocess.run([uv, "venv", "-q", str(venv), "--python", sys.executable], check=True, env=env, timeout=60)
    subprocess.run([uv, "pip", "install", "-q", "--offline", "--no-deps", "--python", str(venv / "bin" / "python"),
                    "--find-links", str(wheel.parent), "vllm==0.33.0+lab"], check=True, env=env, timeout=60)
    out = subprocess.run([str(venv / "bin" / "vllm"), "--version"], capture_output=True, text=True, timeout=30)
    assert out.stdout == "0.33.0+lab\n"
    bad = subprocess.run([str(venv / "bin" / "vllm"), "serve", "m", "--swap-space", "4"], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2 and "unrecognized arguments: --swap-space 4" in bad.stderr


def test_config_file(vd, tmp_path):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("port: 9001\ntensor_parallel_size: 2\nenable_auto_tool_choice: true\ntool_call_parser: hermes\n")
    ns = vd.args.parse(["serve", "org/m", "--config", str(cfg)])
    assert (ns.model, ns.port, ns.tensor_parallel_size, ns.enable_auto_tool_choice, ns.tool_call_parser) == \
        ("org/m", 9001, 2, True, "hermes")
