"""Processes of light bots (``python -m bench.lightbot``), driven from ``bench capacity`` over
their stdin and stdout, one JSON line a command and a reply (:mod:`bench.lightbot` defines the
commands)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

from bench.serverproc import ROOT


class BotFleet:
    """Processes of :mod:`bench.lightbot`, ``per_process`` bots each, started as needed."""

    def __init__(self, url: str, per_process: int, log_dir: Path,
                 transport: str = "media") -> None:
        self.url = url
        self.transport = transport
        self.per_process = per_process
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []
        self.counts: list[int] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def _spawn(self) -> int:
        log = open(self.log_dir / f"bots{len(self.procs)}.log", "w")  # noqa: SIM115 (the child's)
        proc = subprocess.Popen([sys.executable, "-m", "bench.lightbot", self.url,
                                 "--transport", self.transport], cwd=ROOT,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                text=True)
        log.close()
        self.procs.append(proc)
        self.counts.append(0)
        self._answer(len(self.procs) - 1)  # "ready"
        return len(self.procs) - 1

    def _answer(self, index: int) -> dict:
        line = self.procs[index].stdout.readline()
        if not line:
            tail = (self.log_dir / f"bots{index}.log").read_text()[-1500:]
            raise RuntimeError(f"bot process {index} exited: {tail.strip() or 'no output'}")
        return json.loads(line)

    def _ask(self, messages: dict[int, dict]) -> dict[int, dict]:
        for index, message in messages.items():
            self.procs[index].stdin.write(json.dumps(message) + "\n")
            self.procs[index].stdin.flush()
        return {index: self._answer(index) for index in messages}

    def add(self, bots: list[tuple[str, str]]) -> list[str]:
        """Join ``bots`` (each process's at once); returns the errors, one per process."""
        batches: dict[int, list[tuple[str, str]]] = {}
        for bot in bots:
            index = next((i for i, c in enumerate(self.counts) if c < self.per_process), None)
            if index is None:
                index = self._spawn()
            self.counts[index] += 1
            batches.setdefault(index, []).append(bot)
        replies = self._ask({i: {"cmd": "add", "bots": b} for i, b in batches.items()})
        return [f"process {i}: {r['error']}" for i, r in replies.items() if not r["ok"]]

    def mark(self) -> None:
        self._ask({i: {"cmd": "mark"} for i in range(len(self.procs))})

    def report(self) -> list[dict]:
        replies = self._ask({i: {"cmd": "report"} for i in range(len(self.procs))})
        return [bot for i in sorted(replies) for bot in replies[i]["bots"]]

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(OSError):
                proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
