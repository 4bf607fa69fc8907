"""End to end in real headless Chromium: the web client against a real ``spatialjam serve``.

Two browser processes (each with its own fake microphone, a WAV this module writes) open the
client at ``/?room=e2e&transport=media`` and join through the join form: this suite is the
WebRTC media track's (Chrome's Opus, its jitter buffer, our SDP edits; the low-latency data
channel the client picks by itself in Chromium is test_browser_lowlatency.py's). Page A's
microphone plays a 1 kHz tone, page B's silence. Everything is done through the page as a
musician would: B's own marker and A's marker are dragged with the mouse on B's stage, B's head
is turned with keys and the "Face front" button. B's received stream is analysed in the page
(Web Audio, one AnalyserNode per channel) through the client's ``window.spatialjam.levels()``
hook.

Needs Debian's ``chromium`` at /usr/bin/chromium (``make test`` installs it) and the
``playwright`` Python package; no browser is downloaded. (The screenshots in ``docs/`` are
taken by tests/e2e/test_browser_musician.py.)
"""

from __future__ import annotations

import re
import time

import pytest

from bench.serverproc import ServerProcess
from tests.helpers.browser import (
    BAND_HZ,
    SETTLE_S,
    VERDICT_S,
    drag,
    open_jam,
    place_b_at_the_centre_facing_front,
    settle_ild,
    skip_if_starved,
    skipped_ticks,
    wait_for_stage_position,
)


@pytest.fixture(scope="module")
def server_url():
    with ServerProcess() as server:
        yield server.http


@pytest.fixture(scope="module")
def jam(server_url, tmp_path_factory):
    with open_jam(server_url, tmp_path_factory.mktemp("wav"), "&transport=media") as opened:
        yield opened


def test_dragging_a_on_bs_stage_moves_the_tone_between_bs_ears(jam):
    a, b = jam.a, jam.b
    place_b_at_the_centre_facing_front(jam)

    drag(b, jam.a_id, (0.0, 2.0))  # A to B's left
    wait_for_stage_position(a, jam.a_id, (0.0, 2.0))
    left, levels = settle_ild(b, lambda ild: ild >= 6.0)
    assert levels["left_db"] > -50, f"B does not hear A's tone: {levels}"
    assert left >= 6.0, f"A at B's left, yet L−R = {left:.1f} dB ({levels})"

    drag(b, jam.a_id, (0.0, -2.0))  # and to B's right
    wait_for_stage_position(a, jam.a_id, (0.0, -2.0))
    right, levels = settle_ild(b, lambda ild: ild <= -6.0)
    assert right <= -6.0, f"A at B's right, yet L−R = {right:.1f} dB ({levels})"

    # The latency panel fills in from getStats, pings and the server's stats.
    b.wait_for_function("spatialjam.latency().self_loop_ms > 0", timeout=5_000)
    # Two players are far from overloading the server: every source is in every mix.
    assert b.text_content("dd[data-stat='load']") == "normal"
    a_marker = b.evaluate("id => spatialjam.markerViewport(id)", jam.a_id)
    b.mouse.click(a_marker["x"], a_marker["y"])  # a click selects without moving
    assert b.text_content("#selected-where").endswith("2.0 m, 90° right")


def test_the_latency_panel_says_the_audio_goes_direct_on_loopback(jam):
    """Host candidates at both ends (no STUN, no TURN in ``joined``): the path is direct, UDP
    (client_web/icepath.js reads the selected candidate pair from getStats)."""
    path = "document.querySelector(\"dd[data-stat='path']\").textContent"
    jam.b.wait_for_function(f"{path} !== '—'", timeout=10_000)
    assert jam.b.evaluate(path) == "direct (UDP)"
    assert jam.b.evaluate("spatialjam.latency().path.kind") == "direct"


def test_move_in_my_mix_only_changes_b_and_leaves_the_stage(jam):
    a, b = jam.a, jam.b
    place_b_at_the_centre_facing_front(jam)
    drag(b, jam.a_id, (0.0, -2.0))
    wait_for_stage_position(a, jam.a_id, (0.0, -2.0))

    b.check("#personal-mode")
    drag(b, jam.a_id, (0.0, 2.0))  # A to B's left, in B's mix alone
    left, levels = settle_ild(b, lambda ild: ild >= 6.0)
    assert left >= 6.0, f"A moved left in B's mix, yet L−R = {left:.1f} dB ({levels})"
    time.sleep(0.3)
    wait_for_stage_position(a, jam.a_id, (0.0, -2.0))  # the shared stage kept A on the right

    b.click(f"[data-source='{jam.a_id}'] .mix-reset")  # back to the stage layout
    right, levels = settle_ild(b, lambda ild: ild <= -6.0)
    assert right <= -6.0, f"after reset, L−R = {right:.1f} dB ({levels})"
    b.uncheck("#personal-mode")


def test_the_browser_applies_stereo_opus_to_its_own_description(jam):
    # Chrome decodes stereo only if its *local* description says so (RFC 7587, 6.1).
    sdp = jam.b.evaluate("spatialjam.localDescription()")
    opus = re.search(r"^a=rtpmap:(\d+) opus/48000/2\r?$", sdp, re.MULTILINE | re.IGNORECASE)
    assert opus, sdp
    fmtp = re.search(rf"^a=fmtp:{opus.group(1)} (.*?)\r?$", sdp, re.MULTILINE)
    params = dict(p.split("=", 1) for p in fmtp.group(1).split(";"))
    assert params["stereo"] == "1" and params["maxaveragebitrate"] == "128000"


def test_a_server_error_is_shown_and_the_session_goes_on(jam):
    b = jam.b
    b.evaluate("spatialjam.send({type: 'move_source', id: 'x1', source: 'nobody', "
               "position_m: [0, 0, 0]})")
    toast = b.locator(".toast[data-code='unknown_source']", has_text="Not here")
    toast.wait_for(timeout=5_000)
    assert "nobody" in toast.text_content()
    assert b.evaluate("spatialjam.state.errors.at(-1).code") == "unknown_source"
    assert b.evaluate("spatialjam.peerState()") == "connected"
    assert b.text_content("#status").startswith("In room")


def test_after_a_network_drop_the_client_rejoins_its_seat(jam):
    a, b = jam.a, jam.b
    place_b_at_the_centre_facing_front(jam)
    drag(b, jam.a_id, (0.0, 2.0))
    wait_for_stage_position(a, jam.a_id, (0.0, 2.0))

    rejoins = b.evaluate("spatialjam.state.rejoins")
    b.evaluate("spatialjam.drop()")
    b.wait_for_function(
        "n => spatialjam.state.rejoins > n && spatialjam.peerState() === 'connected'",
        arg=rejoins, timeout=20_000)
    me = b.evaluate("spatialjam.participant")
    mine = b.evaluate("id => spatialjam.state.stage.find(s => s.source === id).position_m", me)
    assert mine[:2] == [0, 0], "the seat (and its place on the stage) was not kept"
    left, levels = settle_ild(b, lambda ild: ild >= 6.0)
    assert left >= 6.0, f"after rejoining, L−R = {left:.1f} dB ({levels})"
    jam.b_id = me


def test_test_my_latency_times_clicks_through_the_server_and_restores_mic_and_monitor(jam):
    """The "Test my latency" button on A: clicks go up instead of A's microphone, come back in
    A's own mix through the self-monitor, and are timed on the page's audio clock.

    A runs it because A's microphone is the tone: afterwards, *hearing* proves the restore —
    B hears A's tone again (the microphone is back on the sender) and A does not hear itself
    (self-monitoring is off again, as it was).
    """
    a, b = jam.a, jam.b
    me = f"[data-source='{jam.a_id}'] .mix-mute"  # A's own row's On/Off (hearing yourself)
    assert a.text_content(me) == "Off"
    assert a.evaluate("spatialjam.micOnSender()")

    skipped_before = skipped_ticks(a)
    a.click("#latency-test-run")
    # The test turns self-monitoring on (the clicks come back only through it).
    a.wait_for_function("spatialjam.state.monitorOn", timeout=2_000)
    assert a.text_content(me) == "On"
    assert a.is_disabled("#latency-test-run")
    a.wait_for_function("spatialjam.lastLatencyTest !== null", timeout=20_000)
    result = a.evaluate("spatialjam.lastLatencyTest")
    print("latency test:", result)
    assert "error" not in result, result
    # Wide bounds: the path includes Chrome's adaptive jitter buffer and fake capture and
    # output devices on a loaded 2-core machine; the test checks that a round trip through
    # the server is found and plausible, not how fast it is (bench latency measures that).
    # Chrome's jitter buffer stretches and squeezes time while it adapts; a click caught in
    # that is not the click's shape any more and is (rightly) not counted. The page gives a
    # result from 3 clicks on.
    if result["clicks"] < 3:
        skip_if_starved(a, skipped_before, f"only {result['clicks']} clicks came back")
    assert result["clicks"] >= 3, result
    assert 20 <= result["round_trip_ms"] <= 1500, result

    summary = a.text_content("#latency-test-summary")
    assert re.fullmatch(r"Round trip through the server: \d+ ms \(\d+ clicks\)", summary), summary
    assert f"{result['round_trip_ms']:.0f} ms ({result['clicks']} clicks)" in summary
    parts = {key: a.text_content(f"#latency-test-breakdown dd[data-part='{key}']")
             for key in ("media_rtt", "server", "jitter_buffer", "rest")}
    for key in ("server", "jitter_buffer", "rest"):
        assert re.search(r"\d ms$", parts[key]), parts
    breakdown = result["breakdown"]
    known = sum(breakdown[k] or 0 for k in ("media_rtt_ms", "server_ms", "jitter_buffer_ms"))
    assert breakdown["rest_ms"] == pytest.approx(result["round_trip_ms"] - known, abs=1e-6)

    # Restored: the microphone on the sender, self-monitoring off as before, the button back.
    assert a.evaluate("spatialjam.micOnSender()")
    assert not a.evaluate("spatialjam.state.monitorOn")
    assert a.text_content(me) == "Off"
    assert a.is_enabled("#latency-test-run")
    # And as heard: B hears A's tone again, A hears nothing of itself (B is silent).
    heard, levels = settle(b, lambda lv: lv["left_db"] > -50 or lv["right_db"] > -50)
    assert heard, f"B does not hear A's microphone after the test: {levels}"
    quiet, levels = settle(a, lambda lv: max(lv["left_db"], lv["right_db"]) < -60)
    assert quiet, f"A still hears itself after the test: {levels}"


#: In the page: a recording made of the 2 kHz test tone, noise, drum-like bursts and (or not)
#: the latency test's clicks ``delay_ms`` late; what ``looptest.findClicks`` makes of it.
FIND_CLICKS_JS = """async ({withClicks, delayMs}) => {
  const m = await import("/static/looptest.js");
  const sr = 48000, {click, onsets, signal} = m.clickPlan(sr);
  const n = signal.length + 1.5 * sr, delay = Math.round(delayMs / 1000 * sr);
  let seed = 7;
  const rand = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32) - 0.5;
  const left = new Float32Array(n), right = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    left[i] = 0.3 * Math.sin(2 * Math.PI * 2000 * i / sr) + 0.02 * rand();
    right[i] = 0.3 * Math.sin(2 * Math.PI * 2000 * i / sr + 1) + 0.02 * rand();
  }
  for (let hit = 0; hit < 20; hit++) {  // 30 ms noise bursts, up to half of full scale
    const at = Math.floor((rand() + 0.5) * (n - 1440));
    for (let k = 0; k < 1440; k++) left[at + k] += Math.exp(-k / 200) * rand();
  }
  if (withClicks) {
    for (const onset of onsets) {
      for (let k = 0; k < click.length; k++) right[onset + delay + k] += 0.5 * click[k];
    }
  }
  return {found: m.findClicks(left, right, click, onsets, sr).found.map(f => f.ms),
          sent: onsets.length, exact: 1000 * delay / sr};
}"""


def test_the_click_finder_times_clicks_to_the_sample_and_invents_none(jam):
    """The latency test's detector on a known recording: the other page's tone and loud
    drum-like bursts in the mix neither hide the clicks nor pass for them."""
    found = jam.a.evaluate(FIND_CLICKS_JS, {"withClicks": True, "delayMs": 123.4})
    assert len(found["found"]) >= found["sent"] - 1, found
    assert all(abs(ms - found["exact"]) < 0.05 for ms in found["found"]), found
    none = jam.a.evaluate(FIND_CLICKS_JS, {"withClicks": False, "delayMs": 123.4})
    assert none["found"] == [], none


def settle(page, wanted, band=BAND_HZ, wait_s: float = VERDICT_S,
           settle_s: float = SETTLE_S) -> tuple[bool, dict]:
    """Whether ``wanted(levels)`` holds for ``page``'s received ``band`` within ``wait_s``
    (after ``settle_s``)."""
    time.sleep(settle_s)
    deadline = time.monotonic() + wait_s
    while True:
        levels = page.evaluate("band => spatialjam.levels(band)", band)
        if wanted(levels):
            return True, levels
        if time.monotonic() > deadline:
            return False, levels
        time.sleep(0.25)


#: Where the AI's organ chords sound (A's tone is at 2 kHz, out of this band).
AI_BAND_HZ = {"lowHz": 80, "highHz": 1000}


def test_an_ai_musician_added_from_the_page_is_heard_and_removed(jam):
    b = jam.b
    quiet, before = settle(b, lambda lv: max(lv["left_db"], lv["right_db"]) < -55,
                           AI_BAND_HZ, settle_s=0)
    assert quiet, f"something already sounds in the AI's band: {before}"
    # The AI is judged alone in B's mix, at the panel's loudest: A's loud tone sits at the
    # band's edge, and what the accompanist plays (and how hard) depends on the models and the
    # listening; measured in B's band here: -52 to -50 dB with A's tone in the mix at 100 %,
    # -47 to -45 dB without it, against the -45 dB this test asks (bots: -44 to -42 dB).
    b.evaluate("a => spatialjam.send({type: 'mix_override', source: a, mute: true})", jam.a_id)
    b.select_option("[data-ai='role']", "accompany")
    b.select_option("[data-ai='instrument']", "organ")
    b.select_option("[data-ai='style']", "folk")
    b.fill("[data-ai='bpm']", "100")  # a fixed tempo: it plays once it has heard the key
    b.fill("[data-ai='volume']", "2")  # 200 %
    b.click("[data-ai='add']")
    b.wait_for_function("!document.querySelector(\"[data-ai='remove']\").disabled",
                        timeout=5_000)
    assert b.is_disabled("[data-ai='add']")
    assert b.get_attribute("[data-ai='midi']", "href").endswith(".mid")
    heard, levels = settle(b, lambda lv: max(lv["left_db"], lv["right_db"]) > -45,
                           AI_BAND_HZ, wait_s=25.0, settle_s=0)
    assert heard, f"B does not hear the AI musician: {levels}"
    # The panel says how far ahead it decides and how early its notes arrive (ai_hears), in
    # the style chosen.
    b.wait_for_function("document.querySelector(\"[data-ai='state']\").textContent"
                        ".includes('ms before it sounds; its notes reach the room')",
                        timeout=5_000)
    assert "plays folk style" in b.text_content("[data-ai='state']")
    b.click("[data-ai='remove']")
    b.wait_for_function("!document.querySelector(\"[data-ai='add']\").disabled",
                        timeout=5_000)
    gone, levels = settle(b, lambda lv: max(lv["left_db"], lv["right_db"]) < -55,
                          AI_BAND_HZ, settle_s=0)
    assert gone, f"the AI still sounds after its removal: {levels}"
    b.evaluate("a => spatialjam.send({type: 'mix_reset', source: a})", jam.a_id)


def test_the_client_loads_nothing_but_the_server(jam):
    errors = [r for r in jam.requests if r.startswith("pageerror")]
    assert not errors
    foreign = [r for r in jam.requests
               if not r.startswith((jam.base + "/", "data:", "blob:"))
               and not r.startswith(jam.base.replace("http", "ws", 1) + "/")]
    assert not foreign, f"requests beyond the server: {foreign}"
    assert any(r.endswith("/static/app.js") for r in jam.requests)
