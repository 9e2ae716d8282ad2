"""plugins/action/pi_model_service.py: the module's AnsiballZ payload kept between runs, keyed by its sources."""

from __future__ import annotations

import importlib.util

from ..conftest import REPO

spec = importlib.util.spec_from_file_location("pi_action_model_service", REPO / "plugins/action/pi_model_service.py")
keep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(keep)
ENTRY = "ansible.legacy.pi_model_service-ZIP_DEFLATED-none"


def test_only_this_modules_whole_entries_are_kept():
    assert keep._ours(ENTRY) and keep._ours("ansible.modules.pi_model_service-ZIP_STORED-coverage")
    assert not keep._ours(ENTRY + ".lock") and not keep._ours(ENTRY + ".123-part")
    assert not keep._ours("ansible.legacy.pi_model_files-ZIP_DEFLATED-none")
    assert not keep._ours("ansible.legacy.pi_model_service_x-ZIP_DEFLATED-none")


def test_entries_are_copied_only_where_missing(tmp_path):
    run, kept = tmp_path / "run", tmp_path / "kept"
    run.mkdir()
    (run / ENTRY).write_bytes(b"built")
    (run / (ENTRY + ".lock")).write_bytes(b"")
    (run / "ansible.legacy.other-ZIP_DEFLATED-none").write_bytes(b"other")
    keep._copy_missing(str(run), str(kept))
    assert sorted(p.name for p in kept.iterdir()) == [ENTRY] and (kept / ENTRY).read_bytes() == b"built"
    (run / ENTRY).write_bytes(b"rebuilt")
    keep._copy_missing(str(run), str(kept))
    assert (kept / ENTRY).read_bytes() == b"built", "an entry is never overwritten: its key names its sources"
    keep._copy_missing(str(tmp_path / "absent"), str(kept))


def test_the_key_follows_every_source_of_the_payload(tmp_path, monkeypatch):
    utils = tmp_path / "module_utils"
    utils.mkdir()
    (utils / "a.py").write_text("A = 1\n")
    module = tmp_path / "pi_model_service.py"
    module.write_text("from ansible.module_utils.a import A\n")
    monkeypatch.setattr(keep.C, "DEFAULT_MODULE_UTILS_PATH", [str(utils)], raising=False)
    first = keep._digest(str(module))
    assert keep._digest(str(module)) == first
    (utils / "a.py").write_text("A = 2\n")
    second = keep._digest(str(module))
    module.write_text("from ansible.module_utils.a import A  # edited\n")
    assert len({first, second, keep._digest(str(module))}) == 3
    monkeypatch.setattr(keep.ansible, "__version__", "9.9.9")
    assert keep._digest(str(module)) not in {first, second}

