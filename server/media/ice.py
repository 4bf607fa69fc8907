"""ICE as an operator configures it (``serve --public-ip``, ``--udp-ports``, ``--ice-server``,
``--turn-secret-file``), without I/O: parsing and checking the options, minting TURN
credentials, and advertising a public address in an answer's candidates.

**STUN and TURN URLs** follow RFC 7064 (``stun:host[:port]``) and RFC 7065
(``turn:host[:port][?transport=udp|tcp]``, ``turns:`` over TLS, port 5349 by default).

**TURN credentials are never static.** A TURN URL needs the TURN server's shared secret
(``--turn-secret-file``), and every participant gets a credential of its own in its ``joined``
message, minted by the REST scheme coturn implements as ``use-auth-secret``
(draft-uberti-behave-turn-rest-00, section 2.2)::

    username = "<expiry, Unix seconds>:<identity>"
    password = base64(HMAC-SHA1(secret, username))

coturn refuses the credential after its expiry, and a forged one (no secret, no valid HMAC).
A URL carrying a password (``turn:user:pass@host``) is refused at start: a static password
would reach every browser and never expire.

**A public address** (``--public-ip``) is for a server behind 1:1 NAT, as cloud machines are:
its sockets hold a private address, and the NAT maps the public one onto it port for port. For
every host candidate on a private address, the answer also offers the public address of the
same family with the same port: a remote's checks to it are translated to the private socket,
and its answers come back from the public address.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from signaling.server_messages import IceServer

#: Without access tokens, a TURN credential is valid this long after its ``joined`` (12 h: a
#: long rehearsal; a token's own lifetime is used where there is one).
TURN_DEFAULT_TTL_S = 12 * 3600
#: The identity in the TURN credentials of the server's own peers.
SERVER_IDENTITY = "spatialjam-server"
#: The lowest port of ``--udp-ports``: ports below 1024 are privileged (root only).
MIN_UDP_PORT = 1024

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_HOST = r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+))"
_ICE_URL_RE = re.compile(
    rf"(?P<scheme>stun|turns?):{_HOST}(?::(?P<port>\d{{1,5}}))?(?:\?transport=(?P<transport>\w+))?")
_HOSTNAME_RE = re.compile(r"(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+")


@dataclass(frozen=True, slots=True)
class IceUrl:
    """One ``--ice-server``: ``scheme`` is ``stun``, ``turn`` or ``turns``; ``transport`` is
    ``udp`` or ``tcp`` for TURN (``turns`` is always TCP, with TLS) and None for STUN."""

    scheme: str
    host: str
    port: int
    transport: str | None = None

    @property
    def is_turn(self) -> bool:
        return self.scheme != "stun"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = f"?transport={self.transport}" if self.transport else ""
        return f"{self.scheme}:{host}:{self.port}{query}"


def parse_ice_url(text: str) -> IceUrl:
    """A STUN or TURN URL, checked (RFC 7064, RFC 7065).

    Raises
    ------
    ValueError
        Saying what is wrong and what would be right.
    """
    if re.match(r"(stun|turns?):[^@/]*@", text):
        raise ValueError(f"{text!r} carries credentials: spatialjam mints short-lived TURN "
                         "credentials per participant, give the TURN server's shared secret "
                         "with --turn-secret-file instead (a static password would reach "
                         "every browser)")
    if text.startswith("stuns:"):
        raise ValueError(f"{text!r}: browsers do not support stuns: URLs; use stun:HOST[:PORT]")
    match = _ICE_URL_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a STUN or TURN URL: stun:HOST[:PORT], "
                         "turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT]")
    scheme, transport = match["scheme"], match["transport"]
    if match["ipv6"] is not None:
        try:
            host = str(ipaddress.IPv6Address(match["ipv6"]))
        except ValueError:
            raise ValueError(f"{text!r}: {match['ipv6']!r} is not an IPv6 address") from None
    else:
        host = match["host"]
        if not _HOSTNAME_RE.fullmatch(host):
            raise ValueError(f"{text!r}: {host!r} is not a host name or IPv4 address")
    port = int(match["port"] or (5349 if scheme == "turns" else 3478))
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} is not in 1..65535")
    if scheme == "stun":
        if transport is not None:
            raise ValueError(f"{text!r}: a stun: URL takes no ?transport (RFC 7064)")
    elif scheme == "turns":
        if transport not in (None, "tcp"):
            raise ValueError(f"{text!r}: turns: runs over TLS on TCP; leave out "
                             "?transport or say ?transport=tcp")
        transport = "tcp"
    else:
        transport = transport or "udp"
        if transport not in ("udp", "tcp"):
            raise ValueError(f"{text!r}: ?transport must be udp or tcp, not {transport!r}")
    return IceUrl(scheme, host, port, transport)


def parse_public_ip(text: str) -> IpAddress:
    """A ``--public-ip``: an IPv4 or IPv6 address, neither loopback, link-local, multicast nor
    unspecified (none of those can be a NAT's public side).

    Raises
    ------
    ValueError
        Saying what is wrong.
    """
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None
    if (address.is_loopback or address.is_link_local or address.is_multicast
            or address.is_unspecified):
        raise ValueError(f"{text!r} cannot be a public address (loopback, link-local, "
                         "multicast or unspecified)")
    return address


def parse_udp_ports(text: str, at_least: int = 1) -> tuple[int, int]:
    """A ``--udp-ports MIN-MAX`` range, both ends included: ``MIN`` ≥ :data:`MIN_UDP_PORT`,
    ``MIN`` ≤ ``MAX`` ≤ 65535, and at least ``at_least`` ports (each media connection takes
    one).

    Raises
    ------
    ValueError
        Saying what is wrong and what would be right.
    """
    match = re.fullmatch(r"\s*(\d{1,5})\s*-\s*(\d{1,5})\s*", text)
    if match is None:
        raise ValueError(f"{text!r} is not a port range MIN-MAX, such as 40000-40999")
    lo, hi = int(match[1]), int(match[2])
    if lo > hi:
        raise ValueError(f"{text!r} is inverted: the first port must not exceed the last "
                         f"({hi}-{lo}?)")
    if lo < MIN_UDP_PORT:
        raise ValueError(f"{text!r} starts below {MIN_UDP_PORT}: those ports are privileged; "
                         "choose a range such as 40000-40999")
    if hi > 65535:
        raise ValueError(f"{text!r} ends above 65535, the last port")
    if hi - lo + 1 < at_least:
        raise ValueError(f"{text!r} holds {hi - lo + 1} ports, fewer than the {at_least} "
                         "media connections of one full room (--room-capacity): widen it")
    return lo, hi


def turn_credentials(secret: bytes, identity: str, expires_at: int) -> tuple[str, str]:
    """``(username, password)`` of the TURN REST scheme (coturn's ``use-auth-secret``): the
    username is ``"<expires_at>:<identity>"``, the password base64 of its HMAC-SHA1 under
    ``secret``."""
    if ":" in identity:
        raise ValueError(f"a TURN identity holds no ':' (coturn splits the username there): "
                         f"{identity!r}")
    username = f"{int(expires_at)}:{identity}"
    digest = hmac.new(secret, username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True, slots=True)
class IceConfig:
    """The ICE options of ``serve``; the default is what a LAN needs (host candidates only).

    Raises
    ------
    ValueError
        If a TURN URL is given without the secret to mint its credentials.
    """

    public_ips: tuple[IpAddress, ...] = ()
    udp_ports: tuple[int, int] | None = None
    urls: tuple[IceUrl, ...] = ()
    turn_secret: bytes | None = None

    def __post_init__(self) -> None:
        turn = [str(u) for u in self.urls if u.is_turn]
        if turn and not self.turn_secret:
            raise ValueError(f"{turn[0]} needs credentials: give the TURN server's shared "
                             "secret (coturn's static-auth-secret) with --turn-secret-file, "
                             "and spatialjam mints short-lived ones for each participant")

    def ice_servers(self, identity: str, expires_at: float | None,
                    now: float) -> tuple[IceServer, ...]:
        """What ``identity``'s ``joined`` carries, as RTCIceServer dictionaries take it: the
        STUN URLs in one entry, the TURN URLs in another with a credential valid until
        ``expires_at`` (its access token's end; :data:`TURN_DEFAULT_TTL_S` after ``now``
        without a token)."""
        servers = []
        stun = tuple(str(u) for u in self.urls if not u.is_turn)
        if stun:
            servers.append(IceServer(urls=stun))
        turn = tuple(str(u) for u in self.urls if u.is_turn)
        if turn and self.turn_secret is not None:
            expiry = int(expires_at if expires_at is not None else now + TURN_DEFAULT_TTL_S)
            username, password = turn_credentials(self.turn_secret, identity, expiry)
            servers.append(IceServer(urls=turn, username=username, credential=password))
        return tuple(servers)

    def private_only_warning(self, addresses: Sequence[str]) -> str | None:
        """What to warn about when players outside this machine's network cannot reach its
        media: every one of ``addresses`` (where its host candidates lie) private, no
        ``--public-ip`` to offer beside them, no TURN relay to fall back on. Their ICE then
        fails (a browser says "no route to the server's media port"): on a LAN that is as it
        should be, behind a cloud provider's 1:1 NAT it is the missing ``--public-ip``. None
        when some address is public, with either option, or with no addresses."""
        if self.public_ips or any(u.is_turn for u in self.urls) or not addresses:
            return None
        if not all(ipaddress.ip_address(a.split("%")[0]).is_private for a in addresses):
            return None
        return (f"media: this machine's addresses ({', '.join(addresses)}) are all private and "
                "neither --public-ip nor a TURN server (--ice-server turn:...) is set: players "
                "outside its network will find no route to its media port; behind a cloud "
                "provider's 1:1 NAT give --public-ip with the public address "
                "(docs/DEPLOYMENT.md)")


def advertise_public(sdp: str, public_ips: tuple[IpAddress, ...]) -> str:
    """``sdp`` with, after each host candidate on a private address, the same candidate on
    each public address of its family (same port, component and transport; its own
    foundation; a priority one step lower, so the private address stays preferred where it
    is reachable).

    Candidates are ``a=candidate`` lines (RFC 8839, section 5.1): ``foundation component
    transport priority address port typ type …``.
    """
    if not public_ips:
        return sdp
    newline = "\r\n" if "\r\n" in sdp else "\n"
    out: list[str] = []
    for line in sdp.split(newline):
        out.append(line)
        fields = line.split(" ")
        if not line.startswith("a=candidate:") or len(fields) < 8 or fields[7] != "host":
            continue
        try:
            private = ipaddress.ip_address(fields[4])
        except ValueError:  # an mDNS name: not ours to translate
            continue
        if not private.is_private or private.is_loopback:
            continue
        for public in public_ips:
            if public.version != private.version or public == private:
                continue
            foundation = hashlib.md5(f"{public} {fields[0]}".encode()).hexdigest()
            out.append(" ".join([f"a=candidate:{foundation}", fields[1], fields[2],
                                 str(max(int(fields[3]) - 1, 0)), str(public), *fields[5:]]))
    return newline.join(out)
