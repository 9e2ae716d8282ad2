"""`ansible-playbook` as pi runs it: the same program, with ansible-core's routing table parsed once per machine.

Every run resolves FQCN names (ansible.builtin.*), for which ansible-core parses its 376 KB routing table
(ansible/config/ansible_builtin_runtime.yml) with PyYAML: measured on the lab machine, dropping that parse cut
0.5 s of CPU from each `pi start` (the parse itself, and the heap of parser garbage every forked worker then
drags along). ansible-core leaves the parser open for tools to replace (`_meta_yml_to_dict` "may be monkeypatched
to another implementation", and gets a content id "to allow other implementations to cache the output"): this
keeps the parsed table, marshalled, keyed by a digest of the YAML itself, in $PI_ANSIBLE_CACHE. Without that
variable, or when the cache cannot be read or written, it is plain ansible-playbook.

When the run is over it leaves at once: the exit handlers run (ansible-core's temporary files, logging), the
streams are flushed, and the process ends without tearing down its ~600 modules one object at a time, which
took 0.15-0.19 s after the last event of every run (between `playbook_on_stats` and the exit ansible-runner
waits for), about a tenth of a `pi start`.

    python -m pi_ansible.ansible_launcher PLAYBOOK [ansible-playbook options]
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import marshal
import os
import sys
import threading


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


def exit_code(code) -> int:
    """The status sys.exit(CODE) gives the shell: None is 0, a number is itself, anything else is printed, 1."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


def leave(code: int) -> None:
    """End the process now, as a normal exit would end it minus the interpreter's teardown."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)  # a thread a normal exit would wait for: wait for it
    atexit._run_exitfuncs()  # what a normal exit runs first (CPython's own entry point for it)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe: nothing left to write to
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    try:
        status = main()
    except SystemExit as done:  # ansible-playbook ends with sys.exit(rc)
        status = done.code
    leave(exit_code(status))
