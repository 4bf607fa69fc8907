"""How many signaling connections one client, and all clients, may hold: the count itself
(``server/web/admission.py``) and a real server refusing handshakes past it (HTTP 429 per client,
503 in all) with a line saying why; and handshakes from pages of other sites, refused."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request

import pytest
import websockets
from websockets.datastructures import Headers
from websockets.http11 import Request

from bench.capacity import parse_metrics
from bench.serverproc import ServerProcess
from server.web.admission import ConnectionLimits, client_key
from server.web.replies import same_origin
from tests.helpers.hostile import TRIED, report_tried

PER_IP = 4
TOTAL = 6


@pytest.fixture(scope="module", autouse=True)
def tried_report():
    yield
    print("\n" + report_tried("signaling.handshake"))


# -- the count ------------------------------------------------------------------------------------

def test_a_client_past_its_limit_is_refused_until_one_of_its_connections_closes():
    limits = ConnectionLimits(per_client=2, total=10)
    assert limits.admit("192.0.2.1") is None and limits.admit("192.0.2.1") is None
    refusal = limits.admit("192.0.2.1")
    assert refusal is not None and refusal.per_client and "at most 2" in refusal.message
    assert limits.admit("192.0.2.2") is None  # another client is not held up
    limits.release("192.0.2.1")
    assert limits.admit("192.0.2.1") is None
    assert limits.open("192.0.2.1") == 2 and limits.open() == 3
    assert limits.refused == {"per_client": 1, "total": 0}


def test_past_the_total_everyone_is_refused():
    limits = ConnectionLimits(per_client=5, total=3)
    for host in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        assert limits.admit(host) is None
    refusal = limits.admit("192.0.2.4")
    assert refusal is not None and not refusal.per_client and "(3)" in refusal.message
    assert limits.refused == {"per_client": 0, "total": 1}


@pytest.mark.parametrize(("host", "key"), [
    ("192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),  # one host holds a whole /64
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("::ffff:192.0.2.7", "192.0.2.7"),  # IPv4 mapped into IPv6 is the IPv4 client
    ("fe80::1%eth0", "fe80::/64"),
    ("/run/spatialjam.sock", "/run/spatialjam.sock"),
])
def test_a_client_is_its_ipv4_address_or_its_ipv6_64(host, key):
    assert client_key(host) == key


def test_releasing_what_was_never_admitted_is_an_error():
    with pytest.raises(ValueError, match="no connection"):
        ConnectionLimits().release("192.0.2.1")


# -- a real server --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server():
    with ServerProcess("--max-connections-per-ip", str(PER_IP),
                       "--max-connections", str(TOTAL)) as srv:
        yield srv


def metrics(http: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{http}/metrics", timeout=5) as reply:
        return parse_metrics(reply.read().decode())


async def refusal(url: str, source: str) -> tuple[int, str, str | None]:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, local_addr=(source, 0)):
            pass
    response = refused.value.response
    return response.status_code, response.body.decode(), response.headers.get("Retry-After")


async def test_one_address_past_its_limit_gets_429_and_all_past_the_total_get_503(server):
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(PER_IP):
            await stack.enter_async_context(websockets.connect(server.ws, local_addr=(
                "127.0.0.1", 0)))
        status, body, retry = await refusal(server.ws, "127.0.0.1")
        assert status == 429 and retry is not None
        assert f"at most {PER_IP} at once" in body and "127.0.0.1" in body
        for _ in range(TOTAL - PER_IP):  # another loopback address: its own count
            await stack.enter_async_context(websockets.connect(server.ws, local_addr=(
                "127.0.0.2", 0)))
        status, body, _ = await refusal(server.ws, "127.0.0.3")
        assert status == 503 and f"({TOTAL})" in body
        seen = metrics(server.http)
        assert seen["connections"] == TOTAL
        assert seen['connections_refused_total{reason="per_client"}'] >= 1
        assert seen['connections_refused_total{reason="total"}'] >= 1
    TRIED["signaling.handshake (past the limits)"] += 2
    await asyncio.sleep(0.5)  # the closed connections are counted out
    assert metrics(server.http)["connections"] == 0
    async with websockets.connect(server.ws) as ws:  # and the next one is served
        await ws.send('{"type": "ping", "t_ms": 1}')
        assert "pong" in await ws.recv()


async def test_a_flood_of_handshakes_that_vanish_leaves_no_count_behind(server):
    """Handshakes dropped half-way, refused ones and ones closed at once: the count is back to
    zero, so the client can connect again."""
    async def half_open() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")  # never ends
        await writer.drain()
        writer.close()

    async def open_and_close() -> None:
        with contextlib.suppress(websockets.InvalidStatus):
            async with websockets.connect(server.ws):
                pass

    for _ in range(5):
        await asyncio.gather(*(half_open() for _ in range(10)),
                             *(open_and_close() for _ in range(10)))
    TRIED["signaling.handshake (vanishing)"] += 100
    await asyncio.sleep(0.5)
    assert metrics(server.http)["connections"] == 0
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(PER_IP):
            await stack.enter_async_context(websockets.connect(server.ws))


# -- origins --------------------------------------------------------------------------------------

@pytest.mark.parametrize("origin", [
    "https://evil.example", "null", "http://127.0.0.1:{port}.evil.example",
    "http://user@127.0.0.1:{port}", "http://127.0.0.1:1", "file://", "chrome-extension://abc",
    "http://[::1]:{port}", "http://localhost:{port}",
])
async def test_a_page_of_another_origin_cannot_open_signaling(server, origin):
    """Browsers send the page's ``Origin``; only this server's own (its ``Host``) may connect."""
    headers = {"Origin": origin.format(port=server.port)}
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(server.ws, additional_headers=headers, origin=None):
            pass
    TRIED["signaling.handshake (foreign origin)"] += 1
    assert refused.value.response.status_code == 403
    assert b"pages served by this server" in refused.value.response.body


@pytest.mark.parametrize(("origin", "host", "allowed"), [
    ("http://127.0.0.1:8080", "127.0.0.1:8080", True),
    ("HTTP://127.0.0.1:8080", "127.0.0.1:8080", True),
    ("http://127.0.0.1:8080/", "127.0.0.1:8080", True),
    (None, "127.0.0.1:8080", True),  # not a browser
    ("http://127.0.0.1:8080", None, False),
    ("http://127.0.0.1:8080", "", False),
    ("", "127.0.0.1:8080", False),
    ("http://127.0.0.1:8080@evil.example", "127.0.0.1:8080", False),
    ("http://evil.example#127.0.0.1:8080", "127.0.0.1:8080", False),
])
def test_same_origin_compares_the_whole_host_and_port(origin, host, allowed):
    headers = Headers()
    if host is not None:
        headers["Host"] = host
    if origin is not None:
        headers["Origin"] = origin
    assert same_origin(Request("/ws", headers)) is allowed
