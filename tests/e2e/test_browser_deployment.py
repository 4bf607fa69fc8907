"""The web client in real headless Chromium in a home of the model internet
(tests/helpers/netns.py), joining the recipe's server in the cloud (tests/helpers/netserve.py
``serve_recipe``) over HTTPS: the latency panel names the path its audio takes
(client_web/icepath.js).

Chromium runs inside the home's namespace: Playwright's driver, and the browser it starts, are
started from a thread that has entered it, and a process starts in its parent thread's network
namespace. It trusts the one test certificate of the server (and of coturn) by their public keys
(``--ignore-certificate-errors-spki-list``), as a browser trusts a certificate from a real CA.
Chromium checks coturn's certificate for TURN over TLS too: without coturn's key in that list it
gathers no relay candidate (tried by hand), so a ``turns:`` server needs a certificate browsers
trust, as the page's does.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.helpers.browser import CHROMIUM, CHROMIUM_ARGS, VIEWPORT
from tests.helpers.live import mint_for
from tests.helpers.netserve import serve_recipe

ROOM = "band"
PATH = "document.querySelector(\"dd[data-stat='path']\").textContent"
#: Joining, ICE and the first stats of the page; the session in all.
CONNECT_MS = 20_000
SESSION_S = 60.0


def spki_sha256(pem: Path) -> str:
    """base64 of the SHA-256 of the (first) certificate's public key (SubjectPublicKeyInfo), as
    Chromium's ``--ignore-certificate-errors-spki-list`` takes it."""
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def panel_path(url: str, pins: list[str]) -> tuple[str, str]:
    """Join ``url`` in a fresh Chromium (in the calling thread's network namespace), wait for
    the latency panel to name the media path; the label and the path's kind."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={','.join(pins)}"])
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(url)
            page.fill("#name", "Ada")
            page.click("#join")
            page.wait_for_function("window.spatialjam.peerState() === 'connected'",
                                   timeout=CONNECT_MS)
            page.wait_for_function(f"{PATH} !== '—'", timeout=CONNECT_MS)
            return page.evaluate(PATH), page.evaluate("spatialjam.latency().path.kind")
        finally:
            browser.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("firewall", "label", "kind"), [
    (False, "through NAT (UDP)", "nat"),
    (True, "relayed by TURN (TCP/TLS)", "relay"),
])
def test_the_panel_names_the_path_from_a_home_to_the_cloud(internet, ca, turn, firewall, label,
                                                           kind):
    """From home 1 over HTTPS to the server's public address (``--public-ip``): UDP straight
    to the server through the home's NAT, which the panel says ("through NAT": the checks'
    mapped address is the server-reflexive candidate Chromium got from coturn, so that is the
    pair's local end, RFC 8445 section 7.2.5.3.2); with the home's UDP blocked but to coturn's
    TLS port, "relayed by TURN (TCP/TLS)"."""
    net = internet
    home = net.homes[0]
    if firewall:
        net.block_udp(home, except_to=[(turn.address, 5349)])
    served = serve_recipe(net, ca, turn)
    token = mint_for(served.secret, ROOM, "ada")
    pins = [spki_sha256(ca.folder / "server.pem"), spki_sha256(ca.folder / "turn.pem")]
    shown = net.call(home, panel_path, f"{served.http}/?room={ROOM}&token={token}", pins,
                     timeout=SESSION_S)
    assert shown == (label, kind)
