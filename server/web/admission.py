"""How many signaling connections the server holds at once: from one client, and in all.

A count without I/O: the HTTP router asks :meth:`ConnectionLimits.admit` before a ``/ws``
handshake goes on and calls :meth:`~ConnectionLimits.release` once that connection's socket is
gone (``server.web.app``). A client is its IPv4 address, or its IPv6 /64 network (one host is
handed a whole /64, so single IPv6 addresses would cost an attacker nothing); an IPv4 address
mapped into IPv6 counts as the IPv4 one.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: Signaling connections one client may hold at once (a page holds one; a band behind one
#: router, a few each). ``serve --max-connections-per-ip`` changes it.
MAX_CONNECTIONS_PER_IP = 64
#: Signaling connections the process holds at once. ``serve --max-connections`` changes it.
MAX_CONNECTIONS = 1024


def client_key(host: str) -> str:
    """Whom a connection from ``host`` counts against: the IPv4 address, the IPv6 /64.

    Hosts that are not IP addresses (a Unix socket's path) count as themselves.
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(frozen=True)
class Refusal:
    """Why a connection was not admitted: the limit it hit, in words, and which one."""

    message: str
    per_client: bool


class ConnectionLimits:
    """Counts open signaling connections per client and in all, and refuses past the limits.

    Parameters
    ----------
    per_client
        Connections one client (:func:`client_key`) may hold at once (≥ 1).
    total
        Connections the process holds at once (≥ 1).
    """

    def __init__(self, per_client: int = MAX_CONNECTIONS_PER_IP,
                 total: int = MAX_CONNECTIONS) -> None:
        if per_client < 1 or total < 1:
            raise ValueError(f"limits must be at least 1, got {per_client} per client and "
                             f"{total} in all")
        self.per_client = per_client
        self.total = total
        self._open: Counter[str] = Counter()
        self._count = 0
        #: Handshakes refused so far, per client limit and total limit.
        self.refused = {"per_client": 0, "total": 0}

    def open(self, host: str | None = None) -> int:
        """Connections open now: from ``host``'s client, or in all."""
        return self._count if host is None else self._open[client_key(host)]

    def admit(self, host: str) -> Refusal | None:
        """Count a new connection from ``host``, or say why it is refused (then not counted)."""
        key = client_key(host)
        if self._open[key] >= self.per_client:
            self.refused["per_client"] += 1
            return Refusal(f"too many connections from your address ({key}): at most "
                           f"{self.per_client} at once; close one and try again", True)
        if self._count >= self.total:
            self.refused["total"] += 1
            return Refusal(f"the server holds its most connections ({self.total}) now; "
                           "try again later", False)
        self._open[key] += 1
        self._count += 1
        return None

    def release(self, host: str) -> None:
        """A connection :meth:`admit` counted is gone."""
        key = client_key(host)
        if self._open[key] <= 0:
            raise ValueError(f"no connection from {key} is open")
        self._open[key] -= 1
        if not self._open[key]:
            del self._open[key]
        self._count -= 1


class TrustedProxies:
    """Reverse proxies (``serve --trusted-proxy CIDR``) whose word on the client's address is
    taken: a connection from one of them counts against the client that its
    ``X-Forwarded-For`` names, not against the proxy (which would otherwise meet the
    per-client limit with everyone's connections at once).

    Only the addresses the trusted proxies appended count: ``X-Forwarded-For`` is read from
    the right, past the trusted ones, and the first address that is not a trusted proxy is the
    client (what a client writes into the header itself lies further left, unread). Without a
    usable header (``X-Real-IP`` is the fallback), the proxy's own address counts.
    """

    def __init__(self, networks: Iterable[str] = ()) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def client(self, peer: str, headers: Mapping[str, str]) -> str:
        """The client's address for a connection from ``peer`` with request ``headers``."""
        if not self.trusts(peer):
            return peer
        hops = [h.strip() for h in ",".join(_all(headers, "X-Forwarded-For")).split(",")]
        for hop in reversed([h for h in hops if h]):
            if not _is_address(hop):
                return peer  # a hop we cannot read: no telling who is behind it
            if not self.trusts(hop):
                return hop
        real = (headers.get("X-Real-IP") or "").strip()
        return real if _is_address(real) else peer


def _all(headers: Mapping[str, str], name: str) -> list[str]:
    get_all = getattr(headers, "get_all", None)
    if get_all is not None:
        return list(get_all(name))
    value = headers.get(name)
    return [value] if value else []


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
