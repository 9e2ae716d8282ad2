"""House rules for the roles in roles/, checked statically (no host needed).

- `defaults/main.yml` and `meta/argument_specs.yml` list the same variables (the CI diff that
  prometheus-community's roles run), and every default has the role's prefix.
- Variables a role defines in its tasks carry its prefix: `<role>_*` public, `_<role>_*` internal,
  `__<role>_*` registered results.
- Every task is named, uses an FQCN module (our own library modules excepted) and every
  file/copy/template task that creates something says its `mode:`.
- `ansible-lint` (production profile, from .ansible-lint) passes on roles/ and playbooks/.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible.playbook.block import Block
from ansible.playbook.task import Task

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "tasks" / "main.yml").is_file())
# Modules of this repository's library (plugins/modules): they have no collection, so no FQCN.
OWN_MODULES = {p.stem for p in (REPO / "plugins" / "modules").glob("*.py") if p.stem != "__init__"}
# Task keywords, from Ansible itself; whatever else a task holds is its module.
TASK_KEYWORDS = set(Task.fattributes) | set(Block.fattributes) | {"local_action"}
FILE_MODULES = {"file", "copy", "template"}
FQCN = re.compile(r"^[a-z0-9_]+\.[a-z0-9_]+\.[a-z0-9_]+$")


def _load(path: Path):
    with path.open() as fh:
        return yaml.safe_load(fh)


def _task_files(role: str) -> list[Path]:
    root = REPO / "roles" / role
    return sorted(p for d in ("tasks", "handlers") for p in (root / d).glob("**/*.y*ml"))


def _tasks(items, where: str):
    """Every task (not block) in a task list, blocks flattened, as (where, task)."""
    for i, item in enumerate(items or []):
        here = f"{where}[{i}] {item.get('name', '(unnamed)')!r}"
        if "block" in item:
            for part in ("block", "rescue", "always"):
                yield from _tasks(item.get(part), f"{here}.{part}")
        else:
            yield here, item


def _all_tasks(role: str):
    for path in _task_files(role):
        yield from _tasks(_load(path), str(path.relative_to(REPO)))


def _module(task: dict) -> str:
    keys = [k for k in task if k not in TASK_KEYWORDS and not k.startswith("with_")]
    assert len(keys) == 1, f"cannot tell the module of a task with keys {sorted(task)}"
    return keys[0]


def _defaults(role: str) -> dict:
    return _load(REPO / "roles" / role / "defaults" / "main.yml") or {}


def _spec_options(role: str) -> dict:
    specs = _load(REPO / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]
    return specs["main"].get("options") or {}


def test_there_are_roles():
    assert {"gpu_facts", "pod_secrets", "model_storage", "vllm_env"} <= set(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_defaults_and_argument_specs_list_the_same_variables(role):
    defaults, options = set(_defaults(role)), set(_spec_options(role))
    assert not defaults - options, f"{role}: in defaults/main.yml, not in meta/argument_specs.yml"
    assert not options - defaults, f"{role}: in meta/argument_specs.yml, not in defaults/main.yml"


@pytest.mark.parametrize("role", ROLES)
def test_argument_spec_defaults_match_defaults(role):
    defaults, options = _defaults(role), _spec_options(role)
    wrong = {k: (defaults[k], o["default"]) for k, o in options.items()
             if "default" in o and k in defaults and o["default"] != defaults[k]}
    assert not wrong, f"{role}: defaults/main.yml vs argument_specs default: {wrong}"


@pytest.mark.parametrize("role", ROLES)
def test_public_variables_have_the_role_prefix(role):
    bad = [k for k in _defaults(role) if not k.startswith(f"{role}_")]
    assert not bad, f"{role}: defaults without the prefix {role}_: {bad}"


@pytest.mark.parametrize("role", ROLES)
def test_variables_set_in_tasks_have_the_role_prefix(role):
    prefix = re.compile(rf"^_{{0,2}}{re.escape(role)}_")
    bad = []
    for where, task in _all_tasks(role):
        names = []
        if _module(task) in ("ansible.builtin.set_fact", "set_fact"):
            names += [k for k in task[_module(task)] if k != "cacheable"]
        if "register" in task:
            names.append(task["register"])
        bad += [f"{where}: {n}" for n in names if not prefix.match(n)]
    assert not bad, f"{role}: variables without the prefix {role}_ (or _{role}_, __{role}_):\n" + "\n".join(bad)


@pytest.mark.parametrize("role", ROLES)
def test_every_task_is_named(role):
    bad = [where for where, task in _all_tasks(role) if not str(task.get("name") or "").strip()]
    assert not bad, "tasks without a name:\n" + "\n".join(bad)


@pytest.mark.parametrize("role", ROLES)
def test_modules_are_fully_qualified(role):
    bad = [f"{where}: {m}" for where, task in _all_tasks(role)
           if not FQCN.match(m := _module(task)) and m not in OWN_MODULES]
    assert not bad, "modules without their FQCN:\n" + "\n".join(bad)


@pytest.mark.parametrize("role", ROLES)
def test_file_copy_and_template_tasks_set_a_mode(role):
    bad = []
    for where, task in _all_tasks(role):
        module = _module(task)
        if module.rsplit(".", 1)[-1] not in FILE_MODULES:
            continue
        args = task[module] if isinstance(task[module], dict) else {}
        if args.get("state") == "absent":  # deletes: there is no mode to set
            continue
        if "mode" not in args:
            bad.append(where)
    assert not bad, "file/copy/template tasks without an explicit mode:\n" + "\n".join(bad)


@pytest.mark.slow
def test_ansible_lint_production_profile_passes_on_roles_and_playbooks():
    bindir = Path(sys.executable).parent
    lint = bindir / "ansible-lint"
    if not lint.exists():
        lint = shutil.which("ansible-lint")
        if lint is None:
            pytest.skip("ansible-lint is not installed")
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", "NO_COLOR": "1"}
    # cwd is the repository root: ansible.cfg (our module library) and .ansible-lint apply.
    proc = subprocess.run([str(lint), "--offline", "--profile", "production", "roles", "playbooks"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"ansible-lint failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
