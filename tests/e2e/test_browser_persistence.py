"""Saved rooms survive a restart, as the web client sees it: real headless Chromium against a
``spatialjam serve --state`` that gets SIGTERM; the page says the server is restarting, then
rejoins its seat on the new server. (The rest of saving and restoring rooms, without a browser:
tests/integration/test_persistence.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from bench.serverproc import ServerProcess
from tests.helpers.browser import CHROMIUM, CHROMIUM_ARGS, join, write_wav

#: Records every text the page shows in its status line and its notices, as it changes.
SHOWN = """
window.shown = [];
const observe = (element) => new MutationObserver(() => {
  for (const node of [element, ...element.children]) window.shown.push(node.textContent);
}).observe(element, {childList: true, characterData: true, subtree: true});
observe(document.querySelector('#status'));
observe(document.querySelector('#toasts'));
"""


def test_the_web_client_shows_the_restart_and_rejoins_its_seat_after_the_hint(tmp_path):
    """Real Chromium: the page says the server is restarting, then comes back to its seat."""
    sync_api = pytest.importorskip("playwright.sync_api")
    state = str(tmp_path / "rooms.sqlite3")
    mic = write_wav(tmp_path / "silence.wav", np.zeros(48_000))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=[*CHROMIUM_ARGS,
                                          f"--use-file-for-fake-audio-capture={mic}"])
        try:
            first = ServerProcess("--state", state)
            with first:
                page = join(browser, first.http, "Ada", "Cello", [])
                me = page.evaluate("spatialjam.participant")
                page.evaluate(f"spatialjam.send({{type: 'move_source', source: '{me}', "
                              "position_m: [1.5, -0.5, 1.2]})")
                page.wait_for_function(
                    "id => spatialjam.state.stage.some(s => s.source === id "
                    "&& s.position_m[0] === 1.5)", arg=me, timeout=5_000)
                rejoins = page.evaluate("spatialjam.state.rejoins")
                page.evaluate(SHOWN)
                assert first.stop() == 0
            second = ServerProcess("--state", state)
            second.port = first.port  # the page reconnects where it was
            with second:
                page.wait_for_function(
                    "n => spatialjam.state.rejoins > n && spatialjam.peerState() === 'connected'",
                    arg=rejoins, timeout=30_000)
                assert page.evaluate("spatialjam.participant") == me
                mine = page.evaluate(
                    "id => spatialjam.state.stage.find(s => s.source === id).position_m", me)
                assert mine == [1.5, -0.5, 1.2]
                shown = page.evaluate("window.shown")
                assert any(text.startswith("Server restarting") for text in shown), shown
                # ...and the notice, in words (its title is not the code 'server_closing').
                assert any(text.startswith("Server restarting") and "seat and mix are kept" in text
                           for text in shown), shown
        finally:
            browser.close()
