"""Room access tokens in real headless Chromium: the web client against a ``spatialjam serve``
that needs tokens (``--secret-file``).

Pages open links as a host hands them out (``/?room=R&token=T``) and do everything through the
page: the join form, the stage (a mouse drag), the "Lock room" toggle, the "Remove" button of
the mix list. What is checked is what the musician sees (the join screen's message, badges,
disabled controls) and what the server did (the ``room_state`` the admin's page received).

Needs Debian's ``chromium`` at /usr/bin/chromium and the ``playwright`` Python package, as
``tests/e2e/test_browser.py`` (whose launch settings and stage helpers, in
``tests/helpers/browser.py``, this module uses).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from bench.serverproc import ServerProcess
from server.web.access import read_secret_file, write_new_secret
from signaling.access import LEEWAY_S, mint
from tests.helpers.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    VIEWPORT,
    drag,
    wait_for_stage_position,
)
from tests.helpers.live import mint_for

ROOM = "band"
#: How long the page that joins with a token about to run out may take to join.
SHORT_TOKEN_S = 8.0
#: How long a page is watched for a reconnection it should not make (the first retry of
#: signaling.js comes after 0.2 to 0.3 s).
NO_RETRY_S = 1.5


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    secret_file = write_new_secret(tmp_path_factory.mktemp("secret") / "secret")
    with ServerProcess("--secret-file", str(secret_file)) as srv:
        yield srv, read_secret_file(secret_file)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Visit:
    """One page opened from a link, and the WebSockets it opened (their URLs)."""

    page: object
    sockets: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def participant(self) -> str | None:
        return self.page.evaluate("spatialjam.participant")

    def join_error(self) -> str:
        """The join screen's message, once there is one."""
        self.page.locator("#join-error").filter(has_text=":").wait_for(timeout=15_000)
        assert self.page.is_visible("#join-screen") and not self.page.is_visible("#jam")
        return self.page.text_content("#join-error")


def visit(browser, base: str, token: str, name: str, room: str = ROOM) -> Visit:
    """Open ``/?room=…&token=…`` in a fresh context, fill in the name and click Join."""
    v = Visit(browser.new_page(viewport=VIEWPORT))
    v.page.on("websocket", lambda ws: v.sockets.append(ws.url))
    v.page.on("pageerror", lambda error: v.errors.append(str(error)))
    v.page.goto(f"{base}/?room={room}&token={token}")
    v.page.fill("#name", name)
    v.page.click("#join")
    return v


def joined(v: Visit) -> Visit:
    v.page.wait_for_function("spatialjam.participant !== null", timeout=20_000)
    return v


def access_refusal(base: str, token: str) -> str | None:
    """The code ``GET /access`` refuses ``token`` with, or None while it is good."""
    try:
        with urllib.request.urlopen(f"{base}/access?token={token}"):
            return None
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())["code"]


def test_an_expired_link_is_explained_and_never_joins_even_after_a_drop(server, browser):
    srv, secret = server
    # Good now, refused SHORT_TOKEN_S from now (the server forgives LEEWAY_S of clock skew).
    short = mint(secret, room="night", identity="brief", ttl_s=SHORT_TOKEN_S,
                 now=time.time() - LEEWAY_S)
    brief = joined(visit(browser, srv.http, short, "Brief", room="night"))
    assert brief.sockets == [f"{srv.ws}?token={quote(short, safe='')}"]
    # The page's address keeps the token when the client rewrites it: a reload keeps access.
    assert parse_qs(urlsplit(brief.page.url).query) == {"room": ["night"], "token": [short]}

    expired = mint(secret, room=ROOM, identity="ada", ttl_s=60, now=time.time() - 600)
    late = visit(browser, srv.http, expired, "Ada")
    message = late.join_error()
    assert message.startswith("Access expired: the access token expired"), message
    assert "new link" in message and "cannot reach" not in message
    assert late.participant is None and len(late.sockets) == 1
    assert late.page.text_content("#status") == "Not connected"

    # The first page's token runs out while it is in the room; then its connection drops.
    deadline = time.monotonic() + SHORT_TOKEN_S + 10
    while access_refusal(srv.http, short) is None:
        assert time.monotonic() < deadline, "the short token is still accepted"
        time.sleep(0.3)
    brief.page.evaluate("spatialjam.drop()")
    message = brief.join_error()
    assert message.startswith("Access expired:"), message
    time.sleep(NO_RETRY_S)
    assert len(brief.sockets) == 2, f"it went on retrying: {brief.sockets}"
    assert brief.participant is None
    assert not brief.errors and not late.errors


@dataclass
class Band:
    """The room's admin and a player (grants join and publish: no move, no admin), joined."""

    admin: Visit
    player: Visit
    admin_id: str
    player_id: str


@pytest.fixture(scope="module")
def band(server, browser):
    srv, secret = server
    admin = joined(visit(browser, srv.http, mint_for(secret, ROOM, "host", "admin"), "Host"))
    player = joined(visit(browser, srv.http, mint_for(secret, ROOM, "player"), "Player"))
    admin.page.wait_for_function("spatialjam.state.members.length === 2")
    yield Band(admin, player, admin.participant, player.participant)
    assert not admin.errors and not player.errors


def stage_of(v: Visit) -> dict[str, list[float]]:
    return {p["source"]: p["position_m"]
            for p in v.page.evaluate("spatialjam.state.stage")}


def test_the_page_offers_what_the_token_grants(band):
    admin, player = band.admin.page, band.player.page
    # The player: moving others goes to their own mix (said so), no AI controls, no "Remove".
    assert player.is_checked("#personal-mode") and player.is_disabled("#personal-mode")
    assert "no 'move' grant" in player.get_attribute("#personal-mode-toggle", "title")
    assert player.is_visible("#move-hint")
    assert player.is_disabled("[data-ai='add']") and player.is_disabled("[data-ai='role']")
    assert player.is_visible("[data-ai='reason']")
    assert not player.is_visible("#lock-room-toggle")
    assert player.locator(".mix-kick:visible").count() == 0
    # The admin: all of it.
    assert not admin.is_checked("#personal-mode") and admin.is_enabled("#personal-mode")
    assert not admin.is_visible("#move-hint")
    assert admin.is_enabled("[data-ai='add']") and not admin.is_visible("[data-ai='reason']")
    assert admin.is_visible("#lock-room-toggle") and not admin.is_visible("#room-locked")
    assert admin.is_visible(f"[data-source='{band.player_id}'] .mix-kick")
    assert admin.locator(f"[data-source='{band.admin_id}'] .mix-kick").count() == 0
    # A refused action shows as a notice; the session goes on.
    player.evaluate("spatialjam.send({type: 'lock_room', locked: true, id: 'l1'})")
    player.locator(".toast[data-code='forbidden']", has_text="Not allowed").wait_for(
        timeout=5_000)
    assert player.evaluate("spatialjam.state.errors.at(-1).id") == "l1"
    assert player.text_content("#status").startswith("In room")


def test_a_player_without_move_drags_the_admin_in_their_own_mix_only(band):
    admin, player = band.admin.page, band.player.page
    before = stage_of(band.admin)
    refusals = "spatialjam.state.errors.filter(e => e.code === 'forbidden').length"
    forbidden = player.evaluate(refusals)
    drag(player, band.admin_id, (0.0, 3.0))
    player.wait_for_function(
        "id => String(spatialjam.state.personal.get(id)?.position?.slice(0, 2)) === '0,3'",
        arg=band.admin_id, timeout=5_000)
    # Their own marker still moves on the shared stage; by the time the admin's page has that
    # move, it has had everything the player's page sent before it.
    drag(player, band.player_id, (-2.0, -2.0))
    wait_for_stage_position(admin, band.player_id, (-2.0, -2.0))
    after = stage_of(band.admin)
    assert after[band.admin_id] == before[band.admin_id], (before, after)
    assert stage_of(band.player)[band.admin_id] == before[band.admin_id]
    assert player.evaluate(refusals) == forbidden  # nothing was sent that needs 'move'


def test_the_admin_locks_the_room_and_a_newcomer_is_refused(band, server, browser):
    srv, secret = server
    admin, player = band.admin.page, band.player.page
    admin.check("#lock-room")
    admin.wait_for_function("spatialjam.state.locked === true", timeout=5_000)
    player.locator("#room-locked").wait_for(timeout=5_000)  # everyone sees the badge
    assert admin.is_visible("#room-locked") and admin.is_checked("#lock-room")

    late = visit(browser, srv.http, mint_for(secret, ROOM, "late"), "Late")
    message = late.join_error()
    assert message.startswith("Room locked:") and "locked by its admin" in message, message
    assert late.participant is None
    assert admin.evaluate("spatialjam.state.members.length") == 2


def test_the_admin_removes_the_player_who_is_told_why_and_stays_out(band):
    admin, player = band.admin.page, band.player.page
    admin.once("dialog", lambda dialog: dialog.accept())  # "Remove Player from the room?"
    admin.click(f"[data-source='{band.player_id}'] .mix-kick")
    message = band.player.join_error()
    assert message == f"Removed: Host removed you from room '{ROOM}'", message
    admin.wait_for_function("spatialjam.state.members.length === 1", timeout=5_000)
    time.sleep(NO_RETRY_S)
    assert len(band.player.sockets) == 1, f"it reconnected: {band.player.sockets}"
    assert band.player.participant is None
    assert player.text_content("#status") == "Not connected"
