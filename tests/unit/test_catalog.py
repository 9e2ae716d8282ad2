"""The model catalog: schema, vLLM parser names, pi's models carried over, user overrides."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from pi_ansible.catalog import BUILTIN_FILE, SCHEMA_FILE, derive_arch, load_builtin_catalog, load_catalog
from pi_ansible.catalog.parsers import REASONING_PARSERS, TOOL_CALL_PARSERS
from pi_ansible.errors import PiError
from pi_ansible.planning import vllm_args

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "pi-pods-models.json"
PI_MODELS = json.loads(REFERENCE.read_text()) if REFERENCE.is_file() else None

# pi 0.70.6's list (shared/reference/pi-pods-models.json), as facts, so the test runs without it too.
PI_FACTS = {
    "Qwen/Qwen2.5-Coder-32B-Instruct": [
        (1, ["H100", "H200"], ["--tool-call-parser", "hermes", "--enable-auto-tool-choice"], {}),
        (2, ["H100", "H200"], ["--tensor-parallel-size", "2", "--tool-call-parser", "hermes",
                               "--enable-auto-tool-choice"], {})],
    "Qwen/Qwen3-Coder-30B-A3B-Instruct": [
        (1, ["H100", "H200"], ["--enable-auto-tool-choice", "--tool-call-parser", "qwen3_coder"], {}),
        (2, ["H100", "H200"], ["--tensor-parallel-size", "2", "--enable-auto-tool-choice", "--tool-call-parser",
                               "qwen3_coder"], {})],
    "Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8": [
        (1, ["H100", "H200"], ["--enable-auto-tool-choice", "--tool-call-parser", "qwen3_coder"],
         {"VLLM_USE_DEEP_GEMM": "1"})],
    "Qwen/Qwen3-Coder-480B-A35B-Instruct": [
        (8, ["H200", "H20"], ["--tensor-parallel-size", "8", "--max-model-len", "32000", "--enable-auto-tool-choice",
                              "--tool-call-parser", "qwen3_coder"], {})],
    "Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8": [
        (8, ["H200", "H20"], ["--max-model-len", "131072", "--enable-expert-parallel", "--data-parallel-size", "8",
                              "--enable-auto-tool-choice", "--tool-call-parser", "qwen3_coder"],
         {"VLLM_USE_DEEP_GEMM": "1"})],
    "openai/gpt-oss-20b": [
        (1, ["H100", "H200"], ["--async-scheduling"], {}),
        (1, ["B200"], ["--async-scheduling"], {"VLLM_USE_TRTLLM_ATTENTION": "1", "VLLM_USE_TRTLLM_DECODE_ATTENTION": "1",
                                               "VLLM_USE_TRTLLM_CONTEXT_ATTENTION": "1",
                                               "VLLM_USE_FLASHINFER_MXFP4_MOE": "1"})],
    "openai/gpt-oss-120b": [
        (1, ["H100", "H200"], ["--async-scheduling", "--gpu-memory-utilization", "0.95", "--max-num-batched-tokens",
                               "1024"], {}),
        (2, ["H100", "H200"], ["--tensor-parallel-size", "2", "--async-scheduling", "--gpu-memory-utilization",
                               "0.94"], {}),
        (4, ["H100", "H200"], ["--tensor-parallel-size", "4", "--async-scheduling"], {}),
        (8, ["H100", "H200"], ["--tensor-parallel-size", "8", "--async-scheduling"], {})],
    "zai-org/GLM-4.5": [
        (16, ["H100"], ["--tensor-parallel-size", "16", "--tool-call-parser", "glm45", "--reasoning-parser", "glm45",
                        "--enable-auto-tool-choice"], {}),
        (8, ["H200"], ["--tensor-parallel-size", "8", "--tool-call-parser", "glm45", "--reasoning-parser", "glm45",
                       "--enable-auto-tool-choice"], {})],
    "zai-org/GLM-4.5-FP8": [
        (8, ["H100"], ["--tensor-parallel-size", "8", "--tool-call-parser", "glm45", "--reasoning-parser", "glm45",
                       "--enable-auto-tool-choice"], {}),
        (4, ["H200"], ["--tensor-parallel-size", "4", "--tool-call-parser", "glm45", "--reasoning-parser", "glm45",
                       "--enable-auto-tool-choice"], {})],
    "zai-org/GLM-4.5-Air-FP8": [
        (2, ["H100"], ["--tensor-parallel-size", "2", "--tool-call-parser", "glm45", "--reasoning-parser", "glm45",
                       "--enable-auto-tool-choice"], {"VLLM_ATTENTION_BACKEND": "XFORMERS"}),
        (1, ["H200"], ["--tool-call-parser", "glm45", "--reasoning-parser", "glm45", "--enable-auto-tool-choice"],
         {"VLLM_ATTENTION_BACKEND": "XFORMERS"})],
    "zai-org/GLM-4.5-Air": [
        (2, ["H100", "H200"], ["--tensor-parallel-size", "2", "--tool-call-parser", "glm45", "--reasoning-parser",
                               "glm45", "--enable-auto-tool-choice"], {}),
        (1, ["H200"], ["--tool-call-parser", "glm45", "--reasoning-parser", "glm45", "--enable-auto-tool-choice",
                       "--gpu-memory-utilization", "0.95"], {})],
    "moonshotai/Kimi-K2-Instruct": [
        (16, ["H200", "H20"], ["--tensor-parallel-size", "16", "--trust-remote-code", "--enable-auto-tool-choice",
                               "--tool-call-parser", "kimi_k2"], {})],
}
PI_NAMES = {"Qwen/Qwen2.5-Coder-32B-Instruct": "Qwen2.5-Coder-32B", "Qwen/Qwen3-Coder-30B-A3B-Instruct": "Qwen3-Coder-30B",
            "Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8": "Qwen3-Coder-30B-FP8",
            "Qwen/Qwen3-Coder-480B-A35B-Instruct": "Qwen3-Coder-480B",
            "Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8": "Qwen3-Coder-480B-FP8", "openai/gpt-oss-20b": "GPT-OSS-20B",
            "openai/gpt-oss-120b": "GPT-OSS-120B", "zai-org/GLM-4.5": "GLM-4.5", "zai-org/GLM-4.5-FP8": "GLM-4.5-FP8",
            "zai-org/GLM-4.5-Air-FP8": "GLM-4.5-Air-FP8", "zai-org/GLM-4.5-Air": "GLM-4.5-Air",
            "moonshotai/Kimi-K2-Instruct": "Kimi-K2"}

ADDED = ["Qwen/Qwen3-0.6B", "Qwen/Qwen3-8B", "Qwen/Qwen3-32B", "Qwen/Qwen3-30B-A3B", "Qwen/Qwen3-235B-A22B",
         "zai-org/GLM-4.6", "moonshotai/Kimi-K2-Instruct-0905", "deepseek-ai/DeepSeek-V3.1",
         "deepseek-ai/DeepSeek-V3.2-Exp", "meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.3-70B-Instruct"]


@pytest.fixture(scope="module")
def catalog():
    return load_builtin_catalog()


@pytest.fixture()
def user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PI_CONFIG_DIR", str(tmp_path))
    return tmp_path


def write_user(path, models, version=1):
    (path / "models.json").write_text(json.dumps({"version": version, "models": models}))
    return path / "models.json"


# --- schema ---------------------------------------------------------------------------------------

def test_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_FILE.read_text()))


def test_builtin_catalog_validates_against_the_schema():
    jsonschema.validate(json.loads(BUILTIN_FILE.read_text()), json.loads(SCHEMA_FILE.read_text()),
                        cls=jsonschema.Draft202012Validator)


def test_every_builtin_entry_has_an_arch_and_unique_id_and_name(catalog):
    assert all(e.arch is not None for e in catalog)
    assert len({e.id.lower() for e in catalog}) == len(catalog)
    assert len({e.name.lower() for e in catalog}) == len(catalog)


# --- parsers --------------------------------------------------------------------------------------

def test_parser_lists_are_vllm_033s():
    assert len(TOOL_CALL_PARSERS) == 58 and len(REASONING_PARSERS) == 42
    assert "glm4_moe" not in TOOL_CALL_PARSERS  # a module name, not a parser


def test_every_parser_is_one_vllm_033_knows(catalog):
    for e in catalog:
        assert e.tool_call_parser is None or e.tool_call_parser in TOOL_CALL_PARSERS, e.id
        assert e.reasoning_parser is None or e.reasoning_parser in REASONING_PARSERS, e.id
        for c in e.configs:
            args = list(c.args)
            assert vllm_args.flag_value(args, "--tool-call-parser") in (None, *TOOL_CALL_PARSERS)
            assert vllm_args.flag_value(args, "--reasoning-parser") in (None, *REASONING_PARSERS)


def test_parser_flags_in_args_agree_with_the_entry(catalog):
    for e in catalog:
        for c in e.configs:
            args = list(c.args)
            tool = vllm_args.flag_value(args, "--tool-call-parser")
            assert tool in (None, e.tool_call_parser), e.id
            assert vllm_args.flag_value(args, "--reasoning-parser") in (None, e.reasoning_parser), e.id
            if tool:
                assert vllm_args.has_flag(args, "--enable-auto-tool-choice"), e.id
            assert vllm_args.has_flag(args, "--trust-remote-code") in (False, e.trust_remote_code), e.id


@pytest.mark.parametrize("model,tool,reasoning", [
    ("Qwen/Qwen3-8B", "hermes", "qwen3"), ("Qwen/Qwen3-0.6B", "hermes", "qwen3"),
    ("Qwen/Qwen3-32B", "hermes", "qwen3"), ("Qwen/Qwen3-30B-A3B", "hermes", "qwen3"),
    ("Qwen/Qwen3-235B-A22B", "hermes", "qwen3"), ("Qwen/Qwen3-Coder-30B-A3B-Instruct", "qwen3_coder", None),
    ("openai/gpt-oss-20b", "openai", None), ("openai/gpt-oss-120b", "openai", None),
    ("zai-org/GLM-4.5", "glm45", "glm45"), ("zai-org/GLM-4.6", "glm45", "glm45"),
    ("moonshotai/Kimi-K2-Instruct-0905", "kimi_k2", None), ("deepseek-ai/DeepSeek-V3.1", "deepseek_v31", "deepseek_v3"),
    ("deepseek-ai/DeepSeek-V3.2-Exp", "deepseek_v32", "deepseek_v3"),
    ("meta-llama/Llama-3.1-8B-Instruct", "llama3_json", None), ("meta-llama/Llama-3.3-70B-Instruct", "llama3_json", None),
])
def test_agentic_models_have_the_right_parsers(catalog, model, tool, reasoning):
    e = catalog.get(model)
    assert (e.tool_call_parser, e.reasoning_parser) == (tool, reasoning)


def test_gpt_oss_uses_the_responses_api_and_others_completions(catalog):
    for e in catalog:
        assert e.api == ("responses" if e.id.startswith("openai/gpt-oss") else "completions")


def test_llama_is_gated_and_kimi_trusts_remote_code(catalog):
    assert catalog.get("meta-llama/Llama-3.1-8B-Instruct").gated
    assert catalog.get("moonshotai/Kimi-K2-Instruct").trust_remote_code
    assert catalog.get("moonshotai/Kimi-K2-Instruct-0905").trust_remote_code


# --- pi's models carried over ---------------------------------------------------------------------

def test_pi_facts_in_this_test_match_the_reference_file():
    if PI_MODELS is None:
        pytest.skip("shared/reference/pi-pods-models.json is not beside the repo")
    ref = {mid: [(c["gpuCount"], c.get("gpuTypes", []), c["args"], c.get("env", {})) for c in m["configs"]]
           for mid, m in PI_MODELS["models"].items()}
    assert ref == PI_FACTS
    assert {mid: m["name"] for mid, m in PI_MODELS["models"].items()} == PI_NAMES


def test_all_of_pis_models_and_configs_are_present_with_the_same_facts(catalog):
    assert len(PI_FACTS) == 12
    for mid, configs in PI_FACTS.items():
        e = catalog.get(mid)
        assert e is not None and e.id == mid and e.origin == "pi" and e.name == PI_NAMES[mid]
        ours = [(c.gpu_count, list(c.gpu_types), list(c.args), dict(c.env)) for c in e.configs]
        assert ours == configs, mid


def test_added_models_exist_with_configs_for_the_lab_gpu_classes(catalog):
    for mid in ADDED:
        e = catalog.get(mid)
        assert e is not None and e.origin == "pi-ansible" and e.configs
        for c in e.configs:
            assert set(c.gpu_types) <= {"H100", "H200", "RTX 4090"}
    assert sum(1 for e in catalog if e.origin == "pi") == 12


def test_every_config_uses_as_many_gpus_as_it_says(catalog):
    for e in catalog:
        for c in e.configs:
            assert vllm_args.world_size(list(c.args)) in (1, c.gpu_count), (e.id, c.gpu_count)
            assert not vllm_args.managed_flags_in(list(c.args))


def test_lookup_by_id_any_case_and_by_short_name(catalog):
    assert catalog.get("qwen/qwen3-8b").id == "Qwen/Qwen3-8B"
    assert catalog.get("Qwen3-Coder-30B").id == "Qwen/Qwen3-Coder-30B-A3B-Instruct"
    assert catalog.get("nobody/nothing") is None
    assert catalog.fp8_variant_of(catalog.get("zai-org/GLM-4.5-Air")).id == "zai-org/GLM-4.5-Air-FP8"
    for e in catalog:
        if e.fp8_variant:
            assert catalog.get(e.fp8_variant).arch.quantization == "fp8"


# --- arch derived from the hub files never drifts ------------------------------------------------

def test_models_json_arch_matches_the_hub_files():
    assert derive_arch.main(["--check"]) == 0


def test_every_entry_has_hub_files(catalog):
    for e in catalog:
        assert derive_arch.hub_files(e.id) is not None, e.id
        assert derive_arch.derive(e.id).to_dict() == e.arch.to_dict()


# --- the user's file ------------------------------------------------------------------------------

def test_no_user_file_is_fine(user_dir):
    assert len(load_catalog()) == len(load_builtin_catalog())


def test_user_entry_overrides_fields_of_a_builtin_one(user_dir):
    write_user(user_dir, [{"id": "qwen/qwen3-8b", "reasoning_parser": None, "notes": "mine"}])
    cat = load_catalog()
    e = cat.get("Qwen/Qwen3-8B")
    assert e.reasoning_parser is None and e.notes == "mine" and e.origin == "user"
    assert e.id == "Qwen/Qwen3-8B" and e.arch is not None and e.tool_call_parser == "hermes"
    assert len(cat) == len(load_builtin_catalog())


def test_user_configs_replace_the_builtin_list(user_dir):
    write_user(user_dir, [{"id": "Qwen/Qwen3-8B", "configs": [{"gpu_count": 2, "gpu_types": ["L40S"],
                                                               "args": ["-tp", "2"]}]}])
    e = load_catalog().get("Qwen/Qwen3-8B")
    assert e.gpu_counts == [2] and e.configs[0].gpu_types == ("L40S",)


def test_user_adds_a_new_model(user_dir):
    new = {"id": "acme/Coder-7B", "name": "Acme-Coder-7B", "family": "Acme", "tool_call_parser": "hermes",
           "reasoning_parser": None, "api": "completions", "trust_remote_code": False,
           "configs": [{"gpu_count": 1, "gpu_types": [], "args": [], "env": {"FOO": "1"}}]}
    write_user(user_dir, [new])
    cat = load_catalog()
    e = cat.get("acme/Coder-7B")
    assert e.arch is None and e.origin == "user" and e.configs[0].env == {"FOO": "1"}
    assert list(cat)[-1].id == "acme/Coder-7B"


def test_explicit_user_file_path(tmp_path):
    f = write_user(tmp_path, [{"id": "Qwen/Qwen3-8B", "notes": "x"}])
    cat = load_catalog(f)
    assert cat.get("Qwen/Qwen3-8B").notes == "x" and str(f) in cat.sources


def test_pi_shaped_user_file_is_read(user_dir):
    (user_dir / "models.json").write_text(json.dumps({"models": {"acme/M-1": {"name": "M-1", "configs": [
        {"gpuCount": 1, "gpuTypes": ["H100"], "args": ["--tool-call-parser", "hermes", "--enable-auto-tool-choice"]}]}}}))
    e = load_catalog().get("acme/M-1")
    assert e.tool_call_parser == "hermes" and e.configs[0].gpu_count == 1


@pytest.mark.parametrize("entry,words", [
    ({"id": "Qwen/Qwen3-8B", "tool_call_parser": "glm4_moe"}, ["'Qwen/Qwen3-8B'", "models[0]", "glm4_moe", "glm45"]),
    ({"id": "Qwen/Qwen3-8B", "reasoning_parser": "qwen"}, ["'Qwen/Qwen3-8B'", "reasoning_parser", "qwen3"]),
    ({"id": "Qwen/Qwen3-8B", "configs": [{"gpu_count": 0, "gpu_types": [], "args": []}]},
     ["'Qwen/Qwen3-8B'", "$.models[0].configs[0].gpu_count", "minimum"]),
    ({"id": "Qwen/Qwen3-8B", "api": "chat"}, ["$.models[0].api", "'chat'"]),
    ({"id": "Qwen/Qwen3-8B", "colour": "red"}, ["'Qwen/Qwen3-8B'", "colour"]),
    ({"id": "Qwen/Qwen3-8B", "configs": [{"gpu_count": 1, "gpu_types": [], "args": ["--api-key", "s3cret"]}]},
     ["--api-key", "env file"]),
    ({"id": "Qwen/Qwen3-8B", "configs": [{"gpu_count": 1, "gpu_types": [], "args": ["--port", "9000"]}]},
     ["--port"]),
    ({"id": "Qwen/Qwen3-8B", "configs": [{"gpu_count": 2, "gpu_types": [], "args": ["-tp", "4"]}]},
     ["configs[0]", "2 GPU(s)", "use 4"]),
    ({"id": "Qwen/Qwen3-8B", "configs": [{"gpu_count": 1, "gpu_types": [], "args": ["--x"], "env": {"a-b": "1"}}]},
     ["$.models[0].configs[0].env"]),
    ({"id": "Qwen/Qwen3-8B", "configs": [{"gpu_count": 1, "gpu_types": [], "args": ["a\nb"]}]},
     ["$.models[0].configs[0].args[0]"]),
    ({"id": "Qwen/Qwen3-8B", "configs": [{"gpu_count": 1, "gpu_types": [], "args": [], "env": {"HF_TOKEN": "x"}}]},
     ["HF_TOKEN", "env file"]),
    ({"id": "acme/New-1", "name": "New-1"}, ["'acme/New-1'", "a new model needs every required field"]),
    ({"id": "not a repo id"}, ["$.models[0].id"]),
])
def test_invalid_user_entry_is_an_error_naming_it(user_dir, entry, words):
    write_user(user_dir, [entry])
    with pytest.raises(PiError) as err:
        load_catalog()
    msg = str(err.value)
    assert str(user_dir / "models.json") in msg
    for w in words:
        assert w in msg, msg


def test_error_names_the_right_entry_among_several(user_dir):
    write_user(user_dir, [{"id": "Qwen/Qwen3-0.6B", "notes": "fine"}, {"id": "Qwen/Qwen3-8B", "api": 3}])
    with pytest.raises(PiError, match=r"'Qwen/Qwen3-8B' \(models\[1\]\).*\$\.models\[1\]\.api"):
        load_catalog()


@pytest.mark.parametrize("text,words", [
    ("{not json", ["not valid JSON", "line 1"]),
    ('{"version": 2, "models": []}', ["$.version"]),
    ('{"version": 1}', ["'models' is a required property"]),
    ("[]", ["is not of type 'object'"]),
])
def test_broken_user_file_is_an_error(user_dir, text, words):
    (user_dir / "models.json").write_text(text)
    with pytest.raises(PiError) as err:
        load_catalog()
    for w in words:
        assert w in str(err.value)


def test_unreadable_explicit_user_file_is_an_error(tmp_path):
    with pytest.raises(PiError, match="cannot read"):
        load_catalog(tmp_path / "missing.json")


# --- the schema check is remembered by content -------------------------------------------------------

def _loads_without_jsonschema(env_dir) -> bool:
    code = ("import sys; from pi_ansible.catalog import load_catalog; load_catalog(); "
            "print('jsonschema' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PI_CONFIG_DIR": str(env_dir)}).stdout.strip()
    return out == "False"


def test_a_checked_catalog_loads_again_without_jsonschema_until_a_file_changes(user_dir):
    from pi_ansible.catalog import _checked_file

    write_user(user_dir, [{"id": "Qwen/Qwen3-8B", "notes": "mine"}])
    assert not _loads_without_jsonschema(user_dir), "the first load checks the schema"
    assert _checked_file().stat().st_mode & 0o777 == 0o600
    assert _loads_without_jsonschema(user_dir), "the same files again: remembered"
    write_user(user_dir, [{"id": "Qwen/Qwen3-8B", "notes": "changed"}])
    assert not _loads_without_jsonschema(user_dir), "a changed user file is checked again"


def test_a_file_that_fails_the_schema_is_never_remembered_as_checked(user_dir):
    from pi_ansible.catalog import _checked_file

    load_catalog()  # built-in only: remembered
    before = _checked_file().read_text()
    write_user(user_dir, [{"id": "Qwen/Qwen3-8B", "api": "telepathy"}])
    for _ in range(2):  # and the second time it fails the same way, not skipped
        with pytest.raises(PiError, match="telepathy"):
            load_catalog()
    assert _checked_file().read_text() == before
