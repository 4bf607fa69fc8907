"""Real headless Chromium driving the web client: its launch settings (Debian's chromium, a fake
microphone playing a WAV file), joining a room through the join form, two joined pages ("a jam":
A plays a tone, B listens), dragging stage markers and reading B's level difference between the
ears in the page (``window.spatialjam.levels()``).

Needs Debian's ``chromium`` at /usr/bin/chromium (``make test`` installs it) and the
``playwright`` Python package; no browser is downloaded. tests/e2e/conftest.py skips every test
there when the browser is missing.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import pytest

from bench.chromium import CHROMIUM, CHROMIUM_ARGS, SAMPLE_RATE, write_wav

TONE_HZ = 2000.0  # KEMAR's ILD at 90° is ~6 dB at 1 kHz, ~10 dB here
BAND_HZ = {"lowHz": 1600, "highHz": 2500}
#: The in-page analysis window is ~0.68 s: give a move that long and some to reach the ears.
SETTLE_S = 1.2
VERDICT_S = 10.0
VIEWPORT = {"width": 1280, "height": 860}


class Jam:
    """Two joined pages (A plays the tone, B listens) and every URL they requested."""

    def __init__(self, base: str, a, b, requests: list[str]) -> None:
        self.base, self.a, self.b, self.requests = base, a, b, requests
        self.a_id = a.evaluate("spatialjam.participant")
        self.b_id = b.evaluate("spatialjam.participant")


@contextlib.contextmanager
def open_jam(server_url: str, folder: Path, query: str = ""):
    """Two Chromium pages joined to room e2e on ``server_url``: A plays a tone, B listens.
    ``query`` is added to the pages' address (``"&transport=media"``: the media track, not the
    low-latency data channel the client chooses by itself in Chromium)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    t = np.arange(4 * SAMPLE_RATE) / SAMPLE_RATE  # 4 s, a whole number of 1 kHz periods
    tone_wav = write_wav(folder / "tone.wav", 0.3 * np.sin(2 * np.pi * TONE_HZ * t))
    silence_wav = write_wav(folder / "silence.wav", np.zeros(4 * SAMPLE_RATE))
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browsers = []
        try:
            pages = []
            for name, instrument, wav in (("Ada", "Sine", tone_wav), ("Bo", "Ears", silence_wav)):
                # One browser process per page: the fake microphone file is a process flag.
                browser = p.chromium.launch(
                    executable_path=str(CHROMIUM), headless=True,
                    args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}"])
                browsers.append(browser)
                pages.append(join(browser, server_url, name, instrument, requests, query))
            b = pages[1]
            b.wait_for_function("spatialjam.state.stage.length === 2")
            yield Jam(server_url, pages[0], b, requests)
        finally:
            for browser in browsers:
                browser.close()


def join(browser, base: str, name: str, instrument: str, requests: list[str], query: str = ""):
    """Open the client (``query`` added to its address), fill in the join form, click Join,
    wait until the audio is live."""
    page = browser.new_page(viewport=VIEWPORT)
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: requests.append(f"pageerror: {error}"))
    page.goto(f"{base}/?room=e2e{query}")
    assert page.input_value("#room") == "e2e"
    page.fill("#name", name)
    page.fill("#instrument", instrument)
    page.click("#join")
    page.wait_for_function("window.spatialjam.peerState() === 'connected'", timeout=20_000)
    return page


def drag(page, source: str, to_xy: tuple[float, float]) -> None:
    """A real mouse drag of ``source``'s marker to room ``to_xy`` on ``page``'s stage."""
    start = page.evaluate("id => spatialjam.markerViewport(id)", source)
    end = page.evaluate("xy => spatialjam.roomViewport(xy)", list(to_xy))
    page.mouse.move(start["x"], start["y"])
    page.mouse.down()
    page.mouse.move(end["x"], end["y"], steps=12)
    page.mouse.up()


def wait_for_stage_position(page, source: str, xy: tuple[float, float]) -> None:
    """Until ``page`` has heard from the server that ``source`` stands at ``xy``."""
    page.wait_for_function(
        """([id, x, y]) => spatialjam.state.stage.some(s => s.source === id
               && Math.abs(s.position_m[0] - x) < 0.01 && Math.abs(s.position_m[1] - y) < 0.01)""",
        arg=[source, *xy], timeout=5_000)


def ild_db(page) -> tuple[float, dict]:
    """Left minus right level of B's received mix around 1 kHz (dB), and the levels."""
    levels = page.evaluate("band => spatialjam.levels(band)", BAND_HZ)
    return levels["left_db"] - levels["right_db"], levels


def settle_ild(page, wanted) -> tuple[float, dict]:
    """The first ILD reading, at least SETTLE_S after a move, for which ``wanted`` holds."""
    time.sleep(SETTLE_S)
    deadline = time.monotonic() + VERDICT_S
    while True:
        ild, levels = ild_db(page)
        if wanted(ild) or time.monotonic() > deadline:
            return ild, levels
        time.sleep(0.25)


def place_b_at_the_centre_facing_front(jam: Jam) -> None:
    b = jam.b
    drag(b, jam.b_id, (0.0, 0.0))
    wait_for_stage_position(jam.a, jam.b_id, (0.0, 0.0))
    b.click("#face-front")
    b.keyboard.press("ArrowLeft")  # keys turn the head: left is positive yaw
    assert b.evaluate("spatialjam.headYawDeg") == 5
    b.click("#face-front")
    assert b.evaluate("spatialjam.headYawDeg") == 0
    assert b.text_content("#yaw-value") == "0° (front)"


#: Ticks the server may skip during a step before the machine counts as starved of CPU (a
#: second of 20 ms ticks). On the shared 2-core machine, other work can starve the server and
#: Chromium for tens of seconds (seen: 2,000-3,000 skipped ticks, WebCodecs taking 14 ms per
#: frame): what a page then hears is no verdict on the code.
STARVED_SKIPPED_TICKS = 50


def skipped_ticks(page) -> int:
    """The room's skipped ticks so far, as the page's last ``stats`` says (0 before any)."""
    return (page.evaluate("spatialjam.latency().server") or {}).get("skipped_ticks") or 0


def skip_if_starved(page, before: int, what: str) -> None:
    """Skip the test, saying why, if the server skipped more than STARVED_SKIPPED_TICKS ticks
    since ``before`` (:func:`skipped_ticks`): called only where ``what`` failed."""
    skipped = skipped_ticks(page) - before
    if skipped > STARVED_SKIPPED_TICKS:
        pytest.skip(f"{what}, but the machine was starved of CPU meanwhile ({skipped} ticks "
                    "skipped): not a verdict on the code")


#: The page's playout counts that move its audio in time: a frame concealed, skipped or
#: added, a restart, an overflow, a clock-drift slip. Any of them in a window shifts what
#: follows (by up to a frame).
TIME_MOVES = ("underruns", "concealed", "overflows", "restarts", "shrunk", "skipped", "late",
              "dropped", "inserted")
#: How long :func:`steady_received` waits at most for two more of the server's ``stats``
#: (every second) after a window: the second was made after it, however late it arrives
#: (the page's playout stats come every 0.25 s).
REPORTS_WITHIN_S = 15.0


def time_moves(page) -> float:
    """What has moved the page's received audio in time so far: its playout's counts
    (:data:`TIME_MOVES`, low-latency transport) plus the ticks the room skipped."""
    playout = page.evaluate("spatialjam.lowLatency()?.playout") or {}
    return sum(playout.get(name) or 0 for name in TIME_MOVES) + skipped_ticks(page)


def steady_received(page, holds, tries: int = 3) -> tuple[np.ndarray, int]:
    """The page's last ~0.68 s of received audio (left ear) and its rate, taken when
    ``holds(samples, rate)`` is true or when nothing moved that audio in time meanwhile.

    A window where the playout concealed or skipped a frame, or the room skipped a tick, is
    no verdict on timing: it is taken again, up to ``tries`` times, and the test is skipped,
    saying why, if every window was moved. A window that fails with nothing moved is returned
    for the caller's assert to fail on."""
    for _ in range(tries):
        before = time_moves(page)
        time.sleep(SETTLE_S)  # the whole window after ``before``'s reports
        received = page.evaluate("spatialjam.received()")
        samples, rate = np.array(received["samples"]), int(received["rate"])
        if holds(samples, rate):
            return samples, rate
        page.wait_for_function(
            "n => (spatialjam.latency().server_reports ?? 0) >= n",
            arg=(page.evaluate("spatialjam.latency().server_reports") or 0) + 2,
            timeout=REPORTS_WITHIN_S * 1000)
        if time_moves(page) == before:
            return samples, rate
    pytest.skip(f"the received audio was moved in time (a frame concealed or skipped, or a "
                f"tick skipped) in each of {tries} windows: not a verdict on its timing")
