"""The web client's recording panel in real headless Chromium: the room's admin clicks Record
and Stop, the finished recording appears in the list, and its link downloads the FLAC file of
the page's own microphone (a fake capture device playing a tone).

Needs Debian's ``chromium`` at /usr/bin/chromium and the ``playwright`` Python package, as
``tests/e2e/test_browser.py`` (whose launch settings and join helper, in
``tests/helpers/browser.py``, this module uses).
"""

from __future__ import annotations

import io
import re
import time
import urllib.request

import numpy as np
import pytest
import soundfile

from bench.serverproc import ServerProcess
from hrtf.constants import SAMPLE_RATE
from tests.helpers.audio import band_envelope
from tests.helpers.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    join,
    write_wav,
)

TONE_HZ = 1000.0


def test_the_admin_records_from_the_page_and_the_list_downloads_the_players_file(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    t = np.arange(4 * SAMPLE_RATE) / SAMPLE_RATE  # 4 s, a whole number of 1 kHz periods
    wav = write_wav(tmp_path / "tone.wav", 0.3 * np.sin(2 * np.pi * TONE_HZ * t))
    requests: list[str] = []
    with ServerProcess("--recordings", str(tmp_path / "recordings")) as server, \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}"])
        try:
            page = join(browser, server.http, "Ada", "Sine", requests)
            toggle = page.locator("[data-rec='toggle']")
            assert toggle.text_content() == "Record" and toggle.is_enabled()  # open room: admin
            assert page.is_visible("[data-rec='none']")  # nothing recorded yet
            me = page.evaluate("spatialjam.participant")
            page.select_option("[data-rec='mixdown']", me)  # "Ada's mix": a mixdown too
            assert page.text_content("[data-rec='mixdown'] option:checked") == "Ada's mix"
            toggle.click()
            page.wait_for_function("spatialjam.state.recording !== null")
            assert page.evaluate("spatialjam.state.recording.binaural_of") == me
            assert toggle.text_content() == "Stop"
            assert page.text_content("[data-rec='state']").startswith("Recording since")
            time.sleep(2.0)
            toggle.click()
            link = page.locator("[data-rec='list'] a", has_text=re.compile("^Ada-"))
            link.wait_for(timeout=15_000)
            assert toggle.text_content() == "Record" and not page.is_visible("[data-rec='none']")
            mixdown = page.locator("[data-rec='list'] a", has_text="binaural-Ada-")
            assert mixdown.get_attribute("href").endswith(".flac")
            href = link.get_attribute("href")
            assert href.startswith("/recordings/e2e/") and href.endswith(".flac")
            with urllib.request.urlopen(server.http + href) as reply:
                data, rate = soundfile.read(io.BytesIO(reply.read()), dtype="float32")
        finally:
            browser.close()
    assert not [r for r in requests if r.startswith("pageerror")], requests
    assert rate == SAMPLE_RATE and 1.5 * SAMPLE_RATE < len(data) < 6 * SAMPLE_RATE
    assert np.median(band_envelope(data, TONE_HZ)) > 0.05  # the page's own tone, dry
