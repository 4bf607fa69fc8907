"""The internet's shape on one Linux machine, built from network namespaces, veth pairs and
iptables inside those namespaces (never in the machine's own namespace).

::

       cloud (10.0.0.2)                     home 1 (192.168.1.2)    home 2 (192.168.2.2)
           │                                      │                        │
       cloud gateway: 1:1 NAT              home router 1: NAT       home router 2: NAT
       203.0.113.10 ⇄ 10.0.0.2             (masquerade) 198.51.100.11  198.51.100.12
           │                                      │                        │
       ────┴──────────── public: the internet's router (a bridge; 203.0.113.1, ─┴───┬──
                         198.51.100.1, 192.0.2.1; no route to any private range)     │
                                                                          TURN host 192.0.2.10

Addresses come from the documentation ranges (TEST-NET-1/2/3, RFC 5737) on the public side and
from RFC 1918 ranges inside; none of them exists outside the namespaces built here. Each
namespace is named ``sj-<pid>-<n>-<role>``: parallel runs do not collide, and a run finds and
removes what a crashed run (its pid gone) left behind.

A process runs in a namespace through ``ip netns exec`` (:meth:`Internet.start`); Python code
in this process runs in one on a thread of its own (:class:`NamespaceLoop`, :meth:`Internet.call`):
a network namespace belongs to a thread, and a socket stays in the namespace it was made in.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
PREFIX = "sj-"
_STALE = re.compile(rf"^{PREFIX}(\d+)-")
_CLONE_NEWNET = 0x40000000

#: The internet router's own addresses, one per public range (all on one bridge).
ROUTER_ADDRESSES = ("203.0.113.1/24", "198.51.100.1/24", "192.0.2.1/24")
CLOUD_PUBLIC = "203.0.113.10"
CLOUD_PRIVATE = "10.0.0.2"
TURN_PUBLIC = "192.0.2.10"
HOME_PUBLIC = ("198.51.100.11", "198.51.100.12")
HOME_PRIVATE = ("192.168.1.2", "192.168.2.2")

#: How long a namespace tool may take before the build is called broken.
COMMAND_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Host:
    """A machine on the model internet."""

    #: The namespace its processes run in.
    netns: str
    #: The address its own interface holds.
    address: str
    #: The address the internet sees it by (its NAT's public address, or its own).
    public: str
    #: The namespace of the NAT router in front of it; None on the public side.
    router: str | None = None


def _run(argv: Sequence[str], stdin: str | None = None) -> str:
    done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()}")
    return done.stdout


def _ip(netns: str, *commands: str) -> None:
    """``ip`` commands (one per string, ``ip -batch`` syntax) inside ``netns``."""
    _run(["ip", "-n", netns, "-batch", "-"], stdin="\n".join(commands) + "\n")


def _in(netns: str, *argv: str) -> str:
    return _run(["ip", "netns", "exec", netns, *argv])


def _pids(netns: str) -> list[int]:
    try:
        return [int(pid) for pid in _run(["ip", "netns", "pids", netns]).split()]
    except RuntimeError:
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete(netns: str) -> None:
    """Kill what still runs in ``netns`` (processes the tests started there) and remove it."""
    for pid in _pids(netns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=COMMAND_TIMEOUT_S)


def sweep_stale() -> list[str]:
    """Remove the namespaces of runs whose process is gone (a crash, a SIGKILL); their names."""
    removed = []
    names = sorted(p.name for p in NETNS_DIR.iterdir()) if NETNS_DIR.is_dir() else []
    for name in names:
        match = _STALE.match(name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            _delete(name)
            removed.append(name)
    return removed


@functools.cache
def unavailable() -> str | None:
    """Why namespaces cannot be built here, in words; None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "building network namespaces needs root"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (Debian package {package}; make test installs it)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        _run(["ip", "netns", "add", probe])
        _in(probe, "iptables", "-t", "nat", "-L", "-n")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a network namespace with NAT here: {exc}"
    finally:
        _delete(probe)
    return None


def require() -> None:
    """Skip the calling test, saying why, where namespaces cannot be built."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)


def enter(netns: str) -> None:
    """Move the calling thread (only it) into ``netns``: sockets it makes from now on live
    there. Call it on a thread of its own, never on one that outlives the namespace's use."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / netns, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {netns}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _call_in(netns: str, fn: Callable[..., T], *args: Any, timeout: float = 30.0) -> T:
    """``fn(*args)`` on a fresh thread inside ``netns``; its result or exception."""

    def inside() -> T:
        enter(netns)
        return fn(*args)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(inside).result(timeout)


class NamespaceLoop:
    """An asyncio event loop on a thread inside a namespace, with its executor's threads there
    too (so a ``getaddrinfo`` or a blocking call in it sees the namespace's network).

    :meth:`run` waits for a coroutine from any other thread; :meth:`submit` hands back a
    ``concurrent.futures.Future`` (``asyncio.wrap_future`` it to await it on another loop).
    """

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self.loop = asyncio.new_event_loop()
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, args=(started,),
                                        name=f"netns-{netns}", daemon=True)
        self._thread.start()
        started.result(COMMAND_TIMEOUT_S)

    def _main(self, started: concurrent.futures.Future[None]) -> None:
        try:
            enter(self.netns)
        except OSError as exc:
            started.set_exception(exc)
            return
        asyncio.set_event_loop(self.loop)
        self.loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(
            4, thread_name_prefix=f"netns-{self.netns}", initializer=enter,
            initargs=(self.netns,)))
        started.set_result(None)
        self.loop.run_forever()
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        if not self._thread.is_alive():
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.run(cancel_all(), COMMAND_TIMEOUT_S)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(COMMAND_TIMEOUT_S)


class Proc:
    """A process started in a namespace, its output (stdout and stderr) kept in a file."""

    def __init__(self, popen: subprocess.Popen, log: Path) -> None:
        self.popen = popen
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for_line(self, pattern: str, timeout: float) -> re.Match:
        """The first match of the regular expression ``pattern`` in the output, waited for; a
        failure names the process and shows its last lines when it exits or time runs out."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.output())
            if match:
                return match
            if self.popen.poll() is not None or time.monotonic() > deadline:
                state = (f"exited with {self.popen.returncode}" if self.popen.poll() is not None
                         else f"said nothing like it in {timeout:.0f} s")
                tail = "\n".join(self.output().splitlines()[-20:])
                raise AssertionError(f"{self.popen.args} {state}, waiting for {pattern!r}:\n{tail}")
            time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        return self.popen.returncode


class Internet:
    """The model internet of the module docstring; a context manager that tears all of it down
    (processes, threads, namespaces) on the way out, whatever happened inside.

    ``folder`` keeps the processes' logs (a test's ``tmp_path``).
    """

    _count = 0

    def __init__(self, folder: Path) -> None:
        Internet._count += 1
        self.folder = folder
        self._base = f"{PREFIX}{os.getpid()}-{Internet._count}"
        self._namespaces: list[str] = []
        self._procs: list[Proc] = []
        self._loops: list[NamespaceLoop] = []
        name = self._name
        #: The internet's router; also a host on the public side (192.0.2.1).
        self.router = Host(name("pub"), "192.0.2.1", "192.0.2.1")
        #: A cloud VM: a private address behind its provider's 1:1 NAT.
        self.cloud = Host(name("cloud"), CLOUD_PRIVATE, CLOUD_PUBLIC, name("cgw"))
        #: Two homes, each behind its own masquerading NAT router.
        self.homes = tuple(
            Host(name(f"h{n}"), HOME_PRIVATE[n - 1], HOME_PUBLIC[n - 1], name(f"r{n}"))
            for n in (1, 2))
        #: A host on the public side with no NAT, where the TURN server runs.
        self.turn = Host(name("turn"), TURN_PUBLIC, TURN_PUBLIC)

    def _name(self, role: str) -> str:
        return f"{self._base}-{role}"

    def __enter__(self) -> Internet:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # building

    def _add(self, netns: str, forward: bool = False) -> None:
        _run(["ip", "netns", "add", netns])
        self._namespaces.append(netns)
        _ip(netns, "link set lo up")
        if forward:
            _call_in(netns, Path("/proc/sys/net/ipv4/ip_forward").write_text, "1")

    def _wire(self, a: str, a_dev: str, b: str, b_dev: str) -> None:
        """A veth pair from ``a`` to ``b``, made inside ``a`` (never in the machine's own)."""
        _ip(a, f"link add {a_dev} type veth peer name {b_dev} netns {b}")

    def _to_internet(self, netns: str, address: str, port: str) -> None:
        """``netns``'s ``wan`` onto the router's bridge, ``address``/24 and a default route."""
        self._wire(netns, "wan", self.router.netns, port)
        _ip(self.router.netns, f"link set {port} master br0", f"link set {port} up")
        gateway = {a.split("/")[0].rsplit(".", 1)[0]: a.split("/")[0] for a in ROUTER_ADDRESSES}
        _ip(netns, f"addr add {address}/24 dev wan", "link set wan up",
            f"route add default via {gateway[address.rsplit('.', 1)[0]]}")

    def _lan(self, router: str, host: Host, gateway: str) -> None:
        self._wire(router, "lan", host.netns, "eth0")
        _ip(router, f"addr add {gateway}/24 dev lan", "link set lan up")
        _ip(host.netns, f"addr add {host.address}/24 dev eth0", "link set eth0 up",
            f"route add default via {gateway}")

    def _iptables(self, netns: str, *rules: str) -> None:
        for rule in rules:
            _in(netns, "iptables", "-w", *rule.split())

    def build(self) -> None:
        require()
        sweep_stale()
        pub = self.router.netns
        self._add(pub, forward=True)
        _ip(pub, "link add br0 type bridge", "link set br0 up",
            *(f"addr add {address} dev br0" for address in ROUTER_ADDRESSES))

        self._add(self.turn.netns)
        self._to_internet(self.turn.netns, self.turn.address, "p-turn")

        cgw = self.cloud.router
        assert cgw is not None
        self._add(cgw, forward=True)
        self._add(self.cloud.netns)
        self._to_internet(cgw, self.cloud.public, "p-cloud")
        self._lan(cgw, self.cloud, "10.0.0.1")
        self._iptables(
            cgw,
            f"-t nat -A PREROUTING -i wan -d {self.cloud.public} -j DNAT "
            f"--to-destination {self.cloud.address}",
            f"-t nat -A POSTROUTING -o wan -s {self.cloud.address} -j SNAT "
            f"--to-source {self.cloud.public}")

        for i, home in enumerate(self.homes):
            assert home.router is not None
            self._add(home.router, forward=True)
            self._add(home.netns)
            self._to_internet(home.router, home.public, f"p-home{i + 1}")
            self._lan(home.router, home, home.address.rsplit(".", 1)[0] + ".1")
            self._iptables(
                home.router,
                "-t nat -A POSTROUTING -o wan -j MASQUERADE",
                "-A FORWARD -i wan -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-A FORWARD -i wan -j DROP")

    def block_udp(self, home: Host, except_to: Sequence[tuple[str, int]] = ()) -> None:
        """``home``'s router drops every UDP datagram from the home (a strict firewall), but
        those to the ``(address, port)`` pairs in ``except_to``; TCP passes as before."""
        if home.router is None:
            raise ValueError(f"{home.netns} has no router of its own to firewall")
        self._iptables(home.router, "-I FORWARD 1 -i lan -p udp -j DROP")
        for address, port in except_to:
            self._iptables(home.router,
                           f"-I FORWARD 1 -i lan -p udp -d {address} --dport {port} -j ACCEPT")

    # running things inside

    def start(self, host: Host | str, argv: Sequence[str], name: str,
              env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
        """``argv`` started inside ``host``'s namespace (stopped by :meth:`close` at the latest);
        its output goes to ``<folder>/<name>.log``."""
        netns = host.netns if isinstance(host, Host) else host
        log = self.folder / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(["ip", "netns", "exec", netns, *argv], stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, cwd=cwd)
        proc = Proc(popen, log)
        self._procs.append(proc)
        return proc

    def python(self, host: Host | str, args: Sequence[str], name: str,
               env: dict[str, str] | None = None) -> Proc:
        """This interpreter running ``args`` (``-m module …``) inside ``host``, unbuffered, from
        the repository's root (so the checkout's packages are the ones imported)."""
        repo = Path(__file__).resolve().parents[2]
        environment = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        return self.start(host, [sys.executable, *args], name, env=environment, cwd=repo)

    def loop(self, host: Host | str) -> NamespaceLoop:
        """An event loop inside ``host``'s namespace, closed by :meth:`close` at the latest."""
        loop = NamespaceLoop(host.netns if isinstance(host, Host) else host)
        self._loops.append(loop)
        return loop

    def call(self, host: Host | str, fn: Callable[..., T], *args: Any,
             timeout: float = 30.0) -> T:
        """``fn(*args)`` on a fresh thread inside ``host``'s namespace; its result or exception."""
        return _call_in(host.netns if isinstance(host, Host) else host, fn, *args,
                        timeout=timeout)

    def wait_tcp(self, host: Host | str, address: str, port: int, timeout: float) -> None:
        """Wait until ``address:port`` accepts a TCP connection made from inside ``host``."""

        def probe() -> None:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    socket.create_connection((address, port), timeout=1).close()
                    return
                except OSError as exc:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{address}:{port} did not answer from {host}: "
                                             f"{exc}") from exc
                    time.sleep(0.05)

        self.call(host, probe, timeout=timeout + 5)

    # teardown

    def close(self) -> None:
        for loop in self._loops:
            with contextlib.suppress(Exception):  # tear the rest down whatever one loop did
                loop.close()
        for proc in self._procs:
            proc.stop()
        for netns in reversed(self._namespaces):
            _delete(netns)
        self._loops.clear()
        self._procs.clear()
        self._namespaces.clear()
