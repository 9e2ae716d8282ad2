"""Build the engine double's wheel (`vllm-0.33.0+lab-py3-none-any.whl`) without a build backend.

The wheel is written by hand per the binary distribution format (PEP 427 / 491): the package
files, `METADATA`, `WHEEL`, `entry_points.txt` and a `RECORD` of sha256 digests. Names, version,
Python requirement, dependencies and the console script come from `vllm_double/pyproject.toml`.
Entries are sorted and time-stamped 1980-01-01, so the same sources give the same bytes: fast,
hermetic, no network, no pip.

    python -m pi_ansible.lab.doubles.build OUTDIR
"""

from __future__ import annotations

import base64
import hashlib
import sys
import tomllib
import zipfile
from pathlib import Path

DOUBLE_DIR = Path(__file__).resolve().parent / "vllm_double"
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _metadata(project: dict, readme: str) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
        f"Summary: {project.get('description', '')}",
        f"License: {project.get('license', {}).get('text', '')}",
        f"Requires-Python: {project['requires-python']}",
    ]
    lines += [f"Requires-Dist: {dep}" for dep in project.get("dependencies", [])]
    lines.append("Description-Content-Type: text/markdown")
    return "\n".join(lines) + "\n\n" + readme


def _files(source: Path) -> list[Path]:
    pkg = source / "vllm"
    return sorted(
        p
        for p in pkg.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )


def build_wheel(out_dir: Path, source: Path = DOUBLE_DIR) -> Path:
    """Write the wheel into `out_dir` and return its path."""
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project["version"]
    dist_info = f"{name}-{version}.dist-info"
    readme = (source / project.get("readme", "README.md")).read_text()
    scripts = project.get("scripts", {})
    entries: list[tuple[str, bytes]] = [
        (p.relative_to(source).as_posix(), p.read_bytes()) for p in _files(source)
    ]
    entries += [
        (f"{dist_info}/METADATA", _metadata(project, readme).encode()),
        (
            f"{dist_info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: pi-ansible-lab (build.py)\n"
            b"Root-Is-Purelib: true\nTag: py3-none-any\n",
        ),
        (
            f"{dist_info}/entry_points.txt",
            ("[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(scripts.items()))).encode(),
        ),
        (f"{dist_info}/top_level.txt", b"vllm\n"),
    ]
    record = "".join(f"{path},{_digest(data)},{len(data)}\n" for path, data in entries)
    record += f"{dist_info}/RECORD,,\n"
    entries.append((f"{dist_info}/RECORD", record.encode()))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"{name}-{version}-py3-none-any.whl"
    tmp = wheel.with_suffix(".whl.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in entries:
            info = zipfile.ZipInfo(path, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            info.create_system = 3
            zf.writestr(info, data)
    tmp.replace(wheel)
    return wheel


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m pi_ansible.lab.doubles.build OUTDIR", file=sys.stderr)
        return 2
    print(build_wheel(Path(argv[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
