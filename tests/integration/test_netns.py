"""The model internet the deployment tests run on (tests/helpers/netns.py, coturn.py): a cloud
host behind 1:1 NAT, two homes behind masquerading NATs, a strict firewall, and coturn with
short-lived TURN REST credentials, proved with plain sockets, aioice's TURN client and a pair of
aiortc peers carrying audio between the two homes through TURN.

Needs Linux, root, ``ip``, ``iptables`` and coturn's ``turnserver``; skips saying which is
missing. Every namespace is removed after each test, whatever the test did.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import time

import numpy as np
import pytest
from aioice.stun import TransactionFailed
from aioice.turn import create_turn_endpoint
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from bench.bot import SignalTrack, tone
from hrtf.constants import SAMPLE_RATE
from tests.helpers import coturn, netns, netserve
from tests.helpers.certs import TestCA
from tests.helpers.netserve import serve_in

ECHO_PORT = 7000
#: Long enough for a datagram to cross the model internet many times over (sub-millisecond
#: here); a silence this long means the datagram was dropped.
DROPPED_S = 1.0
#: How long an answer that should come may take on a loaded machine.
ANSWER_S = 5.0
TONE_HZ = 440.0


def echo_on(net: netns.Internet, host: netns.Host) -> None:
    """An echo server on ``host``'s own address (bound to it: a UDP answer from a host with
    several addresses must leave from the one asked, or the asker's NAT drops it)."""
    proc = net.python(host, ["-m", "tests.helpers.netecho", "--bind", host.address,
                             "--port", str(ECHO_PORT)], f"echo-{host.netns}")
    proc.wait_for_line(rf"^ready udp {ECHO_PORT}", 15)


def ask_udp(address: str, wait_s: float = ANSWER_S) -> str | None:
    """What the echo server at ``address`` answers to one datagram; None when nothing comes
    back within ``wait_s``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(wait_s)
        sock.sendto(b"?", (address, ECHO_PORT))
        try:
            return sock.recv(2048).decode()
        except TimeoutError:
            return None


def ask_tcp(address: str) -> str:
    with socket.create_connection((address, ECHO_PORT), timeout=ANSWER_S) as sock:
        return sock.recv(2048).decode()


def tcp_refused(address: str) -> OSError | None:
    """The error a TCP connection to ``address`` meets; None if it connects."""
    try:
        socket.create_connection((address, ECHO_PORT), timeout=DROPPED_S).close()
    except OSError as exc:
        return exc
    return None


def test_a_home_reaches_the_cloud_host_through_its_public_address_only(internet):
    net = internet
    home = net.homes[0]
    echo_on(net, net.cloud)

    seen_from, local = net.call(home, ask_tcp, net.cloud.public).split()
    assert seen_from.split(":")[0] == home.public, "the home's NAT rewrites its source"
    assert local == net.cloud.address, "the cloud's 1:1 NAT hands the connection to 10.0.0.2"
    assert net.call(home, tcp_refused, net.cloud.address) is not None, \
        "a private address is not routed on the internet"


def test_each_home_and_the_cloud_leave_by_their_public_address(internet):
    net = internet
    echo_on(net, net.router)
    for host in (*net.homes, net.cloud):
        answer = net.call(host, ask_udp, net.router.address)
        assert answer is not None, f"{host.netns} got no UDP answer from the internet"
        assert answer.split(":")[0] == host.public, host


def test_a_nat_lets_nothing_in_unasked(internet):
    net = internet
    home = net.homes[0]
    echo_on(net, home)
    assert net.call(home, ask_udp, home.address) is not None, "the echo runs in the home"
    assert net.call(net.router, ask_udp, home.public, DROPPED_S) is None
    assert net.call(net.router, tcp_refused, home.public) is not None
    assert net.call(net.homes[1], tcp_refused, home.address) is not None


def test_a_firewalled_home_sends_udp_only_where_allowed_and_tcp_anywhere(internet):
    net = internet
    home = net.homes[0]
    echo_on(net, net.router)
    echo_on(net, net.cloud)
    net.block_udp(home, except_to=[(net.router.address, ECHO_PORT)])

    assert net.call(home, ask_udp, net.cloud.public, DROPPED_S) is None
    assert net.call(home, ask_udp, net.router.address) is not None
    assert net.call(home, ask_tcp, net.cloud.public).startswith(home.public + ":")
    assert net.call(net.homes[1], ask_udp, net.cloud.public) is not None, "the other home is free"


class Collected(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.received.put_nowait((data, addr))


def tls_to(ca: TestCA) -> ssl.SSLContext:
    """A client context trusting only the test CA, verifying name and chain as a browser does."""
    return ssl.create_default_context(cafile=str(ca.cert))


async def allocate(turn: coturn.Coturn, username: str, password: str, how: str):
    """A TURN allocation made from the calling namespace; ``how``: "udp" or "tls"."""
    if how == "tls":
        return await create_turn_endpoint(Collected, (turn.address, coturn.TLS_PORT), username,
                                          password, ssl=tls_to(turn.ca), transport="tcp")
    return await create_turn_endpoint(Collected, (turn.address, coturn.UDP_PORT), username,
                                      password)


@pytest.mark.parametrize("how", ["udp", "tls"])
def test_coturn_relays_for_a_fresh_rest_credential(internet, turn, how):
    net = internet
    home = net.homes[0]
    echo_on(net, net.router)
    username, password = turn.credentials("alice", int(time.time()) + 600)

    async def relay_round_trip():
        transport, protocol = await allocate(turn, username, password, how)
        try:
            relayed = transport.get_extra_info("sockname")
            mapped = transport.get_extra_info("related_address")
            transport.sendto(b"?", (net.router.address, ECHO_PORT))
            data, sender = await asyncio.wait_for(protocol.received.get(), 5)
            return relayed, mapped, data.decode(), sender
        finally:
            transport.close()

    relayed, mapped, answer, sender = net.loop(home).run(relay_round_trip(), 20)
    assert relayed[0] == turn.address
    assert coturn.RELAY_PORTS[0] <= relayed[1] <= coturn.RELAY_PORTS[1]
    assert mapped[0] == home.public, "coturn sees the home's NAT"
    assert answer.split()[0] == f"{relayed[0]}:{relayed[1]}", "the peer sees the relay"
    assert sender == (net.router.address, ECHO_PORT)


@pytest.mark.parametrize("credential", ["expired", "forged", "renamed"])
def test_coturn_refuses_a_credential_that_is_expired_or_not_minted_with_its_secret(
        internet, turn, credential):
    now = int(time.time())
    if credential == "expired":
        username, password = turn.credentials("alice", now - 1)
    elif credential == "forged":
        username, password = coturn.turn_rest_credentials("not-the-secret", "alice", now + 600)
    else:
        _, password = turn.credentials("alice", now + 600)
        username = f"{now + 600}:mallory"

    async def refused():
        with pytest.raises(TransactionFailed) as caught:
            transport, _ = await allocate(turn, username, password, "udp")
            transport.close()
        return caught.value.response.attributes["ERROR-CODE"]

    code, _reason = internet.loop(internet.homes[0]).run(refused(), 20)
    assert code == 401


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * SAMPLE_RATE / len(samples))


@pytest.mark.timeout(60)
def test_two_homes_play_through_turn_over_tls_when_one_home_blocks_udp(internet, turn,
                                                                       monkeypatch):
    """Home 1's firewall drops all UDP, so its peer reaches coturn over TLS (TCP 5349); home 2
    uses TURN over UDP; both relay-only. A tone from home 1 is heard in home 2."""
    net = internet
    sender_home, receiver_home = net.homes
    net.block_udp(sender_home)
    # aioice makes its TLS context from the system's defaults: it trusts the test CA this way.
    monkeypatch.setenv("SSL_CERT_FILE", str(turn.ca.cert))
    expiry = int(time.time()) + 600

    def config(identity: str, how: str) -> RTCConfiguration:
        username, password = turn.credentials(identity, expiry)
        return RTCConfiguration([RTCIceServer(turn.urls()[how], username, password)],
                                iceTransportPolicy=RTCIceTransportPolicy.RELAY)

    sending, receiving = net.loop(sender_home), net.loop(receiver_home)
    heard: asyncio.Queue[np.ndarray] = asyncio.Queue()
    pulls: list[asyncio.Task] = []

    async def offer():
        pc = RTCPeerConnection(config("alice", "tls"))
        pc.addTrack(SignalTrack(tone(TONE_HZ)))
        await pc.setLocalDescription(await pc.createOffer())
        return pc, pc.localDescription

    async def answer(description: RTCSessionDescription):
        pc = RTCPeerConnection(config("bob", "udp"))
        pc.addTransceiver("audio", direction="recvonly")

        @pc.on("track")
        def on_track(track):
            async def pull():
                while True:
                    frame = await track.recv()
                    channels = len(frame.layout.channels)
                    heard.put_nowait(frame.to_ndarray().reshape(-1, channels)[:, 0])

            pulls.append(asyncio.ensure_future(pull()))

        await pc.setRemoteDescription(description)
        await pc.setLocalDescription(await pc.createAnswer())
        return pc, pc.localDescription

    async def listen(seconds: float) -> tuple[float, np.ndarray]:
        """Seconds until the first audible frame, then ``seconds`` of what follows."""
        started = time.monotonic()
        while True:
            frame = await heard.get()
            if np.abs(frame).max() > 1000:
                break
        first_s = time.monotonic() - started
        chunks, count = [], 0
        while count < seconds * SAMPLE_RATE:
            chunks.append(await heard.get())
            count += len(chunks[-1])
        return first_s, np.concatenate(chunks).astype(np.float32) / 32768

    pc_a, offered = sending.run(offer(), 20)
    pc_b = None
    try:
        pc_b, answered = receiving.run(answer(offered), 20)
        assert {c.split()[7] for c in offered.sdp.splitlines()
                if c.startswith("a=candidate")} == {"relay"}
        sending.run(pc_a.setRemoteDescription(answered), 20)
        first_s, audio = receiving.run(listen(1.0), 30)
        print(f"first audio through TURN (TLS + UDP relay) {first_s * 1000:.0f} ms after answer")
        assert abs(dominant_hz(audio) - TONE_HZ) < 5
        turn.proc.wait_for_line(r"new, realm=<[^>]*>, username=<\d+:alice>.*method=TLSv1\.[23]", 5)
        turn.proc.wait_for_line(r"new, realm=<[^>]*>, username=<\d+:bob>, lifetime=\d+$", 5)
    finally:
        sending.run(pc_a.close(), 10)
        if pc_b is not None:
            receiving.run(pc_b.close(), 10)


def test_what_a_crashed_run_left_is_removed_before_the_next_build(tmp_path):
    """A run killed outright leaves its namespaces, and what ran in them; the next build removes
    both, and leaves a live run's namespaces alone."""
    netns.require()
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale, live = (f"{netns.PREFIX}{gone.pid}-1-pub",
                   f"{netns.PREFIX}{os.getppid()}-99-pub")
    left = None
    try:
        for name in (stale, live):
            subprocess.run(["ip", "netns", "add", name], check=True)
        left = subprocess.Popen(["ip", "netns", "exec", stale, "sleep", "60"])
        deadline = time.monotonic() + ANSWER_S
        while str(left.pid) not in subprocess.run(["ip", "netns", "pids", stale],
                                                  capture_output=True, text=True).stdout.split():
            assert time.monotonic() < deadline, "the process never entered the namespace"
            time.sleep(0.01)
        with netns.Internet(tmp_path):
            names = {p.name for p in netns.NETNS_DIR.iterdir()}
            assert stale not in names and live in names
        assert left.wait(5) == -signal.SIGKILL
    finally:
        if left is not None and left.poll() is None:
            left.kill()
            left.wait()
        for name in (stale, live):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_a_server_in_the_cloud_answers_a_home_at_its_public_address(internet):
    """Today's server, unchanged, behind the cloud's 1:1 NAT: its HTTP port reached from a home
    by the public address (the signaling path; media is the ICE options' concern)."""
    net = internet
    served = serve_in(net, net.cloud)
    assert net.call(net.homes[0], netserve.healthz, served.http) == 200
