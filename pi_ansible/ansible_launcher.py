"""`ansible-playbook` as pi runs it: the same program, with ansible-core's routing table parsed once per machine.

Every run resolves FQCN names (ansible.builtin.*), for which ansible-core parses its 376 KB routing table
(ansible/config/ansible_builtin_runtime.yml) with PyYAML: measured on the lab machine, dropping that parse cut
0.5 s of CPU from each `pi start` (the parse itself, and the heap of parser garbage every forked worker then
drags along). ansible-core leaves the parser open for tools to replace (`_meta_yml_to_dict` "may be monkeypatched
to another implementation", and gets a content id "to allow other implementations to cache the output"): this
keeps the parsed table, marshalled, keyed by a digest of the YAML itself, in $PI_ANSIBLE_CACHE. Without that
variable, or when the cache cannot be read or written, it is plain ansible-playbook.

    python -m pi_ansible.ansible_launcher PLAYBOOK [ansible-playbook options]
"""

from __future__ import annotations

import hashlib
import marshal
import os
import sys


def cached_meta_parser(real, cache_dir: str):
    """Wrap ansible-core's routing-table parser with a cache keyed by the table's bytes."""

    def parse(data, content_id):
        raw = data if isinstance(data, bytes) else str(data).encode()
        path = os.path.join(cache_dir, f"routing-{hashlib.sha256(raw).hexdigest()[:32]}.marshal")
        try:
            with open(path, "rb") as fh:
                return marshal.load(fh)
        except (OSError, EOFError, ValueError, TypeError):
            pass
        parsed = real(data, content_id)
        try:
            os.makedirs(cache_dir, mode=0o700, exist_ok=True)
            part = f"{path}.{os.getpid()}.part"
            with open(part, "wb") as fh:
                marshal.dump(parsed, fh)
            os.replace(part, path)  # concurrent runs: each renames a whole file
        except (OSError, ValueError):
            pass  # a table marshal cannot hold, or no room: parse it next time too
        return parsed

    return parse


def main() -> int:
    cache_dir = os.environ.get("PI_ANSIBLE_CACHE")
    if cache_dir:
        from ansible.utils.collection_loader import _collection_finder

        real = getattr(_collection_finder, "_meta_yml_to_dict", None)
        if real is not None:
            _collection_finder._meta_yml_to_dict = cached_meta_parser(real, cache_dir)
    from ansible.cli.playbook import main as playbook_main

    sys.argv[0] = "ansible-playbook"
    return playbook_main()


if __name__ == "__main__":
    sys.exit(main())
