"""``serve --udp-ports MIN-MAX``: the UDP sockets of every media connection bound inside one
range, so that a firewall needs one rule.

A media connection takes one port of the range: its host sockets (one per local address) are
all bound to that same port, so the range holds as many connections as it has ports, whatever
the machine's addresses. Ports are tried from just after the last one handed out, so a port
freed a moment ago is the last to be reused (a late datagram of the old connection lands on
nothing). Other processes (the workers of ``serve --workers N``) share the range the same
way: a port one of them holds cannot be bound by another, and the next is tried.
"""

from __future__ import annotations

import errno
import logging
import socket

from aioice.ice import get_host_addresses

log = logging.getLogger(__name__)


def media_addresses() -> list[str]:
    """The addresses a media connection's host candidates lie on: aioice's choice, every
    interface's address but loopback (and IPv6 link-local)."""
    return get_host_addresses(use_ipv4=True, use_ipv6=True)


class PortsExhausted(Exception):
    """Every port of the range is taken; the message says so in words."""


class UdpPortRange:
    """Ports ``lo..hi`` (both included) for media connections' UDP sockets."""

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi
        self._next = lo

    @property
    def size(self) -> int:
        return self.hi - self.lo + 1

    def bind(self, addresses: list[str]) -> list[socket.socket]:
        """Non-blocking UDP sockets bound to one free port of the range, one per address of
        ``addresses`` that can be bound at all (an address that refuses every port, such as
        one that left its interface, is skipped, as aioice skips it).

        Raises
        ------
        PortsExhausted
            If no port of the range is free on the addresses.
        """
        if not addresses:
            return []
        usable = list(addresses)
        for k in range(self.size):
            port = self.lo + (self._next - self.lo + k) % self.size
            sockets: list[socket.socket] = []
            taken = False
            for address in list(usable):
                try:
                    sockets.append(_bound(address, port))
                except OSError as exc:
                    if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                        taken = True
                        break
                    log.info("cannot bind UDP on %s: %s; that address is left out", address, exc)
                    usable.remove(address)
            if taken or not sockets:
                for s in sockets:
                    s.close()
                if not usable:
                    break
                continue
            self._next = self.lo + (port + 1 - self.lo) % self.size
            return sockets
        raise PortsExhausted(
            f"every UDP port of this server's media range {self.lo}-{self.hi} "
            f"({self.size} ports) holds a connection: try again when someone leaves, or ask "
            "the host to widen serve --udp-ports")


def _bound(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
