"""What an HRTF upload may cost the serving process (issue 16, "Bad input and security"): a
real ``spatialjam serve``, real SOFA files over signaling, and the server's peak resident
memory read from ``/proc/<pid>/status`` (``VmHWM``).

A 1.4 MB file declaring 41,527 directions prepared into a 742 MiB set (its spectra for the
renderer were nine times its responses; 478 MiB since the renderer's FFT sizes are 2·3·5-smooth
rather than powers of two, issue 17). Loaded in the serving process, as before this change,
it raised that process's peak by 821 MiB; a 2,000-direction set of 2,048 taps (94 MiB prepared)
raised it by 258 MiB. Now the child parses and prepares, the server reads back only the set it
keeps, within its budgets (``serve --upload-set-mb``, ``--upload-budget-mb``); measured here:
+2 MiB for the refused 41,527-direction file, +101 MiB for the 94 MiB set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
import websockets

from bench.serverproc import ServerProcess
from hrtf.sofa import prepare_sofa
from signaling.limits import MAX_HRTF_UPLOAD_BYTES, MAX_UPLOAD_CHUNK_BYTES
from tests.helpers.sofa import many_directions

MIB = 2**20
ROOM = "heavy"
#: How much a refused upload may raise the server's peak: the file and its frames, the
#: bookkeeping, the child's answer (measured +2 MiB; +821 MiB before the child prepared sets).
REFUSED_SLACK_BYTES = 16 * MIB
#: How much a taken upload may raise the server's peak beyond the set it keeps (measured
#: +7 MiB for a 94 MiB set: the listener's share of the renderer; +164 MiB before).
TAKEN_SLACK_BYTES = 32 * MIB
live = pytest.mark.asyncio(loop_scope="module")


def peak_bytes(server: ServerProcess) -> int:
    """The server process's peak resident memory so far (``VmHWM``)."""
    with open(f"/proc/{server.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM line")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("heavy")
    return {
        "heavy": many_directions(folder / "heavy.sofa"),  # 41,527 directions, 256 taps
        "long": many_directions(folder / "long.sofa", directions=2000, taps=2048),
        **{name: many_directions(folder / f"{name}.sofa", directions=1000, taps=1024,
                                 right_gain=gain)
           for name, gain in (("x", 0.5), ("y", 0.4), ("z", 0.3))},
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(tmp_path_factory.mktemp("server-tmp")))
        with ServerProcess("--upload-set-mb", "100", "--upload-budget-mb", "200") as srv:
            yield srv


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    """Room for two of the 23 MiB sets x, y, z, not three."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(tmp_path_factory.mktemp("small-server-tmp")))
        with ServerProcess("--upload-set-mb", "30", "--upload-budget-mb", "50") as srv:
            yield srv


@contextlib.asynccontextmanager
async def listener(server: ServerProcess, name: str) -> AsyncIterator[websockets.ClientConnection]:
    """A connection joined to the room (no media): a listener whose set stays in use while it
    is open."""
    async with websockets.connect(server.ws) as ws:
        await ws.send(json.dumps({"type": "join", "room": ROOM, "name": name}))
        await answer(ws, lambda r: r["type"] == "rendering")
        yield ws


async def answer(ws, wanted, timeout: float = 60.0) -> dict:
    async with asyncio.timeout(timeout):
        while not wanted(reply := json.loads(await ws.recv())):
            pass
    return reply


async def upload(ws, path, ident: str) -> dict:
    """Send the file; the answer (``hrtf_uploaded``, then its ``rendering``; or the error)."""
    data = path.read_bytes()
    await ws.send(json.dumps({"type": "hrtf_upload", "name": path.name, "size": len(data),
                              "id": ident}))
    for start in range(0, len(data), MAX_UPLOAD_CHUNK_BYTES):
        await ws.send(data[start:start + MAX_UPLOAD_CHUNK_BYTES])
    reply = await answer(ws, lambda r: r.get("id") == ident)
    if reply["type"] == "hrtf_uploaded":
        await answer(ws, lambda r: r["type"] == "rendering")
    return reply


async def choose(ws, digest: str) -> dict:
    await ws.send(json.dumps({"type": "set_rendering", "hrtf": f"sofa:{digest}", "id": "pick"}))
    return await answer(ws, lambda r: r.get("id") == "pick")


@live
async def test_a_huge_valid_set_is_refused_in_words_and_costs_the_server_nothing(server, files):
    async with listener(server, "Heavy") as ws:
        before = peak_bytes(server)
        reply = await upload(ws, files["heavy"], "heavy")
        grown = peak_bytes(server) - before
    print(f"\nserver peak +{grown / MIB:.1f} MiB for the refused 41,527-direction file")
    assert files["heavy"].stat().st_size < 1.5e6
    assert (reply["type"], reply["code"]) == ("error", "bad_sofa"), reply
    assert reply["message"] == (
        "'heavy.sofa' cannot be used as an HRTF set: its 41527 directions of 256 taps would "
        "take 478 MB of the server's memory once prepared for rendering; this server takes "
        "sets of up to 100 MB: upload a set with fewer directions or shorter responses")
    assert grown <= REFUSED_SLACK_BYTES


@live
async def test_a_set_taken_costs_the_server_its_prepared_size_and_no_more(server, files,
                                                                          tmp_path):
    prepared = prepare_sofa(files["long"], max_bytes=MAX_HRTF_UPLOAD_BYTES,
                            max_set_bytes=100 * MIB)
    prepared.discard()
    async with listener(server, "Long") as ws:
        before = peak_bytes(server)
        reply = await upload(ws, files["long"], "long")
        grown = peak_bytes(server) - before
    print(f"\nserver peak +{grown / MIB:.1f} MiB for a set of {prepared.nbytes / MIB:.1f} MiB")
    assert (reply["type"], reply["directions"], reply["taps"]) == ("hrtf_uploaded", 2000, 2048)
    assert reply["digest"] == prepared.digest
    assert grown <= prepared.nbytes + TAKEN_SLACK_BYTES


@live
async def test_the_oldest_unused_set_makes_room_and_sets_in_use_are_kept(small_server, files):
    async with listener(small_server, "A") as a, listener(small_server, "C") as c:
        x = await upload(a, files["x"], "x")
        async with listener(small_server, "B") as b:
            y = await upload(b, files["y"], "y")
            assert x["type"] == y["type"] == "hrtf_uploaded", (x, y)
            refused = await upload(c, files["z"], "z1")  # x and y are heard: nothing can go
            assert (refused["type"], refused["code"]) == ("error", "upload_failed"), refused
            assert refused["message"] == (
                "'z.sofa' needs 23 MB, and the server's 50 MB for uploaded HRTF sets hold 47 MB "
                "of sets listeners are using now: try again when fewer uploaded sets are in use, "
                "or upload a smaller set")
        # B left: y is unused now, and goes to make room for z; x, still heard, stays.
        z = await upload(c, files["z"], "z2")
        assert z["type"] == "hrtf_uploaded", z
        gone = await choose(c, y["digest"])
        assert (gone["type"], gone["code"]) == ("error", "unknown_hrtf"), gone
        kept = await choose(c, x["digest"])
        assert (kept["type"], kept["hrtf"]) == ("rendering", f"sofa:{x['digest']}"), kept
