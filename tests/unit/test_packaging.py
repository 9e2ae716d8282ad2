"""Packaging: the wheel, the collection piansible.pods and the fleet workflow (no lab, no pod).

- The version has one source (pi_ansible.__version__): pyproject.toml reads it, the collection's galaxy.yml
  gets it, `pi --version` prints it.
- `python -m build` on a clean copy of the checkout makes an sdist and a wheel; the wheel carries the
  Ansible content as pi_ansible/_content (symlinks resolved) and the lab's doubles, but no top-level
  `vllm`. `uv tool install` of it gives a `pi` whose content_root() is inside the installed package; every
  shipped playbook passes `--syntax-check` with the installed ansible.cfg and ansible-playbook, and its
  filters plan like the checkout's.
- scripts/build_collection.py makes piansible-pods-<v>.tar.gz; installed offline into a temporary
  collections path, a playbook outside the repository uses its roles and modules by FQCN, ansible-doc
  documents its modules, and its filters give the checkout's answers with the top-level pi_ansible package
  unimportable (the planning code is vendored), the pod-setup ones even without jsonschema.
- .github/workflows/fleet.yml is valid YAML with the keys GitHub Actions needs, passes yamllint, and builds,
  installs and converges with what this repository has.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

import pi_ansible

from ..helpers.checkout import clean_copy

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FQCN = "piansible.pods"
PLAYBOOKS = sorted(p.name for p in (REPO / "playbooks").glob("*.yml"))
MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py"))
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "tasks").is_dir())
WORKFLOW = REPO / ".github" / "workflows" / "fleet.yml"

# GPU facts as nvidia_smi_facts reports them (pi_gpus), for the planning filters.
H100X2 = {
    "driver_version": "590.48.01", "cuda_version": "13.1", "mig_enabled": False, "processes": [],
    "gpus": [{"index": i, "uuid": f"GPU-{i}0000000-0000-0000-0000-000000000000", "name": "NVIDIA H100 80GB HBM3",
              "memory_total_mib": 81559, "memory_used_mib": 0, "memory_free_mib": 81559} for i in range(2)],
}
SAMPLES = {
    "h100x2": H100X2,
    "rtx4090": {"driver_version": "550.144.03", "cuda_version": "12.4",
                "gpus": [{"index": 0, "name": "NVIDIA GeForce RTX 4090", "memory_total_mib": 24564}]},
    "v100": {"driver_version": "580.65.06", "cuda_version": "13.0", "gpus": [{"index": 0, "name": "Tesla V100-SXM2-32GB"}]},
}
MOUNT = "mount -t nfs -o nconnect=16 nfs.example:/hf-models /mnt/hf-models"
START = {"model": "Qwen/Qwen3-8B", "name": "qwen", "context": "32k"}


def _load_build_collection():
    spec = importlib.util.spec_from_file_location("build_collection", REPO / "scripts" / "build_collection.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bc = _load_build_collection()


def _env(tmp: Path, **extra: str) -> dict:
    """A clean environment: no ANSIBLE_* of the caller's, no repository ansible.cfg, a private catalog dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PI_"))}
    cfg = tmp / "empty-ansible.cfg"
    if not cfg.exists():
        cfg.write_text("[defaults]\n")
    (tmp / "pi-config").mkdir(exist_ok=True)
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", ANSIBLE_CONFIG=str(cfg), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-tmp"), PI_CONFIG_DIR=str(tmp / "pi-config"))
    env.update(extra)
    return env


def _run(cmd: list[str], *, cwd: Path, env: dict, timeout: int = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def _expected_plans(tmp: Path) -> dict:
    """What the checkout's filters (the ones `pi` runs) answer for the samples, in a fresh process."""
    code = textwrap.dedent(f"""
        import importlib.util, json, sys
        spec = importlib.util.spec_from_file_location("pi_planning", {str(REPO / 'plugins/filter/pi_planning.py')!r})
        f = importlib.util.module_from_spec(spec); spec.loader.exec_module(f)
        samples, mount, start, h100 = json.loads(sys.stdin.read())
        print(json.dumps({{
            "builds": {{k: f.pi_engine_build(v, "release") for k, v in samples.items()}},
            "nightly": f.pi_engine_build(h100, "nightly"),
            "mount": f.pi_mount_plan(mount),
            "models_path": f.pi_models_path(mount, ""),
            "plan": f.pi_model_plan(start, h100, {{"models": {{}}, "listening_ports": []}}, "/opt/pi/venv", "pod1"),
            "has": f.pi_catalog_has(start["model"]),
            "systemd": f.pi_systemd_args(["--x", "a b", "50%"]),
        }}, sort_keys=True))
    """)
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps([SAMPLES, MOUNT, START, H100X2]),
                          cwd=tmp, env=_env(tmp), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _planning_play(prefix: str, extra_tasks: str = "") -> str:
    """A localhost play that writes every filter's answer to plans.json; prefix '' or 'piansible.pods.'."""
    p = prefix
    return textwrap.dedent(f"""\
        ---
        - name: Plan with pi-ansible's filters
          hosts: localhost
          connection: local
          gather_facts: false
          vars:
            ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
            samples: {json.dumps(SAMPLES)}
            h100: {json.dumps(H100X2)}
            mount: {json.dumps(MOUNT)}
            start: {json.dumps(START)}
          tasks:
            - name: Write what the filters answer
              ansible.builtin.copy:
                dest: "{{{{ playbook_dir }}}}/plans.json"
                mode: "0644"
                content: >-
                  {{{{ {{
                    'builds': dict(samples.keys() | zip(samples.values() | map('{p}pi_engine_build', 'release'))),
                    'nightly': h100 | {p}pi_engine_build('nightly'),
                    'mount': mount | {p}pi_mount_plan,
                    'models_path': mount | {p}pi_models_path(''),
                    'plan': start | {p}pi_model_plan(h100, {{'models': {{}}, 'listening_ports': []}}, '/opt/pi/venv', 'pod1'),
                    'has': start.model | {p}pi_catalog_has,
                    'systemd': ['--x', 'a b', '50%'] | {p}pi_systemd_args,
                  }} | to_json }}}}
        """) + textwrap.indent(textwrap.dedent(extra_tasks), "    ")


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    return _expected_plans(tmp_path_factory.mktemp("expected"))


# --- fast: version, build script rewrites, workflow -----------------------------------------------------


def test_version_is_single_sourced():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "pi_ansible.__version__"}
    assert bc.version() == pi_ansible.__version__
    assert bc.galaxy_info()["version"] == pi_ansible.__version__
    # The checked-in galaxy.yml says the same (the build overwrites it anyway).
    assert yaml.safe_load((REPO / "collection" / "galaxy.yml").read_text())["version"] == pi_ansible.__version__
    from click.testing import CliRunner

    from pi_ansible.cli import cli

    out = CliRunner().invoke(cli, ["--version"])
    assert out.exit_code == 0 and pi_ansible.__version__ in out.output


def test_build_script_rewrites_short_names_to_fqcn():
    names = bc.Names(REPO, FQCN)
    assert set(names.modules) == set(MODULES) and set(names.roles) == set(ROLES)
    assert {"pi_engine_build", "pi_model_plan", "pi_systemd_args"} <= set(names.filters)
    tasks = textwrap.dedent("""\
        - name: Facts
          nvidia_smi_facts:
            fail_on_error: false
        - name: Plan
          ansible.builtin.set_fact:
            b: "{{ pi_gpus | pi_engine_build('release') }}"
            c: "{{ x | map('pi_systemd_args') | list }}"
            nvidia_smi_facts_seen: true
        - name: Start
          ansible.builtin.include_role:
            name: model_service
          vars:
            name: model_service
        - name: Play
          hosts: all
          roles:
            - gpu_facts
            - role: vllm_env
          tasks: []
        """)
    out = bc.rewrite_filters(bc.rewrite_role_refs(bc.rewrite_module_tasks(tasks, names), names), names)
    assert "  piansible.pods.nvidia_smi_facts:\n" in out
    assert "pi_gpus | piansible.pods.pi_engine_build('release')" in out
    assert "map('piansible.pods.pi_systemd_args')" in out
    assert "    name: piansible.pods.model_service\n  vars:\n    name: model_service\n" in out
    assert "    - piansible.pods.gpu_facts\n    - role: piansible.pods.vllm_env\n" in out
    assert "nvidia_smi_facts_seen: true" in out  # a variable that merely starts like a module is left alone
    mu = "from ansible.module_utils.basic import AnsibleModule\nfrom ansible.module_utils.pi_pod_status import collect\n"
    assert bc.rewrite_module_utils_imports(mu, names) == (
        "from ansible.module_utils.basic import AnsibleModule\n"
        "from ansible_collections.piansible.pods.plugins.module_utils.pi_pod_status import collect\n")


def test_vendored_closure_is_the_pure_planning_code():
    closure = {p.relative_to(REPO).as_posix() for p in bc.vendor_closure(REPO, [REPO / "plugins/filter/pi_planning.py"])}
    assert {"pi_ansible/__init__.py", "pi_ansible/errors.py", "pi_ansible/planning/engine_wheels.py",
            "pi_ansible/planning/start_request.py", "pi_ansible/catalog/__init__.py"} <= closure
    # Nothing that runs things, talks to pods or the lab.
    assert not {c for c in closure if re.search(r"/(cli|runner|ssh|state|model_ops|pod_setup)\.py$|/lab/|/agent/", c)}, closure


def test_fleet_workflow_is_valid():
    proc = subprocess.run([str(BIN / "yamllint"), "-c", str(REPO / ".yamllint"), "-f", "parsable", str(WORKFLOW)],
                          capture_output=True, text=True) if (BIN / "yamllint").exists() else None
    if proc is not None:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    wf = yaml.safe_load(WORKFLOW.read_text())
    on = wf.get("on", wf.get(True))  # an unquoted `on:` would be YAML's true
    assert wf["name"] and on and "workflow_dispatch" in on
    assert wf["permissions"] == {"contents": "read"}
    assert wf["jobs"], "no jobs"
    for job_id, job in wf["jobs"].items():
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", job_id)
        assert job["runs-on"] and job["steps"], job_id
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), f"{job_id}: a step needs exactly one of uses/run: {step}"
            assert set(step) <= {"name", "id", "if", "uses", "with", "run", "env", "shell", "working-directory",
                                 "continue-on-error", "timeout-minutes"}, step
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@[\w.-]+", step["uses"]), step["uses"]
    text = WORKFLOW.read_text()
    assert text.count("${{") == text.count("}}"), "unbalanced expression"
    runs = "\n".join(s.get("run", "") for j in wf["jobs"].values() for s in j["steps"])
    assert "python scripts/build_collection.py" in runs and "ansible-galaxy collection install dist/piansible-pods-" in runs
    assert re.search(r"ansible-playbook -i \"\$INVENTORY\" playbooks/site\.yml", runs)
    assert wf["jobs"]["converge"]["env"]["INVENTORY"].startswith("inventory/")
    assert "secrets." not in runs, "secrets go through env:, never straight into a script"
    secrets = set(re.findall(r"secrets\.([A-Z_]+)", text))
    assert {"FLEET_INVENTORY", "FLEET_SSH_KEY", "FLEET_KNOWN_HOSTS", "HF_TOKEN", "PI_API_KEY"} <= secrets
    assert (REPO / "scripts" / "build_collection.py").is_file()


# --- slow: the wheel ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel_build(tmp_path_factory):
    """sdist + wheel from a clean copy of the checkout (tracked and new files, nothing git ignores)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = clean_copy(tmp / "src")
    if src is None:
        pytest.skip("not a git checkout")
    cmd = [sys.executable, "-m", "build", "--outdir", str(tmp / "dist")]
    if shutil.which("uv", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"):
        cmd += ["--installer", "uv"]
    _run([*cmd, str(src)], cwd=src, env=_env(tmp), timeout=300)
    wheel = next((tmp / "dist").glob("pi_ansible-*.whl"))
    sdist = next((tmp / "dist").glob("pi_ansible-*.tar.gz"))
    return tmp, wheel, sdist


@pytest.fixture(scope="module")
def installed(wheel_build):
    """`uv tool install` of the wheel into private tool and bin directories."""
    tmp, wheel, _ = wheel_build
    uv = shutil.which("uv", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if uv is None:
        pytest.skip("uv is not installed")
    env = _env(tmp, UV_TOOL_DIR=str(tmp / "tools"), UV_TOOL_BIN_DIR=str(tmp / "bin"))
    _run([uv, "tool", "install", "--python", sys.executable, str(wheel)], cwd=tmp, env=env, timeout=300)
    venv = tmp / "tools" / "pi-ansible"
    return tmp, venv, tmp / "bin"


@pytest.mark.slow
def test_wheel_carries_content_and_doubles_but_no_vllm(wheel_build):
    _, wheel, sdist = wheel_build
    assert wheel.name == f"pi_ansible-{pi_ansible.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        content = "pi_ansible/_content/"
        assert f"{content}ansible.cfg" in names
        for pb in PLAYBOOKS:
            assert f"{content}playbooks/{pb}" in names
        for role in ROLES:
            assert f"{content}roles/{role}/tasks/main.yml" in names
        for mod in MODULES:
            assert f"{content}plugins/modules/{mod}.py" in names
        assert f"{content}plugins/filter/pi_planning.py" in names
        for link in (REPO / "plugins" / "module_utils").iterdir():  # symlinks in the checkout: files in the wheel
            info = z.getinfo(f"{content}plugins/module_utils/{link.name}")
            assert z.read(info) == link.read_bytes()
            assert (info.external_attr >> 16) & 0o170000 != 0o120000, "stored as a symlink"
        tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "pi_ansible/lab"], capture_output=True,
                                 text=True).stdout.split()
        missing = [t for t in tracked if t not in names]
        assert not missing, f"lab files missing from the wheel: {missing[:10]}"
        assert any(n.startswith("pi_ansible/lab/doubles/vllm_double/vllm/") for n in names)
        assert any(n.startswith("pi_ansible/lab/hub_models/Qwen/Qwen3-0.6B/") for n in names)
        assert not [n for n in names if n.split("/")[0] in ("vllm", "tests", "scripts", "bench", "molecule")]
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        top_level = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert [z.read(t).decode().split() for t in top_level] in ([], [["pi_ansible"]])
        meta = z.read(f"pi_ansible-{pi_ansible.__version__}.dist-info/METADATA").decode()
        assert f"Version: {pi_ansible.__version__}" in meta
        assert "Requires-Dist: ansible-core<2.20,>=2.19" in meta or "Requires-Dist: ansible-core>=2.19,<2.20" in meta
    with tarfile.open(sdist) as t:
        snames = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    assert {"setup.py", "MANIFEST.in", "ansible.cfg", "playbooks/pod_setup.yml", "collection/galaxy.yml",
            "scripts/build_collection.py", "plugins/module_utils/pi_pod_status.py"} <= snames
    assert not [n for n in snames if n.startswith("pi_ansible/_content")]


@pytest.mark.slow
def test_installed_pi_finds_its_content(installed, expected):
    tmp, venv, bindir = installed
    env = _env(tmp)
    out = _run([bindir / "pi", "--version"], cwd=tmp, env=env).stdout
    assert out.strip() == f"pi-ansible, version {pi_ansible.__version__}"
    assert "Usage: pi" in _run([bindir / "pi", "--help"], cwd=tmp, env=env).stdout
    assert "Usage" in _run([bindir / "pi-agent", "--help"], cwd=tmp, env=env).stdout
    py = venv / "bin" / "python"
    code = ("import json, pi_ansible, importlib.util; from pi_ansible.paths import content_root; "
            "print(json.dumps([str(content_root()), pi_ansible.__file__, importlib.util.find_spec('vllm') is None]))")
    root, init, no_vllm = json.loads(_run([py, "-c", code], cwd=tmp, env=env).stdout)
    site = Path(init).parent.parent
    assert Path(root) == site / "pi_ansible" / "_content" and str(site).startswith(str(venv))
    assert no_vllm, "the engine double must not be importable as vllm"
    # Every shipped playbook parses with the installed ansible.cfg and the installed ansible-playbook.
    run_env = _env(tmp, ANSIBLE_CONFIG=str(Path(root) / "ansible.cfg"))
    playbooks = [Path(root) / "playbooks" / pb for pb in PLAYBOOKS]
    _run([venv / "bin" / "ansible-playbook", "-i", "localhost,", "--syntax-check", *playbooks], cwd=tmp, env=run_env)
    # ... and its filters plan like the checkout's.
    play = tmp / "wheel-play"
    play.mkdir()
    (play / "plan.yml").write_text(_planning_play(""))
    _run([venv / "bin" / "ansible-playbook", "-i", "localhost,", "plan.yml"], cwd=play, env=run_env)
    assert json.loads((play / "plans.json").read_text()) == expected


# --- slow: the collection -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """Build the tarball, install it offline into a temporary collections path."""
    tmp = tmp_path_factory.mktemp("collection")
    tarball = bc.build(tmp / "dist")
    assert tarball.name == f"piansible-pods-{pi_ansible.__version__}.tar.gz"
    env = _env(tmp, ANSIBLE_COLLECTIONS_PATH=str(tmp / "collections"))
    _run([BIN / "ansible-galaxy", "collection", "install", "--offline", "-p", tmp / "collections", tarball],
         cwd=tmp, env=env)
    return tmp, tarball, env


@pytest.mark.slow
def test_collection_tarball_contents(collection):
    _, tarball, _ = collection
    with tarfile.open(tarball) as t:
        members = {m.name: m for m in t.getmembers()}
        manifest = json.load(t.extractfile("MANIFEST.json"))["collection_info"]
    assert (manifest["namespace"], manifest["name"], manifest["version"]) == ("piansible", "pods", pi_ansible.__version__)
    assert not [n for n, m in members.items() if m.issym() or m.islnk()]
    for role in ROLES:
        assert f"roles/{role}/tasks/main.yml" in members
    for mod in MODULES:
        assert f"plugins/modules/{mod}.py" in members
    for mu in (REPO / "plugins" / "module_utils").iterdir():
        assert f"plugins/module_utils/{mu.name}" in members
    assert {"plugins/filter/pi_planning.py", "plugins/plugin_utils/pi_ansible/planning/engine_wheels.py",
            "plugins/plugin_utils/pi_ansible/catalog/models.json", "meta/runtime.yml"} <= set(members)
    assert not [n for n in members if "__pycache__" in n or "/lab/" in n or n.endswith("/cli.py")]


@pytest.mark.slow
def test_collection_used_by_fqcn_outside_the_repository(collection):
    tmp, _, env = collection
    outside = tmp / "fleet"
    outside.mkdir()
    (outside / "site.yml").write_text(textwrap.dedent("""\
        ---
        - name: Set up pods with the collection
          hosts: all
          gather_facts: false
          roles:
            - role: piansible.pods.gpu_facts
            - role: piansible.pods.pod_secrets
            - piansible.pods.model_storage
            - piansible.pods.vllm_env
          tasks:
            - name: Read the models on the pod
              piansible.pods.pi_models_facts:
            - name: Stop a model
              ansible.builtin.import_role:
                name: piansible.pods.model_service
              vars:
                model_service_name: coder
                model_service_state: absent
        """))
    # With the collection's own playbooks, by FQCN.
    own = [f"{FQCN}.{Path(pb).stem}" for pb in PLAYBOOKS]
    out = _run([BIN / "ansible-playbook", "-i", "pod1,", "--syntax-check", "site.yml", *own], cwd=outside, env=env).stdout
    assert out.count("playbook: ") == 1 + len(own), out
    doc = _run([BIN / "ansible-doc", "-t", "module", f"{FQCN}.nvidia_smi_facts"], cwd=outside, env=env).stdout
    assert "nvidia-smi" in doc and f"{FQCN}.nvidia_smi_facts:" in doc
    listed = _run([BIN / "ansible-doc", "-t", "module", "-l", FQCN], cwd=outside, env=env).stdout
    assert {f"{FQCN}.{m}" for m in MODULES} <= set(re.findall(r"^(\S+)", listed, re.MULTILINE))


BLOCKING_RUNNER = """\
import sys
BLOCKED = tuple(filter(None, sys.argv[1].split(",")))
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"blocked for this test: {name}", name=name)
sys.meta_path.insert(0, Block())
"""


@pytest.mark.slow
def test_collection_filters_plan_like_the_cli_without_pi_ansible(collection, expected):
    """The vendored planning code answers as the checkout's, with the top-level pi_ansible unimportable."""
    tmp, _, env = collection
    play = tmp / "plan"
    play.mkdir()
    (play / "plan.yml").write_text(_planning_play(f"{FQCN}.", f"""\
        - name: Run a module of the collection (no nvidia-smi here, so it reports why)
          {FQCN}.nvidia_smi_facts:
            fail_on_error: false
        - name: Check what it said
          ansible.builtin.assert:
            that: pi_gpus.failure.kind == 'missing'
        """))
    runner = tmp / "blocked_playbook.py"
    runner.write_text(BLOCKING_RUNNER + "from ansible.cli.playbook import main\n"
                      "sys.argv = ['ansible-playbook', *sys.argv[2:]]\nmain()\n")
    _run([sys.executable, runner, "pi_ansible", "-i", "localhost,", "plan.yml"], cwd=play, env=env)
    assert json.loads((play / "plans.json").read_text()) == expected

    # Without jsonschema, the pod-setup filters still work; the catalog ones say what to install.
    check = tmp / "no_jsonschema.py"
    check.write_text(BLOCKING_RUNNER + textwrap.dedent(f"""\
        import json
        from ansible.errors import AnsibleFilterError
        from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder
        _AnsibleCollectionFinder(paths=[{str(tmp / 'collections')!r}])._install()
        from ansible_collections.piansible.pods.plugins.filter import pi_planning as f
        build = f.pi_engine_build({json.dumps(SAMPLES['rtx4090'])}, "release")
        try:
            f.pi_catalog_has("Qwen/Qwen3-8B")
            err = None
        except AnsibleFilterError as exc:
            err = str(exc)
        print(json.dumps({{"build": build, "err": err, "file": f.__file__}}))
        """))
    # a config dir where the catalog was never checked (a checked one is loaded without jsonschema)
    unchecked = {**env, "PI_CONFIG_DIR": str(tmp / "unchecked-config")}
    out = json.loads(_run([sys.executable, check, "pi_ansible,jsonschema"], cwd=tmp, env=unchecked).stdout)
    assert out["build"] == expected["builds"]["rtx4090"]
    assert out["err"] and "jsonschema" in out["err"]
    assert out["file"].startswith(str(tmp / "collections"))
