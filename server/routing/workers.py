"""The worker processes of ``serve --workers N``: started, watched, polled, restarted, stopped.

Each worker is the single-process server (:func:`server.web.app.run_server`) on ``127.0.0.1`` and a
port of its own choosing, with the front's options (HRTF, acoustics, state file, secret, room
capacity…). It prints one JSON line, ``{"worker_port": PORT}``, on stdout once it serves
(:func:`as_worker`); its log (stderr) is passed on to the front's stderr, each line prefixed
with ``[worker K]``. A worker dies with its front (Linux ``PR_SET_PDEATHSIG``): the front may be
killed without a chance to stop them.

The front polls each worker's ``/healthz`` every :data:`POLL_S` seconds: its rooms and their
measured loads go to the :class:`~server.routing.placement.RoomPlacement`. A worker that exits while
the front is not stopping is logged, its rooms are forgotten (their members' connections
close; they join again through the front, and the state file gives their seats back) and it is
started again, after a pause that grows while it keeps dying young.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from server.cli.ice_args import ice_worker_args
from server.errors import CliError
from server.routing.placement import RoomPlacement
from server.tick.priority import CLOCK_SLOTS_ENV, usable_cores

log = logging.getLogger(__name__)

#: How often each worker's /healthz is read (seconds).
POLL_S = 0.5
#: A worker whose /healthz fails this many polls in a row takes no new rooms until it answers.
POLL_MISSES = 3
#: The most a worker may take to load its engine and start serving (seconds).
READY_TIMEOUT_S = 180.0
#: Pauses before starting a worker that died again (seconds); one that ran for
#: :data:`STABLE_S` starts again after the first.
RESTART_PAUSES_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_S = 30.0
#: At shutdown: how long workers get to drain their connections before they are killed.
STOP_TIMEOUT_S = 15.0
#: Connection limits of a worker: the front counts clients (server.web.admission), and every
#: connection a worker sees comes from the front's loopback address.
UNLIMITED = "1000000"
#: The longest worker output line read whole (bytes); longer ones are read in pieces.
LOG_LINE_LIMIT = 1 << 20
#: The last lines of a worker's log kept for an error message.
LOG_TAIL = 20
_PR_SET_PDEATHSIG = 1


def worker_command(args: argparse.Namespace, index: int) -> list[str]:
    """The command line of worker ``index`` (0-based) of a front started with ``args``."""
    command = [sys.executable, "-m", "server.cli"]
    if args.verbose:
        command.append("--verbose")
    command += ["serve", "--workers", "1", "--worker", str(index + 1),
                "--front-pid", str(os.getpid()), "--host", "127.0.0.1", "--port", "0",
                "--device", args.device, "--hrtf", args.hrtf, "--acoustics", args.acoustics,
                "--room-capacity", str(args.room_capacity), "--clock-phase", args.clock_phase,
                "--frame-ms", f"{args.frame_ms:g}", "--clock-priority", args.clock_priority,
                "--empty-room-grace", repr(args.empty_room_grace),
                "--upload-set-mb", str(args.upload_set_mb),
                "--upload-budget-mb", str(args.upload_budget_mb),
                "--max-connections-per-ip", UNLIMITED, "--max-connections", UNLIMITED]
    for option in ("state", "secret_file", "recordings"):  # given on, or each its default
        value = getattr(args, option, None)
        if value is not None and not (option == "state" and "://" in value):
            command += ["--" + option.replace("_", "-"), value]
    return command + ice_worker_args(args)


async def _line(stream: asyncio.StreamReader) -> bytes:
    """The next line of a worker's output (b"" at its end). A line longer than
    :data:`LOG_LINE_LIMIT` is dropped (asyncio discards it) and reading goes on with what
    follows: a pipe no longer drained would block the worker's loop on its next log line."""
    try:
        return await stream.readline()
    except ValueError:  # over the limit: it was discarded; go on with what comes next
        return await stream.read(LOG_LINE_LIMIT) or b"\n"


#: A worker's ``--state`` when it is a URL (Redis: it may hold a password), passed in its
#: environment rather than on its command line, which every local user may read.
STATE_URL_ENV = "SPATIALJAM_WORKER_STATE"


def worker_env(workers: int, environ: dict[str, str] | None = None,
               state: str | None = None) -> dict[str, str]:
    """A worker's environment: the front's, with numba's threads shared out among the workers
    (``cores // workers`` each, unless ``NUMBA_NUM_THREADS`` is set): rooms are spread over
    processes, one per core, rather than each process's kernels over every core. The
    real-time room clocks are shared out likewise (``SPATIALJAM_CLOCK_SLOTS``)."""
    env = dict(os.environ if environ is None else environ)
    if state is not None and "://" in state:
        env[STATE_URL_ENV] = state
    env.setdefault("NUMBA_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    # The real-time room clocks too: cores - 1 in all (server.tick.priority), shared out.
    env.setdefault(CLOCK_SLOTS_ENV, str(max(0, usable_cores() - 1) // workers))
    return env


def as_worker(front_pid: int, verbose: bool = False) -> Callable[[int], None]:
    """Called in a worker before it loads anything: die with the front, and return what tells
    the front the port once the worker serves. Unless ``verbose``, the worker does not log
    each HTTP request and connection: the front's polls would fill its log, and the front logs
    its clients' own."""
    if not verbose:
        logging.getLogger("websockets.server").setLevel(logging.WARNING)
    with contextlib.suppress(OSError, AttributeError):  # Linux only; elsewhere the front stops it
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != front_pid:  # the front went before the line above took effect
        raise CliError(f"this worker's front (pid {front_pid}) is gone")

    def announce(port: int) -> None:
        print(json.dumps({"worker_port": port}), flush=True)

    return announce


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (``/proc/PID/stat``), None where unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def http_get(port: int, path: str, timeout_s: float = 5.0,
                   host: str = "127.0.0.1") -> tuple[int, dict, bytes]:
    """``GET path`` from a worker on ``127.0.0.1:port`` (or another node's ``host``): status,
    headers (lower-case names), body. Raises OSError (or TimeoutError) when it does not
    answer."""
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                         "Connection: close\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            body = await reader.read()
        except asyncio.IncompleteReadError as exc:
            raise OSError(f"the worker on port {port} closed the connection") from exc
        finally:
            writer.close()
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return status, headers, body


class Worker:
    """One worker process and what the front last heard from it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.port: int | None = None
        #: Started, serving and answering polls.
        self.up = False
        self.restarts = 0
        self.started_at = 0.0
        self.misses = 0
        self.health: dict = {}
        #: CPU use (cores) between the last two polls, and the sample it came from.
        self.cpu = 0.0
        self._cpu_sample: tuple[float, float] | None = None
        self.log_tail: deque[str] = deque(maxlen=LOG_TAIL)

    @property
    def label(self) -> str:
        return f"worker {self.index + 1}"

    @property
    def key(self) -> tuple[str, str]:
        return ("worker", str(self.index))

    def ws_url(self, path: str) -> str | None:
        """Where a relay reaches this worker's signaling (None while it has no port)."""
        return None if self.port is None else f"ws://127.0.0.1:{self.port}{path}"

    def headers(self, client) -> dict[str, str]:
        """What a relay adds to its handshake with this worker: nothing."""
        return {}

    def describe(self) -> dict:
        """This worker in the front's ``/healthz``."""
        return {"worker": self.index + 1, "pid": self.proc.pid if self.proc else None,
                "port": self.port, "up": self.up, "rooms": len(self.health.get("room_loads", {})),
                "load": self.health.get("load", 0.0), "cpu": round(self.cpu, 3),
                "restarts": self.restarts}

    def sample_cpu(self) -> None:
        if self.proc is None:
            return
        seconds, now = cpu_seconds(self.proc.pid), time.monotonic()
        if seconds is None:
            return
        if self._cpu_sample is not None and now > self._cpu_sample[1]:
            self.cpu = max(0.0, (seconds - self._cpu_sample[0]) / (now - self._cpu_sample[1]))
        self._cpu_sample = (seconds, now)


class RemoteNode:
    """Another node of a ``--redis`` deployment, as a relay's upstream: a join for a room that
    lives there is relayed to that node's front, which takes it as its own (it does not route
    it on), and counts it against the client's address that ``headers`` vouches for."""

    def __init__(self, node_id: str, url: str, vouch: Callable[[object], dict[str, str]]):
        self.id = node_id
        self.url = url
        self._vouch = vouch

    @property
    def label(self) -> str:
        return f"node {self.id} ({self.url})"

    @property
    def key(self) -> tuple[str, str]:
        return ("node", self.id)

    def ws_url(self, path: str) -> str:
        query = path.partition("?")[2]
        return self.url + ("?" + query if query else "")

    def headers(self, client) -> dict[str, str]:
        return self._vouch(client)


class WorkerPool:
    """The front's workers: :meth:`start` them, :meth:`run` (watch, poll, restart), :meth:`stop`.

    Parameters
    ----------
    args
        The front's ``serve`` arguments, given on to each worker.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workers = [Worker(k) for k in range(args.workers)]
        self.placement = RoomPlacement(args.workers)
        self.stopping = False
        self._tasks: list[asyncio.Task] = []
        #: The tasks reading workers' output, each until its worker exits.
        self._readers: set[asyncio.Task] = set()

    # starting -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker and wait until each serves; CliError (the others stopped) when
        one cannot start, with its own words.

        The first starts alone: it makes the files the workers share (the state file, in WAL
        mode, with its tables; the recordings folder) before the others open them at once.
        """
        results = await asyncio.gather(self._launch(self.workers[0]), return_exceptions=True)
        if not isinstance(results[0], BaseException):
            results = await asyncio.gather(*(self._launch(w) for w in self.workers[1:]),
                                           return_exceptions=True)
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            await self.stop()
            if isinstance(failed, CliError):
                raise failed
            raise CliError(f"a worker could not start: {failed}") from None
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._supervise(w)) for w in self.workers]
        self._tasks.append(loop.create_task(self._poll()))

    async def _launch(self, worker: Worker) -> None:
        """Start ``worker``'s process and wait for its port (CliError if it never serves)."""
        worker.up, worker.port, worker.health = False, None, {}
        worker.log_tail.clear()
        worker.proc = proc = await asyncio.create_subprocess_exec(
            *worker_command(self.args, worker.index),  # in the front's folder, so that
            # relative paths (--hrtf FILE, --state, --secret-file…) mean the same there
            env=worker_env(len(self.workers), state=self.args.state),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            limit=LOG_LINE_LIMIT,
            start_new_session=True)  # Ctrl-C reaches the front, which stops the workers
        worker.started_at = time.monotonic()
        log_task = self._keep(self._pass_log(worker, proc))
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                while worker.port is None:
                    line = await proc.stdout.readline()
                    if not line:
                        await proc.wait()
                        break
                    with contextlib.suppress(ValueError, TypeError, KeyError):
                        worker.port = int(json.loads(line)["worker_port"])
        except TimeoutError:
            proc.kill()
            raise CliError(f"{worker.label} did not start serving in {READY_TIMEOUT_S:g} s") \
                from None
        if worker.port is None:
            with contextlib.suppress(TimeoutError):  # its last words
                await asyncio.wait_for(log_task, 5.0)
            words = worker.log_tail[-1] if worker.log_tail else "no output"
            raise CliError(words.removeprefix("spatialjam serve: ")
                           if proc.returncode == 1 else
                           f"{worker.label} exited ({proc.returncode}) before serving: {words}")
        self._keep(self._drain_stdout(proc))
        worker.up = True
        worker.sample_cpu()
        self.placement.up(worker.index)
        log.info("%s serves on 127.0.0.1:%d (pid %d)", worker.label, worker.port, proc.pid)

    def _keep(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)
        return task

    async def _pass_log(self, worker: Worker, proc: asyncio.subprocess.Process) -> None:
        """The worker's stderr, line by line, to ours (prefixed), the last lines kept. Its
        one-line error (the CLI's ``spatialjam serve: …``) is left to the front to say."""
        prefix = f"[{worker.label}] ".encode()
        while line := await _line(proc.stderr):
            text = line.decode(errors="replace").rstrip()
            worker.log_tail.append(text)
            if text.startswith("spatialjam serve: "):
                continue
            sys.stderr.buffer.write(prefix + line)
            sys.stderr.buffer.flush()

    @staticmethod
    async def _drain_stdout(proc: asyncio.subprocess.Process) -> None:
        while line := await _line(proc.stdout):
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()

    # running --------------------------------------------------------------------------------

    async def _supervise(self, worker: Worker) -> None:
        """Start ``worker`` again whenever it exits, unless the front is stopping."""
        failures = 0
        while True:
            code = await worker.proc.wait()
            if self.stopping:
                return
            worker.up = False
            gone = self.placement.down(worker.index)
            ran_s = time.monotonic() - worker.started_at
            failures = 0 if ran_s >= STABLE_S else failures + 1
            pause = RESTART_PAUSES_S[min(failures, len(RESTART_PAUSES_S) - 1)]
            log.error("%s (pid %d) exited with %s after %.0f s, holding %d rooms: starting it "
                      "again in %g s", worker.label, worker.proc.pid, code, ran_s, len(gone),
                      pause)
            await asyncio.sleep(pause)
            while not self.stopping:
                worker.restarts += 1
                try:
                    await self._launch(worker)
                    break
                except (CliError, OSError) as exc:  # OSError: no process could be made now
                    log.error("%s could not start again: %s", worker.label, exc)
                    await asyncio.sleep(RESTART_PAUSES_S[-1])
            if self.stopping:
                return

    async def _poll(self) -> None:
        while True:
            await asyncio.gather(*(self._poll_one(w) for w in self.workers if w.port))
            await asyncio.sleep(POLL_S)

    async def _poll_one(self, worker: Worker) -> None:
        proc = worker.proc
        try:
            status, _, body = await http_get(worker.port, "/healthz", timeout_s=2 * POLL_S)
            health = json.loads(body) if status == 200 else None
        except (OSError, TimeoutError, ValueError):
            health = None
        if worker.proc is not proc or proc.returncode is not None or self.stopping:
            return  # it went (or was replaced) meanwhile: the supervisor handles it
        if health is None:
            worker.misses += 1
            if worker.misses >= POLL_MISSES and worker.up:
                log.warning("%s does not answer: it takes no new rooms until it does",
                            worker.label)
                worker.up = False
                self.placement.workers[worker.index].up = False
            return
        if not worker.up:
            log.info("%s answers again", worker.label)
        worker.misses, worker.up, worker.health = 0, True, health
        worker.sample_cpu()
        self.placement.report(worker.index, float(health.get("load", 0.0)),
                              health.get("room_loads", {}), time.monotonic())

    def route(self, room: str | None) -> Worker | None:
        """The worker for a join to ``room`` (None: any, the least loaded); None if no worker
        takes rooms now."""
        now = time.monotonic()
        index = (self.placement.least_loaded() if room is None
                 else self.placement.route(room, now))
        return None if index is None else self.workers[index]

    # stopping -------------------------------------------------------------------------------

    async def stop(self) -> None:
        """SIGTERM to every worker (each tells its clients and closes them, 1001), and wait
        for them to exit; those still running after :data:`STOP_TIMEOUT_S` are killed."""
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        running = [w.proc for w in self.workers if w.proc and w.proc.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if not running:
            return
        _, pending = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in running],
                                           timeout=STOP_TIMEOUT_S)
        if pending:
            log.warning("%d workers did not stop in %g s: killed", len(pending), STOP_TIMEOUT_S)
            for proc in running:
                if proc.returncode is None:
                    proc.kill()
            await asyncio.wait(pending, timeout=5.0)
        for worker in self.workers:
            worker.up = False
