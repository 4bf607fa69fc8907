"""A UDP impairment relay on loopback: loss, delay, jitter and reordering, per direction.

The kernel here has no ``netem`` qdisc, so the bad network is emulated in user space. A
:class:`Relay` sits between one WebRTC peer (the *client*, a bot) and the server::

    client ──▶ [client side] relay [server side] ──▶ server      (uplink)
    client ◀── [client side] relay [server side] ◀── server      (downlink)

Each side is a UDP socket of its own on ``127.0.0.1``. ICE is pointed through it by rewriting
the candidates of both descriptions (:meth:`Relay.rewrite_offer` and
:meth:`Relay.rewrite_answer`): the server is told the client lives at the relay's server side,
the client that the server lives at the relay's client side, so neither learns the other's real
address and every connectivity check, DTLS record and RTP packet goes through the relay. No
peer-reflexive candidates are needed: each side answers from the very address it was told of.

**What is impaired.** Only media: RTP and RTCP (first byte 128–191, RFC 7983). STUN (0–3:
connectivity checks, consent freshness) and DTLS (20–63: the handshake) pass at once and
untouched, so a lossy profile cannot stall the connection's setup or let consent expire; a
real network would hit them too, but a lost handshake record only delays setup, and it is the
media path that is measured. Other first bytes (TURN channels, ZRTP) pass as control too.
For a client on the data-channel transport (``Relay(data_channel=True)``), DTLS application
data (first byte 23: SCTP, which carries the data channels' audio and their acknowledgements)
is impaired as media too; the DTLS handshake still passes untouched.

**How** (per direction, :class:`Impairment`): a packet is lost with probability ``loss``,
independently (Bernoulli) or in Gilbert–Elliott bursts of ``burst_len`` packets on average
with the same mean loss; a packet that survives leaves ``delay_ms ± jitter_ms`` later (uniform,
or normal with standard deviation ``jitter_ms``, never before it arrived), as netem's
``delay D J`` does; a later packet may overtake an earlier one when the jitter exceeds the
packet spacing, unless ``reorder`` is off (then each packet waits for the one before it); a
packet is sent twice with probability ``duplicate``. Draws come from a seeded generator, so a
run with the same seed and the same packet arrivals makes the same decisions.

:class:`Leg` is the sans-I/O core (time passed in, departure times out); :class:`Relay` is the
asyncio shell that owns the sockets and timers.
"""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
import itertools
import math
import random
from dataclasses import asdict, dataclass, field

Address = tuple[str, int]

#: RFC 7983, section 7: a first byte of 128–191 is RTP or RTCP (0–3 STUN, 20–63 DTLS).
MEDIA_BYTES = range(128, 192)
#: A DTLS record's content type for application data (RFC 6347, section 4.1): in WebRTC, SCTP.
DTLS_APPLICATION_DATA = 23


def is_media(datagram: bytes, data_channel: bool = False) -> bool:
    """RTP or RTCP (first byte 128–191, RFC 7983); with ``data_channel``, DTLS application
    data too (SCTP: the data channels). STUN, the DTLS handshake and anything else are not."""
    return bool(datagram) and (datagram[0] in MEDIA_BYTES or
                               (data_channel and datagram[0] == DTLS_APPLICATION_DATA))


@dataclass(frozen=True)
class Impairment:
    """What one direction does to media packets (see the module docstring).

    ``loss``: mean fraction lost, 0..1. ``burst_len``: mean length of a loss burst in packets;
    1 draws each packet on its own (Bernoulli), more uses a Gilbert–Elliott chain with the same
    mean loss. ``delay_ms``/``jitter_ms``: each packet leaves ``delay_ms`` plus a draw in
    ``±jitter_ms`` after it arrived (``distribution`` ``"uniform"``, or ``"normal"`` with
    standard deviation ``jitter_ms``), never earlier than it arrived. ``reorder``: whether a
    packet may overtake an earlier one. ``duplicate``: probability a packet is sent twice.
    """

    loss: float = 0.0
    burst_len: float = 1.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    distribution: str = "uniform"
    reorder: bool = True
    duplicate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
                raise ValueError(f"impairment {name} must lie in 0..1, got {value!r}")
        for name in ("delay_ms", "jitter_ms"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"impairment {name} must be a finite number >= 0, got {value!r}")
        if not (isinstance(self.burst_len, int | float) and math.isfinite(self.burst_len)
                and self.burst_len >= 1):
            raise ValueError(f"impairment burst_len must be >= 1 packet, got {self.burst_len!r}")
        if self.burst_len > 1 and self.loss > self.burst_len / (1 + self.burst_len):
            raise ValueError(
                f"impairment loss {self.loss:g} is too high for bursts of {self.burst_len:g} "
                f"packets: at most burst_len / (1 + burst_len) = "
                f"{self.burst_len / (1 + self.burst_len):.3g}")
        if self.distribution not in ("uniform", "normal"):
            raise ValueError(f"impairment distribution must be 'uniform' or 'normal', got "
                             f"{self.distribution!r}")

    @property
    def clean(self) -> bool:
        return self == CLEAN

    @classmethod
    def from_dict(cls, data: dict) -> Impairment:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown impairment field(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)


CLEAN = Impairment()

#: name -> (label, impairment of each impaired leg). Jitter J: each packet leaves J ± J ms
#: later (uniform; netem's ``delay J J``), so J above 10 ms reorders 20 ms packets.
PROFILES: dict[str, tuple[str, Impairment]] = {
    "clean": ("clean", CLEAN),
    "loss1": ("1 % loss", Impairment(loss=0.01)),
    "loss5": ("5 % loss", Impairment(loss=0.05)),
    "jitter10": ("10 ms jitter", Impairment(delay_ms=10, jitter_ms=10)),
    "jitter30": ("30 ms jitter", Impairment(delay_ms=30, jitter_ms=30)),
    "loss5-jitter20": ("5 % loss + 20 ms jitter", Impairment(loss=0.05, delay_ms=20,
                                                              jitter_ms=20)),
}


@dataclass
class LegCounts:
    """What one direction did. ``received`` = ``forwarded`` + ``dropped`` for media;
    ``sent`` counts datagrams sent on, duplicates included; ``control`` counts STUN, DTLS and
    other non-media datagrams, which pass untouched (and are in none of the other counts)."""

    received: int = 0
    forwarded: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    sent: int = 0
    control: int = 0

    def minus(self, earlier: LegCounts) -> LegCounts:
        return LegCounts(**{k: v - getattr(earlier, k) for k, v in asdict(self).items()})


@dataclass
class Leg:
    """One direction's impairment, without I/O: :meth:`admit` says when a packet leaves.

    ``reordered`` counts media packets scheduled to leave before a packet that arrived ahead
    of them (they overtake it).
    """

    spec: Impairment = CLEAN
    seed: int = 0
    counts: LegCounts = field(default_factory=LegCounts)
    #: Impair DTLS application data (SCTP: the data channels) as media too.
    data_channel: bool = False

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._bad = False  # Gilbert–Elliott state
        self._latest_due = -math.inf

    def admit(self, datagram: bytes, now: float) -> list[float]:
        """The times (seconds, on ``now``'s clock) at which ``datagram``, arriving at ``now``,
        leaves: ``[now]`` for control, ``[]`` when it is lost, two times when duplicated."""
        if not is_media(datagram, self.data_channel):
            self.counts.control += 1
            self.counts.sent += 1
            return [now]
        self.counts.received += 1
        if self._lost():
            self.counts.dropped += 1
            return []
        self.counts.forwarded += 1
        copies = 2 if self.spec.duplicate and self._rng.random() < self.spec.duplicate else 1
        self.counts.duplicated += copies - 1
        self.counts.sent += copies
        dues = []
        for _ in range(copies):
            due = now + self._delay_s()
            if not self.spec.reorder:
                due = max(due, self._latest_due)
            dues.append(due)
        if dues[0] < self._latest_due:
            self.counts.reordered += 1
        self._latest_due = max(self._latest_due, *dues)
        return dues

    def _lost(self) -> bool:
        spec = self.spec
        if spec.loss <= 0:
            self._bad = False
            return False
        if spec.burst_len <= 1:
            return self._rng.random() < spec.loss
        leave_bad = 1.0 / spec.burst_len
        enter_bad = spec.loss * leave_bad / (1.0 - spec.loss)
        self._bad = (self._rng.random() >= leave_bad if self._bad
                     else self._rng.random() < enter_bad)
        return self._bad

    def _delay_s(self) -> float:
        spec = self.spec
        if not spec.jitter_ms:
            return spec.delay_ms / 1e3
        if spec.distribution == "normal":
            draw = self._rng.gauss(0.0, spec.jitter_ms)
        else:
            draw = self._rng.uniform(-spec.jitter_ms, spec.jitter_ms)
        return max(0.0, spec.delay_ms + draw) / 1e3


class _Side(asyncio.DatagramProtocol):
    def __init__(self, on_datagram) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr) -> None:
        self.on_datagram(data, addr)


class _Pipe:
    """One direction's shell: packets wait in a heap ordered by (departure, arrival order)."""

    def __init__(self, leg: Leg, loop: asyncio.AbstractEventLoop) -> None:
        self.leg = leg
        self.loop = loop
        self.out: asyncio.DatagramTransport | None = None
        self.target: Address | None = None
        self._heap: list[tuple[float, int, bytes]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    def push(self, data: bytes) -> None:
        if self.target is None or self.out is None:
            return  # nowhere to send it yet
        now = self.loop.time()
        for due in self.leg.admit(data, now):
            if due <= now and (not self._heap or not is_media(data, self.leg.data_channel)):
                self.out.sendto(data, self.target)
            else:
                heapq.heappush(self._heap, (due, next(self._order), data))
        self._arm()

    def _arm(self) -> None:
        """One timer, for the earliest waiting packet."""
        if not self._heap or (self._timer is not None and
                              self._timer.when() <= self._heap[0][0]):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(self._heap[0][0], self._flush)

    def _flush(self) -> None:
        self._timer = None
        now = self.loop.time()
        while self._heap and self._heap[0][0] <= now:
            _, _, data = heapq.heappop(self._heap)
            if self.out is not None and not self.out.is_closing():
                self.out.sendto(data, self.target)
        self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._heap.clear()


class Relay:
    """A two-sided UDP relay between one client and one server, impairing media both ways.

    ``async with Relay(uplink=Impairment(loss=0.05), seed=1) as relay:`` then either point ICE
    through it with :meth:`rewrite_offer` / :meth:`rewrite_answer` (what a bot does), or, for
    plain UDP, :meth:`route` and send to :attr:`client_side` / :attr:`server_side`.
    """

    def __init__(self, uplink: Impairment = CLEAN, downlink: Impairment = CLEAN, seed: int = 0,
                 host: str = "127.0.0.1", data_channel: bool = False) -> None:
        self.host = host
        self.uplink = Leg(uplink, seed=seed, data_channel=data_channel)
        self.downlink = Leg(downlink, seed=seed + 1_000_003, data_channel=data_channel)
        self.client_side: Address | None = None  # where the client sends
        self.server_side: Address | None = None  # where the server sends
        self._up: _Pipe | None = None
        self._down: _Pipe | None = None
        self._transports: list[asyncio.DatagramTransport] = []

    async def __aenter__(self) -> Relay:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._up, self._down = _Pipe(self.uplink, loop), _Pipe(self.downlink, loop)
        client_t, _ = await loop.create_datagram_endpoint(
            lambda: _Side(lambda data, addr: self._up.push(data)), local_addr=(self.host, 0))
        server_t, _ = await loop.create_datagram_endpoint(
            lambda: _Side(lambda data, addr: self._down.push(data)), local_addr=(self.host, 0))
        self._transports = [client_t, server_t]
        # The uplink arrives on the client side and leaves from the server side, and back.
        self._up.out, self._down.out = server_t, client_t
        self.client_side = client_t.get_extra_info("sockname")[:2]
        self.server_side = server_t.get_extra_info("sockname")[:2]

    @property
    def client(self) -> Address | None:
        """The client's real address, where the downlink goes."""
        return self._down.target if self._down is not None else None

    @property
    def server(self) -> Address | None:
        """The server's real address, where the uplink goes."""
        return self._up.target if self._up is not None else None

    def route(self, client: Address | None = None, server: Address | None = None) -> None:
        """Where each direction goes: the uplink to ``server``, the downlink to ``client``."""
        if server is not None:
            self._up.target = server
        if client is not None:
            self._down.target = client

    def set_impairment(self, uplink: Impairment | None = None,
                       downlink: Impairment | None = None) -> None:
        """Change what each direction does from now on (packets already waiting keep theirs)."""
        if uplink is not None:
            self.uplink.spec = uplink
        if downlink is not None:
            self.downlink.spec = downlink

    def counts(self) -> dict[str, LegCounts]:
        """Copies of both directions' counts so far."""
        return {"uplink": LegCounts(**asdict(self.uplink.counts)),
                "downlink": LegCounts(**asdict(self.downlink.counts))}

    def rewrite_offer(self, sdp: str) -> str:
        """The client's offer, its ICE candidates replaced by the relay's server side; the
        client's own (first UDP IPv4 host) candidate becomes where the downlink goes."""
        rewritten, client = _point_candidates(sdp, self.server_side)
        self.route(client=client)
        return rewritten

    def rewrite_answer(self, sdp: str) -> str:
        """The server's answer, its ICE candidates replaced by the relay's client side; the
        server's own (first UDP IPv4 host) candidate becomes where the uplink goes."""
        rewritten, server = _point_candidates(sdp, self.client_side)
        self.route(server=server)
        return rewritten

    def close(self) -> None:
        for pipe in (self._up, self._down):
            if pipe is not None:
                pipe.close()
        for transport in self._transports:
            transport.close()


def _point_candidates(sdp: str, relay: Address) -> tuple[str, Address]:
    """``sdp`` with one ICE candidate per media section, at ``relay``, and the address of the
    candidate it stands for (the first UDP IPv4 host candidate; all sections must agree).

    Candidate lines follow RFC 8839, section 5.1: ``a=candidate:<foundation> <component>
    <transport> <priority> <address> <port> typ <type> ...``.
    """
    newline = "\r\n" if "\r\n" in sdp else "\n"
    out: list[str] = []
    real: Address | None = None
    placed = False
    for line in sdp.split(newline):
        if line.startswith("m="):
            placed = False
        if not line.startswith("a=candidate:"):
            out.append(line)
            continue
        parts = line[len("a=candidate:"):].split()
        if len(parts) < 8 or parts[6] != "typ":
            raise ValueError(f"not an ICE candidate line: {line!r}")
        if placed or parts[2].lower() != "udp" or parts[7] != "host" or not _is_ipv4(parts[4]):
            continue
        address = (parts[4], int(parts[5]))
        if real is not None and address != real:
            raise ValueError(f"the relay carries one transport; the description offers "
                             f"{real[0]}:{real[1]} and {address[0]}:{address[1]}")
        real = address
        parts[4], parts[5] = relay[0], str(relay[1])
        out.append("a=candidate:" + " ".join(parts))
        placed = True
    if real is None:
        raise ValueError("the description has no UDP IPv4 host candidate to relay")
    return newline.join(out), real


def _is_ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False
