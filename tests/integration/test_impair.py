"""The impairment relay: its sans-I/O core, the relay on plain UDP sockets, and one short run of
``bench network`` through a real server (5 % uplink loss: clicks still heard, frames concealed).
"""

from __future__ import annotations

import asyncio
import math
import socket

import pytest

from bench.impair import CLEAN, PROFILES, Impairment, Leg, Relay, is_media

RTP = bytes([0x80, 111]) + bytes(30)  # version 2, Opus payload type
STUN = bytes([0x00, 0x01]) + bytes(18)  # a binding request
DTLS = bytes([22, 0xFE, 0xFD]) + bytes(10)  # a handshake record
SPACING_S = 0.020


def admit_stream(leg: Leg, n: int, packet: bytes = RTP) -> list[list[float]]:
    return [leg.admit(packet, k * SPACING_S) for k in range(n)]


def overtakes(dues: list[float]) -> int:
    """How many packets leave before some packet that arrived ahead of them."""
    count, latest = 0, -math.inf
    for due in dues:
        count += due < latest
        latest = max(latest, due)
    return count


def test_the_first_byte_tells_media_from_stun_and_dtls():
    assert is_media(RTP) and is_media(bytes([0xBF]))
    assert not is_media(STUN) and not is_media(DTLS) and not is_media(b"")
    assert not is_media(bytes([0x40]))  # TURN channel data


def test_a_clean_leg_forwards_every_packet_at_once():
    leg = Leg(CLEAN)
    dues = admit_stream(leg, 100)
    assert dues == [[k * SPACING_S] for k in range(100)]
    c = leg.counts
    assert (c.received, c.forwarded, c.dropped, c.reordered, c.sent) == (100, 100, 0, 0, 100)


@pytest.mark.parametrize("loss", [0.01, 0.05, 0.3])
def test_bernoulli_loss_rate_lies_within_four_standard_deviations(loss):
    n = 20_000
    leg = Leg(Impairment(loss=loss), seed=3)
    dues = admit_stream(leg, n)
    dropped = sum(not d for d in dues)
    assert dropped == leg.counts.dropped and leg.counts.forwarded == n - dropped
    assert abs(dropped / n - loss) < 4 * math.sqrt(loss * (1 - loss) / n)


def test_the_same_seed_makes_the_same_decisions_and_another_seed_others():
    spec = Impairment(loss=0.1, delay_ms=20, jitter_ms=15)
    a, b, c = (admit_stream(Leg(spec, seed=s), 500) for s in (7, 7, 8))
    assert a == b and a != c


def test_gilbert_elliott_bursts_keep_the_mean_loss_and_last_burst_len_packets():
    n, loss, burst = 50_000, 0.05, 4.0
    leg = Leg(Impairment(loss=loss, burst_len=burst), seed=11)
    lost = [not d for d in admit_stream(leg, n)]
    bursts = sum(1 for k in range(n) if lost[k] and (k == 0 or not lost[k - 1]))
    assert abs(sum(lost) / n - loss) < 0.01
    assert abs(sum(lost) / bursts - burst) < 0.5
    independent = [not d for d in admit_stream(Leg(Impairment(loss=loss), seed=11), n)]
    runs = sum(1 for k in range(n) if independent[k] and (k == 0 or not independent[k - 1]))
    assert sum(independent) / runs < 1.2  # Bernoulli losses rarely come in pairs


def test_a_fixed_delay_is_added_to_every_packet():
    leg = Leg(Impairment(delay_ms=35))
    for k, dues in enumerate(admit_stream(leg, 50)):
        assert dues == [pytest.approx(k * SPACING_S + 0.035)]


@pytest.mark.parametrize("distribution", ["uniform", "normal"])
def test_jitter_spreads_departures_around_the_delay_and_never_before_arrival(distribution):
    leg = Leg(Impairment(delay_ms=10, jitter_ms=10, distribution=distribution), seed=5)
    added = [dues[0] - k * SPACING_S for k, dues in enumerate(admit_stream(leg, 4000))]
    assert min(added) >= 0
    assert sum(added) / len(added) == pytest.approx(0.010, abs=0.001)
    if distribution == "uniform":
        assert max(added) <= 0.020 + 1e-12
    else:
        assert sum(a == 0 for a in added) > 0  # the normal's left tail is clipped at arrival
    assert max(added) - min(added) > 0.015


def test_jitter_wider_than_the_spacing_reorders_and_the_count_says_how_often():
    leg = Leg(Impairment(delay_ms=30, jitter_ms=30), seed=2)
    dues = [d[0] for d in admit_stream(leg, 2000)]
    assert overtakes(dues) == leg.counts.reordered
    assert 0.1 < leg.counts.reordered / 2000 < 0.5


def test_jitter_narrower_than_the_spacing_never_reorders():
    leg = Leg(Impairment(delay_ms=9, jitter_ms=9), seed=2)
    dues = [d[0] for d in admit_stream(leg, 2000)]
    assert dues == sorted(dues) and leg.counts.reordered == 0


def test_with_reordering_off_packets_leave_in_arrival_order():
    leg = Leg(Impairment(delay_ms=30, jitter_ms=30, reorder=False, loss=0.1), seed=2)
    dues = [d[0] for d in admit_stream(leg, 2000) if d]
    assert dues == sorted(dues) and leg.counts.reordered == 0
    assert leg.counts.dropped > 0


def test_stun_and_dtls_pass_at_once_even_when_media_is_all_lost_and_late():
    leg = Leg(Impairment(loss=1.0, delay_ms=100, jitter_ms=50), seed=1)
    assert leg.admit(STUN, 1.0) == [1.0] and leg.admit(DTLS, 2.0) == [2.0]
    assert leg.admit(RTP, 3.0) == []
    c = leg.counts
    assert (c.control, c.received, c.dropped, c.forwarded, c.sent) == (2, 1, 1, 0, 2)


def test_duplicates_are_sent_twice_and_counted():
    leg = Leg(Impairment(duplicate=1.0, delay_ms=5, jitter_ms=5), seed=4)
    dues = admit_stream(leg, 10)
    assert all(len(d) == 2 for d in dues)
    assert leg.counts.duplicated == 10 and leg.counts.sent == 20 and leg.counts.forwarded == 10


def test_a_spec_changed_mid_stream_applies_from_the_next_packet():
    leg = Leg(Impairment(loss=1.0))
    assert leg.admit(RTP, 0.0) == []
    leg.spec = CLEAN
    assert leg.admit(RTP, 0.02) == [0.02]


@pytest.mark.parametrize("fields, message", [
    ({"loss": 1.5}, "loss must lie in 0..1"),
    ({"duplicate": -0.1}, "duplicate must lie in 0..1"),
    ({"delay_ms": float("nan")}, "delay_ms must be a finite number"),
    ({"jitter_ms": -1}, "jitter_ms must be a finite number >= 0"),
    ({"burst_len": 0.5}, "burst_len must be >= 1"),
    ({"loss": 0.9, "burst_len": 2}, "too high for bursts of 2"),
    ({"distribution": "pareto"}, "'uniform' or 'normal'"),
])
def test_a_bad_impairment_is_refused_with_what_was_wrong(fields, message):
    with pytest.raises(ValueError, match=message):
        Impairment(**fields)


def test_impairments_round_trip_through_dicts_and_unknown_fields_are_refused():
    for _, spec in PROFILES.values():
        assert Impairment.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unknown impairment field"):
        Impairment.from_dict({"los": 0.1})


SDP = "\r\n".join([
    "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0",
    "m=audio 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 192.0.2.2",
    "a=candidate:aa 1 udp 2130706431 192.0.2.2 40000 typ host",
    "a=candidate:bb 1 udp 2130706431 fd00::2 40001 typ host",
    "a=candidate:cc 1 tcp 1518280447 192.0.2.2 9 typ host tcptype active",
    "a=end-of-candidates", "a=rtpmap:96 opus/48000/2", ""])


async def test_descriptions_are_pointed_at_the_relay_and_the_real_ends_remembered():
    async with Relay() as relay:
        offer = relay.rewrite_offer(SDP)
        answer = relay.rewrite_answer(SDP.replace("40000", "50000"))
        for text, side in ((offer, relay.server_side), (answer, relay.client_side)):
            candidates = [line for line in text.split("\r\n") if line.startswith("a=candidate")]
            assert candidates == [f"a=candidate:aa 1 udp 2130706431 {side[0]} {side[1]} typ host"]
            assert "a=end-of-candidates" in text and text.endswith("\r\n")
        assert relay.client == ("192.0.2.2", 40000) and relay.server == ("192.0.2.2", 50000)
        with pytest.raises(ValueError, match="no UDP IPv4 host candidate"):
            relay.rewrite_offer(SDP.replace("192.0.2.2 40000", "fd00::3 40000"))


class Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.event = asyncio.Event()

    def datagram_received(self, data: bytes, addr) -> None:
        self.got.append(data)
        self.event.set()


async def endpoint(loop) -> tuple[asyncio.DatagramTransport, Receiver]:
    transport, protocol = await loop.create_datagram_endpoint(
        Receiver, local_addr=("127.0.0.1", 0), family=socket.AF_INET)
    return transport, protocol


def numbered(k: int) -> bytes:
    return RTP[:2] + k.to_bytes(2, "big") + bytes(20)


async def until(predicate, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_over_udp_the_relay_drops_what_it_counts_and_carries_the_rest_both_ways():
    loop = asyncio.get_running_loop()
    (client, at_client), (server, at_server) = await endpoint(loop), await endpoint(loop)
    async with Relay(uplink=Impairment(loss=0.2), seed=9) as relay:
        relay.route(client=client.get_extra_info("sockname"),
                    server=server.get_extra_info("sockname"))
        for k in range(300):
            client.sendto(numbered(k), relay.client_side)
            if k % 50 == 0:
                await asyncio.sleep(0.005)  # let the loop drain the sockets
        up = relay.uplink.counts
        await until(lambda: up.received == 300 and len(at_server.got) == up.forwarded)
        assert up.dropped + up.forwarded == 300 and 30 < up.dropped < 90
        server.sendto(numbered(7), relay.server_side)
        server.sendto(STUN, relay.server_side)
        await until(lambda: len(at_client.got) == 2)
        assert at_client.got == [numbered(7), STUN]
        assert relay.counts()["downlink"].control == 1
    client.close()
    server.close()


async def test_over_udp_delayed_media_is_overtaken_by_stun_and_order_kept_when_asked():
    loop = asyncio.get_running_loop()
    (client, _), (server, at_server) = await endpoint(loop), await endpoint(loop)
    spec = Impairment(delay_ms=40, jitter_ms=30, reorder=False)
    async with Relay(uplink=spec, seed=3) as relay:
        relay.route(client=client.get_extra_info("sockname"),
                    server=server.get_extra_info("sockname"))
        sent_at = loop.time()
        for k in range(40):
            client.sendto(numbered(k), relay.client_side)
        client.sendto(STUN, relay.client_side)
        await until(lambda: len(at_server.got) == 41)
        assert at_server.got[0] == STUN
        assert at_server.got[1:] == [numbered(k) for k in range(40)]
        assert loop.time() - sent_at >= 0.010  # nothing left before its delay (40 ± 30 ms)
        relay.set_impairment(uplink=Impairment(delay_ms=40, jitter_ms=30), downlink=CLEAN)
        at_server.got.clear()
        for k in range(40):
            client.sendto(numbered(k), relay.client_side)
            await asyncio.sleep(0.002)
        await until(lambda: len(at_server.got) == 40)
        assert relay.uplink.counts.reordered > 0
        assert at_server.got != sorted(at_server.got) and sorted(at_server.got) == sorted(
            numbered(k) for k in range(40))
    client.close()
    server.close()


@pytest.mark.slow
def test_bench_network_at_5_percent_uplink_loss_still_hears_clicks_and_conceals():
    from bench.network import network_benchmark

    report = network_benchmark(["loss5"], seconds=4.0, tail_s=3.0, legs="up", seed=1)
    run = report["profiles"][0]
    up, down = run["relay"]["speaker_uplink"], run["relay"]["listener_downlink"]
    assert up["received"] == up["forwarded"] + up["dropped"] and up["dropped"] > 0
    assert down["dropped"] == 0 and down["received"] > 0
    clicks = run["clicks"]["impaired"]
    assert clicks["sent"] > 0 and clicks["heard"] >= clicks["sent"] // 2
    assert run["clicks"]["tail"]["heard"] > 0
    concealed = run["server"]["concealed_impaired"]
    assert concealed > 0 and concealed >= up["dropped"] // 2
    # The bots send Opus at 96 kb/s (CELT, no FEC): Opus's own concealment filled the gaps.
    assert run["server"]["plc_impaired"] > 0 and run["server"]["fec_impaired"] == 0
