"""End-to-end: the page a musician keeps open (issue 18), in real Chromium on the low-latency
transport: who is who and who is playing, muting yourself, the input gain and devices, the
playout buffer, chat, the keyboard, a phone, and a seat that survives a reload.
``SPATIALJAM_UPDATE_SCREENSHOT=1`` also writes the desktop and phone screenshots in ``docs/``.

Two pages in one room (tests/helpers/browser.py): A (Ada, "Sine") plays a 2 kHz tone, B (Bo)
listens. B's ears are measured in the page, in the tone's band; a hearing check that fails
while the machine was starved of CPU is skipped, saying so (``skip_if_starved``).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pytest

from bench.serverproc import ServerProcess
from tests.helpers.browser import (
    BAND_HZ,
    SETTLE_S,
    VERDICT_S,
    open_jam,
    settle_ild,
    skip_if_starved,
    skipped_ticks,
    steady_received,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"


def screenshot(page, name: str) -> None:
    """A full-page screenshot of ``page``, checked; written to docs/ when asked."""
    page.evaluate("window.scrollTo(0, 0)")
    shot = page.screenshot(full_page=True)
    assert shot.startswith(b"\x89PNG") and len(shot) < 2_000_000
    if os.environ.get("SPATIALJAM_UPDATE_SCREENSHOT"):
        (DOCS / name).write_bytes(shot)


@pytest.fixture(scope="module")
def server_url():
    with ServerProcess() as server:
        yield server.http


@pytest.fixture(scope="module")
def jam(server_url, tmp_path_factory):
    with open_jam(server_url, tmp_path_factory.mktemp("wav")) as opened:
        yield opened


def heard_db(page) -> float:
    """The tone's level in ``page``'s received mix, both ears together (dBFS, ~0.68 s)."""
    levels = page.evaluate("band => spatialjam.levels(band)", BAND_HZ)
    return 10 * math.log10(10 ** (levels["left_db"] / 10) + 10 ** (levels["right_db"] / 10))


def settled_db(page, wanted, measure=heard_db) -> float:
    """The first reading (``measure``: the tone's band), at least SETTLE_S after a change, for
    which ``wanted`` holds (or the last one, after VERDICT_S)."""
    time.sleep(SETTLE_S)
    deadline = time.monotonic() + VERDICT_S
    while True:
        db = measure(page)
        if wanted(db) or time.monotonic() > deadline:
            return db
        time.sleep(0.25)


def test_players_are_shown_by_name_with_their_instrument_and_who_is_playing(jam):
    b = jam.b
    b.wait_for_function("id => (spatialjam.state.levels[id] ?? -120) > -30", arg=jam.a_id,
                        timeout=10_000)
    assert b.evaluate("id => spatialjam.state.levels[id]", jam.b_id) == -120.0  # B is silent
    labels = {label["id"]: label for label in b.evaluate("spatialjam.stageLabels()")}
    assert labels[jam.a_id]["name"] == "Ada"
    assert labels[jam.a_id]["detail"].startswith("Sine · ")
    assert labels[jam.b_id]["name"] == "Bo (you)"
    row = f"[data-source='{jam.a_id}']"
    assert b.text_content(f"{row} .mix-who") == "Ada"
    assert b.text_content(f"{row} .mix-what") == "Sine"
    # Links take the theme's accent, not the browser's default blue on the dark page.
    link_colour = b.evaluate(
        "() => { const a = document.createElement('a'); a.href = '#x';"
        " document.body.append(a); const c = getComputedStyle(a).color; a.remove(); return c; }")
    assert link_colour == "rgb(255, 179, 71)", link_colour
    # The activity bar under A's name moves with A's tone.
    b.wait_for_function(f"parseFloat(document.querySelector(\"{row} .mix-level > span\")"
                        ".style.width) > 20", timeout=5_000)


def test_mute_myself_silences_me_for_the_others_and_shows_it_there(jam):
    a, b = jam.a, jam.b
    before = settled_db(b, lambda db: db > -40)
    starved = skipped_ticks(b)
    a.focus("body")
    a.keyboard.press("m")  # the key, as a player would
    b.wait_for_function(
        "id => spatialjam.state.members.find(m => m.id === id)?.muted === true",
        arg=jam.a_id, timeout=5_000)
    assert a.text_content("#mute-self") == "Unmute me"
    assert a.get_attribute("#mute-self", "aria-pressed") == "true"
    assert a.is_visible("#muted-note")
    muted = settled_db(b, lambda db: db < before - 40)
    if muted >= before - 40:
        skip_if_starved(b, starved, "A's tone was still heard after A muted")
    assert muted < before - 40, f"A muted: {muted:.1f} dB at B, against {before:.1f} before"
    labels = {label["id"]: label for label in b.evaluate("spatialjam.stageLabels()")}
    assert "muted" in labels[jam.a_id]["detail"]
    b.wait_for_function("id => spatialjam.state.levels[id] === -120", arg=jam.a_id,
                        timeout=5_000)

    a.click("#mute-self")  # the button unmutes
    b.wait_for_function(
        "id => spatialjam.state.members.find(m => m.id === id)?.muted === false",
        arg=jam.a_id, timeout=5_000)
    again = settled_db(b, lambda db: abs(db - before) < 2)
    assert abs(again - before) < 2, f"after unmuting {again:.1f} dB, before {before:.1f}"
    assert a.text_content("#mute-self") == "Mute me"


def test_an_input_gain_of_minus_12_db_lowers_what_the_other_hears_by_12_db(jam):
    a, b = jam.a, jam.b
    before = settled_db(b, lambda db: db > -40)
    starved = skipped_ticks(b)

    def set_gain(db: float) -> None:
        a.eval_on_selector("#input-gain", """(slider, db) => {
            slider.value = String(db);
            slider.dispatchEvent(new Event("input", { bubbles: true }));
        }""", db)

    set_gain(-12)
    assert a.text_content("#input-gain-value") == "−12.0 dB"
    assert a.evaluate("spatialjam.input().gainDb") == -12
    lowered = settled_db(b, lambda db: abs(before - db - 12) <= 1)
    if abs(before - lowered - 12) > 1:
        skip_if_starved(b, starved, "the input gain's step was not heard as 12 dB")
    assert before - lowered == pytest.approx(12, abs=1), (before, lowered)
    set_gain(0)
    assert a.evaluate("localStorage.getItem('spatialjam.inputGainDb')") == "0"
    settled_db(b, lambda db: abs(db - before) < 1)


def test_the_input_device_can_be_chosen_and_is_remembered(jam):
    a, b = jam.a, jam.b
    options = a.eval_on_selector_all("#input-device option", "os => os.map(o => o.value)")
    assert options, "no input device listed"
    chosen = next((o for o in options if o), "")  # a device of its own, not "default"
    a.select_option("#input-device", chosen)
    a.wait_for_function("id => spatialjam.input().deviceId === id", arg=chosen, timeout=5_000)
    if chosen:
        assert a.evaluate("localStorage.getItem('spatialjam.inputDevice')") == chosen
    assert a.evaluate("spatialjam.micOnSender()")
    assert settled_db(b, lambda db: db > -40) > -40, "A is not heard on the chosen input"
    # An output picker is offered where the browser can send audio to a chosen device.
    can = a.evaluate("'setSinkId' in AudioContext.prototype "
                     "&& 'setSinkId' in HTMLMediaElement.prototype")
    assert a.is_visible("#output-device-row") == can


def test_the_playout_buffer_can_be_fixed_by_hand_and_given_back_to_auto(jam):
    b = jam.b
    assert b.evaluate("spatialjam.transport") == "datachannel"
    assert b.is_visible("#buffer-row") and not b.is_visible("#buffer-media-note")
    frame_ms = b.evaluate("spatialjam.frameMs")
    b.select_option("#buffer", "3")
    b.wait_for_function(
        "ms => spatialjam.lowLatency()?.playout?.fixed === true"
        " && spatialjam.lowLatency().playout.target_ms === ms", arg=3 * frame_ms, timeout=5_000)
    assert b.evaluate("localStorage.getItem('spatialjam.playoutFrames')") == "3"
    assert settled_db(b, lambda db: db > -40) > -40  # A is still heard through it
    b.select_option("#buffer", "auto")
    b.wait_for_function("spatialjam.lowLatency()?.playout?.fixed === false", timeout=5_000)


def click_band_db(page) -> float:
    """The metronome's clicks (1.5 kHz) in ``page``'s received mix, both ears (dBFS)."""
    levels = page.evaluate("band => spatialjam.levels(band)", {"lowHz": 1300, "highHz": 1700})
    return 10 * math.log10(10 ** (levels["left_db"] / 10) + 10 ** (levels["right_db"] / 10))


def click_gaps_ms(y: np.ndarray, rate: int) -> np.ndarray:
    """The gaps between the clicks in ``y`` (ms): onsets above 0.05, 100 ms apart or more."""
    loud = np.flatnonzero(np.abs(y) > 0.05)
    onsets = np.concatenate([loud[:1], loud[1:][np.diff(loud) > rate // 10]])
    return 1e3 * np.diff(onsets) / rate


def beats_off_ms(y: np.ndarray, rate: int, beat_ms: float) -> float:
    """How far the worst gap between clicks is from a beat (ms; infinite with under two)."""
    gaps = click_gaps_ms(y, rate)
    return float(np.max(np.abs(gaps - beat_ms))) if len(gaps) else math.inf


def test_the_room_metronome_is_set_from_the_page_and_heard_as_each_player_chooses(jam):
    a, b = jam.a, jam.b
    a_mute = f"[data-source='{jam.a_id}'] .mix-mute"
    b.click(a_mute)  # B mutes A's tone in B's own mix: the clicks alone
    try:
        b.check("[data-metro='on']")
        b.fill("[data-metro='bpm']", "120")
        b.press("[data-metro='bpm']", "Enter")
        a.wait_for_function("spatialjam.state.metronome?.on && spatialjam.state.metronome.bpm"
                            " === 120", timeout=5_000)
        assert a.text_content("[data-metro='now']") == "♩ = 120 · 4 beats a bar"
        b.select_option("[data-metro='key']", "D major")  # the room's key, for an AI musician
        a.wait_for_function("spatialjam.state.metronome?.key === 'D major'", timeout=5_000)
        assert a.text_content("[data-metro='now']") == "♩ = 120 · 4 beats a bar · in D major"
        assert a.input_value("[data-metro='key']") == "D major"
        assert any(s["source"] == "metronome" for s in a.evaluate("spatialjam.state.stage"))
        assert b.text_content("[data-source='metronome'] .mix-who") == "Metronome"
        starved = skipped_ticks(b)
        centred = settled_db(b, lambda db: db > -60, click_band_db)
        if centred <= -60:
            skip_if_starved(b, starved, "B did not hear the metronome")
        assert centred > -60, centred
        # In the page's own audio, at 240 bpm: clicks a beat apart, to the millisecond.
        b.fill("[data-metro='bpm']", "240")
        b.press("[data-metro='bpm']", "Enter")
        b.wait_for_function("spatialjam.state.metronome?.bpm === 240", timeout=5_000)
        y, rate = steady_received(b, lambda y, rate: beats_off_ms(y, rate, 250.0) <= 1.0)
        beats_ms = click_gaps_ms(y, rate)
        assert len(beats_ms) >= 1, beats_ms
        assert np.all(np.abs(beats_ms - 250.0) <= 1.0), beats_ms
        b.select_option("[data-metro='hear']", "off")
        off = settled_db(b, lambda db: db < centred - 30, click_band_db)
        assert off < centred - 30, (centred, off)
        assert b.evaluate("localStorage.getItem('spatialjam.hearMetronome')") == "off"
    finally:
        b.select_option("[data-metro='hear']", "centre")
        b.select_option("[data-metro='key']", "")
        b.uncheck("[data-metro='on']")
        b.click(a_mute)
    a.wait_for_function("spatialjam.state.metronome?.on === false", timeout=5_000)


def test_the_admin_sets_the_rooms_frame_and_both_pages_play_on_at_it(jam):
    """Issue 17: the frame set from the page (``set_frame``); each page is told, makes a new
    low-latency connection at 5 ms and is heard again; then back to the server's 20 ms."""
    a, b = jam.a, jam.b
    assert b.text_content("[data-frame='now']") == "20 ms"
    before = settled_db(b, lambda db: db > -40)
    try:
        starved = skipped_ticks(b)
        a.select_option("[data-frame='choice']", "5")
        for page in (a, b):
            page.wait_for_function("spatialjam.frameMs === 5 && spatialjam.transport"
                                   " === 'datachannel' && spatialjam.peerState() === "
                                   "'connected'", timeout=20_000)
            assert page.text_content("[data-frame='now']") == "5 ms"
            assert "set the room's frame to 5 ms" in page.text_content(
                ".toast[data-code='frame_changed']")
        assert b.text_content(".toast[data-code='frame_changed']").startswith(
            "Room frame changed Ada set")
        assert b.evaluate("spatialjam.latency().frame_ms") == 5
        at_5 = settled_db(b, lambda db: abs(db - before) < 3)
        if abs(at_5 - before) >= 3:
            skip_if_starved(b, starved, "A was not heard as before at 5 ms frames")
        assert abs(at_5 - before) < 3, f"at 5 ms frames {at_5:.1f} dB, before {before:.1f}"
    finally:
        a.select_option("[data-frame='choice']", "20")
    for page in (a, b):
        page.wait_for_function("spatialjam.frameMs === 20 && spatialjam.peerState() === "
                               "'connected'", timeout=20_000)
    again = settled_db(b, lambda db: abs(db - before) < 3)
    assert abs(again - before) < 3, (before, again)


def test_chat_arrives_as_text_for_everyone_and_joiners_get_it(jam):
    a, b = jam.a, jam.b
    text = "<img src=x onerror=\"window.pwned=1\"><script>window.pwned=1</script> bar 17"
    a.fill("#chat-text", text)
    a.press("#chat-text", "Enter")
    b.wait_for_function("document.querySelectorAll('#chat-lines li').length > 0",
                        timeout=5_000)
    assert b.text_content("#chat-lines li:last-child span") == text
    assert b.text_content("#chat-lines li:last-child strong") == "Ada"
    assert b.evaluate("document.querySelectorAll('#chat-lines img, #chat-lines script').length"
                      ) == 0
    assert b.evaluate("window.pwned") is None and a.evaluate("window.pwned") is None
    assert a.input_value("#chat-text") == ""
    assert a.get_attribute("#chat-lines li:last-child", "class") == "chat-line mine"
    a.fill("#chat-text", "From the top, bar 17: one, two…")
    a.press("#chat-text", "Enter")
    b.wait_for_function("document.querySelectorAll('#chat-lines li').length > 1", timeout=5_000)
    screenshot(b, "client.png")


def press(page, key: str, times: int = 1) -> None:
    for _ in range(times):
        page.keyboard.press(key)


def keyboard_move(page, source: str, to_xy: tuple[float, float]) -> None:
    """Move ``source`` towards ``to_xy`` with the stage's arrow keys (0.25 m a press)."""
    at = page.evaluate("id => spatialjam.state.stage.find(s => s.source === id).position_m",
                       source)
    dx, dy = round((to_xy[0] - at[0]) / 0.25), round((to_xy[1] - at[1]) / 0.25)
    press(page, "ArrowUp" if dx > 0 else "ArrowDown", abs(dx))
    press(page, "ArrowLeft" if dy > 0 else "ArrowRight", abs(dy))
    want = (at[0] + 0.25 * dx, at[1] + 0.25 * dy)
    page.wait_for_function(
        """([id, x, y]) => spatialjam.state.stage.some(s => s.source === id
               && Math.abs(s.position_m[0] - x) < 0.02 && Math.abs(s.position_m[1] - y) < 0.02)""",
        arg=[source, *want], timeout=5_000)


def test_the_keyboard_alone_moves_an_instrument_from_the_listeners_left_to_the_right(jam):
    """Tab to the stage, N to A's marker, arrows to B's left: B hears A on the left (ILD > 0);
    arrows to B's right: the ILD flips. Shift+up raises A; the head does not turn meanwhile."""
    b = jam.b
    for _ in range(40):  # Tab through the page to the stage, as a keyboard user does
        if b.evaluate("document.activeElement?.id") == "stage":
            break
        b.keyboard.press("Tab")
    assert b.evaluate("document.activeElement?.id") == "stage"
    for _ in range(5):
        if b.evaluate("spatialjam.state.selected") == jam.a_id:
            break
        b.keyboard.press("n")
    assert b.evaluate("spatialjam.state.selected") == jam.a_id
    yaw = b.evaluate("spatialjam.headYawDeg")
    me = b.evaluate("id => spatialjam.state.stage.find(s => s.source === id).position_m",
                    jam.b_id)
    left = (-math.sin(math.radians(yaw)), math.cos(math.radians(yaw)))  # the head's +y
    starved = skipped_ticks(b)

    keyboard_move(b, jam.a_id, (me[0] + 2 * left[0], me[1] + 2 * left[1]))
    on_left, levels = settle_ild(b, lambda ild: ild >= 3.0)
    if on_left < 3.0:
        skip_if_starved(b, starved, "A was not heard on B's left")
    assert on_left >= 3.0, f"A on B's left: L−R = {on_left:.1f} dB ({levels})"
    keyboard_move(b, jam.a_id, (me[0] - 2 * left[0], me[1] - 2 * left[1]))
    on_right, levels = settle_ild(b, lambda ild: ild <= -3.0)
    if on_right > -3.0:
        skip_if_starved(b, starved, "A was not heard on B's right")
    assert on_right <= -3.0, f"A on B's right: L−R = {on_right:.1f} dB ({levels})"

    z = b.evaluate("id => spatialjam.state.stage.find(s => s.source === id).position_m[2]",
                   jam.a_id)
    b.keyboard.press("Shift+ArrowUp")
    b.wait_for_function(
        "([id, z]) => Math.abs(spatialjam.state.stage.find(s => s.source === id).position_m[2]"
        " - z) < 0.01", arg=[jam.a_id, round(z + 0.1, 2)], timeout=5_000)
    assert b.evaluate("spatialjam.headYawDeg") == yaw  # the stage's keys are the stage's
    b.keyboard.press("Escape")
    assert b.evaluate("spatialjam.state.selected") is None


def test_on_a_phone_the_page_fits_and_leave_is_in_reach(jam):
    """At 390 × 844 on a touch screen: no sideways scrolling, Mute and Leave inside the screen,
    the touch hint instead of the mouse and keyboard ones, names whole under the markers."""
    browser = jam.b.context.browser
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                has_touch=True)
    try:
        page = phone.new_page()
        page.goto(f"{jam.base}/?room=e2e&transport=media")
        page.fill("#name", "Cy on a phone")
        page.click("#join")
        page.wait_for_function("spatialjam.state.participant !== null", timeout=20_000)
        page.wait_for_function("spatialjam.state.stage.length === 3", timeout=5_000)
        fit = page.evaluate("""() => ({
            scroll: document.documentElement.scrollWidth, inner: innerWidth,
            leave: document.querySelector('#leave').getBoundingClientRect().toJSON(),
            mute: document.querySelector('#mute-self').getBoundingClientRect().toJSON()})""")
        assert fit["inner"] == 390 and fit["scroll"] <= fit["inner"], fit
        for button in ("leave", "mute"):
            box = fit[button]
            assert box["left"] >= 0 and box["right"] <= 390 and 0 <= box["top"] < 844, fit
        assert page.is_visible("[data-hint='touch']")
        assert not page.is_visible("[data-hint='desktop']")
        names = [label["name"] for label in page.evaluate("spatialjam.stageLabels()")]
        assert "Ada" in names and "Cy on a phone (you)" in names
        screenshot(page, "client-phone.png")
        page.click("#leave")
    finally:
        phone.close()


@pytest.mark.parametrize(("refusal", "words"), [
    ("NotAllowedError", "To allow it again: click the icon at the left of the address bar"),
    ("NotFoundError", "No microphone was found: plug one in"),
])
def test_a_refused_or_missing_microphone_is_explained_with_what_to_do(jam, refusal, words):
    """The browser's refusal, as the browser gives it (a DOMException whose numeric ``code``
    once showed as "8: …"), is told in words with the way out; no number, no code."""
    page = jam.b.context.browser.new_page()
    try:
        page.add_init_script(f"""navigator.mediaDevices.getUserMedia = async () => {{
            throw new DOMException("refused", "{refusal}"); }};""")
        page.goto(f"{jam.base}/?room=e2e")
        page.fill("#name", "Dee")
        page.click("#join")
        page.locator("#join-error").filter(has_text=words).wait_for(timeout=10_000)
        text = page.text_content("#join-error")
        assert not any(ch.isdigit() for ch in text), text
        assert page.is_visible("#join-screen") and page.is_enabled("#join")
    finally:
        page.close()


def test_copy_invite_link_gives_the_room_and_never_the_pages_token(jam):
    b = jam.b
    b.click("#copy-invite")
    toast = b.locator(".toast[data-code='invite']").last
    toast.wait_for(timeout=5_000)
    text = toast.text_content()
    assert f"{jam.base}/?room=e2e" in text and "token" not in text, text
    assert text.startswith("Invite link"), text  # words, not the code


def test_a_reload_rejoins_the_same_seat_place_and_personal_mix_by_itself(jam):
    b = jam.b
    me = b.evaluate("spatialjam.participant")
    row = f"[data-source='{jam.a_id}'] .mix-gain"
    b.eval_on_selector(row, """slider => {
        slider.value = "-6";
        slider.dispatchEvent(new Event("input", { bubbles: true }));
        slider.dispatchEvent(new Event("change", { bubbles: true }));
    }""")
    b.wait_for_function("id => spatialjam.state.personal.get(id)?.gainDb === -6",
                        arg=jam.a_id)
    place = b.evaluate("id => spatialjam.state.stage.find(s => s.source === id).position_m", me)
    lines = b.evaluate("document.querySelectorAll('#chat-lines li').length")
    quieter = settled_db(b, lambda db: db > -60)

    b.reload()  # no click after it: the page rejoins its seat by itself
    b.wait_for_function("window.spatialjam?.peerState() === 'connected'", timeout=20_000)
    assert b.evaluate("spatialjam.participant") == me
    assert b.is_hidden("#join-screen")
    assert b.evaluate("id => spatialjam.state.stage.find(s => s.source === id).position_m",
                      me) == place
    assert b.evaluate("id => spatialjam.state.personal.get(id)?.gainDb", jam.a_id) == -6
    assert b.input_value(row) == "-6"
    b.wait_for_function("n => document.querySelectorAll('#chat-lines li').length === n",
                        arg=lines, timeout=5_000)  # the chat so far, from the server
    # The server kept the mix too: A is heard as quietly as before the reload.
    after = settled_db(b, lambda db: abs(db - quieter) < 2)
    assert abs(after - quieter) < 2, (quieter, after)
    # Leave, then a reload: the join form, not the room.
    b.click("#leave")
    b.reload()
    b.wait_for_selector("#join-screen", state="visible")
    time.sleep(0.5)
    assert b.evaluate("spatialjam.participant") is None
