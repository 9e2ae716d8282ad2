"""The wheelhouse behind the lab's package index: real wheels for pods with no internet.

`pip download` fetches, for the pods' interpreter (CPython 3.11 on Debian 12, x86_64, glibc 2.36), the wheels of
`uv`, `huggingface_hub` with all its dependencies (`hf_xet` included) and `hf_xet`; the engine double's wheel and any
other local wheel are copied in beside them. A stamp records what was asked for, so a second call that asks for
nothing new touches no network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_REQUIREMENTS: tuple[str, ...] = ("uv", "huggingface_hub", "hf_xet")
PYTHON_VERSION = "3.11"
# Debian bookworm has glibc 2.36: every manylinux tag up to 2.36 installs there.
PLATFORMS: tuple[str, ...] = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
    "linux_x86_64",
)
STAMP = "wheelhouse.json"
WHEELS = "wheels"


class WheelhouseError(RuntimeError):
    pass


def _pip_command() -> list[str]:
    """A pip that runs here: this interpreter's, else the first python3 on PATH that has one (PI_LAB_PIP overrides)."""
    override = os.environ.get("PI_LAB_PIP")
    if override:
        return override.split()
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("python3.11", "python3"):
        exe = shutil.which(name)
        if (
            exe
            and subprocess.run([exe, "-m", "pip", "--version"], capture_output=True, check=False).returncode
            == 0
        ):
            return [exe, "-m", "pip"]
    exe = shutil.which("pip3") or shutil.which("pip")
    if exe:
        return [exe]
    raise WheelhouseError("no pip found: install pip for python3, or set PI_LAB_PIP to a pip command")


def download_args(requirements: Sequence[str], dest: Path) -> list[str]:
    args = [
        "download",
        "--disable-pip-version-check",
        "--no-input",
        "--only-binary=:all:",
        "--python-version",
        PYTHON_VERSION,
        "--implementation",
        "cp",
        "--abi",
        "cp311",
        "--abi",
        "abi3",
        "--abi",
        "none",
        "--dest",
        str(dest),
    ]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    return [*args, *requirements]


def _stamp_key(requirements: Sequence[str]) -> dict:
    return {"requirements": list(requirements), "python": PYTHON_VERSION, "platforms": list(PLATFORMS)}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_wheelhouse(
    cache_dir: Path,
    extra_wheels: list[Path],
    *,
    requirements: Sequence[str] = DEFAULT_REQUIREMENTS,
    timeout_s: float = 900,
) -> Path:
    """Fill `cache_dir/wheels` and return it; downloads only when the stamp says something new is asked for."""
    cache_dir = Path(cache_dir)
    wheel_dir = cache_dir / WHEELS
    wheel_dir.mkdir(parents=True, exist_ok=True)
    stamp_path = cache_dir / STAMP
    stamp = json.loads(stamp_path.read_text()) if stamp_path.is_file() else {}
    key = _stamp_key(requirements)
    downloaded = stamp.get("downloaded", [])
    fresh = (
        stamp.get("key") == key and downloaded and all((wheel_dir / name).is_file() for name in downloaded)
    )
    if not fresh:
        cmd = [*_pip_command(), *download_args(requirements, wheel_dir)]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as e:
            raise WheelhouseError(f"pip download timed out after {timeout_s:.0f} s") from e
        if result.returncode != 0:
            raise WheelhouseError(f"pip download failed ({result.returncode}):\n{result.stderr[-4000:]}")
        local = set(stamp.get("extras", {}))
        downloaded = sorted(p.name for p in wheel_dir.glob("*.whl") if p.name not in local)
        stamp = {"key": key, "downloaded": downloaded, "extras": stamp.get("extras", {})}
    extras = dict(stamp.get("extras", {}))
    for wheel in extra_wheels:
        wheel = Path(wheel)
        if not wheel.name.endswith(".whl") or not wheel.is_file():
            raise WheelhouseError(f"not a wheel file: {wheel}")
        digest = _sha256(wheel)
        target = wheel_dir / wheel.name
        if extras.get(wheel.name) != digest or not target.is_file():
            shutil.copyfile(wheel, target)
            extras[wheel.name] = digest
    stamp["extras"] = extras
    tmp = stamp_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stamp, indent=1, sort_keys=True) + "\n")
    tmp.replace(stamp_path)
    return wheel_dir


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Fill the lab's wheelhouse (needs PyPI once).")
    parser.add_argument("cache_dir", type=Path)
    parser.add_argument("extra_wheels", type=Path, nargs="*")
    args = parser.parse_args(argv)
    print(build_wheelhouse(args.cache_dir, list(args.extra_wheels)))


if __name__ == "__main__":
    main()
