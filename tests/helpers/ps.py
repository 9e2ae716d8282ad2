"""Sampling `ps` on this machine and on a pod while a command runs, to prove no secret shows there."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable


class PsSampler:
    """`ps -eo args` here and on the pod (remote_ps() returns its output), bounded in count and time."""

    def __init__(self, remote_ps: Callable[[], str], period: float = 0.25, limit: int = 600):
        self.remote_ps, self.period, self.limit = remote_ps, period, limit
        self.samples: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for _ in range(self.limit):
            if self._stop.is_set():
                return
            self.samples.append(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout)
            self.samples.append(self.remote_ps())
            time.sleep(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)
