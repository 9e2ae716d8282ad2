"""Action plugin for pi_model_service: the module's own code, run on the pod without AnsiballZ's overhead.

A Python module reaches the pod as an AnsiballZ zip that always imports ``ansible.module_utils.basic`` and ~40
module_utils, compiled from source on every run (zipimport keeps no bytecode): 0.38 s on the lab pod before the
module's first line, measured, on every ``pi start``. The module's work is stdlib only (``reconcile`` in
module_utils/pi_model_service.py), so this plugin validates the arguments here with the module's own spec
(ansible-core's ArgumentSpecValidator, as AnsibleModule would on the pod), then sends the four module_utils it
needs and the parameters on stdin of one ``python3 -c`` over the task's connection, as pipelining sends a
module (secrets never on a command line), and returns ``reconcile``'s result: 0.1 s instead. The module file
stays the documented interface and runs as a normal module wherever the pod's Python is not known yet (its
AnsiballZ payload is then kept between runs by the pi_ansiballz callback, as every module's is).
"""
from __future__ import annotations

import ast
import json
import os
import re
import shlex

from ansible import constants as C
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action.normal import ActionModule as NormalAction

# What reconcile imports (module_utils names): all stdlib-only
_LEAN_UTILS = ("pi_model_service", "pi_pod_status", "engine_failures", "pi_tool_calls")
_PYTHON = re.compile(r"^/[\w./+-]+$")
# Runs on the pod: serve the sent sources as ansible.module_utils.* from memory, run reconcile, print its result.
_BOOT = """\
import importlib.abc, importlib.util, json, sys
job = json.loads(sys.stdin.buffer.read())
src = {"ansible.module_utils." + k: v for k, v in job["sources"].items()}
class Sent(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name in ("ansible", "ansible.module_utils") or name in src:
            return importlib.util.spec_from_loader(name, self, is_package=name not in src)
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        if module.__name__ in src:
            exec(compile(src[module.__name__], module.__name__, "exec"), module.__dict__)
sys.meta_path.insert(0, Sent())
from ansible.module_utils.pi_model_service import reconcile
print(json.dumps(reconcile(job["params"], job["check_mode"])))
"""


def _utils_file(name: str) -> str | None:
    for d in C.DEFAULT_MODULE_UTILS_PATH or []:
        path = os.path.join(d, f"{name}.py")
        if os.path.isfile(path):
            return path
    return None


def _literal(source: str, name: str):
    """A module-level constant of a module_utils file, read without importing it (it imports pod-side names)."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise KeyError(name)


def lean_validator(utils_source: str) -> ArgumentSpecValidator:
    """The module's spec, checked here; paths are taken as given (AnsibleModule would expand ~ on the pod)."""
    spec = {k: {**v, "type": "str"} if v.get("type") == "path" else v for k, v in _literal(utils_source, "SPEC").items()}
    return ArgumentSpecValidator(spec, required_together=_literal(utils_source, "REQUIRED_TOGETHER"))


class ActionModule(NormalAction):

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        python = self._known_python(task_vars)
        sources = {name: _utils_file(name) for name in _LEAN_UTILS}
        if python and all(sources.values()) and not self._task.async_val:
            return self._run_lean(python, sources, task_vars)
        return super().run(tmp, task_vars)

    def _known_python(self, task_vars) -> str | None:
        """The pod's Python when the inventory names it or an earlier module found it (else the module discovers it)."""
        for key in ("ansible_python_interpreter", "discovered_interpreter_python"):
            value = task_vars.get(key) or (task_vars.get("ansible_facts") or {}).get(key)
            if isinstance(value, str) and "{" in value:
                value = self._templar.template(value)
            if isinstance(value, str) and _PYTHON.match(value):
                return value
        return None

    def _run_lean(self, python, paths, task_vars):
        result = super(NormalAction, self).run(None, task_vars)  # ActionBase: check mode and async checks
        sources = {}
        for name, path in paths.items():
            with open(path, encoding="utf-8") as fh:
                sources[name] = fh.read()
        validator = lean_validator(sources["pi_model_service"])
        checked = validator.validate(dict(self._task.args))
        if checked.error_messages:
            return {**result, "failed": True, "msg": "; ".join(checked.error_messages)}
        job = json.dumps({"sources": sources, "params": checked.validated_parameters,
                          "check_mode": bool(self._task.check_mode)})
        cmd = f"{shlex.quote(python)} -c {shlex.quote(_BOOT)}"
        res = self._low_level_execute_command(cmd, in_data=job.encode(), sudoable=True)
        try:
            answer = json.loads(res.get("stdout") or "")
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            said = (res.get("stderr") or res.get("stdout") or "").strip()[-2000:]
            return {**result, "failed": True, "rc": res.get("rc"),
                    "msg": f"pi_model_service did not answer on the pod (rc {res.get('rc')}): {said or 'no output'}"}
        return {**result, **answer}
