"""Keep ansible-core's AnsiballZ payloads between runs, for every module, not just within one run.

Before a Python module reaches a host, ansible-core zips it with every module_util it imports, found by
parsing each of them: 0.2-0.3 s of controller CPU per module, measured on the lab machine (`file`, `stat`,
`command`, ours alike), paid again in every ansible-playbook process because the zip is cached in that
process's own temporary directory (``<local_tmp>/ansible-local-<pid>…/ansiballz_cache``), removed at exit.
A `pi pods setup` re-run builds five such zips, `pi stop` three.

This keeps the entries in ``<local_tmp>/pi-ansiballz/<key>/``: linked into the run's cache when the playbook
starts, new ones copied back when it ends. ``key`` is a digest of everything the entries are made from:
ansible-core's version and path, Python's version (the entries are pickles), the content of every module and
module_utils file on the configured paths (ours), and the version and mtime of every installed collection.
An entry holds a module's code only; its arguments go into each task's wrapper, never into the cache. The
directory is the user's own (0700, like ansible-core's), as ansible-core's cache is: entries are unpickled.

A kept entry also carries bytecode: on the host, zipimport compiles every module_util in the zip from source
on every task (it never writes bytecode), 0.37 s of the host's CPU for `stat` on the lab pod, 0.19 s with a
``.pyc`` beside each source. The ``.pyc`` files are this Python's (unchecked-hash pycs, as ``compileall
--invalidation-mode unchecked-hash`` writes): a host whose Python has the same bytecode version uses them, any
other rejects them by their magic number and compiles the sources as before.
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import importlib.util
import io
import os
import pickle
import shutil
import sys
import time
import zipfile

import ansible
from ansible import constants as C
from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: pi_ansiballz
type: aggregate
short_description: keep AnsiballZ module payloads between runs
description:
  - Keeps the zipped module payloads ansible-core builds in each run under the local temporary directory's
    parent (C(pi-ansiballz/)), keyed by a digest of ansible-core, Python, the configured module and
    module_utils files and the installed collections, and gives them to later runs.
requirements:
  - enable in ansible.cfg (C(callbacks_enabled = pi_ansiballz)) or ANSIBLE_CALLBACKS_ENABLED
"""

_STORE = "pi-ansiballz"
_RUN_CACHE = "ansiballz_cache"
_STALE_SECONDS = 14 * 86400  # a key nobody used for two weeks belongs to sources that are gone


def _files(dirs) -> list[str]:
    out = []
    for d in dirs or []:
        for root, subdirs, names in os.walk(d):
            subdirs.sort()
            out += [os.path.join(root, n) for n in sorted(names) if n.endswith(".py")]
    return out


def _collection_dirs() -> list[str]:
    """Every installed collection's directory (ns/name), where a module or its module_utils may come from."""
    roots = [os.path.join(p, "ansible_collections") for p in (*C.COLLECTIONS_PATHS, *sys.path)]
    found = []
    for root in dict.fromkeys(roots):
        with contextlib.suppress(OSError):
            for ns in sorted(os.listdir(root)):
                with contextlib.suppress(OSError):
                    found += [os.path.join(root, ns, name) for name in sorted(os.listdir(os.path.join(root, ns)))]
    return found


def store_key() -> str:
    """A digest of everything a cached entry is built from, so that a changed source never meets an old zip."""
    h = hashlib.sha256(f"{ansible.__version__}\0{ansible.__file__}\0{sys.version}\0".encode())
    for path in _files([*(C.DEFAULT_MODULE_PATH or []), *(C.DEFAULT_MODULE_UTILS_PATH or [])]):
        with contextlib.suppress(OSError), open(path, "rb") as fh:
            h.update(path.encode() + b"\0" + fh.read() + b"\0")
    for path in _collection_dirs():
        with contextlib.suppress(OSError):
            st = os.stat(path)
            manifest = os.path.join(path, "MANIFEST.json")
            mt = os.stat(manifest).st_mtime_ns if os.path.exists(manifest) else 0
            h.update(f"{path}\0{st.st_mtime_ns}\0{mt}\0".encode())
    return h.hexdigest()[:24]


def _entry(name: str) -> bool:
    """ansible-core's entries are '<fqn>-<compression>-<extensions>'; its locks and our partial copies are not."""
    return not name.endswith((".lock", "-part")) and not name.startswith(".")


def _link_or_copy(src: str, part: str) -> None:
    try:
        os.link(src, part)
    except OSError:
        shutil.copyfile(src, part)


def _transfer(src_dir: str, dst_dir: str, write) -> int:
    """Put each entry of src_dir that dst_dir lacks there, written by write(src, part) then renamed in one step
    (a reader never sees half a file); the number put."""
    if not os.path.isdir(src_dir):
        return 0
    os.makedirs(dst_dir, mode=0o700, exist_ok=True)
    done = 0
    for name in filter(_entry, os.listdir(src_dir)):
        target = os.path.join(dst_dir, name)
        if not os.path.exists(target):
            part = f"{target}.{os.getpid()}-part"
            write(os.path.join(src_dir, name), part)
            os.replace(part, target)
            done += 1
    return done


def give(store: str, run_cache: str) -> int:
    """Link the kept entries into this run's cache; the number given."""
    given = _transfer(store, run_cache, _link_or_copy)
    if os.path.isdir(store):
        os.utime(store)  # in use: not stale
    return given


def zip_with_bytecode(raw: bytes) -> bytes:
    """The zip again, with this Python's bytecode beside each .py (unchecked-hash pycs: zipimport takes them
    without the sources' timestamps; a Python of another bytecode version refuses them and compiles the .py)."""
    src = zipfile.ZipFile(io.BytesIO(raw))
    names = set(src.namelist())
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data)
            if info.filename.endswith(".py") and info.filename + "c" not in names:
                code = compile(data, info.filename, "exec", dont_inherit=True)
                pyc = importlib._bootstrap_external._code_to_hash_pyc(code, importlib.util.source_hash(data), False)
                pyc_info = zipfile.ZipInfo(info.filename + "c", date_time=info.date_time)
                pyc_info.compress_type = zipfile.ZIP_DEFLATED
                dst.writestr(pyc_info, bytes(pyc))
    return out.getvalue()


def _keep_one(src: str, part: str) -> None:
    """Write the run's entry src to part with bytecode added; a copy as it is where that cannot be done."""
    try:
        with open(src, "rb") as fh:
            entry = pickle.load(fh)
        raw = zip_with_bytecode(base64.b64decode(entry.zip_data))
        with open(part, "wb") as fh:
            pickle.dump(dataclasses.replace(entry, zip_data=base64.b64encode(raw)), fh)
    except (pickle.UnpicklingError, AttributeError, TypeError, ValueError, SyntaxError, zipfile.BadZipFile):
        shutil.copyfile(src, part)  # an entry of another shape, or a source this Python cannot compile


def keep(run_cache: str, store: str) -> int:
    """Copy this run's new entries into the store, bytecode added; the number kept."""
    return _transfer(run_cache, store, _keep_one)


def prune(base: str, current: str, now: float | None = None) -> None:
    """Remove other keys' directories nobody used for two weeks (old checkouts, old ansible-core versions)."""
    now = time.time() if now is None else now
    with contextlib.suppress(OSError):
        for name in os.listdir(base):
            path = os.path.join(base, name)
            if path != current and now - os.stat(path).st_mtime > _STALE_SECONDS:
                shutil.rmtree(path, ignore_errors=True)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "pi_ansiballz"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._store = None
        self._run_cache = os.path.join(C.DEFAULT_LOCAL_TMP, _RUN_CACHE)

    def v2_playbook_on_start(self, playbook):
        try:
            base = os.path.join(os.path.dirname(C.DEFAULT_LOCAL_TMP), _STORE)
            self._store = os.path.join(base, store_key())
            given = give(self._store, self._run_cache)
            prune(base, self._store)
            self._display.vvv(f"pi_ansiballz: {given} kept payload(s) given to this run from {self._store}")
        except OSError as exc:  # no cache is only slower
            self._display.vvv(f"pi_ansiballz: not using kept payloads: {exc}")
            self._store = None

    def v2_playbook_on_stats(self, stats):
        if self._store:
            try:
                kept = keep(self._run_cache, self._store)
                self._display.vvv(f"pi_ansiballz: {kept} new payload(s) kept")
            except OSError as exc:
                self._display.vvv(f"pi_ansiballz: payloads not kept: {exc}")
