"""Action plugin for pi_model_service: the module as it is, with its AnsiballZ payload kept between runs.

Ansible zips a Python module together with every module_util it imports, found by parsing each of them
(about 40 files for AnsibleModule's tree: ~0.25 s of CPU), and caches the zip only for the life of one
ansible-playbook process (under its own temporary directory). ``pi start`` is one playbook run per start, so
it paid that on every start. This plugin keeps the cache entry in ``<local_tmp>/pi-ansiballz/<key>/`` and puts
it back before the module runs; the key is a digest of everything the zip is made from (the module, every
file in the module_utils paths, ansible-core's version and install path, the compression setting), so an
edited module or module_util, or another ansible-core, builds afresh. The entry holds the module's code only:
its arguments are added to each run's wrapper after the cache, never stored in it.
"""
from __future__ import annotations

import hashlib
import os
import shutil

import ansible
from ansible import constants as C
from ansible.plugins.action.normal import ActionModule as NormalAction
from ansible.plugins.loader import module_loader

_MODULE = "pi_model_service"


def _digest(module_path: str) -> str:
    h = hashlib.sha256(f"{ansible.__version__}\0{ansible.__file__}\0{C.DEFAULT_MODULE_COMPRESSION}\0".encode())
    paths = [module_path]
    for d in C.DEFAULT_MODULE_UTILS_PATH or []:
        for root, dirs, files in os.walk(d):
            dirs.sort()
            paths += [os.path.join(root, f) for f in sorted(files) if f.endswith(".py")]
    for p in paths:
        with open(p, "rb") as f:
            h.update(p.encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()[:24]


def _ours(filename: str) -> bool:
    """ansible-core names the entry '<fqn>-<compression>-<extensions>', the fqn ending in the module's name."""
    return filename.split("-", 1)[0].rsplit(".", 1)[-1] == _MODULE and not filename.endswith(("-part", ".lock"))


def _copy_missing(src: str, dst: str) -> None:
    """Copy this module's entries from src to dst where dst lacks them, each by rename (readers never see half)."""
    if not os.path.isdir(src):
        return
    os.makedirs(dst, mode=0o700, exist_ok=True)
    for name in filter(_ours, os.listdir(src)):
        target = os.path.join(dst, name)
        if not os.path.exists(target):
            part = f"{target}.{os.getpid()}-part"
            shutil.copyfile(os.path.join(src, name), part)
            os.replace(part, target)


class ActionModule(NormalAction):

    def run(self, tmp=None, task_vars=None):
        run_cache = os.path.join(C.DEFAULT_LOCAL_TMP, "ansiballz_cache")
        try:
            kept = os.path.join(os.path.dirname(C.DEFAULT_LOCAL_TMP), "pi-ansiballz",
                                _digest(module_loader.find_plugin(_MODULE)))
            _copy_missing(kept, run_cache)
        except OSError:
            kept = None  # no cache is only slower
        result = super().run(tmp, task_vars)
        if kept:
            try:
                _copy_missing(run_cache, kept)
            except OSError:
                pass
        return result
