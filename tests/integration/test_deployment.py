"""The internet recipe of docs/DEPLOYMENT.md, played on the model internet (tests/helpers/netns.py):
a server in the cloud behind 1:1 NAT serving HTTPS/WSS with a certificate for its public address,
``--public-ip``, ``--udp-ports`` and TURN over TLS with credentials it mints itself; players are
real aiortc bots (bench/bot.py) in the two homes behind their NATs and on the public side.

It shows that players in both homes hear each other from where they stand; that without
``--public-ip`` the server is unreachable for media, and with it a home connects without a relay;
that a home whose firewall drops UDP plays through TURN over TLS; that a credential the server
minted stops working at its token's end. It prints, a line per path, the time from joining to
the first audio heard and a click's round trip through the server (what the relay adds).

Needs Linux, root, ``ip``, ``iptables`` and coturn's ``turnserver``; skips saying which is
missing. Every namespace is removed after each test, whatever the test did.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import numpy as np
import pytest
import websockets
from aioice.stun import TransactionFailed
from aioice.turn import create_turn_endpoint

from bench.bot import Bot, silence, tone
from bench.clicks import CLICK_EVERY, clicks, found_click_times, sent_click_times, stream_times
from hrtf.constants import SAMPLE_RATE
from server.media.aiortc_private import selected_candidates
from tests.helpers import coturn
from tests.helpers.audio import band_ild_db, band_level_db
from tests.helpers.live import mint_for
from tests.helpers.netns import CLOUD_PRIVATE, CLOUD_PUBLIC, NamespaceLoop
from tests.helpers.netserve import Served, serve_recipe

ROOM = "band"
#: KEMAR's level difference at 90° is about 10 dB at 2 kHz (tests/integration/test_live_room.py
#: asks for 6 dB on loopback; the path over the model internet must not change it).
TONE_HZ = 2000.0
ILD_DB = 6.0
#: A frame "has audio" when its peak is above this (−40 dBFS); the mix before a tone is heard
#: decodes to near-silence.
HEARD_PEAK = 0.01
#: Generous bounds on a loaded, shared machine: a join that takes longer is broken.
JOIN_S = 20.0
#: The bots' time to hear a change (a move, a mute) before listening, and how long to listen.
SETTLE_S = 0.8
LISTEN_S = 0.6
#: How long each measured player plays clicks to itself (one every 0.5 s).
ROUND_TRIP_S = 5.0
#: STUN retransmissions of the bot whose ICE is meant to fail: aioice's 6 take 63.5 s to give
#: up on a pair (0.5 s doubling); 2 give up after 3.5 s, as a browser's ICE gives up on its own.
FAILING_RETRIES = 2


class Player:
    """A bot on a host of the model internet, run on that host's event loop."""

    def __init__(self, loop: NamespaceLoop, served: Served, identity: str, signal=silence) -> None:
        self.loop = loop
        token = mint_for(served.secret, ROOM, identity)

        async def make() -> Bot:  # made on its own loop: its track and peer belong there
            return Bot(served.ws, ROOM, identity, signal, token=token)

        self.bot = loop.run(make(), 10)

    def run(self, coro, timeout: float = 30.0):
        return self.loop.run(coro, timeout)

    def join(self) -> float:
        """Join, and wait for the first frame with audio in it: seconds from the join."""
        return self.run(join_until_heard(self.bot), JOIN_S + 5)

    def hear(self) -> np.ndarray:
        """What the bot hears once it has settled after the last change."""
        return self.run(settled(self.bot))

    def send(self, message: dict) -> None:
        self.run(self.bot.send(message), 10)

    def pair(self):
        """The selected pair's (local, remote) candidates, aioice's objects."""
        pair = self.run(_on_loop(selected_candidates, self.bot.pc), 10)
        assert pair is not None, f"{self.bot.name} has no nominated candidate pair"
        return pair

    def close(self) -> None:
        self.run(self.bot.close(), 15)


async def _on_loop(fn, *args):
    return fn(*args)


async def join_until_heard(bot: Bot) -> float:
    start = time.monotonic()
    await bot.connect()
    async with asyncio.timeout(JOIN_S):
        while True:
            for i, frame in enumerate(bot.received):
                if np.abs(frame).max() > HEARD_PEAK:
                    return bot.received_at[i] - start
            await asyncio.sleep(0.02)


async def settled(bot: Bot) -> np.ndarray:
    await bot.flowing()
    await asyncio.sleep(SETTLE_S)
    return await bot.listen(LISTEN_S)


async def round_trips_ms(bot: Bot, others: list[str]) -> tuple[list[float], float | None]:
    """``bot`` plays clicks and hears itself (self-monitoring, the others muted in its mix):
    each click's delay from its uplink to its own ears through the server (ms), and the
    network's round trip between the bot and the server at the end (ms; aiortc's smoothed
    estimate from the server's RTCP receiver reports; None if none came)."""
    for other in others:
        await bot.send({"type": "mix_override", "source": other, "mute": True})
    await bot.send({"type": "mix_override", "source": bot.participant, "gain": 1.0})
    await asyncio.sleep(SETTLE_S)  # the overrides reach the mix
    first_frame, first_heard = len(bot.track.sent_at), len(bot.received)
    await asyncio.sleep(ROUND_TRIP_S)
    sent = sent_click_times(np.array(bot.track.sent_at), first_frame=first_frame)
    frames = bot.received[first_heard:]
    times = stream_times(np.array([len(f) for f in frames]),
                         np.array(bot.received_at[first_heard:]))
    mono = np.concatenate(frames).mean(axis=1)
    clicks_ms = [1e3 * (heard - t) for t, heard in found_click_times(mono, times, sent)]
    rtt = [s.roundTripTime for sender in bot.pc.getSenders()
           for s in (await sender.getStats()).values()
           if s.type == "remote-inbound-rtp" and s.roundTripTime is not None]
    return clicks_ms, 1e3 * rtt[0] if rtt else None


def health(url: str, ca) -> dict:
    """The server's ``/healthz`` over HTTPS, trusting the test CA (called inside a home)."""
    with urllib.request.urlopen(f"{url}/healthz", timeout=5,
                                context=ca.client_context()) as response:
        return json.loads(response.read())


def candidate_lines(sdp: str) -> list[list[str]]:
    """The ``a=candidate`` lines' fields: foundation component transport priority address port
    typ type …"""
    return [line.split() for line in sdp.splitlines() if line.startswith("a=candidate:")]


@pytest.fixture
def trusting_ca(ca, monkeypatch):
    """The bots (websockets over WSS, aioice over TURN/TLS) trust the test CA: both make their
    contexts from the system's defaults, which read ``SSL_CERT_FILE``."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.cert))
    return ca


@pytest.mark.timeout(90)
def test_players_in_both_homes_join_over_https_and_hear_each_other_where_they_stand(
        internet, trusting_ca, turn):
    net = internet
    served = serve_recipe(net, trusting_ca, turn)
    home1, home2 = net.homes
    a = Player(net.loop(home1), served, "ada", tone(TONE_HZ))
    b = Player(net.loop(home2), served, "bo", tone(TONE_HZ))
    try:
        for player in (a, b):
            player.run(player.bot.connect())
        # B stands at the centre facing ahead, A 2 m to its left: B hears A on its left; A,
        # facing ahead too, hears B on its right.
        b.send({"type": "move_source", "source": b.bot.participant, "position_m": [0, 0, 1.2]})
        a.send({"type": "move_source", "source": a.bot.participant, "position_m": [0, 2, 1.2]})
        for player in (a, b):
            player.send({"type": "head_pose", "yaw_deg": 0})
        b_hears, a_hears = b.hear(), a.hear()
        assert band_level_db(b_hears, TONE_HZ) > -40, "B in home 2 does not hear A in home 1"
        assert band_level_db(a_hears, TONE_HZ) > -40, "A in home 1 does not hear B in home 2"
        assert band_ild_db(b_hears, TONE_HZ) >= ILD_DB, "A is on B's left"
        assert band_ild_db(a_hears, TONE_HZ) <= -ILD_DB, "B is on A's right"

        for player, home in ((a, home1), (b, home2)):
            local, remote = player.pair()
            assert (local.type, local.host) == ("host", home.address), \
                "the bot sends from its own address; its home's NAT rewrites it"
            assert (remote.type, remote.host) == ("host", CLOUD_PUBLIC), \
                "the server's public address, offered by --public-ip: no relay"
            assert not player.bot.errors
        assert "warnings" not in net.call(home1, health, served.http, trusting_ca), \
            "HTTPS, and the public address for media: nothing to warn the operator about"
        assert "Traceback" not in served.proc.output()
    finally:
        a.close()
        b.close()


@pytest.mark.timeout(60)
def test_without_public_ip_the_cloud_server_offers_only_10_0_0_2_and_no_media_flows(
        internet, trusting_ca, monkeypatch):
    """The cloud case without ``--public-ip`` (and without TURN to fall back on): the answer
    carries only 10.0.0.2, which no home can route to; the bot's ICE fails and nothing is
    heard. The browser puts this in words (client_web/icepath.js explainIceFailure: "no route to
    the server's media port"); a bot can show the state and the silence. The server says it
    beforehand, in its log and on ``/healthz``, naming ``--public-ip``."""
    net = internet
    monkeypatch.setattr("aioice.stun.RETRY_MAX", FAILING_RETRIES)
    served = serve_recipe(net, trusting_ca, None, public_ip=False)
    player = Player(net.loop(net.homes[0]), served, "ada", tone(TONE_HZ))
    try:
        failed = player.run(connect_and_wait_for_failure(player.bot), 40)
        answer = player.bot.pc.remoteDescription.sdp
        offered = {(c[4], c[7]) for c in candidate_lines(answer)}
        assert offered == {(CLOUD_PRIVATE, "host")}, offered
        assert failed == "failed"
        assert player.bot.received == [], "no media can have come"
        assert player.bot.pc.iceConnectionState == "failed"
        (warning,) = net.call(net.homes[0], health, served.http, trusting_ca)["warnings"]
        assert "(10.0.0.2) are all private" in warning and "--public-ip" in warning, warning
        served.proc.wait_for_line(r"WARNING .*no route to its media port", 5)
    finally:
        player.close()


async def connect_and_wait_for_failure(bot: Bot) -> str:
    """Join, then wait for the peer's connection to end up failed (or connected, which the
    caller refuses); its final state."""
    await bot.connect()
    ended = asyncio.get_running_loop().create_future()

    def check() -> None:
        if bot.pc.connectionState in ("failed", "connected") and not ended.done():
            ended.set_result(bot.pc.connectionState)

    bot.pc.on("connectionstatechange", check)
    check()
    async with asyncio.timeout(30):
        return await ended


@pytest.mark.timeout(120)
def test_a_home_that_blocks_udp_plays_through_turn_over_tls_and_each_path_is_measured(
        internet, trusting_ca, turn):
    """Home 1's firewall drops its UDP but to coturn's TLS port: its player reaches coturn over
    TLS and plays through the relay. Beside it, a player on the public side (no NAT: direct)
    and one in home 2 (through its NAT); each joins while an anchor plays a tone, then hears its
    own clicks through the server. Prints, per path, join → first audio and the round trip."""
    net = internet
    home1, home2 = net.homes
    net.block_udp(home1, except_to=[(turn.address, coturn.TLS_PORT)])
    served = serve_recipe(net, trusting_ca, turn)
    public = net.loop(net.router)
    anchor = Player(public, served, "anchor", tone(TONE_HZ))
    players = {"direct": Player(public, served, "dee", clicks),
               "through NAT": Player(net.loop(home2), served, "nat", clicks),
               "relayed by TURN (TLS)": Player(net.loop(home1), served, "carol", clicks)}
    try:
        anchor.run(anchor.bot.connect())
        anchor.run(anchor.bot.flowing())
        measured = {}
        for path, player in players.items():
            join_s = player.join()
            local, remote = player.pair()
            delays, rtt_ms = player.run(round_trips_ms(player.bot, [anchor.bot.participant]),
                                        ROUND_TRIP_S + 15)
            measured[path] = (join_s, delays, rtt_ms, local, remote)
            player.close()  # the next one measures alone with the anchor

        for path, (join_s, delays, rtt_ms, local, remote) in measured.items():
            print(f"deployment path: {path:<21} join -> first audio {join_s * 1000:4.0f} ms; "
                  f"click round trip through the server p50 {np.median(delays):5.1f} ms "
                  f"(min {min(delays):.1f}, {len(delays)} clicks); network RTT (RTCP) "
                  f"{rtt_ms if rtt_ms is None else f'{rtt_ms:.1f} ms'}; "
                  f"pair {local.type} {local.host} -> {remote.type} {remote.host}")
        nat, relayed = measured["through NAT"], measured["relayed by TURN (TLS)"]
        print(f"deployment relay: TURN over TLS adds {(relayed[0] - nat[0]) * 1000:.0f} ms to "
              f"the join, {np.median(relayed[1]) - np.median(nat[1]):.1f} ms to the click round "
              "trip (p50), "
              + (f"{relayed[2] - nat[2]:.1f} ms to the network RTT"
                 if relayed[2] is not None and nat[2] is not None else "RTT not reported")
              + " (relayed minus through NAT)")

        wanted_clicks = ROUND_TRIP_S * SAMPLE_RATE / CLICK_EVERY - 1
        for path, (join_s, delays, _, _, _) in measured.items():
            assert join_s < JOIN_S, path
            assert len(delays) >= wanted_clicks, f"{path}: {len(delays)} clicks came back"
            assert 0 < np.median(delays) < 1000, f"{path}: {delays}"
        *_, local, remote = measured["direct"]
        assert (local.type, remote.type, remote.host) == ("host", "host", CLOUD_PUBLIC)
        *_, local, remote = nat
        assert (local.type, local.host, remote.host) == ("host", home2.address, CLOUD_PUBLIC)
        *_, local, remote = relayed
        assert (local.type, local.host) == ("relay", turn.address)
        turn.proc.wait_for_line(r"new, realm=<[^>]*>, username=<\d+:carol>.*method=TLSv1\.[23]",
                                5)
        assert not anchor.bot.errors
    finally:
        anchor.close()
        for player in players.values():
            player.close()


async def joined_over_wss(url: str, token: str) -> dict:
    async with websockets.connect(f"{url}?token={token}") as conn:
        await conn.send(json.dumps({"type": "join", "room": ROOM, "name": "Ada"}))
        async with asyncio.timeout(10):
            while True:
                message = json.loads(await conn.recv())
                if message["type"] == "joined":
                    return message


@pytest.mark.timeout(60)
def test_a_turn_credential_the_server_minted_is_refused_by_coturn_after_its_token_ends(
        internet, trusting_ca, turn):
    """The server mints each participant's TURN credential to expire with its access token
    (here a 3 s token): coturn relays for it until then and refuses it (401) after. A
    credential minted with an expiry already past is refused too
    (tests/integration/test_netns.py, ``expired``)."""
    net = internet
    served = serve_recipe(net, trusting_ca, turn)
    home = net.loop(net.homes[0])
    token = mint_for(served.secret, ROOM, "ada", ttl_s=3.0)
    joined = home.run(joined_over_wss(served.ws, token), 20)
    (server,) = joined["ice_servers"]
    assert server["urls"] == [turn.urls()["tls"]]
    expiry = int(server["username"].split(":")[0])
    assert server["username"] == f"{expiry}:ada" and expiry <= time.time() + 3

    async def allocate() -> int | None:
        """None when coturn allocates a relay, else its error code."""
        try:
            transport, _ = await create_turn_endpoint(
                asyncio.DatagramProtocol, (turn.address, coturn.TLS_PORT), server["username"],
                server["credential"], ssl=trusting_ca.client_context(), transport="tcp")
        except TransactionFailed as exc:
            return exc.response.attributes["ERROR-CODE"][0]
        transport.close()
        return None

    assert home.run(allocate(), 20) is None, "a fresh credential is relayed for"
    home.run(asyncio.sleep(max(0.0, expiry + 1 - time.time())), 10)  # its end, by the clock
    assert home.run(allocate(), 20) == 401

