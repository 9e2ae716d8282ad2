"""A PEP 503 simple index over a folder of wheels, for pods with no internet.

`/simple/` lists the projects, `/simple/<normalized-name>/` their wheels with `#sha256=` fragments,
`data-requires-python` and the PEP 658 core metadata (`/files/<wheel>.metadata`), `/files/<wheel>` the wheels.
The folder is read again whenever it changes, so wheels copied in later are served without a restart.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import re
import sys
import threading
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit


def normalize(name: str) -> str:
    """PEP 503 name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Wheel:
    filename: str
    project: str
    sha256: str
    requires_python: str | None
    metadata: bytes
    metadata_sha256: str


def read_wheel(path: Path) -> Wheel:
    data = path.read_bytes()
    metadata = b""
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if name.count("/") == 1 and name.endswith(".dist-info/METADATA"):
                metadata = zf.read(name)
                break
    headers = HeaderParser().parsestr(metadata.decode("utf-8", "replace"))
    return Wheel(
        filename=path.name,
        project=normalize(path.name.split("-", 1)[0]),
        sha256=hashlib.sha256(data).hexdigest(),
        requires_python=headers.get("Requires-Python"),
        metadata=metadata,
        metadata_sha256=hashlib.sha256(metadata).hexdigest(),
    )


class WheelCatalog:
    """The wheels of one folder, read again when a file there changes."""

    def __init__(self, wheel_dir: Path):
        self.wheel_dir = Path(wheel_dir)
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[int, int]] = {}
        self._wheels: dict[str, Wheel] = {}

    def wheels(self) -> dict[str, Wheel]:
        with self._lock:
            current = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in self.wheel_dir.glob("*.whl")}
            if current != self._seen:
                old = self._wheels
                self._wheels = {
                    name: old[name]
                    if name in old and self._seen.get(name) == stat
                    else read_wheel(self.wheel_dir / name)
                    for name, stat in current.items()
                }
                self._seen = current
            return dict(self._wheels)

    def projects(self) -> dict[str, list[Wheel]]:
        out: dict[str, list[Wheel]] = {}
        for wheel in sorted(self.wheels().values(), key=lambda w: w.filename):
            out.setdefault(wheel.project, []).append(wheel)
        return out


def _page(title: str, links: list[str]) -> bytes:
    body = "\n".join(links)
    return (
        '<!DOCTYPE html>\n<html>\n  <head>\n    <meta name="pypi:repository-version" content="1.0">\n'
        f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n{body}\n  </body>\n</html>\n"
    ).encode()


class IndexHandler(BaseHTTPRequestHandler):
    server: IndexServer
    protocol_version = "HTTP/1.1"
    server_version = "pi-lab-index/1"

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str, *, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)
        sys.stderr.write(f"index {self.address_string()} {self.command} {self.path} {status}\n")

    def _dispatch(self, *, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        catalog = self.server.catalog
        try:
            if path in ("/simple", "/simple/"):
                links = [
                    f'    <a href="/simple/{quote(p)}/">{html.escape(p)}</a><br/>' for p in catalog.projects()
                ]
                self._send(200, _page("Simple index", links), "text/html; charset=utf-8", head=head)
            elif path.startswith("/simple/"):
                project = normalize(path[len("/simple/") :].strip("/"))
                wheels = catalog.projects().get(project)
                if not wheels:
                    self._send(404, b"Not Found\n", "text/plain", head=head)
                    return
                links = []
                for w in wheels:
                    attrs = f'href="/files/{quote(w.filename)}#sha256={w.sha256}"'
                    if w.requires_python:
                        attrs += f' data-requires-python="{html.escape(w.requires_python, quote=True)}"'
                    if w.metadata:
                        attrs += f' data-dist-info-metadata="sha256={w.metadata_sha256}"'
                        attrs += f' data-core-metadata="sha256={w.metadata_sha256}"'
                    links.append(f"    <a {attrs}>{html.escape(w.filename)}</a><br/>")
                self._send(200, _page(f"Links for {project}", links), "text/html; charset=utf-8", head=head)
            elif path.startswith("/files/"):
                name = path[len("/files/") :]
                wheels = catalog.wheels()
                if name.endswith(".metadata") and name[: -len(".metadata")] in wheels:
                    self._send(200, wheels[name[: -len(".metadata")]].metadata, "text/plain", head=head)
                elif name in wheels:
                    body = (catalog.wheel_dir / name).read_bytes()
                    self._send(200, body, "application/octet-stream", head=head)
                else:
                    self._send(404, b"Not Found\n", "text/plain", head=head)
            else:
                self._send(404, b"Not Found\n", "text/plain", head=head)
        except (BrokenPipeError, ConnectionResetError):
            pass


class IndexServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], catalog: WheelCatalog):
        self.catalog = catalog
        super().__init__(address, IndexHandler)


def make_server(bind: str, port: int, wheel_dir: Path) -> IndexServer:
    """An index over `wheel_dir` bound to (bind, port); port 0 picks a free one."""
    return IndexServer((bind, port), WheelCatalog(Path(wheel_dir)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A PEP 503 simple index over a folder of wheels.")
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("wheel_dir", type=Path)
    args = parser.parse_args(argv)
    server = make_server(args.bind, args.port, args.wheel_dir)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
