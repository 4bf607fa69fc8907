"""``serve``'s ICE options on a real server with aiortc bots (server/media/ice.py, ports.py,
server/cli/ice_args.py): media sockets inside ``--udp-ports``, ``--public-ip`` in the answer,
TURN credentials minted per participant in ``joined``, a refusal in words when the range is
full, and one-line errors at start."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websockets
from aioice.ice import get_host_addresses

from bench.bot import Bot, tone
from bench.serverproc import ServerProcess
from server.media.ice import TURN_DEFAULT_TTL_S
from server.media.ports import PortsExhausted, UdpPortRange
from tests.helpers.live import mint_for

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_V4 = "203.0.113.9"
TURN_SECRET = b"a TURN secret shared with coturn"
TOKEN_SECRET = b"t" * 48


def host_addresses() -> list[str]:
    """The addresses a media connection's host sockets bind (aioice's list)."""
    return get_host_addresses(use_ipv4=True, use_ipv6=True)


def free_range(size: int, addresses: list[str] | None = None) -> tuple[int, int]:
    """``size`` consecutive UDP ports free just now on ``addresses`` (the host's by default)."""
    addresses = addresses or host_addresses()
    for lo in range(42_000, 60_000, 97):
        ports, held, bound = UdpPortRange(lo, lo + size - 1), [], set()
        try:
            for _ in range(size):
                held += ports.bind(addresses)
            bound = {s.getsockname()[1] for s in held}
        except PortsExhausted:
            continue
        finally:
            for s in held:
                s.close()
        if len(bound) == size:
            return lo, lo + size - 1
    pytest.skip("no free UDP port range here")


def candidates(sdp: str) -> list[list[str]]:
    """The ``a=candidate`` lines' fields: foundation component transport priority address
    port typ type …"""
    return [line.split() for line in sdp.splitlines() if line.startswith("a=candidate:")]


# -- the port range itself (real sockets) -----------------------------------------------------


def test_each_connection_takes_one_port_of_the_range_on_every_address():
    lo, hi = free_range(2, ["127.0.0.1", "127.0.0.2"])
    ports = UdpPortRange(lo, hi)
    first = ports.bind(["127.0.0.1", "127.0.0.2"])
    assert {s.getsockname()[1] for s in first} == {lo}
    second = ports.bind(["127.0.0.1"])
    assert second[0].getsockname()[1] == hi
    with pytest.raises(PortsExhausted, match=f"{lo}-{hi}"):
        ports.bind(["127.0.0.1"])
    for s in first:
        s.close()
    again = ports.bind(["127.0.0.1"])
    assert again[0].getsockname()[1] == lo  # a freed port is used again
    for s in second + again:
        s.close()


def test_a_port_another_process_holds_is_passed_over():
    lo, hi = free_range(2, ["127.0.0.1"])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", lo))
        (mine,) = UdpPortRange(lo, hi).bind(["127.0.0.1"])
        assert mine.getsockname()[1] == hi
        mine.close()


# -- a server with the options ------------------------------------------------------------------


async def test_media_sockets_lie_in_the_range_and_the_public_address_is_offered():
    lo, hi = free_range(4)
    with ServerProcess("--udp-ports", f"{lo}-{hi}", "--room-capacity", "2",
                       "--public-ip", PUBLIC_V4) as server:
        async with Bot(server.ws, "range", "A", tone(440)) as a, \
                Bot(server.ws, "range", "B") as b:
            await b.flowing(25)
            assert b.pc.connectionState == "connected"
            answers = [bot.pc.remoteDescription.sdp for bot in (a, b)]
    hosts = [c for sdp in answers for c in candidates(sdp) if c[7] == "host"]
    assert hosts and all(lo <= int(c[5]) <= hi for c in hosts), hosts
    for sdp in answers:  # one port per connection, on every address
        assert len({c[5] for c in candidates(sdp) if c[7] == "host"}) == 1
    assert {c[5] for c in candidates(answers[0])} != {c[5] for c in candidates(answers[1])}
    for sdp in answers:
        private = [c for c in candidates(sdp) if c[7] == "host" and "." in c[4]
                   and c[4] != PUBLIC_V4]
        public = [c for c in candidates(sdp) if c[4] == PUBLIC_V4]
        assert [c[5] for c in public] == [c[5] for c in private]  # same port, beside each
        assert all(c[7] == "host" and c[2] == "udp" for c in public)


async def test_a_full_range_refuses_a_connection_in_words_while_the_first_plays_on():
    lo, hi = free_range(1)
    with ServerProcess("--udp-ports", f"{lo}-{hi}", "--room-capacity", "1") as server:
        async with Bot(server.ws, "first", "A", tone(440)) as a:
            await a.flowing(10)
            second = Bot(server.ws, "second", "B")
            try:
                with pytest.raises(RuntimeError) as refusal:
                    await second.connect()
                before = len(a.received)
                await asyncio.sleep(1.0)
                assert len(a.received) - before >= 35  # 50 frames a second: A plays on
                assert a.pc.connectionState == "connected"
            finally:
                await second.close()
        text = str(refusal.value)
        assert text.startswith("media_ports_exhausted: ")
        assert f"{lo}-{hi}" in text and "--udp-ports" in text
        await asyncio.sleep(0.5)  # A's connection closes on the server: its port is free again
        async with Bot(server.ws, "second", "C") as c:
            await c.flowing(10)
        assert not any("Traceback" in line for line in server.log)


def secret_file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data + b"\n")
    os.chmod(path, 0o600)
    return path


async def joined_with(ws: str, room: str, token: str | None = None) -> dict:
    url = ws if token is None else f"{ws}?token={token}"
    async with websockets.connect(url) as conn:
        await conn.send(json.dumps({"type": "join", "room": room, "name": "Ada"}))
        async with asyncio.timeout(10):
            while True:
                message = json.loads(await conn.recv())
                if message["type"] == "joined":
                    return message


def check_turn(server: dict, identity: str, expiry: int) -> None:
    assert server["username"] == f"{expiry}:{identity}"
    mac = hmac.new(TURN_SECRET, server["username"].encode(), hashlib.sha1).digest()
    assert base64.b64decode(server["credential"]) == mac


async def test_joined_carries_the_ice_servers_with_turn_credentials_of_ones_own(tmp_path):
    turn = secret_file(tmp_path, "turn.secret", TURN_SECRET)
    tokens = secret_file(tmp_path, "token.secret", TOKEN_SECRET)
    with ServerProcess("--ice-server", "stun:stun.example.org",
                       "--ice-server", "turns:turn.example.org:443",
                       "--turn-secret-file", str(turn), "--secret-file", str(tokens)) as server:
        ada_token = mint_for(TOKEN_SECRET, "band", "ada", ttl_s=900.0)
        bo_token = mint_for(TOKEN_SECRET, "band", "bo", ttl_s=1800.0)
        ada = await joined_with(server.ws, "band", ada_token)
        bo = await joined_with(server.ws, "band", bo_token)
        log = "\n".join(server.log)
    stun, relay = ada["ice_servers"]
    assert stun == {"urls": ["stun:stun.example.org:3478"]}
    assert relay["urls"] == ["turns:turn.example.org:443?transport=tcp"]
    expiry = int(relay["username"].split(":")[0])
    assert abs(expiry - (time.time() + 900)) < 30  # the token's end
    check_turn(relay, "ada", expiry)
    bo_relay = bo["ice_servers"][1]
    check_turn(bo_relay, "bo", int(bo_relay["username"].split(":")[0]))
    assert bo_relay["credential"] != relay["credential"]
    assert TURN_SECRET.decode() not in log


async def test_without_tokens_turn_credentials_last_twelve_hours(tmp_path):
    turn = secret_file(tmp_path, "turn.secret", TURN_SECRET)
    with ServerProcess("--ice-server", "turn:turn.example.org?transport=tcp",
                       "--turn-secret-file", str(turn)) as server:
        joined = await joined_with(server.ws, "open")
    (relay,) = joined["ice_servers"]
    identity = joined["participant"]
    expiry = int(relay["username"].split(":")[0])
    assert abs(expiry - (time.time() + TURN_DEFAULT_TTL_S)) < 30
    check_turn(relay, identity, expiry)


async def test_without_ice_options_joined_lists_no_servers():
    with ServerProcess() as server:
        assert (await joined_with(server.ws, "plain"))["ice_servers"] == []


async def test_workers_bind_in_the_range_and_offer_the_public_address():
    lo, hi = free_range(2)
    with ServerProcess("--workers", "2", "--udp-ports", f"{lo}-{hi}", "--room-capacity", "2",
                       "--public-ip", PUBLIC_V4) as server:
        async with Bot(server.ws, "w", "A") as a:
            await a.flowing(10)
            sdp = a.pc.remoteDescription.sdp
    assert all(lo <= int(c[5]) <= hi for c in candidates(sdp) if c[7] == "host")
    assert any(c[4] == PUBLIC_V4 for c in candidates(sdp))


@pytest.mark.parametrize(("args", "words"), [
    (["--public-ip", "203.0.113"], "--public-ip '203.0.113' is not an IPv4 or IPv6 address"),
    (["--udp-ports", "40010-40000"], "--udp-ports '40010-40000' is inverted"),
    (["--udp-ports", "80-2000"], "privileged"),
    (["--udp-ports", "40000-40003"], "holds 4 ports, fewer than the 16"),
    (["--ice-server", "turn:turn.example.org"], "needs credentials"),
    (["--ice-server", "turn:ada:pw@turn.example.org"], "carries credentials"),
    (["--ice-server", "stun:turn.example.org", "--turn-secret-file", "/nonexistent/turn"],
     "--turn-secret-file: cannot read /nonexistent/turn"),
])
def test_bad_ice_options_stop_the_start_in_one_line(args, words):
    done = subprocess.run([sys.executable, "-m", "server.cli", "serve", "--workers", "1", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and words in done.stderr, done.stderr
    assert done.stderr.startswith("spatialjam serve: ")


def test_an_empty_turn_secret_file_stops_a_front_too(tmp_path):
    empty = secret_file(tmp_path, "empty", b"")
    env = {**os.environ, "SPATIALJAM_ICE_SERVER": "turn:turn.example.org",
           "SPATIALJAM_TURN_SECRET_FILE": str(empty)}
    done = subprocess.run([sys.executable, "-m", "server.cli", "serve", "--workers", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1 and "is empty" in done.stderr and "Traceback" not in done.stderr


def test_serve_help_shows_the_ice_options_and_their_environment_variables():
    done = subprocess.run([sys.executable, "-m", "server.cli", "serve", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for option in ("--public-ip ADDR", "--udp-ports MIN-MAX", "--ice-server URL",
                   "--turn-secret-file FILE", "SPATIALJAM_PUBLIC_IP", "SPATIALJAM_UDP_PORTS",
                   "SPATIALJAM_ICE_SERVER", "SPATIALJAM_TURN_SECRET_FILE"):
        assert option in text, option
