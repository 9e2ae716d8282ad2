"""The vLLM engine double as a process: start-up and its failures, the HTTP API through the real
openai SDK, tool-call parser fidelity, the GPU process registry, signals, secrets.

Servers listen on 127.0.0.1 only; every process started here is stopped here.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from tests.helpers.engine import (
    QWEN3_0_6B_CONFIG,
    gpu_profile,
    run_engine_double,
    running_engine_double,
    start_engine_double,
)

TOOL_ARGS = ["--enable-auto-tool-choice", "--tool-call-parser", "hermes", "--reasoning-parser", "qwen3"]
SERVED = ["qwen3", "qwen3-alias"]
TOOLS = [
    {"type": "function", "function": {"name": "read", "description": "Read a file", "parameters": {
        "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}},
    {"type": "function", "function": {"name": "list", "description": "List a directory", "parameters": {
        "type": "object", "properties": {"path": {"type": "string"}}, "required": []}}},
]
ASK = "Use list to see the files, then read `notes.txt` and tell me the codeword."


def _get(url: str, key: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _error_line(log: str) -> str:
    """The last exception line of a log (`SomeError: …`), without the process prefix."""
    lines = [re.sub(r"^\([A-Za-z_0-9]+ pid=\d+\) ", "", ln) for ln in log.splitlines()]
    return next(ln for ln in reversed(lines) if re.match(r"^[\w.]+(Error|Exception|Interrupt): ", ln))


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    args = [*TOOL_ARGS, "--served-model-name", *SERVED]
    with running_engine_double(tmp_path_factory.mktemp("engine"), args=args) as eng:
        yield eng


@pytest.fixture(scope="module")
def client(engine):
    return engine.client()


# -- start-up and the log -------------------------------------------------------------------------
def test_startup_log_has_the_real_sequence(engine):
    log = engine.log_text()
    order = ["version 0.33.0+lab", "non-default args:", "Resolved architecture: Qwen3ForCausalLM",
             "Using max model len 40960", "Loading weights took", "Model loading took 1.11 GiB memory",
             "Available KV cache memory:", "GPU KV cache size:", "init engine (profile, create kv cache, warmup model)",
             "Supported tasks: ['generate']", '"auto" tool choice has been enabled.', "Starting vLLM server on http://127.0.0.1:",
             "Route: /v1/chat/completions, Methods: POST", "INFO:     Started server process",
             "INFO:     Waiting for application startup.", "INFO:     Application startup complete."]
    positions = [log.index(s) for s in order]
    assert positions == sorted(positions)
    pid = engine.proc.pid
    assert re.search(rf"^\(APIServer pid={pid}\) INFO \d\d-\d\d \d\d:\d\d:\d\d \[model\.py:\d+\] Resolved", log, re.M)
    assert re.search(rf"^\(EngineCore pid={pid}\) INFO .* \[kv_cache_utils\.py:\d+\] GPU KV cache size: [\d,]+ tokens, "
                     r"Maximum concurrency for 40,960 tokens per request: [\d.]+x$", log, re.M)
    assert engine.api_key not in log


def test_gpu_registry_entry_while_serving(engine):
    (entry,) = list(engine.state_dir.glob("*.json"))
    doc = json.loads(entry.read_text())
    profile = json.loads(engine.profile_path.read_text())
    assert entry.name == f"{engine.proc.pid}.json"
    assert doc["pid"] == engine.proc.pid and doc["process_name"] == "VLLM::EngineCore"
    assert doc["gpus"] == [{"uuid": profile["gpus"][0]["uuid"], "used_mib": 75035}]  # ceil(81559 × 0.92)


# -- auth and plain endpoints ---------------------------------------------------------------------
def test_api_key_guards_v1_only(engine):
    assert _get(engine.base_url + "/models") == (401, b'{"error":"Unauthorized"}')
    assert _get(engine.base_url + "/models", "wrong")[0] == 401
    assert _get(engine.base_url + "/models", engine.api_key)[0] == 200
    assert _get(engine.root_url + "/health") == (200, b"")
    assert _get(engine.root_url + "/ping") == (200, b"")
    assert _get(engine.root_url + "/version") == (200, b'{"version":"0.33.0+lab"}')
    assert _get(engine.root_url + "/metrics")[0] == 200
    assert _get(engine.root_url + "/nothing-here") == (404, b'{"detail":"Not Found"}')
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=engine.base_url, api_key="sk-wrong", max_retries=0).models.list()


def test_models_shape(client, engine):
    models = client.models.list().data
    assert [m.id for m in models] == SERVED
    raw = json.loads(_get(engine.base_url + "/models", engine.api_key)[1])
    card = raw["data"][0]
    assert card["root"] == "Qwen/Qwen3-0.6B" and card["max_model_len"] == 40960 and card["owned_by"] == "vllm"
    assert card["permission"][0]["object"] == "model_permission"
    assert card["permission"][0]["id"].startswith("modelperm-")


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError, match=re.escape("The model `gpt-4o` does not exist.")):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])


# -- chat -----------------------------------------------------------------------------------------
def test_chat_plain_answer_with_reasoning(client):
    r = client.chat.completions.create(model="qwen3-alias", messages=[{"role": "user", "content": "Why is the sky blue?"}])
    msg = r.choices[0].message
    assert msg.content == ("You asked: Why is the sky blue?\n"
                           "This is a deterministic answer from the vLLM lab double serving qwen3.")
    assert "Why is the sky blue?" in msg.reasoning
    assert r.model == "qwen3-alias" and r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0
    off = client.chat.completions.create(model="qwen3", messages=[{"role": "user", "content": "hi"}],
                                         extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert off.choices[0].message.reasoning is None


def test_chat_stream_with_usage(client):
    stream = client.chat.completions.create(model="qwen3", messages=[{"role": "user", "content": "Count to three"}],
                                            stream=True, stream_options={"include_usage": True})
    content, reasoning, finish, usage = "", "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            content += ch.delta.content or ""
            reasoning += getattr(ch.delta, "reasoning", None) or ""
            finish = ch.finish_reason or finish
    assert content.startswith("You asked: Count to three\n") and reasoning and finish == "stop"
    assert usage.completion_tokens > 0


def test_chat_tool_calls_then_answer_from_results(client):
    msgs = [{"role": "user", "content": ASK}]
    first = client.chat.completions.create(model="qwen3", messages=msgs, tools=TOOLS)
    (call,) = first.choices[0].message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls" and first.choices[0].message.content is None
    assert (call.function.name, json.loads(call.function.arguments)) == ("list", {})
    assert call.id.startswith("chatcmpl-tool-")
    msgs += [first.choices[0].message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": "notes.txt\nsrc/"}]
    stream = client.chat.completions.create(model="qwen3", messages=msgs, tools=TOOLS, stream=True)
    calls: dict[int, dict] = {}
    for chunk in stream:
        for tc in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            entry = calls.setdefault(tc.index, {"id": None, "name": "", "args": ""})
            entry["id"] = tc.id or entry["id"]
            entry["name"] += (tc.function.name or "") if tc.function else ""
            entry["args"] += (tc.function.arguments or "") if tc.function else ""
    assert [(c["name"], json.loads(c["args"])) for c in calls.values()] == [("read", {"path": "notes.txt"})]
    msgs += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": calls[0]["id"], "type": "function", "function": {"name": "read", "arguments": calls[0]["args"]}}]},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "The codeword is walrus-42.\n"}]
    last = client.chat.completions.create(model="qwen3", messages=msgs, tools=TOOLS)
    assert last.choices[0].message.content == ("Here is what the tools returned:\n- list: notes.txt\nsrc/\n"
                                               "- read: The codeword is walrus-42.\n")
    assert not last.choices[0].message.tool_calls


def test_chat_length_limits(client):
    r = client.chat.completions.create(model="qwen3", messages=[{"role": "user", "content": "hello there"}], max_tokens=3)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3
    with pytest.raises(openai.BadRequestError, match="maximum context length is 40960 tokens"):
        client.chat.completions.create(model="qwen3", messages=[{"role": "user", "content": "hi"}], max_tokens=50000)


# -- completions and responses --------------------------------------------------------------------
def test_completions(client):
    r = client.completions.create(model="qwen3", prompt="Once upon a time", max_tokens=50)
    assert r.choices[0].text.startswith(" This is a deterministic completion")
    text = "".join(c.choices[0].text for c in client.completions.create(
        model="qwen3", prompt="Once upon a time", max_tokens=50, stream=True) if c.choices)
    assert text == r.choices[0].text


def test_responses_function_calls_and_outputs(client):
    tools = [{"type": "function", "name": t["function"]["name"], "parameters": t["function"]["parameters"]}
             for t in TOOLS]
    r1 = client.responses.create(model="qwen3", input=ASK, tools=tools)
    assert [o.type for o in r1.output] == ["reasoning", "function_call"]
    assert r1.output[0].content[0].text and r1.usage.output_tokens_details.reasoning_tokens > 0
    fc = r1.output[1]
    assert (fc.name, json.loads(fc.arguments), fc.status) == ("list", {}, "completed")
    history = [{"role": "user", "content": ASK},
               {"type": "function_call", "call_id": fc.call_id, "name": fc.name, "arguments": fc.arguments},
               {"type": "function_call_output", "call_id": fc.call_id, "output": "notes.txt"}]
    r2 = client.responses.create(model="qwen3", input=history, tools=tools)
    assert json.loads(r2.output[-1].arguments) == {"path": "notes.txt"}
    r3 = client.responses.create(model="qwen3", previous_response_id=r2.id, tools=tools, input=[
        {"type": "function_call_output", "call_id": r2.output[-1].call_id, "output": "walrus-42"}])
    assert r3.output_text == "Here is what the tools returned:\n- list: notes.txt\n- read: walrus-42"
    assert client.responses.retrieve(r3.id).output_text == r3.output_text


def test_responses_stream_events(client):
    tools = [{"type": "function", "name": "read", "parameters": TOOLS[0]["function"]["parameters"]}]
    events = list(client.responses.create(model="qwen3", input="Please read `a.md`", tools=tools, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    for kind in ("response.output_item.added", "response.reasoning_text.delta", "response.function_call_arguments.delta",
                 "response.function_call_arguments.done", "response.output_item.done"):
        assert kind in kinds
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == {"path": "a.md"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = list(client.responses.create(model="qwen3", input="hello", stream=True))
    deltas = "".join(e.delta for e in text if e.type == "response.output_text.delta")
    assert deltas == text[-1].response.output_text and deltas.startswith("You asked: hello")


# -- metrics --------------------------------------------------------------------------------------
def _metric(text: str, name: str, **labels) -> float:
    want = ",".join(['model_name="qwen3"', 'engine="0"', *(f'{k}="{v}"' for k, v in labels.items())])
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(want)}\}} ([\d.e+]+)$", text, re.M)
    assert m, f"{name} {want} not in /metrics"
    return float(m.group(1))


def test_metrics_count_requests_and_tokens(engine, client):
    before = _get(engine.root_url + "/metrics")[1].decode()
    r = client.chat.completions.create(model="qwen3", messages=[{"role": "user", "content": "metrics please"}])
    after = _get(engine.root_url + "/metrics")[1].decode()
    for name in ("vllm:num_requests_running", "vllm:kv_cache_usage_perc", "vllm:prompt_tokens_total",
                 "vllm:generation_tokens_total", "vllm:e2e_request_latency_seconds_count"):
        assert f"\n{name}{{" in after
    assert "# TYPE vllm:prompt_tokens_total counter" in after and "vllm:gpu_cache_usage_perc" not in after
    assert _metric(after, "vllm:prompt_tokens_total") - _metric(before, "vllm:prompt_tokens_total") == \
        r.usage.prompt_tokens
    assert _metric(after, "vllm:generation_tokens_total") - _metric(before, "vllm:generation_tokens_total") == \
        r.usage.completion_tokens
    assert _metric(after, "vllm:request_success_total", finished_reason="stop") == \
        _metric(before, "vllm:request_success_total", finished_reason="stop") + 1


# -- tool-call parser fidelity --------------------------------------------------------------------
GLM_CONFIG = {"architectures": ["Glm4MoeForCausalLM"], "model_type": "glm4_moe", "hidden_size": 4096,
              "intermediate_size": 10944, "moe_intermediate_size": 1408, "num_hidden_layers": 46,
              "num_attention_heads": 96, "num_key_value_heads": 8, "head_dim": 128, "n_routed_experts": 128,
              "n_shared_experts": 1, "first_k_dense_replace": 1, "max_position_embeddings": 131072,
              "vocab_size": 151552, "torch_dtype": "bfloat16"}


def test_wrong_parser_leaves_the_native_call_in_content(tmp_path):
    prof = gpu_profile(4, name="NVIDIA H200", total_mib=143771, reserved_mib=614)
    args = ["-tp", "4", "--max-model-len", "32k", "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
            "--reasoning-parser", "glm45"]
    with running_engine_double(tmp_path, model="zai-org/GLM-4.5-Air", config=GLM_CONFIG, args=args, profile=prof) as eng:
        r = eng.client().chat.completions.create(model="zai-org/GLM-4.5-Air", messages=[
            {"role": "user", "content": "please read `x.txt`"}], tools=TOOLS)
        msg = r.choices[0].message
        assert not msg.tool_calls and r.choices[0].finish_reason == "stop"
        assert msg.content == "<tool_call>read\n<arg_key>path</arg_key>\n<arg_value>x.txt</arg_value>\n</tool_call>"
        (entry,) = eng.state_dir.glob("*.json")
        assert len(json.loads(entry.read_text())["gpus"]) == 4
    args[args.index("hermes")] = "glm45"
    with running_engine_double(tmp_path / "b", model="zai-org/GLM-4.5-Air", config=GLM_CONFIG, args=args,
                               profile=prof) as eng:
        r = eng.client().chat.completions.create(model="zai-org/GLM-4.5-Air", messages=[
            {"role": "user", "content": "please read `x.txt`"}], tools=TOOLS)
        (call,) = r.choices[0].message.tool_calls
        assert (call.function.name, json.loads(call.function.arguments)) == ("read", {"path": "x.txt"})


def test_without_auto_tool_choice_tools_get_the_real_400_and_sigterm_is_clean(tmp_path):
    eng = start_engine_double(tmp_path)
    try:
        eng.wait_healthy()
        client = eng.client()
        with pytest.raises(openai.BadRequestError, match='"auto" tool choice requires --enable-auto-tool-choice and '
                                                         "--tool-call-parser to be set"):
            client.chat.completions.create(model="Qwen/Qwen3-0.6B", messages=[{"role": "user", "content": ASK}],
                                           tools=TOOLS)
        r = client.chat.completions.create(model="Qwen/Qwen3-0.6B", messages=[{"role": "user", "content": ASK}],
                                           tools=TOOLS, tool_choice="none")
        assert r.choices[0].message.content.startswith("<think>\n")  # no reasoning parser: Qwen3 thinks in content
        assert list(eng.state_dir.glob("*.json"))
        started = time.monotonic()
        eng.proc.send_signal(signal.SIGTERM)
        assert eng.proc.wait(5) == 0
        assert time.monotonic() - started < 1.5
    finally:
        eng.stop()
    log = eng.log_text()
    assert "[shutdown] API server: shutdown triggered" in log and "mode=abort timeout=0s" in log
    assert log.rstrip().endswith(f"INFO:     Finished server process [{eng.proc.pid}]")
    assert not list(eng.state_dir.glob("*.json"))


# -- start-up failures ----------------------------------------------------------------------------
LLAMA_70B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192,
             "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
             "max_position_embeddings": 131072, "vocab_size": 128256, "torch_dtype": "bfloat16"}
KIMI_K2 = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "kimi_k2", "hidden_size": 7168,
           "num_hidden_layers": 61, "num_attention_heads": 64, "kv_lora_rank": 512, "qk_rope_head_dim": 64,
           "n_routed_experts": 384, "moe_intermediate_size": 2048, "vocab_size": 163840,
           "max_position_embeddings": 131072, "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV3Config"}}
ENGINE_DIED = ("RuntimeError: Engine core initialization failed. See root cause above. "
               "Failed core proc(s): {'EngineCore': 1}")


@pytest.mark.parametrize(("kwargs", "root_cause"), [
    ({"args": ["-tp", "2"]},
     "  Value error, World size (2) is larger than the number of available GPUs (1) in this node. If this is "
     "intentional and you are using:"),
    ({"args": ["-tp", "2", "-pp", "2"], "profile": gpu_profile(4), "env": {"CUDA_VISIBLE_DEVICES": "0,1,2"}},
     "  Value error, World size (4) is larger than the number of available GPUs (3) in this node."),
    ({"args": ["-tp", "3"], "profile": gpu_profile(4)},
     "  Value error, Total number of attention heads (16) must be divisible by tensor parallel size (3)."),
    ({"profile": gpu_profile(1, failure="no_driver")},
     "RuntimeError: Failed to infer device type, please set the environment variable `VLLM_LOGGING_LEVEL=DEBUG` "
     "to turn on verbose logging to help debug the issue."),
    ({"profile": gpu_profile(1, failure="mismatch")}, "RuntimeError: Failed to infer device type"),
    ({"env": {"PI_LAB_GPU_PROFILE": "/nonexistent/gpu-profile.json"}}, "RuntimeError: Failed to infer device type"),
    ({"env": {"CUDA_VISIBLE_DEVICES": ""}},
     "RuntimeError: CUDA_VISIBLE_DEVICES is set to empty string, which means GPU support is disabled."),
    ({"env": {"CUDA_VISIBLE_DEVICES": "3"}}, ENGINE_DIED),
    ({"args": ["--max-model-len", "64k"]},
     "  Value error, User-specified max_model_len (64000) is greater than the derived max_model_len "
     "(max_position_embeddings=40960 or model_max_length=None in model's config.json)."),
    ({"args": ["--gpu-memory-utilization", "0.07"]}, ENGINE_DIED),
    ({"model": "meta-llama/Llama-3.3-70B-Instruct", "config": LLAMA_70B}, ENGINE_DIED),
    ({"args": ["--enable-auto-tool-choice", "--tool-call-parser", "glm4_moe"]},
     "KeyError: 'invalid tool call parser: glm4_moe (chose from { apertus,beam,"),
    ({"args": ["--reasoning-parser", "qwen25"]},
     "KeyError: \"Reasoning parser 'qwen25' not found. Available parsers: beam, cohere_command3,"),
    ({"env": {"PI_LAB_VLLM_CRASH_ON_START": "always"}}, ENGINE_DIED),
    ({"args": ["-dp", "2"]}, "torch.AcceleratorError: CUDA error: invalid device ordinal"),
    ({"model": "moonshotai/Kimi-K2-Instruct", "config": KIMI_K2},
     "ValueError: The repository for moonshotai/Kimi-K2-Instruct contains custom code which must be executed"),
    ({"model": "moonshotai/Kimi-K2-Instruct", "config": KIMI_K2, "args": ["--trust-remote-code"]}, ENGINE_DIED),
    ({"args": ["--chat-template", "./templates/missing.jinja"]},
     "ValueError: The supplied chat template string (./templates/missing.jinja) appears path-like, but doesn't exist!"),
], ids=["tp-too-large", "cvd-subset", "heads", "no-driver", "mismatch", "no-profile", "cvd-empty", "cvd-bad",
        "len-over-config", "ctx-too-long", "weights-oom", "tool-parser", "reasoning-parser", "crash", "dp-too-large",
        "remote-code", "remote-code-trusted", "chat-template"])
def test_startup_failures(tmp_path, kwargs, root_cause):
    done = run_engine_double(tmp_path, **kwargs)
    assert done.returncode == 1, done.log[-2000:]
    stripped = "\n".join(re.sub(r"^\([A-Za-z_0-9]+ pid=\d+\) ", "", ln) for ln in done.log.splitlines())
    assert root_cause in stripped, done.log[-3000:]
    assert "Application startup complete" not in done.log
    assert not list(done.engine.state_dir.glob("*.json"))  # nothing left in the registry


def test_engine_failure_texts(tmp_path):
    ctx = run_engine_double(tmp_path / "ctx", args=["--gpu-memory-utilization", "0.07"]).log
    assert re.search(r"ERROR .* \[core\.py:\d+\] ValueError: To serve at least one request with the model's max seq "
                     r"len \(40960\), \(4\.38 GiB KV cache is needed, which is larger than the available KV cache memory "
                     r"\(\d+\.\d\d GiB\)\. Based on the available memory, the estimated maximum model length is \d+\. Try "
                     r"increasing `gpu_memory_utilization`", ctx)
    assert "EngineCore failed to start." in ctx and _error_line(ctx) == ENGINE_DIED
    oom = run_engine_double(tmp_path / "oom", model="meta-llama/Llama-3.3-70B-Instruct", config=LLAMA_70B).log
    assert re.search(r"ERROR .* \[gpu_model_runner\.py:\d+\] Failed to load model - not enough GPU memory\. Try lowering "
                     r"--gpu-memory-utilization to free memory for weights, increasing --tensor-parallel-size, or using "
                     r"--quantization\. .*\(original error: CUDA out of memory\. Tried to allocate", oom)
    assert "torch.OutOfMemoryError: CUDA out of memory." in oom
    fits = run_engine_double(tmp_path / "tp2", model="meta-llama/Llama-3.3-70B-Instruct", config=LLAMA_70B,
                             args=["-tp", "2", "--max-model-len", "8192"], profile=gpu_profile(2),
                             env={"PI_LAB_VLLM_CRASH_AFTER_SECONDS": "0.3"}, timeout=20)
    assert "Application startup complete." in fits.log and fits.returncode == 1  # then died on the knob
    assert "(Worker_TP1 pid=" in fits.log and "EngineDeadError" in fits.log


def test_memory_held_by_another_process_and_visible_devices(tmp_path):
    prof = gpu_profile(2)
    state = tmp_path / "gpu-state"
    state.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (state / f"{holder.pid}.json").write_text(json.dumps({"pid": holder.pid, "process_name": "VLLM::EngineCore",
                                                              "gpus": [{"uuid": prof["gpus"][0]["uuid"], "used_mib": 40000}]}))
        busy = run_engine_double(tmp_path, profile=prof)
        assert _error_line(busy.log) == ENGINE_DIED
        assert ("ValueError: Free memory on device cuda:0 (40.12/79.65 GiB) on startup is less than desired GPU memory "
                "utilization (0.92, 73.28 GiB). Decrease GPU memory utilization or reduce GPU memory used by other "
                "processes.") in busy.log
        # The second GPU, by index and by UUID, is free; half of the first still fits.
        for cvd in ("1", prof["gpus"][1]["uuid"]):
            with running_engine_double(tmp_path, profile=prof, env={"CUDA_VISIBLE_DEVICES": cvd}) as eng:
                mine = json.loads((state / f"{eng.proc.pid}.json").read_text())
                assert mine["gpus"] == [{"uuid": prof["gpus"][1]["uuid"], "used_mib": 75035}]
        with running_engine_double(tmp_path, profile=prof, args=["--gpu-memory-utilization", "0.45"]) as eng:
            assert json.loads((state / f"{eng.proc.pid}.json").read_text())["gpus"][0]["used_mib"] == 36702
        assert sorted(p.name for p in state.glob("*.json")) == [f"{holder.pid}.json"]
    finally:
        holder.kill()
        holder.wait()


def test_data_parallel_takes_a_gpu_per_rank(tmp_path):
    prof = gpu_profile(2)
    with running_engine_double(tmp_path, args=["-dp", "2"], profile=prof) as eng:
        (entry,) = eng.state_dir.glob("*.json")
        assert [g["uuid"] for g in json.loads(entry.read_text())["gpus"]] == [g["uuid"] for g in prof["gpus"]]
        assert f"(EngineCore_DP1 pid={eng.proc.pid}) INFO" in eng.log_text()


def test_busy_port_fails_before_loading(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        eng = start_engine_double(tmp_path, port=held.getsockname()[1])
        rc = eng.proc.wait(15)
    log = eng.log_text()
    assert rc == 1 and _error_line(log) == "OSError: [Errno 98] Address already in use"
    assert "Resolved architecture" not in log and "Loading weights" not in log


def test_missing_and_gated_models(tmp_path):
    missing = run_engine_double(tmp_path / "m", model="nobody/not-cached", env={"HF_HOME": str(tmp_path / "empty")})
    assert missing.returncode == 1
    assert "ValueError: Invalid repository ID or local directory specified: 'nobody/not-cached'." in missing.log

    class Gated(BaseHTTPRequestHandler):
        def _gated(self):
            self.send_response(401)
            self.send_header("X-Error-Code", "GatedRepo")
            self.send_header("X-Error-Message", "Access to model meta-llama/Llama-3.1-8B-Instruct is restricted. You "
                                                "must have access to it and be authenticated to access it. Please log in.")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET = _gated

        def log_message(self, *args):
            pass

    hub = ThreadingHTTPServer(("127.0.0.1", 0), Gated)
    thread = threading.Thread(target=hub.serve_forever, daemon=True)
    thread.start()
    try:
        gated = run_engine_double(tmp_path / "g", model="meta-llama/Llama-3.1-8B-Instruct", env={
            "HF_HUB_OFFLINE": None, "HF_ENDPOINT": f"http://127.0.0.1:{hub.server_address[1]}",
            "HF_HOME": str(tmp_path / "empty-hf"),
            "HF_HUB_ETAG_TIMEOUT": "2", "HF_HUB_DOWNLOAD_TIMEOUT": "2"})
    finally:
        hub.shutdown()
        hub.server_close()
    log = gated.log
    assert gated.returncode == 1
    assert "huggingface_hub.errors.GatedRepoError: 401 Client Error." in log
    assert "Cannot access gated repo for url" in log and "/meta-llama/Llama-3.1-8B-Instruct/resolve/main/config.json." in log
    assert log.index("GatedRepoError") < log.index("The above exception was the direct cause of the following exception:")
    assert _error_line(log) == "ValueError: Invalid repository ID or local directory specified: " \
                               "'meta-llama/Llama-3.1-8B-Instruct'."


def test_crash_once_then_start(tmp_path):
    marker = tmp_path / "crashed-once"
    env = {"PI_LAB_VLLM_CRASH_ON_START": "once", "PI_LAB_VLLM_CRASH_MARKER": str(marker)}
    first = run_engine_double(tmp_path / "a", env=env)
    assert first.returncode == 1 and "EngineCore failed to start." in first.log and marker.exists()
    with running_engine_double(tmp_path / "b", env=env) as eng:
        assert eng.healthy()


def test_sigterm_while_loading_and_secrets_never_logged(tmp_path):
    secret, hf_secret = "sk-cli-secret-123", "hf_secret_456"
    eng = start_engine_double(tmp_path, args=["--api-key", secret, "--hf-token", hf_secret],
                              env={"PI_LAB_VLLM_LOAD_SECONDS": "30", "HF_TOKEN": "hf_env_secret"})
    try:
        deadline = time.monotonic() + 15
        while "Starting to load model" not in eng.log_text() and time.monotonic() < deadline:
            assert eng.proc.poll() is None, eng.log_text()
            time.sleep(0.05)
        assert any(eng.state_dir.glob("*.json"))  # the weights are counted while loading
        eng.proc.send_signal(signal.SIGTERM)
        assert eng.proc.wait(5) == 1
    finally:
        eng.stop()
    log = eng.log_text()
    assert _error_line(log) == "KeyboardInterrupt: terminated"
    assert "'api_key': '***'" in log and "'hf_token': '***'" in log
    for s in (secret, hf_secret, "hf_env_secret", eng.api_key):
        assert s not in log
    assert not list(eng.state_dir.glob("*.json"))


def test_shutdown_timeout_drains(tmp_path):
    with running_engine_double(tmp_path, args=["--shutdown-timeout", "5"],
                               env={"PI_LAB_VLLM_STREAM_DELAY_SECONDS": "0.02"}) as eng:
        out: dict = {}

        def slow_request():
            stream = eng.client().chat.completions.create(
                model="Qwen/Qwen3-0.6B", messages=[{"role": "user", "content": "a b c d e f g h"}], stream=True)
            out["text"] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

        worker = threading.Thread(target=slow_request)
        worker.start()
        time.sleep(0.3)
        eng.proc.send_signal(signal.SIGTERM)
        assert eng.proc.wait(10) == 0
        worker.join(10)
    assert out["text"].startswith("<think>") and "You asked: a b c d e f g h" in out["text"]
    assert "mode=drain timeout=5s" in eng.log_text()


def test_environment_variables_are_read(tmp_path):
    with running_engine_double(tmp_path, api_key=None, env={"VLLM_API_KEY": "from-env", "VLLM_USE_V1": "1",
                                                            "VLLM_DISABLE_LOG_LOGO": "1"}) as eng:
        assert _get(eng.base_url + "/models")[0] == 401
        assert _get(eng.base_url + "/models", "from-env")[0] == 200
        log = eng.log_text()
    assert "vLLM server version 0.33.0+lab, serving model Qwen/Qwen3-0.6B" in log
    assert "WARNING" in log and "Unknown vLLM environment variable detected: VLLM_USE_V1" in log
    assert "from-env" not in log


def test_failing_requests_knob(tmp_path):
    with running_engine_double(tmp_path, env={"PI_LAB_VLLM_FAIL_REQUESTS": "1"}) as eng:
        client = eng.client()
        with pytest.raises(openai.InternalServerError, match="EngineCore encountered an issue"):
            client.chat.completions.create(model="Qwen/Qwen3-0.6B", messages=[{"role": "user", "content": "hi"}])
        ok = client.chat.completions.create(model="Qwen/Qwen3-0.6B", messages=[{"role": "user", "content": "hi"}])
        assert ok.choices[0].message.content.startswith("<think>")
        assert eng.healthy()
        eng.proc.send_signal(signal.SIGINT)
        assert eng.proc.wait(5) == 0
    assert "[shutdown] EngineCore: trigger received signal=SIGINT" in eng.log_text()


def test_config_json_only_model_with_index(tmp_path):
    index = {"metadata": {"total_size": 60 * (1 << 30)}, "weight_map": {}}
    with running_engine_double(tmp_path, config=QWEN3_0_6B_CONFIG, index=index) as eng:
        assert "Model loading took 60.00 GiB memory" in eng.log_text()
