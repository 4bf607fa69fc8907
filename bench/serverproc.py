"""Run ``spatialjam serve`` in a child process on a free loopback port (benchmarks and tests)."""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOG_LINES = 2000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``with ServerProcess() as srv:`` — a server ready at ``srv.http`` and ``srv.ws``.

    It keeps no room state (``--state none``) unless ``args`` name a ``--state`` (or
    ``--redis``, which keeps rooms in Redis), and runs one
    process (``--workers 1``: tests read its ``/proc``) unless ``args`` name ``--workers``.
    With ``client_tls`` (a client context that trusts the server's certificate; ``args`` give
    ``--tls-cert`` and ``--tls-key``) it is reached over HTTPS and WSS.
    """

    def __init__(self, *args: str, timeout_s: float = 120.0,
                 client_tls: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.args = args
        self.timeout_s = timeout_s
        self.client_tls = client_tls
        #: The server's last log lines.
        self.log: deque[str] = deque(maxlen=LOG_LINES)
        self.proc: subprocess.Popen | None = None

    @property
    def http(self) -> str:
        return f"{'https' if self.client_tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"{'wss' if self.client_tls else 'ws'}://127.0.0.1:{self.port}/ws"

    def __enter__(self) -> ServerProcess:
        state = () if "--state" in self.args or "--redis" in self.args else ("--state", "none")
        workers = () if "--workers" in self.args else ("--workers", "1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--port", str(self.port), *state,
             *workers, *self.args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # Read the log as it comes, so the server never blocks on a full pipe.
        reader = threading.Thread(target=self._read_log, daemon=True, name="server-log")
        reader.start()
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                urllib.request.urlopen(f"{self.http}/healthz", timeout=2,
                                       context=self.client_tls)
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    self.proc.wait()
                    reader.join(timeout=5)
                    output = "\n".join(self.log)
                    raise RuntimeError(f"the server did not start:\n{output[-2000:]}") from None
                time.sleep(0.3)

    def _read_log(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            for line in self.proc.stdout:
                self.log.append(line.rstrip())

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
