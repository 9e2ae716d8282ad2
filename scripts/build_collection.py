#!/usr/bin/env python3
"""Build the Ansible collection piansible.pods from this repository: dist/piansible-pods-<version>.tar.gz.

    python scripts/build_collection.py [--out DIR] [--tree DIR]

The repository keeps its Ansible content where plain `ansible-playbook` and the `pi` CLI use it in place
(roles/, plugins/, playbooks/, with ansible.cfg putting them on the paths). A collection needs another
shape, so this script assembles `ansible_collections/piansible/pods/` in a temporary directory (or
--tree) and runs `ansible-galaxy collection build` on it:

- collection/ (galaxy.yml, README.md, meta/, requirements.txt) is the base; galaxy.yml's `version` is set
  to pi-ansible's (pi_ansible/__init__.py, which pyproject.toml reads too).
- roles/, plugins/ (modules, module_utils, filter and any other plugin type) and playbooks/*.yml are
  copied with symlinks resolved (plugins/module_utils/*.py are symlinks into pi_ansible/).
- Short names become FQCN: our modules as task keys (roles, playbooks, module EXAMPLES), our filters after
  `|` (YAML and templates), our roles in `role:` and include_role/import_role `name:`. Inside a collection
  Ansible would find a role's own modules by short name, but never its filters (Jinja plugins always
  need FQCN) nor a role from a playbook; rewriting all of them keeps the collection explicit.
- Modules' `from ansible.module_utils.<ours> import` become
  `from ansible_collections.piansible.pods.plugins.module_utils.<ours> import`.
- The filter plugin (like any controller-side plugin) imports pi_ansible, the pure planning code. The
  import closure (found by reading the imports, nothing is executed) is vendored as
  plugins/plugin_utils/pi_ansible/ with package data (the catalog's JSON), and every `pi_ansible` import
  in it and in the filter is rewritten to
  `ansible_collections.piansible.pods.plugins.plugin_utils.pi_ansible`: collection users need no pip
  package, and an installed pi-ansible of another version is never mixed in. Its third-party imports are
  `packaging` (an ansible-core dependency) and `jsonschema`, which only the catalog filters use: the
  vendored catalog imports it lazily and says what to install when it is missing.

Every rewrite is checked afterwards: a short name or a plain `pi_ansible` import left in the tree fails
the build.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "collection"
PACKAGE = "pi_ansible"
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".retry")


class BuildError(RuntimeError):
    pass


def version(repo: Path = REPO) -> str:
    """pi-ansible's version, read statically from pi_ansible/__init__.py (as setuptools does)."""
    tree = ast.parse((repo / PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return ast.literal_eval(node.value)
    raise BuildError("pi_ansible/__init__.py has no __version__")


def galaxy_info(repo: Path = REPO) -> dict:
    info = yaml.safe_load((repo / "collection" / "galaxy.yml").read_text())
    info["version"] = version(repo)
    return info


def _files(top: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        out += [Path(dirpath) / f for f in sorted(filenames) if not f.endswith(SKIP_SUFFIXES)]
    return out


def _copy(src: Path, dest: Path) -> None:
    if not src.exists():
        raise BuildError(f"{src} is a dangling symlink")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dest)  # follows symlinks


# --- short names -> FQCN -------------------------------------------------------------------------------


class Names:
    def __init__(self, repo: Path, fqcn: str):
        self.fqcn = fqcn
        # Task keys: modules, and action plugins (which may stand alone or shadow a module).
        self.modules = sorted({p.stem for kind in ("modules", "action") for p in (repo / "plugins" / kind).glob("*.py")
                               if p.stem != "__init__"})
        self.module_utils = sorted(p.stem for p in (repo / "plugins" / "module_utils").glob("*.py")
                                   if p.stem != "__init__")
        self.filters = sorted(_filter_names(repo / "plugins" / "filter"))
        self.roles = sorted(p.name for p in (repo / "roles").iterdir() if (p / "tasks").is_dir())


def _filter_names(filter_dir: Path) -> set[str]:
    """The keys of every FilterModule.filters() return dict, read from the source."""
    names: set[str] = set()
    for path in filter_dir.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == "filters":
                for ret in ast.walk(node):
                    if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Dict):
                        names |= {k.value for k in ret.value.keys if isinstance(k, ast.Constant)}
    return names


def _alt(names: list[str]) -> str:
    return "|".join(map(re.escape, sorted(names, key=len, reverse=True)))


def rewrite_module_tasks(text: str, names: Names) -> str:
    """`- nvidia_smi_facts:` / `  uv_install:` as a task key -> FQCN."""
    if not names.modules:
        return text
    pattern = re.compile(rf"^(\s*(?:-\s+)?)({_alt(names.modules)}):(?=\s|$)", re.MULTILINE)
    return pattern.sub(rf"\g<1>{names.fqcn}.\g<2>:", text)


def rewrite_filters(text: str, names: Names) -> str:
    """`| pi_engine_build(...)` and `map('pi_x')` -> FQCN (Jinja plugins are never found by short name)."""
    if not names.filters:
        return text
    alt = _alt(names.filters)
    text = re.sub(rf"(\|\s*)({alt})\b(?!\.)", rf"\g<1>{names.fqcn}.\g<2>", text)
    return re.sub(rf"""(\b(?:map|select|reject|selectattr|rejectattr)\(\s*(?:[^()]*,\s*)?["'])({alt})(["'])""",
                  rf"\g<1>{names.fqcn}.\g<2>\g<3>", text)


def rewrite_role_refs(text: str, names: Names) -> str:
    """`role: gpu_facts`, `roles: [- gpu_facts]` and include_role/import_role `name: model_service` -> FQCN."""
    if not names.roles:
        return text
    alt = _alt(names.roles)
    text = re.sub(rf"^(\s*(?:-\s+)?role:\s*)([\"']?)({alt})\2[ \t]*$", rf"\g<1>\g<2>{names.fqcn}.\g<3>\g<2>",
                  text, flags=re.MULTILINE)
    out, owner_indent, in_roles = [], None, None
    for line in text.splitlines(keepends=True):
        indent = len(line) - len(line.lstrip())
        stripped = line.strip()
        if owner_indent is not None and stripped and indent <= owner_indent:
            owner_indent = None
        if in_roles is not None and stripped and (indent < in_roles or (indent == in_roles and not stripped.startswith("-"))):
            in_roles = None
        if re.match(r"^\s*(?:-\s+)?(?:ansible\.builtin\.|ansible\.legacy\.)?(?:include_role|import_role):[ \t]*$", line):
            owner_indent = indent
        elif owner_indent is not None:
            line = re.sub(rf"^(\s*name:\s*)([\"']?)({alt})\2[ \t]*$", rf"\g<1>\g<2>{names.fqcn}.\g<3>\g<2>", line)
        if re.match(r"^\s*(?:-\s+)?roles:[ \t]*$", line):
            in_roles = indent
        elif in_roles is not None:
            line = re.sub(rf"^(\s*-\s+)({alt})[ \t]*$", rf"\g<1>{names.fqcn}.\g<2>", line)
        out.append(line)
    return "".join(out)


def rewrite_module_utils_imports(text: str, names: Names) -> str:
    if not names.module_utils:
        return text
    fq = f"ansible_collections.{names.fqcn}.plugins.module_utils"
    return re.sub(rf"^(\s*)from ansible\.module_utils\.({_alt(names.module_utils)}) import",
                  rf"\g<1>from {fq}.\g<2> import", text, flags=re.MULTILINE)


def rewrite_examples(text: str, names: Names) -> str:
    """Module names in a module's EXAMPLES block -> FQCN."""
    m = re.search(r'^EXAMPLES = r?"""(.*?)"""', text, re.MULTILINE | re.DOTALL)
    if not m:
        return text
    return text[: m.start(1)] + rewrite_module_tasks(m.group(1), names) + text[m.end(1):]


# --- vendoring pi_ansible ------------------------------------------------------------------------------


def _module_file(repo: Path, dotted: str) -> Path | None:
    base = repo.joinpath(*dotted.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _dotted(repo: Path, path: Path) -> str:
    rel = path.relative_to(repo).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(repo: Path, path: Path) -> set[str]:
    """Dotted names of pi_ansible modules that `path` imports (absolute or relative, any depth)."""
    me = _dotted(repo, path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if mod.split(".")[0] != PACKAGE:
                continue
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names if _module_file(repo, f"{mod}.{a.name}")}
    return found


def vendor_closure(repo: Path, roots: list[Path]) -> list[Path]:
    """Every pi_ansible source file the roots import, transitively, with the packages containing them."""
    todo = set()
    for root in roots:
        todo |= _imports(repo, root)
    seen: dict[str, Path] = {}
    while todo:
        dotted = todo.pop()
        parts = dotted.split(".")
        for i in range(1, len(parts) + 1):  # a module's parent packages run first: include them
            name = ".".join(parts[:i])
            if name in seen:
                continue
            path = _module_file(repo, name)
            if path is None:
                if i == len(parts):
                    raise BuildError(f"{dotted} is imported but not found under {repo / PACKAGE}")
                continue
            seen[name] = path
            todo |= _imports(repo, path) - set(seen)
    return sorted(seen.values())


def rewrite_package_imports(text: str, prefix: str) -> str:
    """`from pi_ansible.x import y` / `import pi_ansible` -> the vendored copy under `prefix`."""
    text = re.sub(rf"^(\s*)from {PACKAGE}(?=[.\s])", rf"\g<1>from {prefix}.{PACKAGE}", text, flags=re.MULTILINE)
    return re.sub(rf"^(\s*)import {PACKAGE}(?=[.\s])", rf"\g<1>import {prefix}.{PACKAGE}", text, flags=re.MULTILINE)


def _check_no_plain_package_use(path: Path, text: str) -> None:
    tree = ast.parse(text, str(path))
    for node in ast.walk(tree):
        bad = (isinstance(node, ast.Import) and any(a.name.split(".")[0] == PACKAGE for a in node.names)) or \
              (isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == PACKAGE) or \
              (isinstance(node, ast.Name) and node.id == PACKAGE)
        if bad:
            raise BuildError(f"{path}:{node.lineno}: still refers to the top-level {PACKAGE} package")


# --- assembling ----------------------------------------------------------------------------------------


def assemble(dest_root: Path, repo: Path = REPO) -> Path:
    """Write ansible_collections/<namespace>/<name>/ under dest_root; return the collection directory."""
    info = galaxy_info(repo)
    fqcn = f"{info['namespace']}.{info['name']}"
    coll = dest_root / "ansible_collections" / info["namespace"] / info["name"]
    if coll.exists():
        shutil.rmtree(coll)
    names = Names(repo, fqcn)
    vendored_prefix = f"ansible_collections.{fqcn}.plugins.plugin_utils"

    for src in _files(repo / "collection"):
        _copy(src, coll / src.relative_to(repo / "collection"))
    (coll / "galaxy.yml").write_text(
        "---\n# Assembled by scripts/build_collection.py from collection/galaxy.yml; version from pi_ansible.\n"
        + yaml.safe_dump(info, sort_keys=False))

    for src in _files(repo / "roles"):
        dest = coll / src.relative_to(repo)
        _copy(src, dest)
        rel = src.relative_to(repo / "roles")
        if src.suffix in (".yml", ".yaml", ".j2"):
            text = dest.read_text()
            if rel.parts[1] in ("tasks", "handlers"):
                text = rewrite_module_tasks(text, names)
                text = rewrite_role_refs(text, names)
            dest.write_text(rewrite_filters(text, names))

    for src in sorted((repo / "playbooks").glob("*.yml")) + sorted((repo / "playbooks").glob("*.yaml")):
        dest = coll / "playbooks" / src.name
        _copy(src, dest)
        text = dest.read_text()
        dest.write_text(rewrite_filters(rewrite_role_refs(rewrite_module_tasks(text, names), names), names))

    for kind in ("modules", "module_utils"):
        for src in _files(repo / "plugins" / kind):
            dest = coll / "plugins" / kind / src.relative_to(repo / "plugins" / kind)
            _copy(src, dest)
            if src.suffix == ".py":
                text = rewrite_module_utils_imports(dest.read_text(), names)
                dest.write_text(rewrite_examples(text, names) if kind == "modules" else text)

    # Controller-side plugins (filter, and any other type added later: action, inventory, ...) may import
    # pi_ansible: they are the roots of the vendored closure.
    controller = []
    for kind_dir in sorted(p for p in (repo / "plugins").iterdir() if p.is_dir()):
        if kind_dir.name in ("modules", "module_utils"):
            continue
        for src in _files(kind_dir):
            dest = coll / "plugins" / src.relative_to(repo / "plugins")
            _copy(src, dest)
            if src.suffix == ".py":
                controller.append(src)
                text = rewrite_package_imports(dest.read_text(), vendored_prefix)
                _check_no_plain_package_use(dest, text)
                dest.write_text(text)

    vendored = vendor_closure(repo, controller)
    data_dirs = {p.parent for p in vendored}
    for src in vendored:
        dest = coll / "plugins" / "plugin_utils" / src.relative_to(repo)
        _copy(src, dest)
        text = rewrite_package_imports(dest.read_text(), vendored_prefix)
        _check_no_plain_package_use(dest, text)
        dest.write_text(text)
    for d in sorted(data_dirs):  # package data beside the vendored modules (the catalog's JSON files)
        for src in sorted(d.iterdir()):
            if src.is_file() and src.suffix not in (".py", *SKIP_SUFFIXES):
                _copy(src, coll / "plugins" / "plugin_utils" / src.relative_to(repo))

    check(coll, names)
    return coll


def check(coll: Path, names: Names) -> None:
    """No short name of ours left where Ansible would have to resolve it."""
    problems = []
    short_task = re.compile(rf"^\s*(?:-\s+)?({_alt(names.modules)}):(?=\s|$)", re.MULTILINE)
    short_filter = re.compile(rf"\|\s*({_alt(names.filters)})\b")
    short_mu = re.compile(rf"^\s*from ansible\.module_utils\.({_alt(names.module_utils)}) import", re.MULTILINE)
    for path in _files(coll):
        rel = path.relative_to(coll)
        if path.suffix in (".yml", ".yaml", ".j2") and rel.parts[0] in ("roles", "playbooks"):
            text = path.read_text()
            if (rel.parts[0] == "playbooks" or rel.parts[2] in ("tasks", "handlers")) and short_task.search(text):
                problems.append(f"{rel}: module by short name: {short_task.search(text).group(1)}")
            if short_filter.search(text):
                problems.append(f"{rel}: filter by short name: {short_filter.search(text).group(1)}")
        if path.suffix == ".py" and rel.parts[:2] == ("plugins", "modules") and short_mu.search(path.read_text()):
            problems.append(f"{rel}: module_utils by short name")
    if problems:
        raise BuildError("short names left in the collection:\n  " + "\n  ".join(problems))


def _ansible_galaxy() -> str:
    exe = Path(sys.executable).with_name("ansible-galaxy")
    if exe.exists():
        return str(exe)
    found = shutil.which("ansible-galaxy")
    if not found:
        raise BuildError("ansible-galaxy not found (pip install ansible-core)")
    return found


def build(out_dir: Path, tree: Path | None = None, repo: Path = REPO) -> Path:
    """Assemble and `ansible-galaxy collection build`; return the tarball's path."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="piansible-collection-") as tmp:
        coll = assemble(Path(tree).resolve() if tree else Path(tmp), repo)
        info = galaxy_info(repo)
        tarball = out_dir / f"{info['namespace']}-{info['name']}-{info['version']}.tar.gz"
        proc = subprocess.run([_ansible_galaxy(), "collection", "build", "--force", "--output-path", str(out_dir)],
                              cwd=coll, capture_output=True, text=True)
        if proc.returncode != 0 or not tarball.is_file():
            raise BuildError(f"ansible-galaxy collection build failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return tarball


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "dist"), help="where the tarball goes (default: dist/)")
    ap.add_argument("--tree", help="assemble ansible_collections/... here and keep it (default: a temp dir)")
    args = ap.parse_args(argv)
    try:
        print(build(Path(args.out), Path(args.tree) if args.tree else None))
    except BuildError as exc:
        print(f"build_collection: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
