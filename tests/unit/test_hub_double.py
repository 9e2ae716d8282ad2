"""The hub double against the real huggingface_hub client and the real `hf` CLI.

The client reads HF_ENDPOINT and friends at import time, so every client call runs in a subprocess.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pi_ansible.lab import hub

ACCESS_TOKEN = "hf_labAccessTokenForTheGatedRepo0001"
GATED = "meta-llama/Llama-3.1-8B-Instruct"
CATALOG = (
    "Qwen/Qwen2.5-Coder-32B-Instruct",
    "Qwen/Qwen3-Coder-30B-A3B-Instruct",
    "Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8",
    "Qwen/Qwen3-Coder-480B-A35B-Instruct",
    "Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8",
    "openai/gpt-oss-20b",
    "openai/gpt-oss-120b",
    "zai-org/GLM-4.5",
    "zai-org/GLM-4.5-FP8",
    "zai-org/GLM-4.5-Air-FP8",
    "zai-org/GLM-4.5-Air",
    "moonshotai/Kimi-K2-Instruct",
)
AGENTIC = (
    "Qwen/Qwen3-0.6B",
    "Qwen/Qwen3-8B",
    "Qwen/Qwen3-32B",
    "Qwen/Qwen3-30B-A3B",
    "Qwen/Qwen3-235B-A22B",
    "zai-org/GLM-4.6",
    "moonshotai/Kimi-K2-Instruct-0905",
    "deepseek-ai/DeepSeek-V3.1",
    "deepseek-ai/DeepSeek-V3.2-Exp",
    "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.3-70B-Instruct",
)
REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_CATALOG = REPO_ROOT.parent / "shared" / "reference" / "pi-pods-models.json"
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = hub.make_server("127.0.0.1", 0, access_tokens=[ACCESS_TOKEN])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def client_env(endpoint: str, hf_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env |= {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    return env


def run_client(endpoint: str, tmp_path: Path, code: str) -> dict:
    """Runs `code` in a fresh interpreter with the client pointed at the double; `code` sets `out`."""
    script = "import json\n" + code + "\nprint('RESULT ' + json.dumps(out))\n"
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=client_env(endpoint, tmp_path / "hf"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def error_of(endpoint: str, tmp_path: Path, call: str) -> dict:
    return run_client(
        endpoint,
        tmp_path,
        f"""
from huggingface_hub import hf_hub_download, snapshot_download, HfApi
try:
    {call}
    out = {{"error": None}}
except Exception as e:
    out = {{"error": type(e).__name__, "text": str(e), "status": getattr(getattr(e, "response", None), "status_code", None)}}
""",
    )


def test_hf_hub_download_gets_the_real_config(endpoint: str, tmp_path: Path) -> None:
    out = run_client(
        endpoint,
        tmp_path,
        """
from huggingface_hub import hf_hub_download
path = hf_hub_download("Qwen/Qwen3-0.6B", "config.json")
out = {"path": path, "config": json.load(open(path)), "bytes": open(path, "rb").read().decode()}
""",
    )
    cfg = out["config"]
    assert cfg["num_hidden_layers"] == 28
    assert (cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (
        1024,
        16,
        8,
        128,
    )
    assert cfg["max_position_embeddings"] == 40960
    local = (hub.MODELS_DIR / "Qwen/Qwen3-0.6B/config.json").read_text()
    assert out["bytes"] == local
    assert len(local.encode()) == 726  # the real file's size
    assert "/snapshots/" in out["path"]


def test_snapshot_download_gets_index_with_real_total_size_and_valid_stand_ins(
    endpoint: str, tmp_path: Path
) -> None:
    out = run_client(
        endpoint,
        tmp_path,
        """
import os
from huggingface_hub import snapshot_download
d = snapshot_download("Qwen/Qwen3-8B")
out = {"files": sorted(os.listdir(d)), "index": json.load(open(os.path.join(d, "model.safetensors.index.json"))),
       "shard": open(os.path.join(d, "model-00001-of-00005.safetensors"), "rb").read().hex()}
""",
    )
    assert out["files"] == [
        "config.json",
        *[f"model-0000{i}-of-00005.safetensors" for i in range(1, 6)],
        "model.safetensors.index.json",
    ]
    assert out["index"]["metadata"]["total_size"] == 16381470720
    shard = bytes.fromhex(out["shard"])
    (header_len,) = struct.unpack("<Q", shard[:8])
    header = json.loads(shard[8 : 8 + header_len])
    (tensor,) = [v for k, v in header.items() if k != "__metadata__"]
    start, end = tensor["data_offsets"]
    assert len(shard) == 8 + header_len + end and start == 0


def test_model_info_and_tree(endpoint: str, tmp_path: Path) -> None:
    out = run_client(
        endpoint,
        tmp_path,
        """
from huggingface_hub import HfApi
api = HfApi()
i = api.model_info("Qwen/Qwen3-32B")
b = api.model_info("Qwen/Qwen3-32B", files_metadata=True)
g = api.model_info("meta-llama/Llama-3.1-8B-Instruct")
tree = [f.path for f in api.list_repo_tree("deepseek-ai/DeepSeek-V3.1", recursive=True)]
out = {"sha": i.sha, "gated": i.gated, "siblings": [s.rfilename for s in i.siblings],
       "sizes": {s.rfilename: s.size for s in b.siblings}, "lfs": [s.rfilename for s in b.siblings if s.lfs],
       "params": i.safetensors.total, "model_type": i.config["model_type"],
       "gated_llama": g.gated, "llama_siblings": len(g.siblings), "tree": tree}
""",
    )
    assert len(out["sha"]) == 40 and int(out["sha"], 16) >= 0
    assert out["gated"] is False and out["gated_llama"] == "manual"
    assert "config.json" in out["siblings"] and "model-00017-of-00017.safetensors" in out["siblings"]
    assert all(size > 0 for size in out["sizes"].values())
    assert sorted(out["lfs"]) == [f"model-{i:05d}-of-00017.safetensors" for i in range(1, 18)]
    assert out["params"] == 65524246528 // 2 and out["model_type"] == "qwen3"
    assert out["llama_siblings"] == 6
    assert "model-00163-of-000163.safetensors" in out["tree"] and "config.json" in out["tree"]


def test_same_commit_for_main_and_sha(endpoint: str, tmp_path: Path) -> None:
    out = run_client(
        endpoint,
        tmp_path,
        """
from huggingface_hub import HfApi, hf_hub_download
sha = HfApi().model_info("openai/gpt-oss-20b").sha
p = hf_hub_download("openai/gpt-oss-20b", "config.json", revision=sha)
out = {"sha": sha, "again": HfApi().model_info("openai/gpt-oss-20b").sha, "path": p,
       "cfg": json.load(open(p))}
""",
    )
    assert out["sha"] == out["again"] and out["sha"] in out["path"]
    assert (
        out["cfg"]["num_local_experts"] == 32 and out["cfg"]["quantization_config"]["quant_method"] == "mxfp4"
    )


def test_hf_cli_downloads_a_repo(endpoint: str, tmp_path: Path) -> None:
    hf = VENV_BIN / "hf"
    if not hf.exists():
        pytest.skip("no hf CLI beside this interpreter")
    dest = tmp_path / "glm"
    result = subprocess.run(
        [str(hf), "download", "zai-org/GLM-4.5-Air", "--local-dir", str(dest)],
        env=client_env(endpoint, tmp_path / "hf"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads((dest / "config.json").read_text())["num_hidden_layers"] == 46
    assert len(list(dest.glob("model-*-of-00047.safetensors"))) == 47
    one = subprocess.run(
        [str(hf), "download", "Qwen/Qwen3-0.6B", "config.json"],
        env=client_env(endpoint, tmp_path / "hf"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert one.returncode == 0, one.stderr[-4000:]
    printed = one.stdout.strip().splitlines()[-1].split("path:")[-1].strip()
    assert json.loads(Path(printed).read_text())["vocab_size"] == 151936


def test_gated_repo_refuses_a_token_without_access(endpoint: str, tmp_path: Path) -> None:
    out = error_of(
        endpoint, tmp_path, f'hf_hub_download("{GATED}", "config.json", token="hf_someoneElse0000")'
    )
    assert out["error"] == "GatedRepoError" and out["status"] == 403
    assert (
        f"Access to model {GATED} is restricted and you are not in the authorized list. "
        f"Visit https://huggingface.co/{GATED} to ask for access."
    ) in out["text"]


def test_gated_repo_refuses_an_anonymous_caller(endpoint: str, tmp_path: Path) -> None:
    out = error_of(endpoint, tmp_path, f'snapshot_download("{GATED}", token=False)')
    assert out["error"] == "GatedRepoError" and out["status"] == 401
    assert "You must have access to it and be authenticated to access it. Please log in." in out["text"]


def test_gated_repo_serves_an_access_token(endpoint: str, tmp_path: Path) -> None:
    out = run_client(
        endpoint,
        tmp_path,
        f"""
import os
from huggingface_hub import snapshot_download
d = snapshot_download("{GATED}", token="{ACCESS_TOKEN}")
out = {{"files": sorted(os.listdir(d)), "cfg": json.load(open(os.path.join(d, "config.json")))}}
""",
    )
    assert out["cfg"]["eos_token_id"] == [128001, 128008, 128009]
    assert "model-00004-of-00004.safetensors" in out["files"]


def test_unknown_repo_is_repository_not_found(endpoint: str, tmp_path: Path) -> None:
    anonymous = error_of(
        endpoint, tmp_path, 'hf_hub_download("no-such-org/no-such-model", "config.json", token=False)'
    )
    assert anonymous["error"] == "RepositoryNotFoundError" and anonymous["status"] == 401
    with_token = error_of(
        endpoint, tmp_path, 'HfApi().model_info("no-such-org/no-such-model", token="hf_x0000000")'
    )
    assert with_token["error"] == "RepositoryNotFoundError" and with_token["status"] == 404
    assert "Repository Not Found for url" in with_token["text"]


def test_unknown_revision_and_file(endpoint: str, tmp_path: Path) -> None:
    rev = error_of(endpoint, tmp_path, 'hf_hub_download("Qwen/Qwen3-8B", "config.json", revision="v9")')
    assert rev["error"] == "RevisionNotFoundError"
    entry = error_of(endpoint, tmp_path, 'hf_hub_download("Qwen/Qwen3-8B", "tokenizer.model")')
    assert entry["error"] == "RemoteEntryNotFoundError"


def _request(url: str, method: str = "GET", headers: dict[str, str] | None = None):
    req = urllib.request.Request(url, method=method, headers=headers or {})
    return urllib.request.urlopen(req, timeout=10)


def test_resolve_headers_have_no_xet_and_ranges_work(endpoint: str) -> None:
    url = f"{endpoint}/moonshotai/Kimi-K2-Instruct/resolve/main/model-1-of-61.safetensors"
    with _request(url, "HEAD") as r:
        headers = {k.lower(): v for k, v in r.headers.items()}
    assert not any(k.startswith("x-xet") for k in headers) and "xet-auth" not in headers.get("link", "")
    size = int(headers["x-linked-size"])
    assert int(headers["content-length"]) == size and len(headers["x-repo-commit"]) == 40
    assert (
        headers["x-linked-etag"].strip('"') == headers["etag"].strip('"')
        and len(headers["etag"].strip('"')) == 64
    )
    with _request(url, headers={"Range": "bytes=8-"}) as r:
        assert r.status == 206 and r.headers["Content-Range"] == f"bytes 8-{size - 1}/{size}"
        assert len(r.read()) == size - 8
    with _request(f"{endpoint}/moonshotai/Kimi-K2-Instruct/resolve/main/config.json", "HEAD") as r:
        assert "X-Linked-Size" not in r.headers and len(r.headers["ETag"].strip('"')) == 40


def test_requests_are_logged_without_the_token(endpoint: str, capfd: pytest.CaptureFixture[str]) -> None:
    secret = "hf_thisMustNeverBeLogged1234567890"
    with _request(f"{endpoint}/api/models/{GATED}", headers={"Authorization": f"Bearer {secret}"}) as r:
        assert r.status == 200
    with pytest.raises(urllib.error.HTTPError) as e:
        _request(
            f"{endpoint}/{GATED}/resolve/main/config.json", headers={"Authorization": f"Bearer {secret}"}
        )
    assert e.value.code == 403
    err = capfd.readouterr().err
    assert f"GET /api/models/{GATED} 200 auth=yes" in err
    assert secret not in err


def test_stand_ins_are_deterministic_and_small() -> None:
    a = hub.stand_in_safetensors("Qwen/Qwen3-8B", "model-00001-of-00005.safetensors")
    assert a == hub.stand_in_safetensors("Qwen/Qwen3-8B", "model-00001-of-00005.safetensors")
    assert a != hub.stand_in_safetensors("Qwen/Qwen3-8B", "model-00002-of-00005.safetensors")
    assert len(a) < 512
    (n,) = struct.unpack("<Q", a[:8])
    assert n % 8 == 0 and json.loads(a[8 : 8 + n])["__metadata__"]["format"] == "pt"


# -- the files the double serves ---------------------------------------------------------------------------


def _repo_dirs() -> list[Path]:
    return sorted(p for p in hub.MODELS_DIR.glob("*/*") if p.is_dir())


def _text_config(cfg: dict) -> dict:
    return cfg.get("text_config", cfg)


def test_every_catalog_and_agentic_model_is_there() -> None:
    have = {p.relative_to(hub.MODELS_DIR).as_posix() for p in _repo_dirs()}
    assert set(CATALOG) | set(AGENTIC) <= have
    if SHARED_CATALOG.is_file():
        assert set(json.loads(SHARED_CATALOG.read_text())["models"]) <= have


@pytest.mark.parametrize("repo_dir", _repo_dirs(), ids=lambda p: p.relative_to(hub.MODELS_DIR).as_posix())
def test_config_has_what_the_fit_estimate_needs(repo_dir: Path) -> None:
    cfg = _text_config(json.loads((repo_dir / "config.json").read_text()))
    assert cfg["num_hidden_layers"] > 0 and cfg["num_attention_heads"] > 0 and cfg["hidden_size"] > 0
    mla = all(k in cfg for k in ("kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim"))
    assert mla or cfg.get("num_key_value_heads", cfg["num_attention_heads"]) > 0
    assert (
        cfg.get("dtype") or cfg.get("torch_dtype") or cfg.get("quantization_config", {}).get("quant_method")
    )
    assert cfg["max_position_embeddings"] > 0 and cfg["model_type"]


@pytest.mark.parametrize("repo_dir", _repo_dirs(), ids=lambda p: p.relative_to(hub.MODELS_DIR).as_posix())
def test_index_names_only_shards_the_repo_has(repo_dir: Path) -> None:
    weights = json.loads((repo_dir / "_lab.json").read_text())["weights"]
    assert weights and all(w.endswith(".safetensors") for w in weights)
    index_path = repo_dir / "model.safetensors.index.json"
    if len(weights) == 1:
        assert not index_path.exists()  # a single-file repo has no index on the real hub either
        return
    index = json.loads(index_path.read_text())
    assert index["metadata"]["total_size"] > 10**9
    assert set(index["weight_map"].values()) <= set(weights)
