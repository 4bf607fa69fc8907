"""Run ``spatialjam serve`` in a child process on a free loopback port (benchmarks and tests)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``with ServerProcess() as srv:`` — a server ready at ``srv.http`` and ``srv.ws``."""

    def __init__(self, *args: str, timeout_s: float = 120.0) -> None:
        self.port = free_port()
        self.args = args
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--port", str(self.port), *self.args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                urllib.request.urlopen(f"{self.http}/healthz", timeout=2)
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    output = self.proc.communicate()[0]
                    raise RuntimeError(f"the server did not start:\n{output[-2000:]}") from None
                time.sleep(0.3)

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> int:
        """SIGTERM, wait, and return the exit status."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        finally:
            self.proc.stdout.close()
