"""The Sound panel in real headless Chromium: the web client against a ``spatialjam serve``.

Page A's fake microphone plays a 2 kHz tone; A stands 2 m to the left of page B, who listens
facing front. Everything in B's page is done as a musician would: choose the spherical head and
drag its radius, pick "Your SOFA file…" and give the file chooser a good file (KEMAR with its
ears swapped: A's tone moves to B's right ear) and then a text file (refused: the server's
reason is shown in the panel), toggle the reference mode (plain panning: the tone jumps fully
left) and, as the room's admin (open rooms grant it), choose a room preset.

Needs Debian's ``chromium`` at /usr/bin/chromium and the ``playwright`` Python package, as
``tests/e2e/test_browser.py`` (whose launch settings, in ``tests/helpers/browser.py``, this
module uses).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import sofar

from bench.serverproc import ServerProcess
from hrtf.sofa import default_sofa_path
from tests.helpers.browser import (
    BAND_HZ,
    CHROMIUM,
    CHROMIUM_ARGS,
    SAMPLE_RATE,
    SETTLE_S,
    TONE_HZ,
    VERDICT_S,
    VIEWPORT,
    write_wav,
)

ROOM = "sound"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sound")
    kemar = sofar.read_sofa(default_sofa_path(), verify=False, verbose=False)
    kemar.Data_IR = kemar.Data_IR[:, ::-1, :].copy()  # left and right ears swapped
    sofar.write_sofa(str(folder / "swapped.sofa"), kemar)
    (folder / "notes.sofa").write_text("azimuth, left, right\n0, 0.5, 0.5\n")
    t = np.arange(4 * SAMPLE_RATE) / SAMPLE_RATE
    write_wav(folder / "tone.wav", 0.3 * np.sin(2 * np.pi * TONE_HZ * t))
    write_wav(folder / "silence.wav", np.zeros(4 * SAMPLE_RATE))
    return folder


@pytest.fixture(scope="module")
def pages(files, tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api")
    with ServerProcess() as server, sync_api.sync_playwright() as p:
        browsers, opened = [], []
        try:
            for name, wav in (("A", "tone.wav"), ("B", "silence.wav")):
                browser = p.chromium.launch(
                    executable_path=str(CHROMIUM), headless=True,
                    args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={files / wav}"])
                browsers.append(browser)
                page = browser.new_page(viewport=VIEWPORT)
                errors: list[str] = []
                page.on("pageerror", lambda error, errors=errors: errors.append(str(error)))
                page.goto(f"{server.http}/?room={ROOM}")
                page.fill("#name", name)
                page.click("#join")
                page.wait_for_function("spatialjam.peerState() === 'connected'", timeout=20_000)
                opened.append((page, errors))
            (a, a_errors), (b, b_errors) = opened
            b.wait_for_function("spatialjam.state.stage.length === 2")
            a.evaluate("spatialjam.send({type: 'move_source', source: spatialjam.participant, "
                       "position_m: [0, 2, 1.2]})")
            b.evaluate("spatialjam.send({type: 'move_source', source: spatialjam.participant, "
                       "position_m: [0, 0, 1.2]})")
            b.click("#face-front")
            yield a, b
            assert not a_errors and not b_errors, (a_errors, b_errors)
        finally:
            for browser in browsers:
                browser.close()


def ild_db(page, wanted) -> float:
    """B's received left minus right level around the tone (dB): the first reading, at least
    SETTLE_S after a change, for which ``wanted`` holds (or the last, after VERDICT_S)."""
    time.sleep(SETTLE_S)
    deadline = time.monotonic() + VERDICT_S
    while True:
        levels = page.evaluate("band => spatialjam.levels(band)", BAND_HZ)
        ild = levels["left_db"] - levels["right_db"]
        if (wanted(ild) and levels["left_db"] > -60) or time.monotonic() > deadline:
            return ild
        time.sleep(0.25)


def sound(page, name: str):
    return page.locator(f"[data-sound='{name}']")


def now_hearing(page, text: str) -> None:
    sound(page, "now").filter(has_text=text).wait_for(timeout=10_000)


def test_the_sound_panel_chooses_uploads_refuses_and_compares(pages, files):
    _, b = pages
    now_hearing(b, "Hearing through MIT_KEMAR_normal_pinna.sofa")
    assert b.input_value("[data-sound='hrtf']") == "kemar"
    assert ild_db(b, lambda ild: ild > 3.0) > 3.0  # A's tone is on B's left

    # The spherical head, then a bigger one with the slider.
    sound(b, "hrtf").select_option("spherical-head")
    now_hearing(b, "spherical-head (a = 8.75 cm)")
    assert sound(b, "radius").is_visible() and not sound(b, "file").is_visible()
    sound(b, "radius").fill("0.1")  # a range input: sets the value, fires input and change
    now_hearing(b, "spherical-head (a = 10.00 cm)")
    assert sound(b, "radius-value").text_content() == "10.00 cm"
    assert b.evaluate("spatialjam.rendering.head_radius_m") == 0.1

    # Your own file: choosing the option opens the file chooser.
    with b.expect_file_chooser() as chooser:
        sound(b, "hrtf").select_option("sofa")
    chooser.value.set_files(str(files / "swapped.sofa"))
    sound(b, "upload-state").filter(
        has_text='"swapped.sofa" taken: 710 directions, 538 taps at 48 kHz.').wait_for(
        timeout=20_000)
    now_hearing(b, "Hearing through swapped.sofa")
    assert sound(b, "progress").is_hidden() and sound(b, "refusal").text_content() == ""
    assert ild_db(b, lambda ild: ild < -3.0) < -3.0  # the ears swapped: the tone is right

    # A file that is no SOFA file: refused, in the server's words; the set stays.
    sound(b, "file").set_input_files(str(files / "notes.sofa"))
    sound(b, "refusal").filter(has_text="refused").wait_for(timeout=20_000)
    refusal = sound(b, "refusal").text_content()
    assert refusal.startswith("Your file was refused: 'notes.sofa' cannot be used as an HRTF "
                              "set: it is not a SOFA file: it looks like a text file"), refusal
    assert b.input_value("[data-sound='hrtf']") == "sofa"
    assert b.evaluate("spatialjam.rendering.hrtf_name") == "swapped.sofa"
    assert b.locator(".toast").count() == 0  # shown in the panel, not as a notice

    # The reference (no HRTF): plain panning puts the tone hard left; and back.
    sound(b, "reference").check()
    now_hearing(b, "Reference: stereo panning, no HRTF")
    assert ild_db(b, lambda ild: ild > 15.0) > 15.0
    sound(b, "reference").uncheck()
    now_hearing(b, "Hearing through swapped.sofa")
    assert ild_db(b, lambda ild: ild < -3.0) < -3.0

    # Room acoustics: off for me, then the room (B is its admin: rooms are open here).
    sound(b, "acoustics").uncheck()
    b.wait_for_function("spatialjam.rendering.acoustics === false", timeout=5_000)
    assert sound(b, "room-reason").is_hidden() and sound(b, "wet").is_disabled()
    sound(b, "preset").select_option("club")
    sound(b, "room-now").filter(has_text="club: 20 × 14 × 6 m, reverberation 1 s").wait_for(
        timeout=10_000)
    sound(b, "wet").fill("0.3")
    b.wait_for_function("spatialjam.state.acoustics?.wet === 0.3", timeout=5_000)
    assert b.text_content("[data-sound='wet-value']") == "30 % wet"
