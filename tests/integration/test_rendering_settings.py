"""Rendering settings per listener and the room's acoustics (server.rooms.rendering), heard
through a real ``spatialjam serve`` that needs access tokens, with real aiortc bots.

A source S plays tone bursts (200 ms in every 500 ms) 90° to the left of two listeners, A and
B; a host holds the ``admin`` grant. A changes how it hears (spherical head, reference panning,
room acoustics off); each change shows in A's mix (interaural level differences per band, or
the level in the gaps between bursts, where a room's reverberation rings) while B's mix stays
as it was. Only the host may set the room's acoustics. The room's acoustics are kept across a
restart (server.rooms.store), and an old state file without them still opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3

import numpy as np
import pytest
import pytest_asyncio
import websockets

from bench.bot import Bot
from bench.serverproc import ServerProcess
from hrtf.constants import SAMPLE_RATE
from server.rooms.room import Room
from server.rooms.store import _SCHEMA as SCHEMA_V1
from server.rooms.store import SCHEMA_VERSION, RoomStore
from server.web.access import read_secret_file, write_new_secret
from tests.helpers.audio import SAME_DB, TONES_HZ, band_ilds_db, band_levels_db
from tests.helpers.live import mint_for

SETTLE_S = 1.0
LISTEN_S = 1.5
ROOM = "sound"
BURST_S, PERIOD_S = 0.2, 0.5
#: In the gaps between bursts a dry mix is silent (Opus's floor); a room that rings for a
#: second keeps them within about 20 dB of the bursts. Between the two lies this line (dB).
RINGS_ABOVE_DB = -35.0
live = pytest.mark.asyncio(loop_scope="module")


def bursts(start: int, n: int) -> np.ndarray:
    """The tones of :data:`TONES_HZ`, on for :data:`BURST_S` of every :data:`PERIOD_S`, with
    5 ms raised-cosine edges."""
    t = (start + np.arange(n)) / SAMPLE_RATE
    phase = t % PERIOD_S
    edge = 0.005
    gate = np.clip(np.minimum(phase, BURST_S - phase) / edge, 0.0, 1.0)
    gate = np.where(phase < BURST_S, 0.5 - 0.5 * np.cos(np.pi * gate), 0.0)
    return (gate * sum(0.08 * np.sin(2 * np.pi * f * t) for f in TONES_HZ)).astype(np.float32)


def gaps_db(stereo: np.ndarray) -> float:
    """The quietest 30 % of 10 ms frames against the loudest 30 %, in dB."""
    mono = stereo.astype(np.float64).mean(axis=1)
    frames = mono[: len(mono) // 480 * 480].reshape(-1, 480)
    energy = np.sort(np.mean(frames**2, axis=1))
    k = max(1, int(0.3 * len(energy)))
    return float(10 * np.log10((energy[:k].mean() + 1e-20) / energy[-k:].mean()))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    secret_file = write_new_secret(tmp_path_factory.mktemp("secret") / "secret")
    with ServerProcess("--secret-file", str(secret_file)) as srv:
        yield srv, read_secret_file(secret_file)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def room(server):
    """S plays at (0, 2); A listens at (−0.5, 0), B at (0.5, 0); the host stands behind."""
    srv, secret = server
    async with (
        Bot(srv.ws, ROOM, "Host", token=mint_for(secret, ROOM, "host", "admin")) as host,
        Bot(srv.ws, ROOM, "S", bursts, token=mint_for(secret, ROOM, "s")) as s,
        Bot(srv.ws, ROOM, "A", token=mint_for(secret, ROOM, "a")) as a,
        Bot(srv.ws, ROOM, "B", token=mint_for(secret, ROOM, "b")) as b,
    ):
        for bot, xyz in ((host, [-3, 0, 1.2]), (s, [0, 2, 1.2]), (a, [-0.5, 0, 1.2]),
                         (b, [0.5, 0, 1.2])):
            await bot.send({"type": "move_source", "source": bot.participant, "position_m": xyz})
            await bot.send({"type": "head_pose", "yaw_deg": 0})
        yield host, a, b


async def both_hear(a: Bot, b: Bot) -> tuple[np.ndarray, np.ndarray]:
    await asyncio.sleep(SETTLE_S)
    return await asyncio.gather(a.listen(LISTEN_S), b.listen(LISTEN_S))


async def ilds(a: Bot, b: Bot) -> tuple[np.ndarray, np.ndarray]:
    heard_a, heard_b = await both_hear(a, b)
    return band_ilds_db(heard_a), band_ilds_db(heard_b)


async def spectra(a: Bot, b: Bot) -> tuple[np.ndarray, np.ndarray]:
    """Each ear's level per band, less its mean over the bands (dB): the spectrum's shape."""
    heard_a, heard_b = await both_hear(a, b)
    shapes = [band_levels_db(h) for h in (heard_a, heard_b)]
    return tuple(levels - levels.mean(axis=0) for levels in shapes)


@live
async def test_a_joined_listener_is_told_the_servers_defaults(room):
    _, a, _ = room
    rendering = await a.request({"type": "set_rendering", "acoustics": True}, "rendering")
    assert rendering == {"type": "rendering", "hrtf": "kemar",
                         "hrtf_name": "MIT_KEMAR_normal_pinna.sofa", "head_radius_m": None,
                         "acoustics": True, "reference": False}
    assert a.state["acoustics"] is None  # rooms are dry unless serve --acoustics says


@live
async def test_a_spherical_head_changes_that_listeners_mix_only(room):
    _, a, b = room
    a_kemar, b_before = await spectra(a, b)
    rendering = await a.request({"type": "set_rendering", "hrtf": "spherical-head",
                                 "head_radius_m": 0.0902, "id": 1}, "rendering")
    assert rendering["head_radius_m"] == 0.09 and rendering["id"] == 1  # to the half mm
    assert rendering["hrtf_name"] == "spherical-head (a = 9.00 cm)"
    a_sphere, b_after = await spectra(a, b)
    print(f"\nA's spectrum shape (dB, L/R per band): KEMAR {a_kemar.round(1).tolist()}, "
          f"sphere {a_sphere.round(1).tolist()}; B moved {np.abs(b_after - b_before).max():.2f}")
    # KEMAR's ear canal and pinna colour the spectrum by several dB (its 2 kHz resonance);
    # a bare sphere only shades the far ear.
    assert np.abs(a_sphere - a_kemar).max() > 4.0, (a_kemar, a_sphere)
    np.testing.assert_allclose(b_after, b_before, atol=SAME_DB)

    back = await a.request({"type": "set_rendering", "hrtf": "kemar"}, "rendering")
    assert back["hrtf"] == "kemar" and back["head_radius_m"] is None
    a_again, _ = await spectra(a, b)
    np.testing.assert_allclose(a_again, a_kemar, atol=SAME_DB)


@live
async def test_the_reference_mode_pans_without_hrtf_for_that_listener_only(room):
    _, a, b = room
    a_kemar, b_before = await ilds(a, b)
    assert a_kemar[0] < 8.0  # at 500 Hz a head casts little shadow
    rendering = await a.request({"type": "set_rendering", "reference": True}, "rendering")
    assert rendering["reference"] and rendering["hrtf"] == "kemar"
    a_ref, b_after = await ilds(a, b)
    print(f"\nA's ILD (dB): KEMAR {a_kemar.round(1)}, reference {a_ref.round(1)}")
    # Constant-power panning at 76° left: the right ear gets about 2 % of the level in every
    # band (33 dB down), where an HRTF lets the low tones round the head.
    assert a_ref.min() > 20.0, a_ref
    np.testing.assert_allclose(b_after, b_before, atol=SAME_DB)
    await a.request({"type": "set_rendering", "reference": False}, "rendering")
    a_again, _ = await ilds(a, b)
    np.testing.assert_allclose(a_again, a_kemar, atol=SAME_DB)


@live
async def test_only_the_admin_sets_the_rooms_acoustics(room):
    host, a, _ = room
    await a.send({"type": "set_room_acoustics", "preset": "club", "id": "no"})
    await asyncio.sleep(0.3)
    assert (a.errors[-1]["code"], a.errors[-1]["id"]) == ("forbidden", "no")
    assert "set_room_acoustics" in a.errors[-1]["message"]
    assert host.state["acoustics"] is None and a.state["acoustics"] is None

    with pytest.raises(RuntimeError, match=r"bad_value: a 60 × 60 × 60 m room cannot ring for "
                                           r"rt60_s=0.1 s"):
        await host.request({"type": "set_room_acoustics", "preset": "custom",
                            "dims_m": [60, 60, 60], "rt60_s": 0.1}, "room_state")
    await asyncio.sleep(0.3)
    assert host.state["acoustics"] is None  # nothing changed


@live
async def test_room_acoustics_ring_for_everyone_unless_a_listener_turns_them_off(room):
    host, a, b = room
    dry_a, dry_b = map(gaps_db, await both_hear(a, b))
    assert max(dry_a, dry_b) < RINGS_ABOVE_DB - 10, (dry_a, dry_b)

    state = await host.request({"type": "set_room_acoustics", "preset": "club", "wet": 0.5},
                               "room_state")
    assert state["acoustics"] == {"name": "club", "dims_m": [20.0, 14.0, 6.0], "rt60_s": 1.0,
                                  "max_order": 1, "wet": 0.5}
    await asyncio.sleep(0.3)
    assert a.state["acoustics"] == state["acoustics"]  # everyone is told
    wet_a, wet_b = map(gaps_db, await both_hear(a, b))
    assert min(wet_a, wet_b) > RINGS_ABOVE_DB, (wet_a, wet_b)

    rendering = await a.request({"type": "set_rendering", "acoustics": False}, "rendering")
    assert not rendering["acoustics"]
    off_a, still_b = map(gaps_db, await both_hear(a, b))
    assert off_a < RINGS_ABOVE_DB - 10, off_a
    assert still_b == pytest.approx(wet_b, abs=3.0)

    await a.request({"type": "set_rendering", "acoustics": True}, "rendering")
    on_again, _ = map(gaps_db, await both_hear(a, b))
    print(f"\ngaps/bursts (dB): dry A {dry_a:.1f} B {dry_b:.1f}; club A {wet_a:.1f} "
          f"B {wet_b:.1f}; A off {off_a:.1f} (B {still_b:.1f}); A on again {on_again:.1f}")
    assert on_again == pytest.approx(wet_a, abs=3.0)
    assert not a.errors[1:] and not b.errors  # A's one refusal was the forbidden preset


# kept across restarts ---------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def enter(url: str, room: str, seat: str | None = None):
    """A signaling connection that joined ``room`` (no media): ``(ws, joined)``."""
    async with websockets.connect(url) as ws:
        join = {"type": "join", "room": room, "name": "Host", **({"seat": seat} if seat else {})}
        await ws.send(json.dumps(join))
        joined = json.loads(await ws.recv())
        assert joined["type"] == "joined", joined
        rendering = json.loads(await ws.recv())  # how it hears: the defaults, unasked (no id)
        assert rendering["type"] == "rendering" and "id" not in rendering, rendering
        yield ws, joined


async def test_a_rooms_chosen_acoustics_and_metronome_survive_a_restart(tmp_path):
    """What an admin chose (acoustics, metronome) is kept; the server's default acoustics
    is not saved as the room's own."""
    state = str(tmp_path / "rooms.sqlite3")
    with ServerProcess("--state", state, "--acoustics", "rehearsal-room") as first:
        async with enter(first.ws, "kept") as (ws, joined):
            assert joined["state"]["acoustics"]["name"] == "rehearsal-room"  # serve --acoustics
            await ws.send(json.dumps({"type": "set_room_acoustics", "preset": "concert-hall",
                                      "rt60_s": 1.5, "wet": 0.3}))
            async with asyncio.timeout(5):
                while (reply := json.loads(await ws.recv()))["type"] != "room_state":
                    assert reply["type"] != "error", reply
            await ws.send(json.dumps({"type": "set_metronome", "on": True, "bpm": 72,
                                      "beats_per_bar": 6}))  # kept with the room too
            async with asyncio.timeout(5):
                while "metronome" not in (reply := json.loads(await ws.recv())):
                    assert reply["type"] != "error", reply
            async with enter(first.ws, "default") as (_, other):
                assert other["state"]["acoustics"]["name"] == "rehearsal-room"
            await asyncio.sleep(0.5)  # written within the store's interval
    with ServerProcess("--state", state, "--acoustics", "dry-studio") as second:
        async with enter(second.ws, "kept", joined["seat"]) as (_, back):
            assert back["state"]["acoustics"] == {"name": "concert-hall",
                                                  "dims_m": [44.0, 24.0, 17.0], "rt60_s": 1.5,
                                                  "max_order": 1, "wet": 0.3}
            metronome = back["state"]["metronome"]
            assert (metronome["on"], metronome["bpm"], metronome["beats_per_bar"]) == \
                (True, 72.0, 6)
            assert any(p["source"] == "metronome" for p in back["state"]["stage"])
        async with enter(second.ws, "default") as (_, other):
            assert other["state"]["acoustics"]["name"] == "dry-studio"  # not saved as its own


def test_an_old_state_file_without_acoustics_still_opens(tmp_path):
    path = tmp_path / "rooms.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_V1)  # as version 1 was first written: no acoustics table
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    db.execute("INSERT INTO seats VALUES ('band', 's1', 'p1', 'Ann', '', 0, 1, 2, 1.2, 0, 0, 0)")
    db.commit()
    db.close()
    store = RoomStore(path)
    saved = store.load("band")
    assert [s.name for s in saved.seats] == ["Ann"] and saved.acoustics is None

    room = Room("band", capacity=2)
    room.restore(saved)
    room.acoustics_settings = {"preset": "club", "wet": 0.2}
    store.save(room.snapshot())
    assert store.flush(5.0)
    store.close()
    assert RoomStore(path).load("band").acoustics == {"preset": "club", "wet": 0.2}


# the room runner keeps a listener's settings across its slot's reset ------------------------------

def test_settings_given_before_a_new_listeners_first_tick_survive_the_slots_reset(kemar):
    """A ``set_rendering`` right after ``joined`` can reach the renderer before the tick that
    resets the newcomer's slot: the runner puts it back after the reset."""
    from server.tick.runner import RoomRunner, TickWork

    room = Room("r", capacity=2)
    runner = RoomRunner(room, kemar)
    member = room.join("Ann")
    runner.attach(member.slot)
    runner.configure_listener(member.slot, acoustics=False, reference=True)

    def tick() -> None:
        runner._render_and_encode(TickWork(room.scene(), {}, {}, None, room.drain_fresh_slots(),
                                           {}, 0))

    tick()
    settings = runner.renderer.settings[member.slot]
    assert settings.reference and not settings.acoustics
    runner.detach(member.slot)  # its next listener starts from the defaults
    tick()
    settings = runner.renderer.settings[member.slot]
    assert not settings.reference and settings.acoustics
