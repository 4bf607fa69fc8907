"""Hostile SDP offers and ICE candidates against a real ``spatialjam serve``.

Each unusable offer is refused with ``bad_sdp`` (or the parser's ``too_large``) and a message a
person can act on; nothing of it stays behind (the server's UDP sockets are back to what they
were: no peer connection leaks), the same connection can still offer properly and be heard,
and the room beside it plays on. Garbage ICE candidates are refused or capped the same way.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re

import numpy as np
import pytest
import websockets
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.bot import Bot, SignalTrack, silence, tone
from bench.serverproc import ServerProcess
from server.media.sdp import MAX_ICE_CANDIDATES, MAX_MEDIA_SECTIONS, offer_problem
from signaling import limits
from tests.helpers.hostile import TONE_A_HZ, TONE_B_HZ, TRIED, HearingPair, report_tried, tone_db

#: Python's own words, which a refusal must not lead with (a person cannot act on them).
PYTHON_SPEAKING = re.compile(r"NoneType|has no attribute|not in list|index out of range|"
                             r"unpack|invalid literal|Traceback|AssertionError")
READABLE_START = re.compile(r"^(the offer|media section|a=mid|'sdp' in 'offer')")


@pytest.fixture(scope="module", autouse=True)
def tried_report():
    yield
    print("\n" + report_tried("sdp") + "\n" + report_tried("ice"))


@pytest.fixture(scope="module")
def server():
    with ServerProcess() as srv:
        yield srv


async def offer_of(kind: str = "audio", codecs: tuple[str, ...] = ()) -> str:
    """A real offer from an aiortc peer connection (with its ICE candidates)."""
    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver(SignalTrack(silence) if kind == "audio" else kind,
                                    "sendrecv")
    if codecs:
        transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities(kind).codecs
                                         if c.mimeType in codecs])
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def udp_sockets(pid: int) -> int:
    """UDP sockets process ``pid`` holds (each peer connection holds one per local address)."""
    inodes = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as rows:
            next(rows)
            inodes |= {row.split()[9] for row in rows}
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        count += link.startswith("socket:[") and link[8:-1] in inodes
    return count


def media_section(sdp: str) -> str:
    return sdp[sdp.index("m=audio"):]


def bad_offers(good: str, video: str, pcmu: str) -> dict[str, str]:
    """Offers the server must refuse, by what is wrong with them."""
    section = media_section(good)
    head = good[:good.index("m=audio")]
    many_candidates = "".join(f"a=candidate:{i} 1 udp 1 198.51.{i // 250}.{i % 250 + 1} "
                              f"{1024 + i} typ host\r\n" for i in range(500))
    return {
        "only a version line": "v=0\r\n",
        "no media section": head,
        "video only": video,
        "PCMU only": pcmu,
        # (A data channel alone is the low-latency page's offer: taken, not refused.)
        "an application section that is no data channel": head + "m=application 9 UDP/BFCP "
        "*\r\na=mid:0\r\n" + section[section.index("a=ice-ufrag"):],
        "no DTLS fingerprint": re.sub(r"a=fingerprint:.*\r\n", "", good),
        "no ICE ufrag": re.sub(r"a=ice-ufrag:.*\r\n", "", good),
        "no ICE password": re.sub(r"a=ice-pwd:.*\r\n", "", good),
        "a duplicate mid": good + section,
        f"{MAX_MEDIA_SECTIONS + 1} media sections": good + section.replace(
            "a=mid:0", "a=mid:x") * MAX_MEDIA_SECTIONS,
        "300 media sections (32 KiB)": head + "".join(
            f"m=audio 9 RTP/AVP 0\r\na=mid:{i}\r\n" for i in range(300)),
        f"{MAX_ICE_CANDIDATES + 1} candidates": good + many_candidates[
            :many_candidates.index(f"a=candidate:{MAX_ICE_CANDIDATES - 1} ")],
        "500 candidates": good + many_candidates,
        "an Opus payload type outside the m-line": good.replace(
            "a=rtpmap:96 opus/48000/2", "a=rtpmap:121 opus/48000/2"),
        "a NUL": good.replace("s=-", "s=\x00"),
        "a lone surrogate": good.replace("s=-", "s=\ud800"),
        "33 KiB": good + "a=x-pad:" + "p" * limits.MAX_SDP_BYTES + "\r\n",
        "absurd payload types": good.replace("SAVPF 96 9 0 8", "SAVPF 99999999 -1 abc 96"),
        "a garbage fingerprint": re.sub(r"a=fingerprint:.*\r\n", "a=fingerprint:x\r\n", good),
        "a garbage setup role": re.sub(r"a=setup:.*\r\n", "a=setup:garbage\r\n", good),
        "RTCP not muxed": good.replace("a=rtcp-mux\r\n", ""),
        "a garbage rtpmap": good.replace("a=rtpmap:96 opus/48000/2", "a=rtpmap:96 opus/x/y"),
    }


def lines_mutated(rng: random.Random, sdp: str) -> str:
    """``sdp`` with a few lines deleted, doubled, garbled or added (reproducible)."""
    junk = ["", "x", "a=", "m=", "m=audio", "a=rtpmap:", "a=mid:", "c=IN IP4", "a=ssrc:abc",
            "a=fmtp:96 " + "x=1;" * 300, "a=setup:garbage", "a=fingerprint:md5 00",
            "a=candidate:1 1 udp 1 999.1.1.1 9 typ host", "a=extmap:999999 urn:x", "b=AS:-1",
            "a=group:BUNDLE 0 1 2", "a=msid:" + "x" * 2000, "t=abc", "a=rtcp:99999999",
            "a=ice-ufrag:\u00e9\u00e9\u00e9\u00e9", "a=ssrc:99999999999999999999 cname:x"]
    lines = sdp.split("\r\n")
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(len(lines))
        how = rng.randrange(4)
        if how == 0:
            del lines[at]
        elif how == 1:
            lines.insert(at, lines[rng.randrange(len(lines))])
        elif how == 2:
            lines.insert(max(1, at), rng.choice(junk))
        elif lines[at]:
            cut = rng.randrange(len(lines[at]))
            lines[at] = (lines[at][:cut] + rng.choice(["999999999", "-1", "", " ", "é", ":"])
                         + lines[at][cut + 1:])
    return "\r\n".join(lines)


async def offers_over(url: str, room: str, sdps: list[str], per_connection: int = 8) -> list:
    """Send each offer on a joined connection (a new one every ``per_connection``: the tenth
    refusal closes one); return each reply: the answer or the error."""
    replies = []
    for start in range(0, len(sdps), per_connection):
        async with websockets.connect(url, max_size=None) as ws:
            await ws.send(json.dumps({"type": "join", "room": room, "name": "offerer"}))
            assert json.loads(await ws.recv())["type"] == "joined"
            for k, sdp in enumerate(sdps[start:start + per_connection], start):
                # ASCII JSON: a lone surrogate goes as its escape, as a script would send it
                await ws.send(json.dumps({"type": "offer", "id": k, "sdp": sdp}))
                async with asyncio.timeout(10):
                    while (reply := json.loads(await ws.recv()))["type"] not in ("answer",
                                                                                 "error"):
                        pass
                assert reply["id"] == k
                replies.append(reply)
    return replies


def assert_readable(error: dict) -> None:
    message = error["message"]
    assert error["code"] in ("bad_sdp", "too_large"), error
    assert message.isascii() and "\n" not in message and len(message) <= 300, message
    assert READABLE_START.match(message), message
    assert not PYTHON_SPEAKING.search(message.split(" (", 1)[0]), message


# -- offer_problem, alone ----------------------------------------------------------------------

@settings(max_examples=1500, deadline=1000)
@given(st.randoms(use_true_random=False), st.integers(0, 2))
def test_offer_problem_reads_any_mangled_offer_without_raising(rng, which):
    """Thousands of offers with lines deleted, doubled, garbled or added: a reason in words
    or None, never an exception."""
    TRIED["sdp.offer_problem (lines mutated)"] += 1
    base = (GOOD, VIDEO, PCMU)[which]
    problem = offer_problem(lines_mutated(rng, base))
    assert problem is None or (problem.isprintable() and len(problem) < 300)


GOOD = asyncio.run(offer_of())
VIDEO = asyncio.run(offer_of("video"))
PCMU = asyncio.run(offer_of(codecs=("audio/PCMU",)))


def test_a_browser_like_offer_has_no_problem():
    assert offer_problem(GOOD) is None


#: Offers the signaling parser refuses before the server reads them as SDP.
PARSER_REFUSES = {"a NUL", "a lone surrogate", "33 KiB"}
#: Offers well-formed enough for offer_problem that aiortc refuses.
AIORTC_REFUSES = {"absurd payload types", "a garbage fingerprint", "a garbage setup role",
                  "RTCP not muxed"}


@pytest.mark.parametrize("name", sorted(set(bad_offers(GOOD, VIDEO, PCMU)) - PARSER_REFUSES))
def test_each_unusable_offer_is_named_for_what_is_wrong(name):
    problem = offer_problem(bad_offers(GOOD, VIDEO, PCMU)[name])
    if name in AIORTC_REFUSES:
        assert problem is None
    else:
        assert problem is not None and READABLE_START.match(problem), problem


# -- over the wire --------------------------------------------------------------------------------

async def test_unusable_offers_are_refused_in_words_and_leave_nothing_behind(server):
    """The catalogue and 200 mangled offers, 8 a connection: each answered or refused in
    words; the server's UDP sockets are back to where they were; the room plays on."""
    catalogue = bad_offers(GOOD, VIDEO, PCMU)
    rng = random.Random(11)
    mangled = [lines_mutated(rng, GOOD) for _ in range(200)]
    async with HearingPair(server.ws, "sdp") as pair:
        await asyncio.sleep(0.5)
        sockets_before = udp_sockets(server.proc.pid)
        before = await pair.listen(1.0)
        mark = pair.mark()
        refused = await offers_over(server.ws, "sdp", list(catalogue.values()))
        mangled_replies = await offers_over(server.ws, "sdp", mangled)
        during = await pair.at_least(mark, 2.0)
        await asyncio.sleep(1.0)  # the offerers' connections are gone: their peers closed
        sockets_after = udp_sockets(server.proc.pid)
    TRIED["sdp.offer (catalogue)"] += len(catalogue)
    TRIED["sdp.offer (lines mutated)"] += len(mangled)
    outcomes = {name: reply.get("code", "answer") for name, reply in zip(catalogue, refused,
                                                                         strict=True)}
    print(f"\ncatalogue: {outcomes}\nmangled: {sum(r['type'] == 'answer' for r in mangled_replies)}"
          f" answered, {sum(r['type'] == 'error' for r in mangled_replies)} refused; UDP sockets "
          f"{sockets_before} before, {sockets_after} after")
    for name, reply in zip(catalogue, refused, strict=True):
        assert reply["type"] == "error", (name, reply["sdp"][:200])
        assert_readable(reply)
    for reply in mangled_replies:
        if reply["type"] == "error":
            assert_readable(reply)
    assert sockets_after == sockets_before
    assert not during.still_hearing(before), during.still_hearing(before)


class RefusedFirst(Bot):
    """A bot whose connection sends unusable offers before its good one."""

    refused: list[str]

    async def request(self, message: dict, reply_type: str, timeout: float = 10.0) -> dict:
        if message["type"] == "offer":
            self.refused = []
            catalogue = bad_offers(GOOD, VIDEO, PCMU)
            for name in ("PCMU only", "a garbage setup role", "absurd payload types"):
                with pytest.raises(RuntimeError) as refusal:
                    await super().request({"type": "offer", "sdp": catalogue[name]}, "answer")
                self.refused.append(str(refusal.value))
            self.errors.clear()
        return await super().request(message, reply_type, timeout)


async def test_after_refused_offers_the_same_connection_offers_properly_and_is_heard(server):
    """Bad offers first (some get a peer connection that is closed again), then a good one on
    the same connection: it connects, hears the room and is heard."""
    async with HearingPair(server.ws, "again") as pair, \
            RefusedFirst(server.ws, "again", "R", tone(500)) as rogue:
        await asyncio.sleep(1.0)
        heard = await rogue.listen(1.0)
        window = await pair.listen(1.0)
    TRIED["sdp.offer (then a good one)"] += len(rogue.refused)
    assert all(text.startswith("bad_sdp: ") for text in rogue.refused), rogue.refused
    assert tone_db(heard, TONE_A_HZ) > -50 and tone_db(heard, TONE_B_HZ) > -50
    assert all(level > -50 for level in window.level_db.values())
    pair_levels = {who: tone_db(np.concatenate(bot.received[-50:]), 500.0)
                   for who, bot in (("A", pair.a), ("B", pair.b))}
    assert all(level > -50 for level in pair_levels.values()), pair_levels
    assert not rogue.errors


async def test_garbage_offers_after_a_good_one_keep_the_connection_that_works(server):
    """A connected member renegotiates with garbage (eight offers, under the strike limit):
    each is refused (or answered, if aiortc can use it) and its media never stops."""
    rng = random.Random(5)
    catalogue = bad_offers(GOOD, VIDEO, PCMU)
    async with HearingPair(server.ws, "reneg") as pair, \
            Bot(server.ws, "reneg", "R", tone(500)) as rogue:
        before = await pair.listen(1.0)
        mark, rogue_from = pair.mark(), len(rogue.received)
        good = rogue.pc.localDescription.sdp
        sdps = [catalogue["a garbage setup role"], catalogue["no DTLS fingerprint"],
                catalogue["a duplicate mid"], catalogue["absurd payload types"],
                *(lines_mutated(rng, good) for _ in range(4))]
        replies = []
        for k, sdp in enumerate(sdps):
            future = asyncio.get_running_loop().create_future()
            rogue._replies["answer"] = future
            await rogue.send({"type": "offer", "id": k, "sdp": sdp})
            try:
                async with asyncio.timeout(10):
                    replies.append((await future)["type"])
            except RuntimeError as exc:
                replies.append(str(exc))
        await asyncio.sleep(1.0)
        during = pair.since(mark)
        rogue_frames = len(rogue.received) - rogue_from
        still_open = rogue._ws.close_code is None
    TRIED["sdp.offer (renegotiation garbage)"] += len(sdps)
    print(f"\nrenegotiation: {replies}")
    assert all(r == "answer" or r.startswith("bad_sdp: ") for r in replies), replies
    assert still_open
    assert rogue_frames >= 0.8 * during.seconds * 50, (rogue_frames, during.seconds)
    assert not during.still_hearing(before), during.still_hearing(before)


#: What the server sends a member by itself after 'joined' (and now and then), to be passed over
#: by a test that waits for the answer to its own message.
AFTER_JOINED = ("rendering", "chat_history", "levels", "room_state", "stats")


@pytest.mark.parametrize("size", [limits.MAX_MESSAGE_BYTES + 100, 1 << 20])
async def test_an_offer_past_the_message_limit_is_refused_or_cut_off(server, size):
    async with websockets.connect(server.ws, max_size=None) as ws:
        await ws.send(json.dumps({"type": "join", "room": "big", "name": "R"}))
        await ws.recv()
        await ws.send(json.dumps({"type": "offer", "sdp": GOOD + "a=x:" + "p" * size}))
        try:
            async with asyncio.timeout(10):
                while (reply := json.loads(await ws.recv()))["type"] in AFTER_JOINED:
                    pass
            assert reply["code"] == "too_large"
        except websockets.ConnectionClosed as exc:
            assert exc.rcvd.code == 1009
    TRIED["sdp.offer (past the size limit)"] += 1


async def test_an_offer_at_the_sdp_size_limit_is_taken(server):
    pad = limits.MAX_SDP_BYTES - len(GOOD.encode()) - len("a=x-pad:\r\n")
    sdp = GOOD + "a=x-pad:" + "p" * pad + "\r\n"
    assert len(sdp.encode()) == limits.MAX_SDP_BYTES
    [reply] = await offers_over(server.ws, "big", [sdp])
    TRIED["sdp.offer (at the size limit)"] += 1
    assert reply["type"] == "answer"


#: Per connection: candidates that parse (nonsense addresses and numbers) and those that do not.
PARSEABLE_PER_CONNECTION = MAX_ICE_CANDIDATES - 10
GARBAGE_PER_CONNECTION = 9  # the tenth refusal would close the connection


def garbage_candidate(rng: random.Random) -> str:
    return rng.choice([
        "candidate:" + "".join(rng.choice("0123456789 abcudp.:-") for _ in range(60)),
        "candidate:x", "candidate: 1 1 udp", "candidate:1 2 3 4 5 6 7",
        "candidate:1 1 udp 1 198.51.100.1 9 typ relay raddr x rport y",
        "candidate:1 1 udp one 198.51.100.1 9 typ host", "candidate:1 1 udp 1 1.2.3.4 x typ host"])


def nonsense_candidate(rng: random.Random, k: int) -> str:
    return rng.choice([
        f"candidate:{k} 1 udp {rng.randrange(1 << 31)} 198.51.{rng.randrange(256)}."
        f"{rng.randrange(1, 255)} {rng.randrange(1, 65536)} typ host",
        f"candidate:{k} 1 udp 99999999999 1.2.3.{k % 250} 99999 typ host",
        f"candidate:{k} 1 tcp 1 ::zz 9 typ host", f"candidate:{k} 1 udp 5 abc{k} 7 typ host",
        f"candidate:{k} 9 udp 1 198.51.100.{k % 250} 9 typ prflx",
        f"candidate:{k} 1 udp 1 2001:db8::{k:x} 9 typ srflx raddr 0.0.0.0 rport 0"])


async def test_thousands_of_garbage_ice_candidates_are_refused_or_ignored(server):
    """Connection after connection: a peer connection, then candidates that do not parse
    (each refused with ``bad_value``) among candidates that parse but name nonsense (taken,
    harmlessly); the room plays on and no socket is left behind."""
    rng = random.Random(13)
    sent = refused = 0
    codes: set[str] = set()
    async with HearingPair(server.ws, "ice") as pair:
        sockets_before = udp_sockets(server.proc.pid)
        before = await pair.listen(1.0)
        mark = pair.mark()
        while sent < 2000:
            candidates = [garbage_candidate(rng) for _ in range(GARBAGE_PER_CONNECTION)]
            candidates += [nonsense_candidate(rng, k) for k in range(PARSEABLE_PER_CONNECTION)]
            rng.shuffle(candidates)
            async with websockets.connect(server.ws) as ws:
                await ws.send(json.dumps({"type": "join", "room": "ice", "name": "ice"}))
                await ws.recv()
                await ws.send(json.dumps({"type": "offer", "sdp": GOOD}))
                while json.loads(await ws.recv())["type"] != "answer":
                    pass
                for candidate in candidates:
                    await ws.send(json.dumps({"type": "ice", "candidate": candidate,
                                              "sdpMid": "0", "sdpMLineIndex": 0}))
                errors = 0
                async with asyncio.timeout(10):
                    while errors < GARBAGE_PER_CONNECTION:
                        reply = json.loads(await ws.recv())
                        if reply["type"] == "error":
                            errors += 1
                            codes.add(reply["code"])
                sent += len(candidates)
                refused += errors
        during = pair.since(mark)
        await asyncio.sleep(1.0)
        sockets_after = udp_sockets(server.proc.pid)
    TRIED["ice.candidate (garbage and nonsense)"] += sent
    print(f"\nice: {sent} candidates, {refused} refused ({sorted(codes)}); UDP sockets "
          f"{sockets_before} before, {sockets_after} after")
    assert codes == {"bad_value"}, codes
    assert sockets_after == sockets_before
    assert not during.still_hearing(before), during.still_hearing(before)


async def test_a_connection_takes_at_most_the_cap_of_trickled_candidates(server):
    async with websockets.connect(server.ws) as ws:
        await ws.send(json.dumps({"type": "join", "room": "cap", "name": "c"}))
        await ws.recv()
        await ws.send(json.dumps({"type": "offer", "sdp": GOOD}))
        while json.loads(await ws.recv())["type"] != "answer":
            pass
        for k in range(MAX_ICE_CANDIDATES + 1):
            await ws.send(json.dumps({"type": "ice", "id": k, "sdpMid": "0",
                                      "candidate": f"candidate:{k} 1 udp 1 198.51.100.{k + 1} "
                                                   f"{2000 + k} typ host"}))
        async with asyncio.timeout(10):
            while (reply := json.loads(await ws.recv()))["type"] in AFTER_JOINED:
                pass
    TRIED["ice.candidate (past the cap)"] += MAX_ICE_CANDIDATES + 1
    assert reply["type"] == "error" and reply["code"] == "out_of_range"
    assert reply["id"] == MAX_ICE_CANDIDATES and str(MAX_ICE_CANDIDATES) in reply["message"]


async def test_the_peer_of_an_offer_is_gone_once_its_connection_is(server):
    """A good offer whose client never connects: its peer connection is closed when the
    WebSocket goes (no socket left behind)."""
    before = udp_sockets(server.proc.pid)
    pc = RTCPeerConnection()
    pc.addTransceiver(SignalTrack(silence), "sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    [reply] = await offers_over(server.ws, "gone", [pc.localDescription.sdp])
    await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
    await pc.close()
    # closing takes a moment, longer on a loaded machine; earlier tests' peers may close
    # meanwhile too, so fewer sockets than before is also no leak
    for _ in range(100):
        if udp_sockets(server.proc.pid) <= before:
            break
        await asyncio.sleep(0.1)
    assert udp_sockets(server.proc.pid) <= before
