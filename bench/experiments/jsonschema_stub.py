"""A stub `jsonschema` whose validators report no error, for the experiments that measure what importing the
real one costs `pi`. Valid only for state files that are valid."""

import sys
import types


def install() -> None:
    stub = types.ModuleType("jsonschema")
    stub.validators = types.SimpleNamespace(validator_for=lambda schema: type(
        "V", (), {"__init__": lambda self, *a, **k: None, "iter_errors": lambda self, doc: iter(()),
                  "check_schema": staticmethod(lambda s: None)}))
    stub.exceptions = types.SimpleNamespace(best_match=lambda errors: None)
    stub.protocols = types.SimpleNamespace(Validator=object)
    sys.modules["jsonschema"] = stub
