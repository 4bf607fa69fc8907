"""Session recording: every member's own uplink to its own FLAC file, aligned on the room clock.

Unit tests drive the writer (:mod:`server.recording.capture`) and the shell
(:mod:`server.recording.control`) on real files in ``tmp_path``: files aligned tick by tick with
silence where a member was not there, ticks dropped when the writer falls behind (counted, never
waited for), files left readable by a writer killed mid-recording, the AI's notes as MIDI. The
live tests run real ``spatialjam serve`` processes with aiortc bots playing known tones: each
file holds its bot's tone alone, lines up with the room clock and with a listener's binaural
recording; only admins record, members download with a token for the room, and SIGTERM closes
the files.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
from scipy.signal import welch

from ai_accompany.midi import NoteLog, read_midi
from bench.bot import Bot, tone
from bench.serverproc import ServerProcess
from dsp.notes import NoteEvent
from hrtf.constants import FRAME, SAMPLE_RATE
from server.recording.capture import MANIFEST, RecordingWriter, RoomRecording, file_stem
from server.recording.control import RecordingFileError, Recordings, recordings_root
from server.recording.flacfile import UNFLUSHED_SAMPLES, patch_flac_length
from server.rooms.room import Room
from server.web.access import read_secret_file, write_new_secret
from signaling.access import mint
from signaling.recording_messages import ListRecordings, StartRecording, StopRecording
from signaling.session import SignalingSession
from tests.helpers.audio import band_envelope

ROOT = Path(__file__).resolve().parents[2]
TONES = {"Ada": 500.0, "Bo": 800.0, "Cy": 1300.0}


def level(tick: int, start: int, slot: int) -> float:
    """The value a unit test's member ``slot`` plays in tick ``tick``: unique per tick (1/256
    apart, far above 16-bit steps) and per slot, so a file shows which tick each frame is."""
    return (tick - start + 1) / 256 * (slot + 1) / 4


def frames_of(path: Path, frame: int = FRAME) -> np.ndarray:
    data, rate = soundfile.read(path, dtype="float32")
    assert rate == SAMPLE_RATE
    assert len(data) % frame == 0
    return data.reshape(len(data) // frame, frame, *data.shape[1:])


def layout_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "layout.jsonl").read_text().splitlines()]


# the writer (no server) ------------------------------------------------------------------------


@pytest.mark.parametrize("frame", [FRAME, 240])  # a 20 ms room and a 5 ms one
def test_every_member_has_a_file_on_the_room_clock_with_silence_where_they_were_not(tmp_path,
                                                                                     frame):
    room = Room("band", 4)
    ada, bo = room.join("Ada"), room.join("Bo")
    writer = RecordingWriter(tmp_path, {"id": "t"}, frame=frame)
    writer.start()
    recording = RoomRecording(writer)
    start, ticks = 1000, 120
    present: dict[str, set[int]] = {ada.id: set(), bo.id: set()}
    slots = {ada.id: ada.slot, bo.id: bo.slot}
    for tick in range(start, start + ticks):
        if tick == start + 30:
            room.leave(bo.id)
        if tick == start + 50:
            cy = room.join("Cy")
            present[cy.id], slots[cy.id] = set(), cy.slot
        if tick == start + 70:
            assert room.join("Bo", seat=bo.seat).id == bo.id  # the same file again
        take = recording.take(room, tick)
        audio = np.zeros((room.capacity, frame), np.float32)
        for member in room.members.values():
            audio[member.slot] = level(tick, start, member.slot)
            present[member.id].add(tick)
        take.capture(audio)
    manifest = writer.finish()

    assert (manifest["start_tick"], manifest["end_tick"]) == (start, start + ticks)
    assert manifest["status"] == "finished" and manifest["dropped_frames"] == 0
    assert manifest["duration_s"] == ticks * frame / SAMPLE_RATE and manifest["frame"] == frame
    names = {t["member"]: t["file"] for t in manifest["tracks"]}
    for member, ticks_there in present.items():
        frames = frames_of(tmp_path / names[member], frame)
        assert len(frames) == ticks  # every file spans the whole recording
        for k, samples in enumerate(frames):
            tick = start + k
            want = level(tick, start, slots[member]) if tick in ticks_there else 0.0
            np.testing.assert_allclose(samples, want, atol=1 / 32768, err_msg=f"tick {tick}")
    lines = layout_lines(tmp_path)
    assert [line["tick"] for line in lines] == [start, start + 30, start + 50, start + 70]
    assert [line["sample"] for line in lines] == [0, 30 * frame, 50 * frame, 70 * frame]
    assert [len(line["members"]) for line in lines] == [2, 1, 2, 3]
    assert {p["source"] for p in lines[-1]["stage"]} == set(present)


class HeldFile:
    """A sink whose first write waits until the test lets it go: a writer stuck on its disk."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.blocks: list[np.ndarray] = []
        self.closed = False

    def write(self, block: np.ndarray) -> None:
        self.release.wait(30)
        self.blocks.append(block.copy())

    def sync(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_a_writer_that_falls_behind_costs_dropped_ticks_counted_and_written_as_silence(
        tmp_path):
    release = threading.Event()
    files: list[HeldFile] = []

    def open_file(path, channels):
        files.append(HeldFile(release))
        return files[-1]

    writer = RecordingWriter(tmp_path, {"id": "slow"}, queue_ticks=3, open_file=open_file)
    writer.start()
    writer.start_tick = 0
    rows = {tick: np.full((1, FRAME), level(tick, 0, 0), np.float32) for tick in range(40)}
    # The writer is stuck on its first write: offering must not wait for it (or this hangs).
    taken = [writer.offer(tick, (("m1", "Ada"),), rows[tick]) for tick in range(40)]
    dropped = [tick for tick, ok in enumerate(taken) if not ok]
    assert len(dropped) >= 40 - 3 - 1 and writer.dropped_frames == len(dropped)
    release.set()
    manifest = writer.finish()
    assert manifest["dropped_frames"] == len(dropped)
    assert (manifest["start_tick"], manifest["end_tick"]) == (0, 40)  # the last tick offered
    (file,) = files
    assert file.closed
    audio = np.concatenate(file.blocks).reshape(-1, FRAME)
    assert len(audio) == 40  # aligned: a dropped tick is a frame of silence
    for tick, frame in enumerate(audio):
        np.testing.assert_array_equal(frame, 0.0 if tick in dropped else rows[tick][0])


class FullDisk(HeldFile):
    """A sink whose disk fills up after ``room`` writes."""

    def __init__(self, room: int) -> None:
        super().__init__(threading.Event())
        self.release.set()
        self.room = room

    def write(self, block: np.ndarray) -> None:
        if len(self.blocks) >= self.room:
            raise OSError(28, "No space left on device")
        super().write(block)


def test_a_disk_that_fills_up_stops_the_writing_and_the_recording_says_so(tmp_path):
    folder = tmp_path / "band" / "20260101-000000-0000"
    folder.mkdir(parents=True)
    writer = RecordingWriter(folder, {"id": "full", "started_at": 0.0},
                             open_file=lambda path, channels: FullDisk(5))
    writer.start()
    writer.start_tick = 0
    for tick in range(20):
        writer.offer(tick, (("m1", "Ada"),), np.full((1, FRAME), 0.1, np.float32))
    manifest = writer.finish()
    assert "No space left on device" in manifest["error"]
    assert manifest["dropped_frames"] == 15  # every tick from the one that failed on
    (listed,) = Recordings(tmp_path).list("band")
    assert listed.status == "failed" and listed.dropped_frames == 15


KILLED_WRITER = textwrap.dedent("""
    import json, os, signal, sys, time
    from pathlib import Path
    import numpy as np
    from server.recording.capture import RecordingWriter

    folder = Path(sys.argv[1])
    writer = RecordingWriter(folder, {"id": "killed", "started_at": 0.0})
    writer.start()
    writer.start_tick = 0
    t = np.arange(960) / 48000
    for tick in range(150):  # 3 s of a 440 Hz tone
        block = (0.3 * np.sin(2 * np.pi * 440 * (t + tick * 0.02))).astype(np.float32)
        while not writer.offer(tick, (("m1", "Ada"),), block[None]):
            time.sleep(0.001)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the writer has synced the last second
        if json.loads((folder / "recording.json").read_text())["duration_s"] >= 3.0:
            break
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_writer_killed_mid_recording_leaves_flac_files_that_open_and_play(tmp_path):
    folder = tmp_path / "band" / "20260101-000000-0000"
    folder.mkdir(parents=True)
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(folder)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == -9, done.stderr
    data, rate = soundfile.read(folder / "Ada-m1.flac", dtype="float32")
    assert len(data) == 150 * FRAME - UNFLUSHED_SAMPLES  # all but what libFLAC may hold
    t = np.arange(len(data)) / rate
    np.testing.assert_allclose(data, 0.3 * np.sin(2 * np.pi * 440 * t), atol=2 / 32768)
    assert json.loads((folder / MANIFEST).read_text())["status"] == "recording"
    (listed,) = Recordings(tmp_path).list("band")  # the server died: listed as interrupted
    assert listed.status == "interrupted" and listed.duration_s == 3.0
    assert "Ada-m1.flac" in {f.name for f in listed.files}


def test_the_flac_length_patch_leaves_what_is_not_flac_alone(tmp_path):
    path = tmp_path / "x.flac"
    path.write_bytes(b"RIFF" + bytes(60))
    with open(path, "r+b") as f:
        assert not patch_flac_length(f.fileno(), 1000)
        assert not patch_flac_length(f.fileno(), 0)
    assert path.read_bytes() == b"RIFF" + bytes(60)


def test_the_ai_notes_of_the_recording_go_to_midi_with_time_zero_at_its_first_sample(
        tmp_path):
    writer = RecordingWriter(tmp_path, {"id": "ai"})
    writer.start()
    writer.start_tick = 500
    for tick in range(500, 600):
        writer.offer(tick, (), np.zeros((0, FRAME), np.float32))
    start = 500 * FRAME
    notes = [NoteEvent(start - 4800, 2400, 60, 0.5, "ai"),  # before: left out
             NoteEvent(start + 4800, 9600, 64, 0.8, "ai"),
             NoteEvent(start + 48_000, 4800, 67, 0.6, "ai"),
             NoteEvent(600 * FRAME, 4800, 72, 0.6, "ai")]  # after: left out
    manifest = writer.finish(notes, bpm=100.0)
    assert manifest["midi"] == "ai.mid"
    song = read_midi(tmp_path / "ai.mid", origin=start)
    assert [(e.start, e.pitch) for e in song.events] == [(start + 4800, 64), (start + 48_000, 67)]
    assert song.bpm == pytest.approx(100.0)


def test_file_names_are_safe_and_tell_members_apart():
    assert file_stem("Zoë Kim", "3f2a") == "Zoe-Kim-3f2a"
    assert file_stem("../../etc", "ab") == "etc-ab"
    assert file_stem("🎻", "cd") == "member-cd"


def test_recordings_live_beside_the_state_unless_told_and_none_turns_them_off(tmp_path,
                                                                             state_dir):
    assert recordings_root("none") is None
    assert recordings_root(str(tmp_path / "r")) == tmp_path / "r"
    assert recordings_root(None, str(tmp_path / "rooms.db")) == tmp_path / "recordings"
    assert recordings_root(None, "none") == state_dir / "recordings"


# the shell: messages, listing, downloads (no server) ---------------------------------------------


def a_live_room() -> tuple[SimpleNamespace, SimpleNamespace]:
    room = Room("band", 4)
    member = room.join("Ada")
    live = SimpleNamespace(room=room, runner=SimpleNamespace(recording=None, ai_notes=NoteLog()),
                           ai_config=None, changing_frame=False)
    return live, SimpleNamespace(live=live, member_id=member.id, session=SignalingSession())


def replies(p) -> list[dict]:
    return [json.loads(text) for text in p.session.data_to_send()]


async def test_the_shell_starts_stops_lists_and_serves_a_recording(tmp_path):
    recordings = Recordings(tmp_path)
    live, p = a_live_room()
    broadcasts = []
    await recordings.handle(p, StartRecording(msg_id=1), broadcasts.append)
    (started,) = replies(p)
    assert started["type"] == "recording" and started["active"] and started["id"] == 1
    rec_id = started["recording"]["id"]
    assert live.room.recording.id == rec_id and broadcasts == [live]
    assert live.runner.recording is not None
    await recordings.handle(p, StartRecording(msg_id=2), broadcasts.append)  # already: the same
    assert replies(p)[0]["recording"]["id"] == rec_id and len(broadcasts) == 1
    for tick in (7, 8):
        live.runner.recording.take(live.room, tick).capture(np.full((4, FRAME), 0.25,
                                                                    np.float32))
    live.runner.ai_notes.add([NoteEvent(7 * FRAME + 100, 480, 60, 0.5, "ai")])  # the AI played
    with pytest.raises(RecordingFileError) as busy:
        recordings.read_file("band", rec_id, MANIFEST)
    assert busy.value.status == 409
    await recordings.handle(p, ListRecordings(msg_id=3), broadcasts.append)
    assert replies(p)[0]["recordings"] == []  # not the one being made

    await recordings.handle(p, StopRecording(msg_id=4), broadcasts.append)
    (stopped,) = replies(p)
    assert not stopped["active"] and stopped["recording"]["status"] == "finished"
    assert live.room.recording is None and live.runner.recording is None
    files = {f["name"]: f for f in stopped["recording"]["files"]}
    track = f"Ada-{p.member_id}.flac"
    assert set(files) == {track, "ai.mid", "layout.jsonl", MANIFEST}
    song = read_midi(tmp_path / "band" / rec_id / "ai.mid", origin=7 * FRAME)
    assert [(e.start, e.pitch) for e in song.events] == [(7 * FRAME + 100, 60)]
    assert files[track]["url"] == f"/recordings/band/{rec_id}/{track}"
    body, kind = recordings.read_file("band", rec_id, track)
    assert kind == "audio/flac" and body == (tmp_path / "band" / rec_id / track).read_bytes()
    await recordings.handle(p, ListRecordings(msg_id=5), broadcasts.append)
    assert [r["id"] for r in replies(p)[0]["recordings"]] == [rec_id]
    await recordings.handle(p, StopRecording(msg_id=6), broadcasts.append)  # nothing to stop
    assert replies(p)[0] == {"type": "recording", "active": False, "recording": None, "id": 6}
    for bad in (("band", rec_id, "..%2Fsecret"), ("band", "..", MANIFEST),
                ("band", rec_id, ".recording.json.tmp"), ("other", rec_id, track)):
        with pytest.raises(RecordingFileError) as missing:
            recordings.read_file(*bad)
        assert missing.value.status == 404


async def test_a_server_without_recordings_says_so_and_an_ai_has_no_mix_to_record():
    live, p = a_live_room()
    await Recordings(None).handle(p, StartRecording(msg_id=1), lambda live: None)
    (refused,) = replies(p)
    assert refused["code"] == "recording_unavailable" and "--recordings none" in refused["message"]
    ai = live.room.add_ai("AI organ")
    await Recordings(Path("/nonexistent/never")).handle(
        p, StartRecording(binaural_of=ai.id, msg_id=2), lambda live: None)
    assert "has no ears" in replies(p)[0]["message"]


# live: a real server and aiortc bots --------------------------------------------------------------


def tone_db(x: np.ndarray, freq: float) -> float:
    """Power (dB) near ``freq`` in ``x`` (Welch, 4096-point Hann segments)."""
    f, psd = welch(x, SAMPLE_RATE, nperseg=4096)
    band = (f > freq * 0.97) & (f < freq * 1.03)
    return 10 * np.log10(psd[band].sum() + 1e-30)


def onset(x: np.ndarray, freq: float, after: int = 0) -> int:
    """The first sample from ``after`` where the tone at ``freq`` reaches a tenth (−20 dB) of
    its usual level there."""
    env = band_envelope(x, freq)[after:]
    return after + int(np.flatnonzero(env > 0.1 * np.percentile(env, 90))[0])


async def test_three_bots_are_recorded_each_alone_and_aligned_on_the_room_clock(tmp_path):
    root = tmp_path / "recordings"
    with ServerProcess("--recordings", str(root)) as srv:
        ada = Bot(srv.ws, "rec", "Ada", tone(TONES["Ada"]))
        bo = Bot(srv.ws, "rec", "Bo", tone(TONES["Bo"]))
        for bot in (ada, bo):
            await bot.connect()
        await asyncio.sleep(1.0)  # both play
        started = await ada.request({"type": "start_recording", "binaural_of": ada.participant},
                                    "recording")
        assert started["active"] and started["recording"]["status"] == "recording"
        rec_id = started["recording"]["id"]
        await asyncio.sleep(2.5)
        assert bo.state["recording"] == {"id": rec_id, "active": True, "binaural_of":
                                         ada.participant,
                                         "started_at": started["recording"]["started_at"]}
        cy = Bot(srv.ws, "rec", "Cy", tone(TONES["Cy"]))  # joins late
        await cy.connect()
        await asyncio.sleep(2.5)
        await bo.close()  # away for a while...
        await asyncio.sleep(1.5)
        bo = Bot(srv.ws, "rec", "Bo", tone(TONES["Bo"]), seat=bo.seat)  # ...then back
        await bo.connect()
        await asyncio.sleep(3.0)
        stopped = await ada.request({"type": "stop_recording"}, "recording")
        assert not stopped["active"] and stopped["recording"]["status"] == "finished"
        assert stopped["recording"]["dropped_frames"] == 0
        listed = await cy.request({"type": "list_recordings"}, "recordings")
        assert [r["id"] for r in listed["recordings"]] == [rec_id]
        await asyncio.sleep(0.3)
        assert "recording" not in cy.state  # room_state: not recording any more
        files = {f["name"]: f for f in stopped["recording"]["files"]}
        ids = {bot.name: bot.participant for bot in (ada, bo, cy)}
        tracks = {name: f"{name}-{pid}.flac" for name, pid in ids.items()}
        binaural = f"binaural-Ada-{ids['Ada']}.flac"
        assert set(files) == {*tracks.values(), binaural, "layout.jsonl", MANIFEST}
        folder = root / "rec" / rec_id
        with urllib.request.urlopen(srv.http + files[tracks["Bo"]]["url"]) as reply:
            assert reply.headers["Content-Type"] == "audio/flac"
            assert reply.read() == (folder / tracks["Bo"]).read_bytes()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{srv.http}/recordings/rec/{rec_id}/nothing.flac")
        assert missing.value.code == 404
        with urllib.request.urlopen(f"{srv.http}/metrics") as reply:
            assert "spatialjam_recording_dropped_frames_total 0" in reply.read().decode()
        for bot in (ada, bo, cy):
            await bot.close()

    manifest = json.loads((folder / MANIFEST).read_text())
    start, length = manifest["start_tick"], (manifest["end_tick"] - manifest["start_tick"]) * FRAME
    audio = {name: soundfile.read(folder / file, dtype="float32")[0]
             for name, file in tracks.items()}
    mix = soundfile.read(folder / binaural, dtype="float32")[0]
    assert 9.0 < length / SAMPLE_RATE < 14.0
    assert {len(x) for x in (*audio.values(), mix)} == {length}  # one length, one start
    assert mix.shape == (length, 2)

    for name, x in audio.items():  # each bot's tone alone in its file
        own = tone_db(x, TONES[name])
        for other, freq in TONES.items():
            if other != name:
                assert own - tone_db(x, freq) >= 30, (name, other)
    assert band_envelope(audio["Ada"][:FRAME * 5], TONES["Ada"]).max() > 0.05  # from sample 0

    # Cy joined late: silent until the tick the room had it (the stage journal's), and its
    # tone starts at the same sample in its file as in Ada's binaural mix, which Ada heard
    # from the start (tolerance: half a frame; a misaligned track is a frame or more off).
    lines = layout_lines(folder)
    members = [{m["id"] for m in line["members"]} for line in lines]
    joined = lines[next(k for k, m in enumerate(members) if ids["Cy"] in m)]["tick"]
    assert not audio["Cy"][:(joined - start) * FRAME].any()
    assert abs(onset(audio["Cy"], TONES["Cy"]) - onset(mix, TONES["Cy"])) < FRAME // 2
    # Bo was away: silent from the tick it left to the tick it came back, in its file and in
    # Ada's mix; when it plays again it does so at the same sample in both.
    gone = next(k for k, m in enumerate(members) if k and ids["Bo"] not in m)
    back = next(k for k, m in enumerate(members) if k > gone and ids["Bo"] in m)
    left, came = ((lines[k]["tick"] - start) * FRAME for k in (gone, back))
    assert not audio["Bo"][left:came].any() and came - left >= SAMPLE_RATE
    heard_away = band_envelope(mix, TONES["Bo"])
    assert np.median(heard_away[left:came]) < 0.01 * np.median(heard_away[:left])
    assert abs(onset(audio["Bo"], TONES["Bo"], after=came)
               - onset(mix, TONES["Bo"], after=came)) < FRAME // 2


def mint_for(secret: bytes, room: str, identity: str, *grants: str) -> str:
    return mint(secret, room=room, identity=identity, grants=grants or ("join", "publish"),
                ttl_s=600, now=time.time())


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def test_only_admins_record_members_download_and_sigterm_closes_the_files(tmp_path):
    secret_file = write_new_secret(tmp_path / "secret")
    secret = read_secret_file(secret_file)
    root = tmp_path / "recordings"
    srv = ServerProcess("--secret-file", str(secret_file), "--recordings", str(root))
    with srv:
        pat = Bot(srv.ws, "gig", "Pat", tone(TONES["Ada"]), token=mint_for(secret, "gig", "pat"))
        ida = Bot(srv.ws, "gig", "Ida", token=mint_for(secret, "gig", "ida", "admin"))
        for bot in (pat, ida):
            await bot.connect()
        for kind in ("start_recording", "stop_recording"):
            with pytest.raises(RuntimeError, match=f"forbidden: '{kind}' needs the 'admin'"):
                await pat.request({"type": kind}, "recording")
        assert not root.exists()  # nothing was started
        await asyncio.sleep(0.5)
        first = (await ida.request({"type": "start_recording"}, "recording"))["recording"]
        await asyncio.sleep(1.5)
        done = await ida.request({"type": "stop_recording"}, "recording")
        listed = await pat.request({"type": "list_recordings"}, "recordings")  # any member
        assert [r["id"] for r in listed["recordings"]] == [first["id"]]
        url = srv.http + next(f["url"] for f in done["recording"]["files"]
                              if f["name"].startswith("Pat-"))
        assert fetch(url)[0] == 401  # no token
        status, body = fetch(f"{url}?token={mint_for(secret, 'other', 'eve')}")
        assert status == 401 and json.loads(body)["code"] == "unauthorized"
        status, body = fetch(f"{url}?token={mint_for(secret, 'gig', 'pat')}")  # a member's
        assert status == 200 and body[:4] == b"fLaC"

        second = (await ida.request({"type": "start_recording"}, "recording"))["recording"]
        await asyncio.sleep(3.0)
        assert await asyncio.to_thread(srv.stop) == 0  # SIGTERM in the middle
        for bot in (pat, ida):
            await bot.close()

    folder = root / "gig" / second["id"]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["status"] == "finished" and "shut down" in manifest["ended_by"]
    with soundfile.SoundFile(folder / f"Pat-{pat.participant}.flac") as f:  # opens, plays
        assert f.frames == (manifest["end_tick"] - manifest["start_tick"]) * FRAME
        data = f.read(dtype="float32")
    assert len(data) >= 2.5 * SAMPLE_RATE
    envelope = band_envelope(data, TONES["Ada"])
    # The tone is there up to the cut (the last few frames may be the uplink's concealment
    # as the connection closed).
    assert np.percentile(envelope[-SAMPLE_RATE:-SAMPLE_RATE // 4], 10) > 0.05
