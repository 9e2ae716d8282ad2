"""Run the vLLM engine double (pi_ansible/lab/doubles/vllm_double) in a test, on 127.0.0.1.

    from tests.helpers.engine import running_engine_double

    def test_something(tmp_path):
        with running_engine_double(tmp_path, args=["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]) as eng:
            client = eng.client()                      # openai.OpenAI(base_url=eng.base_url, api_key=eng.api_key)
            client.chat.completions.create(model="Qwen/Qwen3-0.6B", messages=[...])
            assert "Application startup complete" in eng.log_text()

Everything lives under `tmp_path`: an HF cache (HF_HOME, the model's config.json in the real
`hub/models--org--name/snapshots/<rev>/` layout with `refs/main`, HF_HUB_OFFLINE=1), a GPU profile
(one H100 80GB unless `profile=` says otherwise) and the GPU process registry directory.
The server is `python -m vllm serve MODEL --host 127.0.0.1 --port <free port> *args`, with the
API key passed as VLLM_API_KEY (never on the command line). `env` entries override the
environment (a value of None removes the variable). On exit the server gets SIGTERM.

For starts that are meant to fail, `run_engine_double(...)` waits for the process to exit and
returns its status and log.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DOUBLE_DIR = Path(__file__).resolve().parents[2] / "pi_ansible" / "lab" / "doubles" / "vllm_double"
DEFAULT_MODEL = "Qwen/Qwen3-0.6B"
DEFAULT_API_KEY = "lab-test-key-0123456789"

# Qwen/Qwen3-0.6B's config.json (the fields that matter to vLLM's memory rules and family choice).
QWEN3_0_6B_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 40960,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "rope_scaling": None,
    "rope_theta": 1000000,
}


def gpu(
    index: int = 0,
    *,
    name: str = "NVIDIA H100 80GB HBM3",
    total_mib: int = 81559,
    reserved_mib: int = 479,
    uuid: str | None = None,
) -> dict:
    """One GPU entry of a lab GPU profile (pi_ansible/lab/README.md)."""
    h = hashlib.sha256(f"{name}:{index}".encode()).hexdigest()
    return {
        "index": index,
        "name": name,
        "uuid": uuid or f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}",
        "pci_bus_id": f"00000000:{0x18 + index:02X}:00.0",
        "memory_total_mib": total_mib,
        "memory_reserved_mib": reserved_mib,
        "compute_cap": "9.0",
        "power_limit_w": 700,
        "mig": False,
        "mig_devices": [],
    }


def gpu_profile(
    count: int = 1,
    *,
    name: str = "NVIDIA H100 80GB HBM3",
    total_mib: int = 81559,
    reserved_mib: int = 479,
    failure: str | None = None,
) -> dict:
    return {
        "name": f"test-{count}x",
        "driver_version": "590.48.01",
        "cuda_version": "13.1",
        "failure": failure,
        "gpus": [gpu(i, name=name, total_mib=total_mib, reserved_mib=reserved_mib) for i in range(count)],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot_revision(model: str) -> str:
    return hashlib.sha1(model.encode()).hexdigest()


def prepare_hf_cache(
    hf_home: Path, model: str, config: dict, index: dict | None = None, files: dict[str, str] | None = None
) -> Path:
    """Write config.json (and the safetensors index, and any other files) as the Hub cache holds them."""
    repo = hf_home / "hub" / ("models--" + model.replace("/", "--"))
    rev = snapshot_revision(model)
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    (snap / "config.json").write_text(json.dumps(config))
    if index is not None:
        (snap / "model.safetensors.index.json").write_text(json.dumps(index))
    for name, text in (files or {}).items():
        (snap / name).write_text(text)
    return snap


@dataclass
class EngineDouble:
    proc: subprocess.Popen
    port: int
    api_key: str | None
    log_path: Path
    hf_home: Path
    state_dir: Path
    profile_path: Path
    model: str
    env: dict = field(repr=False, default_factory=dict)

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (…/v1)."""
        return self.root_url + "/v1"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, **kwargs):
        import openai

        return openai.OpenAI(
            base_url=self.base_url,
            api_key=self.api_key or "EMPTY",
            max_retries=0,
            timeout=kwargs.pop("timeout", 10.0),
            **kwargs,
        )

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.root_url + "/health", timeout=0.5) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"engine double exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}"
                )
            if self.healthy():
                return
            time.sleep(0.05)
        raise TimeoutError(f"engine double not healthy after {timeout}s:\n{self.log_text()[-4000:]}")

    def stop(self, timeout: float = 5.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode


def _environment(
    tmp_path: Path,
    model: str,
    config: dict,
    index: dict | None,
    profile: dict | None,
    api_key: str | None,
    env: dict | None,
) -> tuple[dict, Path, Path, Path]:
    hf_home = tmp_path / "hf"
    state_dir = tmp_path / "gpu-state"
    profile_path = tmp_path / "gpu-profile.json"
    prepare_hf_cache(hf_home, model, config, index)
    state_dir.mkdir(parents=True, exist_ok=True)
    profile_path.write_text(json.dumps(profile if profile is not None else gpu_profile()))
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VLLM_", "HF_", "PI_LAB_", "HUGGING", "CUDA_", "PYTHON"))
    }
    base.update(
        {
            "PYTHONPATH": str(DOUBLE_DIR),
            "PYTHONUNBUFFERED": "1",
            "HF_HOME": str(hf_home),
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "PI_LAB_GPU_PROFILE": str(profile_path),
            "PI_LAB_GPU_STATE": str(state_dir),
            "PI_LAB_VLLM_LOAD_SECONDS": "0.05",
            "VLLM_DISABLE_LOG_LOGO": "0",
        }
    )
    if api_key:
        base["VLLM_API_KEY"] = api_key
    for k, v in (env or {}).items():
        if v is None:
            base.pop(k, None)
        else:
            base[k] = str(v)
    return base, hf_home, state_dir, profile_path


def start_engine_double(
    tmp_path: Path,
    model: str = DEFAULT_MODEL,
    config: dict | None = None,
    args: Sequence[str] = (),
    env: dict | None = None,
    profile: dict | None = None,
    *,
    index: dict | None = None,
    api_key: str | None = DEFAULT_API_KEY,
    port: int | None = None,
    name: str = "engine",
) -> EngineDouble:
    """Start the double without waiting for it; the caller stops it (`.stop()`)."""
    tmp_path = Path(tmp_path)
    full_env, hf_home, state_dir, profile_path = _environment(
        tmp_path, model, config if config is not None else QWEN3_0_6B_CONFIG, index, profile, api_key, env
    )
    port = port or free_port()
    log_path = tmp_path / f"{name}-{port}.log"
    cmd = [sys.executable, "-m", "vllm", "serve", model, "--host", "127.0.0.1", "--port", str(port), *args]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env, cwd=tmp_path
        )
    return EngineDouble(proc, port, api_key, log_path, hf_home, state_dir, profile_path, model, full_env)


@contextlib.contextmanager
def running_engine_double(
    tmp_path: Path,
    model: str = DEFAULT_MODEL,
    config: dict | None = None,
    args: Sequence[str] = (),
    env: dict | None = None,
    profile: dict | None = None,
    *,
    index: dict | None = None,
    api_key: str | None = DEFAULT_API_KEY,
    timeout: float = 20.0,
) -> Iterator[EngineDouble]:
    """Start the double, wait for /health, yield it, SIGTERM it on the way out."""
    eng = start_engine_double(tmp_path, model, config, args, env, profile, index=index, api_key=api_key)
    try:
        eng.wait_healthy(timeout)
        yield eng
    finally:
        eng.stop()


@dataclass
class Finished:
    returncode: int
    log: str
    engine: EngineDouble


def run_engine_double(
    tmp_path: Path,
    model: str = DEFAULT_MODEL,
    config: dict | None = None,
    args: Sequence[str] = (),
    env: dict | None = None,
    profile: dict | None = None,
    *,
    index: dict | None = None,
    api_key: str | None = DEFAULT_API_KEY,
    timeout: float = 20.0,
) -> Finished:
    """Start the double and wait for it to exit (for starts that must fail); kill it after `timeout`."""
    eng = start_engine_double(tmp_path, model, config, args, env, profile, index=index, api_key=api_key)
    try:
        rc = eng.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        eng.stop()
        raise TimeoutError(
            f"engine double still running after {timeout}s:\n{eng.log_text()[-4000:]}"
        ) from None
    return Finished(rc, eng.log_text(), eng)
