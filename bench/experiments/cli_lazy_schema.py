"""Experiment: `pi` with jsonschema kept off the import path of local commands (what `pi pods` would cost if
pi_ansible.state validated with a cheap structural check and imported jsonschema only to explain a bad file).

    .venv/bin/python bench/experiments/cli_lazy_schema.py pods

Stands in a stub `jsonschema` whose validators report no error: valid only for a state file that is valid.
"""

import sys

import jsonschema_stub  # beside this file

jsonschema_stub.install()

from pi_ansible.cli import main  # noqa: E402

sys.argv = ["pi", *sys.argv[1:]]
main()
