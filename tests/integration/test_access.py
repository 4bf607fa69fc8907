"""Room access: tokens minted and checked (signaling.access), the secret (server.web.access), the
``spatialjam token`` command, and a real server that needs tokens, refusing each wrong one at
the handshake or the action with its stable code."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import jwt
import pytest

from bench.bot import Bot, tone
from bench.serverproc import ServerProcess
from server.web.access import (
    AccessPolicy,
    SecretError,
    load_secret,
    read_secret_file,
    token_in,
    write_new_secret,
)
from signaling.access import GRANTS, OPEN, AccessError, mint, verify
from signaling.errors import ErrorCode
from tests.helpers.audio import band_level_db
from tests.helpers.live import handshake_refusal, heard, mint_for

ROOT = Path(__file__).resolve().parents[2]
SECRET = b"s" * 40
NOW = 1_800_000_000.0


def token(room="band", identity="ada", grants=("join", "publish"), ttl_s=3600.0, now=NOW,
          secret=SECRET, name=None) -> str:
    return mint(secret, room=room, identity=identity, grants=grants, ttl_s=ttl_s, now=now,
                name=name)


# tokens ----------------------------------------------------------------------------------------

def test_a_minted_token_gives_its_identity_room_and_grants():
    access = verify(SECRET, token(grants=("publish",), name="Ada L."), NOW + 10)
    assert (access.identity, access.room, access.name) == ("ada", "band", "Ada L.")
    assert access.grants == {"join", "publish"}  # join always comes with a token
    assert access.expires_at == NOW + 3600


def test_admin_implies_every_grant():
    assert verify(SECRET, token(grants=("admin",)), NOW).grants == set(GRANTS)


@pytest.mark.parametrize(("make", "code", "words"), [
    (lambda: None, ErrorCode.UNAUTHORIZED, "needs a room access token"),
    (lambda: "", ErrorCode.UNAUTHORIZED, "needs a room access token"),
    (lambda: "not a token", ErrorCode.UNAUTHORIZED, "not a token"),
    (lambda: "a.b.c", ErrorCode.UNAUTHORIZED, "cannot be used"),
    (lambda: token(secret=b"x" * 40), ErrorCode.UNAUTHORIZED, "not signed by this server"),
    (lambda: token(ttl_s=60, now=NOW - 3600), ErrorCode.TOKEN_EXPIRED, "expired 59 min ago"),
    (lambda: token(now=NOW + 7200), ErrorCode.TOKEN_EXPIRED, "valid only in"),
], ids=["missing", "empty", "garbage", "three-dots", "forged", "expired", "not-yet"])
def test_a_bad_token_is_refused_with_its_code(make, code, words):
    with pytest.raises(AccessError) as caught:
        verify(SECRET, make(), NOW)
    assert caught.value.code is code
    assert words in caught.value.message


def test_an_unsigned_or_other_algorithm_token_is_forged():
    claims = {"iss": "spatialjam", "sub": "eve", "room": "band", "iat": NOW, "nbf": NOW,
              "exp": NOW + 60, "grants": list(GRANTS)}
    unsigned = jwt.encode(claims, None, algorithm="none")
    hs512 = jwt.encode(claims, SECRET, algorithm="HS512")
    for bad in (unsigned, hs512):
        with pytest.raises(AccessError) as caught:
            verify(SECRET, bad, NOW)
        assert caught.value.code is ErrorCode.UNAUTHORIZED


def test_a_tampered_payload_breaks_the_signature():
    header, payload, signature = token(grants=("join",)).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["grants"] = list(GRANTS)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(AccessError, match="not signed by this server"):
        verify(SECRET, f"{header}.{forged}.{signature}", NOW)


def test_clock_skew_of_a_few_seconds_is_forgiven():
    assert verify(SECRET, token(ttl_s=60), NOW + 60 + 20).identity == "ada"


def test_a_token_opens_its_own_room_only_and_grants_are_required():
    access = verify(SECRET, token(room="band"), NOW)
    access.check_room("band")
    with pytest.raises(AccessError) as caught:
        access.check_room("other")
    assert caught.value.code is ErrorCode.UNAUTHORIZED
    with pytest.raises(AccessError) as caught:
        access.require("admin", "'kick'")
    assert caught.value.code is ErrorCode.FORBIDDEN
    assert "--grant admin" in caught.value.message


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"room": "no spaces"}, "not a room name"),
    ({"identity": "a/b"}, "identity"),
    ({"ttl_s": 0}, "lifetime"),
    ({"grants": ("root",)}, "unknown grant"),
    ({"secret": b"short"}, "at least 32 bytes"),
])
def test_minting_refuses_what_no_server_would_accept(kwargs, words):
    with pytest.raises(ValueError, match=words):
        token(**kwargs)


# the secret and the policy -----------------------------------------------------------------------

def test_a_new_secret_file_is_owner_only_and_loads(tmp_path):
    path = write_new_secret(tmp_path / "secret")
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(read_secret_file(path)) >= 32
    with pytest.raises(SecretError, match="exists already"):
        write_new_secret(path)


def test_a_secret_file_others_may_read_is_refused(tmp_path):
    path = tmp_path / "secret"
    path.write_text("x" * 40)
    path.chmod(0o644)
    with pytest.raises(SecretError, match="chmod 600"):
        read_secret_file(path)


def test_the_secret_comes_from_the_option_then_the_environment(tmp_path):
    path = write_new_secret(tmp_path / "secret")
    assert load_secret(None, {}) is None
    assert load_secret(None, {"SPATIALJAM_SECRET": "e" * 32}) == b"e" * 32
    assert load_secret(None, {"SPATIALJAM_SECRET_FILE": str(path)}) == read_secret_file(path)
    assert load_secret(str(path), {"SPATIALJAM_SECRET": "e" * 32}) == read_secret_file(path)
    with pytest.raises(SecretError, match="at least 32 bytes"):
        load_secret(None, {"SPATIALJAM_SECRET": "short"})


def test_rooms_are_open_only_on_loopback_without_a_secret():
    assert AccessPolicy.for_listening("127.0.0.1", None).check(None, NOW) is OPEN
    assert AccessPolicy.for_listening("::1", None).check(None, NOW) is OPEN
    for host in ("0.0.0.0", "192.168.1.5", "jam.example.org"):
        with pytest.raises(SecretError, match="refusing to listen"):
            AccessPolicy.for_listening(host, None)
    with pytest.raises(AccessError):  # a secret on loopback: tokens needed there too
        AccessPolicy.for_listening("127.0.0.1", SECRET).check(None, NOW)


def test_the_token_is_read_from_the_query_string():
    assert token_in("/ws?token=abc.def.ghi") == "abc.def.ghi"
    assert token_in("/ws?room=x&token=t") == "t"
    assert token_in("/ws") is None
    assert token_in("/ws?" + "&".join(f"f{k}=1" for k in range(100))) is None


# the command ----------------------------------------------------------------------------------

def spatialjam(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_the_token_command_mints_what_the_server_accepts(tmp_path):
    secret = tmp_path / "secret"
    made = spatialjam("token", "--new-secret", str(secret))
    assert made.returncode == 0, made.stderr
    out = spatialjam("token", "--secret-file", str(secret), "--room", "band", "--identity",
                     "ada", "--grant", "move", "--ttl", "15m")
    assert out.returncode == 0, out.stderr
    access = verify(read_secret_file(secret), out.stdout.strip(), time.time())
    assert (access.room, access.identity) == ("band", "ada")
    assert access.grants == {"join", "move"}
    assert access.expires_at - time.time() == pytest.approx(900, abs=5)
    link = spatialjam("token", "--room", "band", "--identity", "bo", "--link",
                      "https://jam.example.org/", env={"SPATIALJAM_SECRET_FILE": str(secret)})
    assert link.stdout.startswith("https://jam.example.org/?room=band&token=ey")


@pytest.mark.parametrize(("args", "words"), [
    (["--room", "band", "--identity", "ada"], "no secret to sign with"),
    (["--room", "band"], "--room and --identity are needed"),
    (["--room", "band", "--identity", "ada", "--ttl", "soon"], "a lifetime is a number"),
    (["--room", "band", "--identity", "ada", "--grant", "root"], "invalid choice"),
    (["--room", "b a", "--identity", "ada", "--secret-file", "/nonexistent"],
     "cannot read the secret file"),
])
def test_the_token_command_explains_what_is_wrong_in_one_line(args, words):
    out = spatialjam("token", *args, env={"SPATIALJAM_SECRET": "", "SPATIALJAM_SECRET_FILE": ""})
    assert out.returncode != 0
    assert words in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_refuses_a_public_address_without_a_secret():
    out = spatialjam("serve", "--host", "0.0.0.0", "--port", "0",
                     env={"SPATIALJAM_SECRET": "", "SPATIALJAM_SECRET_FILE": ""})
    assert out.returncode == 1
    assert "refusing to listen on 0.0.0.0 without a token secret" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


# a server that needs tokens ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def locked_server(tmp_path_factory):
    secret_file = write_new_secret(tmp_path_factory.mktemp("secret") / "secret")
    with ServerProcess("--secret-file", str(secret_file)) as srv:
        yield srv, read_secret_file(secret_file)


@pytest.mark.parametrize(("make", "code"), [
    (lambda s: None, "unauthorized"),
    (lambda s: mint(b"f" * 40, room="r", identity="eve", ttl_s=60, now=time.time()),
     "unauthorized"),
    (lambda s: mint(s, room="r", identity="ada", ttl_s=60, now=time.time() - 600),
     "token_expired"),
], ids=["none", "forged", "expired"])
def test_the_handshake_is_refused_before_anything_is_shared(locked_server, make, code):
    srv, secret = locked_server
    bad = make(secret)
    url = srv.ws if bad is None else f"{srv.ws}?token={bad}"
    status, body = handshake_refusal(url)
    assert status == 401
    assert body["type"] == "error" and body["code"] == code
    with pytest.raises(urllib.error.HTTPError) as caught:  # what a browser asks to show why
        urllib.request.urlopen(f"{srv.http}/access" + ("" if bad is None else f"?token={bad}"))
    assert caught.value.code == 401 and json.loads(caught.value.read())["code"] == code


def test_access_describes_a_good_token(locked_server):
    srv, secret = locked_server
    good = mint_for(secret, "r", "ada", "move")
    with urllib.request.urlopen(f"{srv.http}/access?token={good}") as reply:
        described = json.loads(reply.read())
    assert described["identity"] == "ada" and described["room"] == "r"
    assert described["grants"] == ["join", "move"] and 590 <= described["expires_in_s"] <= 600


def test_a_rooms_ai_notes_need_a_token_for_that_room(locked_server):
    srv, secret = locked_server
    for query in ("", f"?token={mint_for(secret, 'other', 'eve')}"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{srv.http}/ai/band.mid{query}")
        assert caught.value.code == 401
        assert json.loads(caught.value.read())["code"] == "unauthorized"
    with pytest.raises(urllib.error.HTTPError) as caught:  # allowed in, but nothing played
        urllib.request.urlopen(f"{srv.http}/ai/band.mid?token={mint_for(secret, 'band', 'ada')}")
    assert caught.value.code == 404


async def test_a_token_for_another_room_cannot_join(locked_server):
    srv, secret = locked_server
    bot = Bot(srv.ws, "room-b", "Eve", token=mint_for(secret, "room-a", "eve"))
    with pytest.raises(RuntimeError, match="unauthorized: this access token opens room"):
        await bot.connect()
    await bot.close()


async def test_a_token_in_the_join_is_checked_as_well(locked_server):
    srv, secret = locked_server
    bot = Bot(srv.ws, "fresh", "Ada", token=mint_for(secret, "fresh", "ada"))
    await bot.connect()
    await bot.send({"type": "leave"})
    stale = mint(secret, room="fresh", identity="ada", ttl_s=60, now=time.time() - 600)
    with pytest.raises(RuntimeError, match="token_expired"):
        await bot.request({"type": "join", "room": "fresh", "name": "Ada", "token": stale},
                          "joined")
    await bot.close()


async def test_grants_decide_who_is_heard_who_moves_and_who_administers(locked_server):
    srv, secret = locked_server
    room = "grants"
    async with (
        Bot(srv.ws, room, "Host", token=mint_for(secret, room, "host", "admin")) as host,
        Bot(srv.ws, room, "Player", tone(2000.0),
            token=mint_for(secret, room, "player")) as player,
        Bot(srv.ws, room, "Guest", tone(2000.0),
            token=mint_for(secret, room, "guest", "join")) as guest,
    ):
        assert host.grants == sorted(GRANTS) and guest.grants == ["join"]
        # The host hears the player's tone but nothing from the guest, who may not publish.
        await host.send({"type": "mix_override", "source": player.participant, "mute": True})
        guest_heard = band_level_db(await heard(host))
        await host.send({"type": "mix_reset", "source": player.participant})
        player_heard = band_level_db(await heard(host))
        assert player_heard > guest_heard + 30, (player_heard, guest_heard)

        # Moving another's source needs 'move': refused with 'forbidden', nothing changes.
        before = {p["source"]: p["position_m"] for p in host.state["stage"]}
        await guest.send({"type": "move_source", "source": player.participant,
                          "position_m": [0, 5, 1.2], "id": "m1"})
        await asyncio.sleep(0.3)
        assert guest.errors[-1]["code"] == "forbidden" and guest.errors[-1]["id"] == "m1"
        assert {p["source"]: p["position_m"] for p in host.state["stage"]} == before
        # One's own source always moves.
        await guest.send({"type": "move_source", "source": guest.participant,
                          "position_m": [0, -3, 1.2]})
        await player.send({"type": "ai_add"})  # admin only
        await asyncio.sleep(0.3)
        moved = {p["source"]: p["position_m"] for p in host.state["stage"]}
        assert moved[guest.participant] == [0, -3, 1.2]
        assert player.errors[-1]["code"] == "forbidden"
        assert len(host.state["members"]) == 3  # no AI was added

        # Personal mixes are one's own: no grant needed, and the stage stays as it was.
        await guest.send({"type": "mix_override", "source": player.participant,
                          "position_m": [0, 2, 1.2]})
        await asyncio.sleep(0.2)
        assert guest.errors[-1]["id"] == "m1"  # no new refusal


async def test_an_admin_kicks_and_locks_and_the_room_plays_on(locked_server):
    srv, secret = locked_server
    room = "admin"
    async with (
        Bot(srv.ws, room, "Host", token=mint_for(secret, room, "host", "admin")) as host,
        Bot(srv.ws, room, "Player", tone(2000.0), token=mint_for(secret, room, "player")) as a,
    ):
        rogue = Bot(srv.ws, room, "Rogue", token=mint_for(secret, room, "rogue"))
        await rogue.connect()
        await a.send({"type": "kick", "member": rogue.participant})  # not an admin
        await asyncio.sleep(0.3)
        assert a.errors[-1]["code"] == "forbidden"

        await host.send({"type": "kick", "member": rogue.participant, "reason": "wrong room"})
        await asyncio.wait_for(rogue._ws.wait_closed(), 5)
        assert rogue._ws.close_code == 4003
        assert rogue.errors[-1]["code"] == "kicked" and "wrong room" in rogue.errors[-1]["message"]
        await asyncio.sleep(0.3)
        assert [m["name"] for m in host.state["members"]] == ["Host", "Player"]
        await rogue.close()
        # The kicked identity stays out, even with a fresh connection.
        again = Bot(srv.ws, room, "Rogue", token=mint_for(secret, room, "rogue"))
        with pytest.raises(RuntimeError, match="kicked"):
            await again.connect()
        await again.close()

        await host.send({"type": "lock_room", "locked": True})
        await asyncio.sleep(0.3)
        assert host.state["locked"] is True
        stranger = Bot(srv.ws, room, "Late", token=mint_for(secret, room, "late"))
        with pytest.raises(RuntimeError, match="room_locked"):
            await stranger.connect()
        await stranger.close()
        # A member coming back may (the same identity takes its seat back, no seat token
        # needed), and so may another admin; the room plays on through all of it.
        back = Bot(srv.ws, room, "Player", tone(2000.0), token=mint_for(secret, room, "player"))
        await back.connect()
        assert back.participant == a.participant
        cohost = Bot(srv.ws, room, "Cohost", token=mint_for(secret, room, "cohost", "admin"))
        await cohost.connect()
        await host.send({"type": "lock_room", "locked": False})
        await asyncio.sleep(0.3)
        assert host.state["locked"] is False
        assert band_level_db(await heard(host)) > -40
        await back.close()
        await cohost.close()
