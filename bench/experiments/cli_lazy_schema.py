"""Experiment: `pi` with jsonschema kept off the import path of local commands (what `pi pods` would cost if
pi_ansible.state validated with a cheap structural check and imported jsonschema only to explain a bad file).

    .venv/bin/python bench/experiments/cli_lazy_schema.py pods

Stands in a stub `jsonschema` whose validators report no error: valid only for a state file that is valid.
"""

import sys
import types

stub = types.ModuleType("jsonschema")
stub.validators = types.SimpleNamespace(validator_for=lambda schema: type(
    "V", (), {"__init__": lambda self, *a, **k: None, "iter_errors": lambda self, doc: iter(()),
              "check_schema": staticmethod(lambda s: None)}))
stub.exceptions = types.SimpleNamespace(best_match=lambda errors: None)
stub.protocols = types.SimpleNamespace(Validator=object)
sys.modules["jsonschema"] = stub

from pi_ansible.cli import main  # noqa: E402

sys.argv = ["pi", *sys.argv[1:]]
main()
