"""The lab's services on the bridge: the hub double and the package index, one process, one thread each.

    python -m pi_ansible.lab.services --bind 10.77.0.1 --hub-port 8090 --index-port 8091 \
        --models-dir pi_ansible/lab/hub_models --wheel-dir ~/.cache/pi-lab/wheelhouse/wheels \
        [--access-token-file tokens.txt]

Prints one ready line on stdout once both listen (ports 0 pick free ones; the line gives the real ones) and
stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from pi_ansible.lab import hub, index_server


def read_tokens(path: Path | None) -> list[str]:
    """Access tokens of the gated repo, one a line; blank lines and '#' comments ignored."""
    if path is None:
        return []
    lines = (line.strip() for line in Path(path).read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pi_ansible.lab.services", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--bind", required=True)
    parser.add_argument("--hub-port", type=int, required=True)
    parser.add_argument("--index-port", type=int, required=True)
    parser.add_argument("--models-dir", type=Path, default=hub.MODELS_DIR)
    parser.add_argument("--wheel-dir", type=Path, required=True)
    parser.add_argument("--access-token-file", type=Path)
    args = parser.parse_args(argv)

    hub_server = hub.make_server(
        args.bind, args.hub_port, args.models_dir, access_tokens=read_tokens(args.access_token_file)
    )
    index = index_server.make_server(args.bind, args.index_port, args.wheel_dir)
    servers = (hub_server, index)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threads = [
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True) for s in servers
    ]
    for t in threads:
        t.start()
    hub_host, hub_port = hub_server.server_address[:2]
    index_host, index_port = index.server_address[:2]
    ready = {
        "ready": True,
        "hub": f"http://{hub_host}:{hub_port}",
        "index": f"http://{index_host}:{index_port}/simple/",
        "repos": len(hub_server.state.repos),
    }
    print(json.dumps(ready), flush=True)
    while not stop.wait(0.5):
        if not all(t.is_alive() for t in threads):
            break
    for s in servers:
        s.shutdown()
        s.server_close()
    for t in threads:
        t.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
