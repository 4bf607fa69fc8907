"""The low-latency transport's browser modules without a server, in real headless Chromium: the
packet header (``client_web/dcpacket.js``, byte for byte what the server's
``struct.Struct("!BBHII")`` reads) and the playout buffer (``client_web/playout.js``) driven by
scripted packet arrivals (``tests/e2e/js/playout_scenarios.js``: a 440 Hz tone in frames, sent
on the sender's clock, arriving on ours with stalls, losses, jitter and clock drift), and the
choice of transport (``client_web/lowlatency.js``) with WebCodecs as it is and made to refuse.

"Without clicks" is checked on the played samples: no step between two output samples is
larger than 1.5 times the tone's own largest step (a click, a jump to silence or to another
phase, would be tens of times larger). No timing is asserted: time here is samples pulled.

The modules are served by a plain static server (they are plain ES modules: no spatialjam
server is needed to import them).
"""

from __future__ import annotations

import functools
import http.server
import struct
import threading
from pathlib import Path

import pytest

from tests.helpers.browser import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parents[2]
#: The spatialjam server's own packet layout (docs/PROTOCOL.md, the data-channel transport).
HEADER = struct.Struct("!BBHII")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(ROOT)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                        args=CHROMIUM_ARGS)
            try:
                tab = browser.new_page()
                errors: list[str] = []
                tab.on("pageerror", lambda error: errors.append(str(error)))
                # A directory listing: any page of that origin will do to import the modules.
                tab.goto(f"http://127.0.0.1:{server.server_address[1]}/")
                tab.evaluate("""async () => {
                    window.dcpacket = await import('/client_web/dcpacket.js');
                    const { PlayoutBuffer } = await import('/client_web/playout.js');
                    const scripted = await import('/tests/e2e/js/playout_scenarios.js');
                    window.PlayoutBuffer = PlayoutBuffer;
                    window.scripted = scripted;
                }""")
                yield tab
                assert not errors, errors
            finally:
                browser.close()
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def runs(page):
    """Every scripted session, run once in the page (about a second of page time)."""
    result = page.evaluate("scripted.scenarios(PlayoutBuffer)")
    step = page.evaluate("scripted.TONE_STEP")
    for run in result.values():
        run["jump_ratio"] = run["maxJump"] / step
    return result


def test_a_packet_is_the_header_the_server_reads_then_the_opus_bytes(page):
    packed = page.evaluate("""() => Array.from(new Uint8Array(dcpacket.packPacket(
        {sequence: 65536 + 7, timestamp: 2 ** 32 + 480, captureUs: 123456789},
        new Uint8Array([0xfc, 1, 2]))))""")
    assert bytes(packed) == HEADER.pack(1, 0, 7, 480, 123456789) + bytes([0xfc, 1, 2])
    parsed = page.evaluate("""bytes => {
        const p = dcpacket.parsePacket(new Uint8Array(bytes).buffer);
        return {...p, opus: Array.from(p.opus)};
    }""", list(HEADER.pack(1, 0, 65535, 2**32 - 1, 5) + b"\x08\x09"))
    assert parsed == {"version": 1, "flags": 0, "sequence": 65535, "timestamp": 2**32 - 1,
                      "captureUs": 5, "opus": [8, 9]}


@pytest.mark.parametrize(("data", "reason"), [
    (HEADER.pack(1, 0, 1, 1, 1), "dc_short"),  # a header and no Opus
    (HEADER.pack(1, 0, 1, 1, 1) + bytes(1276), "dc_oversized"),
    (HEADER.pack(2, 0, 1, 1, 1) + b"\x08", "dc_version"),
])
def test_what_is_no_packet_is_refused_with_the_servers_reason(page, data, reason):
    assert page.evaluate("b => dcpacket.parsePacket(new Uint8Array(b).buffer).error",
                         list(data)) == reason
    assert page.evaluate("() => dcpacket.parsePacket('text').error") == "dc_text"


def test_an_opus_packet_too_long_for_the_format_is_not_packed(page):
    message = page.evaluate("""() => { try { dcpacket.packPacket({sequence: 0, timestamp: 0,
        captureUs: 0}, new Uint8Array(1276)); } catch (e) { return e.message; } }""")
    assert message == "an Opus packet is 1 to 1275 bytes, not 1276"


def test_sequence_numbers_compare_across_the_wrap(page):
    assert page.evaluate("[dcpacket.sequenceDelta(2, 65534), dcpacket.sequenceDelta(65534, 2),"
                         " dcpacket.sequenceDelta(5, 5)]") == [4, -4, 0]


def test_on_time_packets_play_continuously_at_two_frames_at_most(runs):
    steady = runs["steady"]
    stats = steady["stats"]
    # One frame (5 ms) cannot hold a 128-sample render quantum at every phase of the 5 ms
    # packets: the start may run dry once and the target grows to two frames, never more.
    assert steady["underrunsAfterStart"] <= 1 and stats["target_ms"] <= 10
    assert stats["concealed"] == 0 and stats["late"] == 0 and stats["dropped"] == 0
    assert steady["jump_ratio"] < 1.5, steady
    wrap = runs["wrap"]["stats"]  # sequence numbers wrapping at 2^16 mean nothing
    assert wrap["concealed"] == 0 and wrap["late"] == 0 and wrap["restarts"] == 0, wrap


def test_an_underrun_grows_the_target_and_calm_shrinks_it_again(runs):
    stall = runs["underrun"]
    stats = stall["stats"]
    targets = stall["targets"]  # once a second
    assert stats["underruns"] == runs["steady"]["stats"]["underruns"] + 1, stall
    assert max(targets) > runs["steady"]["stats"]["target_ms"], targets  # grew after the stall
    assert stats["shrunk"] >= 1 and targets[-1] < max(targets), targets  # and came back
    assert stats["concealed"] == 0 and stats["late"] == 0  # late, not lost: all played
    # The burst that ended the stall is skipped (crossfaded), not kept as delay.
    assert stats["skipped"] >= 1 and stall["maxDepthLate"] < 4 * 240, stall
    assert stall["jump_ratio"] < 1.5, stall


def test_a_fixed_buffer_stays_where_the_player_put_it(runs):
    """The manual buffer (as Jamulus and SonoBus offer): fixed at 3 frames, the stall's underrun
    does not grow it and calm does not shrink it; fixed lower while deep, the excess is skipped
    at once; fixed deeper, it gets there by inserted samples, without a click; "auto" adapts
    again."""
    fixed = runs["fixed"]
    assert set(fixed["targets"]) == {15.0}, fixed["targets"]
    assert fixed["stats"]["grown"] == 0 and fixed["stats"]["shrunk"] == 0
    assert fixed["stats"]["fixed"] is True and fixed["jump_ratio"] < 1.5, fixed
    down = runs["fixedDown"]
    before, after = down["probes"]
    assert before >= 3 * 240 and after < 2 * 240, down["probes"]  # skipped at once
    assert set(down["targets"][4:]) == {5.0} and down["jump_ratio"] < 1.5, down
    up = runs["fixedUp"]
    assert up["probes"][0] >= 3 * 240, up["probes"]  # 4 frames asked, 3 or more reached
    assert up["stats"]["concealed"] == 0 and up["jump_ratio"] < 1.5, up
    assert up["stats"]["fixed"] is False and up["stats"]["shrunk"] >= 1  # auto again


def test_a_missing_packet_is_concealed_without_a_click_or_growth(runs):
    missing = runs["missing"]["stats"]
    assert missing["concealed"] == 1 and missing["late"] == 0
    assert missing["grown"] == runs["steady"]["stats"]["grown"]  # lost is not late
    assert runs["missing"]["jump_ratio"] < 1.5, runs["missing"]
    late = runs["late"]["stats"]  # 50 ms late: concealed in its time, then dropped as late
    assert late["concealed"] == 1 and late["late"] == 1
    for name in ("frame20", "frame2_5"):  # the other room frames
        assert runs[name]["stats"]["concealed"] == 1, runs[name]
        assert runs[name]["jump_ratio"] < 1.5, runs[name]


def test_a_sender_clock_faster_or_slower_by_0_2_percent_is_followed(runs):
    faster, slower = runs["faster"], runs["slower"]
    # 30 s at +0.2 %: 2880 samples more than we play; dropped one at a time, no underrun.
    assert faster["underrunsAfterStart"] == runs["steady"]["underrunsAfterStart"], faster
    assert faster["stats"]["dropped"] >= 2880 - 4 * 240, faster["stats"]
    assert faster["maxDepthLate"] < 3 * 240, faster
    # At −0.2 %: 2880 samples fewer; inserted, never running dry.
    assert slower["underrunsAfterStart"] == runs["steady"]["underrunsAfterStart"], slower
    assert slower["stats"]["inserted"] >= 2880 - 4 * 240, slower["stats"]
    assert faster["jump_ratio"] < 1.5 and slower["jump_ratio"] < 1.5


def test_arrival_jitter_of_one_and_a_half_frames_settles_without_loss(runs):
    jitter = runs["jitter"]
    assert jitter["stats"]["concealed"] == 0 and jitter["stats"]["late"] == 0, jitter
    assert jitter["stats"]["target_ms"] <= 15, jitter
    assert jitter["jump_ratio"] < 1.5, jitter


CHOOSE_JS = """async ({frameMs, search, without, refuse}) => {
    const { chooseTransport } = await import('/client_web/lowlatency.js');
    const encoder = globalThis.AudioEncoder;
    const check = encoder.isConfigSupported;
    const saved = {};
    for (const name of without) {
        saved[name] = globalThis[name];
        delete globalThis[name];
    }
    if (refuse) encoder.isConfigSupported = async (config) => ({supported: false, config});
    try {
        return await chooseTransport(frameMs, search);
    } finally {
        Object.assign(globalThis, saved);
        encoder.isConfigSupported = check;
    }
}"""


@pytest.mark.parametrize(("frame_ms", "search", "without", "refuse", "transport", "why"), [
    (5, "?room=x", [], False, "datachannel", "WebCodecs Opus in 5 ms frames over a data channel"),
    (2.5, "", [], False, "datachannel", "WebCodecs Opus in 2.5 ms frames over a data channel"),
    (5, "?room=x&transport=media", [], False, "media",
     "chosen in the page's address (?transport=media)"),
    (5, "", ["AudioEncoder"], False, "media", "this browser has no AudioEncoder"),
    (5, "", [], True, "media",
     "this browser cannot encode Opus in 5 ms low-delay frames (WebCodecs)"),
    # Opus frames are multiples of 2.5 ms (RFC 6716): Chromium throws on 7 ms.
    (7, "", [], False, "media", "WebCodecs refused the Opus settings: Failed to execute "
     "'isConfigSupported' on 'AudioEncoder': Invalid Opus frameDuration; expected a multiple of "
     "2500, received 7000."),
])
def test_the_page_chooses_the_data_channel_where_webcodecs_encodes_the_room_frame(
        page, frame_ms, search, without, refuse, transport, why):
    chosen = page.evaluate(CHOOSE_JS, {"frameMs": frame_ms, "search": search,
                                       "without": without, "refuse": refuse})
    assert (chosen["transport"], chosen["why"]) == (transport, why), chosen
