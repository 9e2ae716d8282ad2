"""Experiment: `pi list` with the two changes the report proposes, applied from outside the product:

  --lazy-schema  jsonschema kept off the import path (a stub that validates nothing: the state file is valid)
  --persist      the direct SSH call reuses a ControlMaster connection (ControlPersist=60s, as Ansible's)

    .venv/bin/python bench/experiments/list_fast.py [--lazy-schema] [--persist] list --pod POD
"""

import sys
import types

args = sys.argv[1:]
if "--lazy-schema" in args:
    args.remove("--lazy-schema")
    import jsonschema_stub  # beside this file

    jsonschema_stub.install()
if "--persist" in args:
    args.remove("--persist")
    from pi_ansible import model_list

    real_run = model_list.subprocess.run

    def run(argv, *a, **kw):
        if argv and argv[0] == "ssh":
            argv = [argv[0], "-o", "ControlMaster=auto", "-o", "ControlPath=~/.ssh/pi-bench-cp-%C",
                    "-o", "ControlPersist=60s", *argv[1:]]
        return real_run(argv, *a, **kw)

    model_list.subprocess = types.SimpleNamespace(**{**vars(model_list.subprocess), "run": run})

from pi_ansible.cli import main  # noqa: E402

sys.argv = ["pi", *args]
main()
