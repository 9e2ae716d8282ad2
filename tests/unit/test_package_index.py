"""The package index (PEP 503) and the wheelhouse, against the real uv; and the services process."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pi_ansible.lab import index_server, wheelhouse

REPO_ROOT = Path(__file__).resolve().parents[2]


def _uv() -> str | None:
    beside = Path(sys.executable).with_name("uv")
    return str(beside) if beside.exists() else shutil.which("uv")


def make_wheel(
    directory: Path, name: str = "Pi_Lab.Tiny", version: str = "1.0", requires_python: str = ">=3.9"
) -> Path:
    """A minimal pure-Python wheel: one module, METADATA, WHEEL and RECORD."""
    dist = f"{re.sub(r'[-.]+', '_', name)}-{version}"
    path = directory / f"{dist}-py3-none-any.whl"
    files = {
        "pi_lab_tiny/__init__.py": b"VALUE = 42\n",
        f"{dist}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nRequires-Python: {requires_python}\n\n"
        ).encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: pi-lab-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = (
        "".join(f"{n},sha256={hashlib.sha256(d).hexdigest()},{len(d)}\n" for n, d in files.items())
        + f"{dist}.dist-info/RECORD,,\n"
    )
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in files.items():
            zf.writestr(n, d)
        zf.writestr(f"{dist}.dist-info/RECORD", record)
    return path


@pytest.fixture
def index(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    server = index_server.make_server("127.0.0.1", 0, wheel_dir)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}", wheel_dir
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def test_normalize_follows_pep_503() -> None:
    assert index_server.normalize("Pi_Lab.Tiny") == "pi-lab-tiny"
    assert index_server.normalize("huggingface_hub") == "huggingface-hub"
    assert index_server.normalize("typing__extensions") == "typing-extensions"


def test_simple_pages_list_wheels_with_hashes_and_requires_python(index: tuple[str, Path]) -> None:
    url, wheel_dir = index
    wheel = make_wheel(wheel_dir)
    root = get(f"{url}/simple/").decode()
    assert '<a href="/simple/pi-lab-tiny/">pi-lab-tiny</a>' in root
    page = get(f"{url}/simple/pi-lab-tiny/").decode()
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert f'href="/files/{wheel.name}#sha256={digest}"' in page
    assert 'data-requires-python="&gt;=3.9"' in page
    assert get(f"{url}/simple/Pi_Lab.Tiny/") == page.encode()
    assert get(f"{url}/files/{wheel.name}") == wheel.read_bytes()
    assert b"Name: Pi_Lab.Tiny" in get(f"{url}/files/{wheel.name}.metadata")
    with pytest.raises(urllib.error.HTTPError) as e:
        get(f"{url}/simple/not-here/")
    assert e.value.code == 404


def test_wheels_copied_in_later_are_served(index: tuple[str, Path]) -> None:
    url, wheel_dir = index
    assert b"pi-lab-tiny" not in get(f"{url}/simple/")
    make_wheel(wheel_dir)
    assert b"pi-lab-tiny" in get(f"{url}/simple/")


def uv_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_"))}
    env |= {
        "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_CONFIG": "1",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    return env


def uv_install(uv: str, tmp_path: Path, index_url: str, *packages: str) -> Path:
    venv = tmp_path / "venv"
    env = uv_env(tmp_path)
    subprocess.run(
        [uv, "venv", "--python", sys.executable, str(venv)],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    result = subprocess.run(
        [uv, "pip", "install", "--python", str(venv / "bin" / "python"), "--index-url", index_url, *packages],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return venv


def test_real_uv_installs_from_the_index(index: tuple[str, Path], tmp_path: Path) -> None:
    uv = _uv()
    if uv is None:
        pytest.skip("uv not found")
    url, wheel_dir = index
    make_wheel(wheel_dir)
    venv = uv_install(uv, tmp_path, f"{url}/simple", "pi-lab-tiny")
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import pi_lab_tiny; print(pi_lab_tiny.VALUE)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "42"


def test_wheelhouse_reuses_its_stamp_without_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    (cache / wheelhouse.WHEELS).mkdir(parents=True)
    fake = make_wheel(cache / wheelhouse.WHEELS, "uv", "0.1")
    stamp = {
        "key": wheelhouse._stamp_key(wheelhouse.DEFAULT_REQUIREMENTS),
        "downloaded": [fake.name],
        "extras": {},
    }
    (cache / wheelhouse.STAMP).write_text(json.dumps(stamp))
    monkeypatch.setenv("PI_LAB_PIP", "false")  # any pip call would fail
    extra = make_wheel(tmp_path, "vllm", "0.33.0")
    wheel_dir = wheelhouse.build_wheelhouse(cache, [extra])
    assert sorted(p.name for p in wheel_dir.glob("*.whl")) == sorted([fake.name, extra.name])
    assert json.loads((cache / wheelhouse.STAMP).read_text())["extras"] == {
        extra.name: hashlib.sha256(extra.read_bytes()).hexdigest()
    }
    with pytest.raises(wheelhouse.WheelhouseError):
        wheelhouse.build_wheelhouse(cache, [], requirements=("uv", "something-new"))


def test_download_args_target_the_pods() -> None:
    args = wheelhouse.download_args(["uv"], Path("/x"))
    assert args[:3] == ["download", "--disable-pip-version-check", "--no-input"]
    assert (
        "--only-binary=:all:" in args and "manylinux_2_36_x86_64" in args and "manylinux2014_x86_64" in args
    )
    assert args[args.index("--python-version") + 1] == "3.11" and args[-1] == "uv"


@pytest.mark.slow
def test_wheelhouse_from_pypi_serves_huggingface_hub_to_uv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Needs PyPI once: the real wheels, served by the index, installed by the real uv with no other index."""
    uv = _uv()
    if uv is None:
        pytest.skip("uv not found")
    extra = make_wheel(tmp_path, "vllm", "0.33.0+lab")
    wheel_dir = wheelhouse.build_wheelhouse(tmp_path / "cache", [extra])
    names = {p.name.split("-")[0].lower() for p in wheel_dir.glob("*.whl")}
    assert {"uv", "huggingface_hub", "hf_xet", "vllm"} <= names
    monkeypatch.setenv("PI_LAB_PIP", "false")  # the second call must not touch pip, nor so the network
    assert wheelhouse.build_wheelhouse(tmp_path / "cache", [extra]) == wheel_dir

    server = index_server.make_server("127.0.0.1", 0, wheel_dir)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        venv = uv_install(uv, tmp_path, f"http://{host}:{port}/simple", "huggingface_hub", "uv")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import huggingface_hub, hf_xet; print('ok')"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.stdout.strip() == "ok", out.stderr
    assert (venv / "bin" / "uv").exists() and (venv / "bin" / "hf").exists()


def test_services_process_serves_both_and_stops_on_sigterm(tmp_path: Path) -> None:
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    make_wheel(wheel_dir)
    tokens = tmp_path / "tokens"
    tokens.write_text("# access tokens\nhf_tokenForServicesTest000\n")
    tokens.chmod(0o600)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pi_ansible.lab.services",
            "--bind",
            "127.0.0.1",
            "--hub-port",
            "0",
            "--index-port",
            "0",
            "--wheel-dir",
            str(wheel_dir),
            "--access-token-file",
            str(tokens),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        ready = json.loads(line)
        assert ready["ready"] is True and ready["repos"] >= 23
        info = json.loads(get(f"{ready['hub']}/api/models/Qwen/Qwen3-0.6B"))
        assert info["id"] == "Qwen/Qwen3-0.6B" and len(info["sha"]) == 40
        req = urllib.request.Request(
            f"{ready['hub']}/meta-llama/Llama-3.1-8B-Instruct/resolve/main/config.json",
            headers={"Authorization": "Bearer hf_tokenForServicesTest000"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.loads(r.read())["num_hidden_layers"] == 32
        assert b"pi-lab-tiny" in get(ready["index"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert "hf_tokenForServicesTest000" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
