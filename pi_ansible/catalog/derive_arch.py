"""Fill each catalog entry's `arch` from the model's real config.json and safetensors index.

The files are the ones the lab's hub double serves (`pi_ansible/lab/hub_models/<org>/<repo>/`,
sources in its SOURCES.md), so planning needs no download. A unit test re-derives every entry
and compares, so models.json and the files never drift.

    python -m pi_ansible.catalog.derive_arch          # rewrite models.json
    python -m pi_ansible.catalog.derive_arch --check  # exit 1 if models.json is stale
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pi_ansible.catalog import BUILTIN_FILE
from pi_ansible.planning.model_config import Arch, arch_from_config

HUB_MODELS = Path(__file__).resolve().parents[1] / "lab" / "hub_models"


def hub_files(model_id: str, root: Path = HUB_MODELS) -> tuple[dict, dict | None, int | None] | None:
    """(config, safetensors index or None, exact parameter count or None) for a model, or None."""
    folder = root / model_id
    if not (folder / "config.json").is_file():
        return None
    config = json.loads((folder / "config.json").read_text())
    index_file = folder / "model.safetensors.index.json"
    index = json.loads(index_file.read_text()) if index_file.is_file() else None
    params = None
    lab = folder / "_lab.json"
    if lab.is_file():
        counts = json.loads(lab.read_text()).get("safetensors_parameters") or {}
        params = sum(counts.values()) or None
    return config, index, params


def derive(model_id: str, root: Path = HUB_MODELS) -> Arch | None:
    files = hub_files(model_id, root)
    if files is None:
        return None
    config, index, params = files
    return arch_from_config(config, index, params=params)


def dumps(value, indent: int = 0) -> str:
    """JSON with lists of scalars on one line, so args read like the command line they become."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f'{pad}  {json.dumps(k)}: {dumps(v, indent + 1)}' for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list):
        if all(not isinstance(v, dict | list) for v in value):
            return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in value) + "]"
        return "[\n" + ",\n".join(f"{pad}  {dumps(v, indent + 1)}" for v in value) + f"\n{pad}]"
    return json.dumps(value, ensure_ascii=False)


def rederive(doc: dict, root: Path = HUB_MODELS) -> dict:
    out = json.loads(json.dumps(doc))
    for entry in out["models"]:
        arch = derive(entry["id"], root)
        if arch is not None:
            entry["arch"] = arch.to_dict()
    return out


def main(argv: list[str]) -> int:
    doc = json.loads(BUILTIN_FILE.read_text())
    text = dumps(rederive(doc)) + "\n"
    if "--check" in argv:
        if text != BUILTIN_FILE.read_text():
            print(f"{BUILTIN_FILE} is stale: run python -m pi_ansible.catalog.derive_arch", file=sys.stderr)
            return 1
        return 0
    BUILTIN_FILE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
