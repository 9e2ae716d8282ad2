"""plugins/callback/pi_ansiballz.py: every module's AnsiballZ payload kept between runs, keyed by its sources."""

from __future__ import annotations

import base64
import importlib.util
import io
import os
import subprocess
import sys
import time
import zipfile

from ..conftest import REPO

spec = importlib.util.spec_from_file_location("pi_callback_ansiballz", REPO / "plugins/callback/pi_ansiballz.py")
cb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cb)
ENTRY = "ansible.modules.file-ZIP_DEFLATED-none"


def test_whole_entries_are_kept_never_locks_or_partial_copies(tmp_path):
    run, store = tmp_path / "run", tmp_path / "store"
    run.mkdir()
    (run / ENTRY).write_bytes(b"built")
    (run / (ENTRY + ".lock")).write_bytes(b"")
    (run / "ansible.legacy.uv_install-ZIP_DEFLATED-none.77-part").write_bytes(b"half")
    assert cb.keep(str(run), str(store)) == 1
    assert [p.name for p in store.iterdir()] == [ENTRY] and (store / ENTRY).read_bytes() == b"built"
    assert oct(store.stat().st_mode & 0o777) == "0o700", "entries are unpickled: the store is the user's alone"
    (run / ENTRY).write_bytes(b"rebuilt")
    assert cb.keep(str(run), str(store)) == 0
    assert (store / ENTRY).read_bytes() == b"built", "an entry is never overwritten: its key names its sources"
    assert cb.keep(str(tmp_path / "absent"), str(store)) == 0


def test_kept_entries_are_given_to_a_run_without_touching_what_it_has(tmp_path):
    store, run = tmp_path / "store", tmp_path / "local" / "ansiballz_cache"
    assert cb.give(str(store), str(run)) == 0 and not run.exists()
    store.mkdir()
    (store / ENTRY).write_bytes(b"kept")
    (store / "ansible.modules.stat-ZIP_DEFLATED-none").write_bytes(b"kept stat")
    run.mkdir(parents=True)
    (run / "ansible.modules.stat-ZIP_DEFLATED-none").write_bytes(b"this run's")
    assert cb.give(str(store), str(run)) == 1
    assert (run / ENTRY).read_bytes() == b"kept"
    assert (run / "ansible.modules.stat-ZIP_DEFLATED-none").read_bytes() == b"this run's"
    assert not [p for p in run.iterdir() if p.name.endswith("-part")]


def test_the_key_follows_every_source_of_a_payload(tmp_path, monkeypatch):
    utils, modules, colls = tmp_path / "module_utils", tmp_path / "modules", tmp_path / "colls"
    for d in (utils, modules, colls / "ansible_collections" / "ns" / "one"):
        d.mkdir(parents=True)
    (utils / "a.py").write_text("A = 1\n")
    (modules / "m.py").write_text("from ansible.module_utils.a import A\n")
    monkeypatch.setattr(cb.C, "DEFAULT_MODULE_UTILS_PATH", [str(utils)], raising=False)
    monkeypatch.setattr(cb.C, "DEFAULT_MODULE_PATH", [str(modules)], raising=False)
    monkeypatch.setattr(cb.C, "COLLECTIONS_PATHS", [str(colls)], raising=False)
    keys = [cb.store_key()]
    assert cb.store_key() == keys[0]
    (utils / "a.py").write_text("A = 2\n")
    keys.append(cb.store_key())
    (modules / "m.py").write_text("# edited\n")
    keys.append(cb.store_key())
    coll = colls / "ansible_collections" / "ns" / "one"
    os.utime(coll, ns=(1, 1))  # a collection reinstalled in place
    keys.append(cb.store_key())
    (colls / "ansible_collections" / "ns" / "two").mkdir()
    keys.append(cb.store_key())
    monkeypatch.setattr(cb.ansible, "__version__", "9.9.9")
    keys.append(cb.store_key())
    assert len(set(keys)) == len(keys)


def test_other_keys_unused_for_two_weeks_are_pruned(tmp_path):
    base = tmp_path / "pi-ansiballz"
    current, recent, stale = base / "cur", base / "recent", base / "stale"
    for d in (current, recent, stale):
        d.mkdir(parents=True)
        (d / ENTRY).write_bytes(b"x")
    old = time.time() - 15 * 86400
    for d in (current, stale):
        os.utime(d, (old, old))
    cb.prune(str(base), str(current))
    assert sorted(p.name for p in base.iterdir()) == ["cur", "recent"]


def test_a_second_ansible_playbook_run_uses_the_kept_payloads(tmp_path):
    """Real ansible-playbook with our ansible.cfg: the first run keeps its zips, the second is given them and
    runs them (an entry spoiled in between makes its task fail, so it is read, not rebuilt)."""
    play = tmp_path / "p.yml"
    play.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
                    "    - ansible.builtin.stat: {path: /}\n"
                    "    - ansible.builtin.command: 'true'\n      changed_when: false\n")
    local = tmp_path / "local"
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_LOCAL_TEMP": str(local),
           "ANSIBLE_NOCOLOR": "1"}

    def run():
        return subprocess.run([sys.executable, "-m", "ansible", "playbook", str(play), "-i", "localhost,", "-c",
                               "local", "-vvv", "-e", f"ansible_python_interpreter={sys.executable}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)

    first = run()
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "pi_ansiballz: 0 kept payload(s) given" in first.stdout and "pi_ansiballz: 2 new payload(s) kept" in first.stdout
    kept = sorted((local / "pi-ansiballz").glob("*/*"))
    assert [p.name for p in kept] == ["ansible.modules.command-ZIP_DEFLATED-none", "ansible.modules.stat-ZIP_DEFLATED-none"]
    second = run()
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "pi_ansiballz: 2 kept payload(s) given" in second.stdout and "pi_ansiballz: 0 new payload(s) kept" in second.stdout
    kept[0].write_bytes(b"spoiled")
    third = run()
    assert third.returncode != 0 and "command" in third.stdout.split("fatal:")[0].rsplit("TASK [", 1)[-1]


def _zip(files: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return out.getvalue()


PAYLOAD = {"ansible/__init__.py": "", "ansible/module_utils/__init__.py": "",
           "ansible/module_utils/answer.py": "from __future__ import annotations\nANSWER: int = 42\n"}
IMPORT = "import sys; sys.path.insert(0, sys.argv[1]); import ansible.module_utils.answer as m; print(m.ANSWER, m.__file__)"


def test_kept_zips_carry_bytecode_a_python_of_the_same_version_runs(tmp_path):
    z = tmp_path / "payload.zip"
    z.write_bytes(cb.zip_with_bytecode(_zip(PAYLOAD)))
    names = zipfile.ZipFile(z).namelist()
    assert sorted(n for n in names if n.endswith(".pyc")) == sorted(n + "c" for n in PAYLOAD)
    proc = subprocess.run([sys.executable, "-I", "-c", IMPORT, str(z)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["42", f"{z}/ansible/module_utils/answer.pyc"], "imported from the bytecode"
    assert cb.zip_with_bytecode(z.read_bytes()) == cb.zip_with_bytecode(z.read_bytes()), "no second .pyc"
    assert zipfile.ZipFile(io.BytesIO(cb.zip_with_bytecode(z.read_bytes()))).namelist() == names


def test_a_python_of_another_bytecode_version_compiles_the_sources_instead(tmp_path):
    """Simulated: every .pyc's magic number changed, as another Python's would be."""
    src = zipfile.ZipFile(io.BytesIO(cb.zip_with_bytecode(_zip(PAYLOAD))))
    z = tmp_path / "payload.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for info in src.infolist():
            data = src.read(info)
            zf.writestr(info, b"\x00\x00" + data[2:] if info.filename.endswith(".pyc") else data)
    proc = subprocess.run([sys.executable, "-I", "-c", IMPORT, str(z)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["42", f"{z}/ansible/module_utils/answer.py"]


def test_keep_adds_bytecode_to_ansible_core_entries_and_copies_anything_else_as_it_is(tmp_path):
    from ansible.executor.module_common import _CachedModule

    run, store = tmp_path / "run", tmp_path / "store"
    run.mkdir()
    _CachedModule(zip_data=base64.b64encode(_zip(PAYLOAD)), metadata={"profile": "legacy"},
                  source_mapping={"/src/answer.py": "ansible/module_utils/answer.py"}).dump(str(run / ENTRY))
    (run / "ansible.legacy.odd-ZIP_DEFLATED-none").write_bytes(b"not a pickle")
    assert cb.keep(str(run), str(store)) == 2
    kept = _CachedModule.load(str(store / ENTRY))
    assert kept.metadata == {"profile": "legacy"} and kept.source_mapping == {"/src/answer.py": "ansible/module_utils/answer.py"}
    assert "ansible/module_utils/answer.pyc" in zipfile.ZipFile(io.BytesIO(base64.b64decode(kept.zip_data))).namelist()
    assert (store / "ansible.legacy.odd-ZIP_DEFLATED-none").read_bytes() == b"not a pickle"
