"""HRTF uploads: a listener's own SOFA file over signaling (server.rooms.hrtf_uploads).

The bookkeeping (:class:`Upload`) and the registry of sets are tested without I/O; then a real
``spatialjam serve`` and real aiortc bots: a source S plays tones 90° to the left of two
listeners, A and B. A uploads KEMAR with its ears swapped (written here with sofar): A's
interaural level differences turn over, B's stay. Then each malformed kind is refused with its
own message while S keeps playing to B and the room's clock keeps ticking.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request

import netCDF4
import numpy as np
import pytest
import pytest_asyncio
import sofar
import websockets

from bench.bot import Bot
from bench.serverproc import ServerProcess
from hrtf.constants import SAMPLE_RATE
from hrtf.library import load_hrtf
from hrtf.sofa import default_sofa_path, prepare_sofa
from server.rooms.hrtf_registry import HrtfRegistry
from server.rooms.hrtf_uploads import MAX_PARSES, HrtfUploads, Upload, UploadError
from signaling.limits import MAX_HRTF_UPLOAD_BYTES, MAX_UPLOAD_CHUNK_BYTES
from signaling.render_messages import HrtfUpload
from signaling.session import SignalingSession, State
from tests.helpers.audio import SAME_DB, TONES_HZ, band_ilds_db, tones
from tests.helpers.sofa import hand_written

SETTLE_S = 0.8
LISTEN_S = 0.8
ROOM = "ears"
#: The live tests share one server and one room, on one event loop.
live = pytest.mark.asyncio(loop_scope="module")


# the bookkeeping, without I/O --------------------------------------------------------------------

def test_an_upload_counts_bytes_against_what_was_announced():
    upload = Upload("a.sofa", 10_000, now=0.0, stall_s=10.0)
    upload.take(6000, now=1.0)
    assert not upload.complete and upload.missing == 4000
    upload.take(4000, now=2.0)
    assert upload.complete and not upload.stalled(now=100.0)


def test_more_bytes_than_announced_end_the_upload():
    upload = Upload("a.sofa", 100, now=0.0)
    upload.take(60, now=0.1)
    with pytest.raises(UploadError, match="more bytes came than 'hrtf_upload' announced: it said "
                                          "100, and 160 have come"):
        upload.take(100, now=0.2)


def test_a_frame_over_256_kib_ends_the_upload():
    upload = Upload("a.sofa", MAX_HRTF_UPLOAD_BYTES, now=0.0)
    upload.take(MAX_UPLOAD_CHUNK_BYTES, now=0.1)
    with pytest.raises(UploadError, match="at most 262144 bytes"):
        upload.take(MAX_UPLOAD_CHUNK_BYTES + 1, now=0.2)


def test_a_file_in_crumbs_is_a_flood():
    upload = Upload("a.sofa", 3 * 4096, now=0.0)
    for _ in range(upload.max_frames):
        upload.take(1, now=0.1)
    with pytest.raises(UploadError, match="5 frames for 12288 bytes"):
        upload.take(1, now=0.2)


def test_an_upload_stalls_after_its_time_without_a_chunk():
    upload = Upload("a.sofa", 100, now=0.0, stall_s=10.0)
    upload.take(10, now=3.0)
    assert not upload.stalled(now=12.9) and upload.stalled(now=13.0)
    assert upload.deadline == 13.0


@pytest.fixture(scope="module")
def sets(kemar, spherical_head):
    heads = [load_hrtf(f"spherical-head:0.0{k}") for k in range(5, 10)]
    return [kemar, spherical_head, *heads]


def test_the_registry_forgets_the_least_recently_used_unused_set(sets):
    registry = HrtfRegistry(capacity=3)
    a, b, c, d = (registry.add(s, f"set{k}.sofa") for k, s in enumerate(sets[:4]))
    assert a.digest not in registry and len(registry) == 3
    assert registry.get(b.digest) is b  # b is now the most recently used
    registry.add(sets[4], "e.sofa")
    assert c.digest not in registry and b.digest in registry and d.digest in registry


def test_a_set_in_use_is_kept_past_the_capacity_until_released(sets):
    registry = HrtfRegistry(capacity=2)
    kept = registry.add(sets[0], "mine.sofa")
    registry.use(kept.digest)
    for k, s in enumerate(sets[1:5]):
        registry.add(s, f"{k}.sofa")
    assert kept.digest in registry and len(registry) == 2
    registry.release(kept.digest)  # no longer in use: the least recently used, first to go
    registry.add(sets[5], "next.sofa")
    assert kept.digest not in registry and len(registry) == 2


def test_the_same_content_is_one_entry_under_its_first_name(sets):
    registry = HrtfRegistry()
    first = registry.add(sets[0], "first.sofa")
    assert registry.add(sets[0], "again.sofa") is first and len(registry) == 1


# SOFA files --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every file the live tests send, written once: good, and each malformed kind."""
    folder = tmp_path_factory.mktemp("sofa")
    kemar = sofar.read_sofa(default_sofa_path(), verify=False, verbose=False)
    swapped = kemar.copy()
    swapped.Data_IR = kemar.Data_IR[:, ::-1, :].copy()  # the left ear's responses on the right
    sofar.write_sofa(str(folder / "swapped.sofa"), swapped)
    (folder / "notes.sofa").write_text("azimuth, left, right\n0, 0.5, 0.5\n" * 50)
    (folder / "cut.sofa").write_bytes(default_sofa_path().read_bytes()[:600_000])
    with netCDF4.Dataset(folder / "classic.sofa", "w", format="NETCDF3_CLASSIC") as ds:
        ds.Conventions = "SOFA"
    sofar.write_sofa(str(folder / "fir.sofa"), sofar.Sofa("GeneralFIR"))
    ir = kemar.Data_IR.copy()
    ir[100, 1, 50:53] = np.nan
    hand_written(folder / "nan.sofa", shape=ir.shape, ir=ir, rate=44_100.0)
    hand_written(folder / "huge.sofa", shape=(250_000, 2, 8), write_data=False)
    return folder


# the shell in this process: parses at once -------------------------------------------------------

class Listener:
    """What the upload shell needs of a connection: its session, joined, and ``flush``."""

    def __init__(self) -> None:
        self.session = SignalingSession()
        self.session.state = State.JOINED
        self.answers: list[dict] = []

    def flush(self) -> None:
        self.answers += [json.loads(text) for text in self.session.data_to_send()]


async def test_uploads_beyond_two_wait_for_a_parser_and_each_is_answered(files, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    running, most = 0, 0

    def counting_loader(path, **limits):  # the real parser, counted
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            return prepare_sofa(path, **limits)
        finally:
            running -= 1

    taken = []

    async def on_loaded(who, uploaded, msg_id):
        taken.append((who, uploaded.name, msg_id))

    uploads = HrtfUploads(HrtfRegistry(), on_loaded, loader=counting_loader)
    names = ["swapped.sofa", "nan.sofa", "fir.sofa", "huge.sofa", "classic.sofa"]
    listeners = [Listener() for _ in names]
    try:
        for k, (who, name) in enumerate(zip(listeners, names, strict=True)):
            data = (files / name).read_bytes()
            await uploads.begin(who, HrtfUpload(name, len(data), msg_id=k))
            for start in range(0, len(data), MAX_UPLOAD_CHUNK_BYTES):
                await uploads.chunk(who, data[start:start + MAX_UPLOAD_CHUNK_BYTES])
        async with asyncio.timeout(30):
            while len(taken) + sum(len(w.answers) for w in listeners) < len(names):
                await asyncio.sleep(0.05)
    finally:
        uploads.close()
    assert most == MAX_PARSES  # in parallel, and never more
    assert [(name, k) for _, name, k in taken] == [("swapped.sofa", 0)]
    assert [(w.answers[0]["code"], w.answers[0]["id"]) for w in listeners[1:]] == [
        ("bad_sofa", k) for k in range(1, 5)]
    assert list(tmp_path.iterdir()) == []  # received files and prepared sets: all deleted


async def test_a_busy_server_and_a_hasty_uploader_are_refused_without_harm(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))

    async def on_loaded(who, uploaded, msg_id):
        raise AssertionError("nothing is sent to be parsed here")

    uploads = HrtfUploads(HrtfRegistry(), on_loaded, max_open=1)
    first, second = Listener(), Listener()
    try:
        await uploads.begin(first, HrtfUpload("a.sofa", 1000, msg_id=1))
        await uploads.begin(second, HrtfUpload("b.sofa", 1000, msg_id=2))
        assert (second.answers[0]["code"], second.answers[0]["id"]) == ("upload_failed", 2)
        assert "taking 1 uploads at once, its most" in second.answers[0]["message"]
        assert second.session.receive_binary(b"x" * 1000, 1.0) == []  # its bytes: dropped
        second.flush()
        assert len(second.answers) == 1  # quietly
        uploads.cancel(first)
        for k in range(3):  # with the first, a burst of 4 is allowed
            await uploads.begin(first, HrtfUpload("a.sofa", 1000, msg_id=k))
            uploads.cancel(first)
        first.flush()
        assert first.answers == []
        await uploads.begin(first, HrtfUpload("a.sofa", 1000, msg_id=9))
        first.flush()
        assert (first.answers[0]["code"], first.answers[0]["id"]) == ("rate_limited", 9)
    finally:
        uploads.close()
    await asyncio.sleep(0.2)  # the discarded files go on the upload thread
    assert list(tmp_path.glob("spatialjam-upload-*")) == []


# a live room -------------------------------------------------------------------------------------

def level_db(stereo: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(stereo.astype(np.float64) ** 2) + 1e-20))


@pytest.fixture(scope="module")
def server_tmp(tmp_path_factory):
    """The server's temporary folder (``TMPDIR``), where uploads are received."""
    return tmp_path_factory.mktemp("server-tmp")


@pytest.fixture(scope="module")
def server(tmp_path_factory, server_tmp):
    with pytest.MonkeyPatch.context() as patch:  # uploads are parsed, not found in ~/.cache
        patch.setenv("SPATIALJAM_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        patch.setenv("TMPDIR", str(server_tmp))
        with ServerProcess() as srv:
            yield srv


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def room(server):
    """S plays the tones at (0, 2); A listens at (−0.5, 0), B at (0.5, 0), both facing +x."""
    async with Bot(server.ws, ROOM, "S", tones) as s, Bot(server.ws, ROOM, "A") as a, \
            Bot(server.ws, ROOM, "B") as b:
        for bot, xyz in ((s, [0, 2, 1.2]), (a, [-0.5, 0, 1.2]), (b, [0.5, 0, 1.2])):
            await bot.send({"type": "move_source", "source": bot.participant, "position_m": xyz})
            await bot.send({"type": "head_pose", "yaw_deg": 0})
        yield s, a, b


async def both_hear(a: Bot, b: Bot) -> tuple[np.ndarray, np.ndarray]:
    await asyncio.gather(a.flowing(), b.flowing())
    await asyncio.sleep(SETTLE_S)
    return await asyncio.gather(a.listen(LISTEN_S), b.listen(LISTEN_S))


async def upload(bot: Bot, data: bytes, name: str = "mine.sofa", size: int | None = None,
                 stop_after: int | None = None, timeout: float = 30.0) -> dict:
    """Announce ``data`` and send it in 256 KiB frames (the first ``stop_after`` bytes only, if
    given); the server's answer: ``hrtf_uploaded``, or the ``error``."""
    ident = f"u{time.monotonic_ns()}"
    announce = {"type": "hrtf_upload", "name": name, "size": size or len(data), "id": ident}
    answer = asyncio.get_running_loop().create_task(
        bot.request(announce, "hrtf_uploaded", timeout=timeout))
    await asyncio.sleep(0)  # the announcement goes first
    sent = data[:stop_after] if stop_after is not None else data
    for start in range(0, len(sent), MAX_UPLOAD_CHUNK_BYTES):
        await bot.send_bytes(sent[start:start + MAX_UPLOAD_CHUNK_BYTES])
    try:
        reply = await answer
    except RuntimeError:
        reply = bot.errors[-1]
    assert reply.get("id") == ident, reply
    return reply


@live
async def test_an_uploaded_set_changes_that_listeners_mix_only(room, files):
    _, a, b = room
    rendering = await a.request({"type": "set_rendering", "acoustics": True}, "rendering")
    assert rendering["hrtf"] == "kemar" and rendering["head_radius_m"] is None
    a_before, b_before = map(band_ilds_db, await both_hear(a, b))
    assert a_before.min() > 2.0 and b_before.min() > 2.0, (a_before, b_before)  # S is left

    uploaded = await upload(a, (files / "swapped.sofa").read_bytes(), name="swapped ears.sofa")
    assert uploaded["type"] == "hrtf_uploaded", uploaded
    assert (uploaded["name"], uploaded["directions"], uploaded["taps"]) == (
        "swapped ears.sofa", 710, 538)
    assert re.fullmatch("[0-9a-f]{64}", uploaded["digest"])
    now = await a.request({"type": "set_rendering", "reference": False}, "rendering")
    assert now["hrtf"] == f"sofa:{uploaded['digest']}"
    assert now["hrtf_name"] == "swapped ears.sofa"

    a_after, b_after = map(band_ilds_db, await both_hear(a, b))
    print(f"\nILD (dB) at {TONES_HZ} Hz: A {a_before.round(1)} -> {a_after.round(1)}, "
          f"B {b_before.round(1)} -> {b_after.round(1)}")
    # The ears swapped: A's level differences turn over, band by band, as the set says.
    np.testing.assert_allclose(a_after, -a_before, atol=1.5)
    # B still hears through the server's KEMAR.
    np.testing.assert_allclose(b_after, b_before, atol=SAME_DB)

    # The set is kept by its digest: B may choose it too, and the mixes then agree.
    chosen = await b.request({"type": "set_rendering", "hrtf": f"sofa:{uploaded['digest']}"},
                             "rendering")
    assert chosen["hrtf_name"] == "swapped ears.sofa"
    _, b_chosen = await both_hear(a, b)
    np.testing.assert_allclose(band_ilds_db(b_chosen), -b_before, atol=1.5)
    assert not a.errors and not b.errors

    with pytest.raises(RuntimeError, match="unknown_hrtf: this server keeps no HRTF set 0000"):
        await b.request({"type": "set_rendering", "hrtf": "sofa:" + "0" * 64}, "rendering")


async def upload_alone(url: str, data: bytes, name: str, size: int,
                       stop_after: int | None = None) -> dict:
    """As :func:`upload`, from a connection of its own that joins the room without media (one
    connection may start 4 uploads in a burst); checks that it stays open after the answer."""
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "join", "room": ROOM, "name": "Uploader"}))
        await ws.send(json.dumps({"type": "hrtf_upload", "name": name, "size": size,
                                  "id": "up"}))
        sent = data[:stop_after] if stop_after is not None else data
        for start in range(0, len(sent), MAX_UPLOAD_CHUNK_BYTES):
            await ws.send(sent[start:start + MAX_UPLOAD_CHUNK_BYTES])
        async with asyncio.timeout(30):
            while (reply := json.loads(await ws.recv())).get("id") != "up":
                assert reply["type"] != "error", reply
        await ws.send(json.dumps({"type": "ping", "t_ms": 1}))
        async with asyncio.timeout(5):
            while (pong := json.loads(await ws.recv()))["type"] != "pong":
                assert pong["type"] != "error", pong
        assert ws.close_code is None
        return reply


def metric(server: ServerProcess, name: str) -> float:
    with urllib.request.urlopen(f"{server.http}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return float(re.search(rf"^spatialjam_{name} (\S+)$", text, re.MULTILINE).group(1))


MALFORMED = [
    ("not-hdf5", "notes.sofa", {}, "bad_sofa",
     "'notes.sofa' cannot be used as an HRTF set: it is not a SOFA file: it looks like a text "
     "file"),
    ("truncated", "cut.sofa", {}, "bad_sofa",
     "the file is truncated: it has 600000 bytes but its HDF5 header says 1173158"),
    ("netcdf3", "classic.sofa", {}, "bad_sofa", "it is a netCDF-3 (classic) file"),
    ("convention", "fir.sofa", {}, "bad_sofa",
     "uses the SOFA convention 'GeneralFIR'; only 'SimpleFreeFieldHRIR'"),
    ("nan", "nan.sofa", {}, "bad_sofa", "impulse responses contain 3 NaN or infinite values"),
    ("absurd", "huge.sofa", {}, "bad_sofa", "declares 250000 measurements; 1 to 200000"),
    ("more-bytes", "swapped.sofa", {"announce": -1000}, "upload_failed",
     "more bytes came than 'hrtf_upload' announced"),
    ("stalled", "swapped.sofa", {"stop_after": 300_000}, "upload_failed",
     "nothing came for 10 s (300000 of 862579 bytes arrived)"),
]


@live
@pytest.mark.parametrize(("name", "file", "how", "code", "words"), MALFORMED,
                         ids=[m[0] for m in MALFORMED])
async def test_each_malformed_kind_is_refused_while_the_room_plays(
        room, files, server, name, file, how, code, words):
    _, a, b = room
    await asyncio.sleep(SETTLE_S)
    ticks, frames, t0 = metric(server, "ticks_total"), len(b.received), time.monotonic()
    errors = len(a.errors) + len(b.errors)
    data = (files / file).read_bytes()
    reply = await upload_alone(server.ws, data, file, len(data) + how.get("announce", 0),
                               how.get("stop_after"))
    await asyncio.sleep(max(0.0, t0 + 1.0 - time.monotonic()))  # watch a second at least
    elapsed = time.monotonic() - t0
    assert reply["type"] == "error" and reply["code"] == code, reply
    assert words in reply["message"], reply["message"]
    assert str(files) not in reply["message"] and "spatialjam-upload" not in reply["message"]

    # The room played on: B heard S all along, and the clock ticked.
    heard = np.concatenate(b.received[frames:])
    assert len(heard) >= 0.8 * elapsed * SAMPLE_RATE, (len(heard), elapsed)
    assert level_db(heard) > -45
    assert metric(server, "ticks_total") - ticks >= 0.8 * elapsed * 50
    assert len(a.errors) + len(b.errors) == errors


@live
async def test_a_file_over_the_limit_is_refused_before_any_byte(room):
    """The client is told before it sends anything (a client checks the size itself too)."""
    _, a, _ = room
    with pytest.raises(RuntimeError, match=r"out_of_range: 'size' in 'hrtf_upload' says the file "
                                           r"has 40000000 bytes \(38\.1 MiB\); an HRTF file may "
                                           r"have at most 33554432 bytes \(32\.0 MiB\)"):
        await a.request({"type": "hrtf_upload", "name": "big.sofa", "size": 40_000_000},
                        "hrtf_uploaded")
    assert (await a.request({"type": "ping", "t_ms": 2}, "pong"))["t_ms"] == 2


async def answers_until_pong(ws) -> list[dict]:
    """What the server answers a raw connection up to its ``pong`` (with it), less what it
    sends a member by itself (room state, rendering, chat history, levels)."""
    replies: list[dict] = []
    async with asyncio.timeout(10):
        while not replies or replies[-1]["type"] != "pong":
            reply = json.loads(await ws.recv())
            if reply["type"] not in ("room_state", "rendering", "chat_history", "levels"):
                replies.append(reply)
    return replies


@live
async def test_an_upload_started_twice_ends_both_and_the_connection_stays(server, files):
    data = (files / "swapped.sofa").read_bytes()
    async with websockets.connect(server.ws) as ws:
        await ws.send(json.dumps({"type": "join", "room": ROOM, "name": "Twice"}))
        assert json.loads(await ws.recv())["type"] == "joined"
        await ws.send(json.dumps({"type": "hrtf_upload", "name": "a.sofa", "size": len(data),
                                  "id": "first"}))
        await ws.send(data[:100_000])
        await ws.send(json.dumps({"type": "hrtf_upload", "name": "b.sofa", "size": len(data),
                                  "id": "second"}))
        for start in range(0, len(data), MAX_UPLOAD_CHUNK_BYTES):  # b's bytes: dropped quietly
            await ws.send(data[start:start + MAX_UPLOAD_CHUNK_BYTES])
        await ws.send(json.dumps({"type": "ping", "t_ms": 3}))
        replies = await answers_until_pong(ws)
        assert [(r.get("code"), r.get("id")) for r in replies] == [
            ("upload_failed", "first"), ("upload_failed", "second"), (None, None)]
        assert "'hrtf_upload' came again" in replies[0]["message"]
        assert "another upload was open" in replies[1]["message"]
        assert ws.close_code is None


@live
async def test_the_rest_of_an_upload_ended_early_is_dropped_quietly(server):
    """An upload in crumbs (1,000 frames of 100 bytes for 100 kB) is ended once it is a
    flood; the frames the client still sends of it are dropped without a word (no
    ``not_text``, no strike), as docs/PROTOCOL.md says, and the connection stays."""
    async with websockets.connect(server.ws) as ws:
        await ws.send(json.dumps({"type": "join", "room": ROOM, "name": "Crumbs"}))
        assert json.loads(await ws.recv())["type"] == "joined"
        await ws.send(json.dumps({"type": "hrtf_upload", "name": "crumbs.sofa",
                                  "size": 100_000, "id": "crumbs"}))
        for _ in range(1_000):
            await ws.send(bytes(100))
        await ws.send(json.dumps({"type": "ping", "t_ms": 4}))
        replies = await answers_until_pong(ws)
        assert [(r.get("code"), r.get("id")) for r in replies] == [
            ("upload_failed", "crumbs"), (None, None)], replies
        assert "send chunks of" in replies[0]["message"]
        assert ws.close_code is None


@live
async def test_an_upload_is_received_into_a_private_file_deleted_when_its_sender_goes(
        server, server_tmp, files):
    data = (files / "swapped.sofa").read_bytes()
    async with websockets.connect(server.ws) as ws:
        await ws.send(json.dumps({"type": "join", "room": ROOM, "name": "Leaver"}))
        await ws.send(json.dumps({"type": "hrtf_upload", "name": "x.sofa", "size": len(data)}))
        await ws.send(data[:200_000])
        await ws.send(json.dumps({"type": "ping", "t_ms": 4}))  # after the chunk is written
        async with asyncio.timeout(5):
            while json.loads(await ws.recv())["type"] != "pong":
                pass
        [received] = server_tmp.glob("spatialjam-upload-*.sofa")
        assert received.stat().st_mode & 0o777 == 0o600
        assert received.read_bytes() == data[:200_000]
    async with asyncio.timeout(5):
        while received.exists():
            await asyncio.sleep(0.05)


def test_no_upload_leaves_a_file_behind(server, server_tmp):
    """After every upload above (taken, refused, ended, abandoned): the folder is empty."""
    deadline = time.monotonic() + 5
    while list(server_tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(server_tmp.iterdir()) == []
