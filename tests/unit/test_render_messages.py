"""The rendering messages (signaling.render_messages): set_rendering, set_room_acoustics and
hrtf_upload parse to their dataclasses, each malformed field is refused with its code and a
message naming it; the session lets binary frames through only while an upload is open."""

from __future__ import annotations

import json

import pytest

from signaling import limits
from signaling.errors import ErrorCode, ProtocolError
from signaling.messages import parse_message
from signaling.render_messages import (
    ROOM_CHOICES,
    HrtfChunk,
    HrtfUpload,
    Rendering,
    RoomAcoustics,
    SetRendering,
    SetRoomAcoustics,
)
from signaling.server_messages import RoomState
from signaling.session import CLOSE_MESSAGE_TOO_BIG, SignalingSession, State
from signaling.wire import encode

DIGEST = "8ebce2c07f68b47b1e125e9597261947f3535ab8f91ce650faa091ccff2e22a9"
MAX = limits.MAX_HRTF_UPLOAD_BYTES


def message(**fields) -> str:
    return json.dumps(fields)


def refused(**fields) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_message(message(**fields))
    return info.value


VALID = [
    (message(type="set_rendering", hrtf="kemar"), SetRendering(hrtf="kemar")),
    (message(type="set_rendering", hrtf="spherical-head", head_radius_m=0.05, id=4),
     SetRendering(hrtf="spherical-head", head_radius_m=0.05, msg_id=4)),
    (message(type="set_rendering", hrtf="spherical-head", head_radius_m=0.12),
     SetRendering(hrtf="spherical-head", head_radius_m=0.12)),
    (message(type="set_rendering", hrtf="spherical-head"), SetRendering(hrtf="spherical-head")),
    (message(type="set_rendering", hrtf=f"sofa:{DIGEST}", acoustics=False, reference=False),
     SetRendering(hrtf=f"sofa:{DIGEST}", acoustics=False, reference=False)),
    (message(type="set_rendering", acoustics=True), SetRendering(acoustics=True)),
    (message(type="set_rendering", reference=True, hrtf=None), SetRendering(reference=True)),
    (message(type="set_room_acoustics", preset="off"), SetRoomAcoustics(preset="off")),
    (message(type="set_room_acoustics", preset="club", wet=0, id="r"),
     SetRoomAcoustics(preset="club", wet=0.0, msg_id="r")),
    (message(type="set_room_acoustics", preset="concert-hall", dims_m=[60, 2, 17], rt60_s=4,
             wet=1, max_order=2),
     SetRoomAcoustics(preset="concert-hall", dims_m=(60.0, 2.0, 17.0), rt60_s=4.0, wet=1.0,
                      max_order=2)),
    (message(type="set_room_acoustics", preset="custom", dims_m=[12, 9, 4], rt60_s=0.1,
             max_order=0),
     SetRoomAcoustics(preset="custom", dims_m=(12.0, 9.0, 4.0), rt60_s=0.1, max_order=0)),
    (message(type="hrtf_upload", name="  my ears.sofa ", size=MAX, id=10),
     HrtfUpload(name="my ears.sofa", size=MAX, msg_id=10)),
    (message(type="hrtf_upload", name="Öhr 👂.sofa", size=1),
     HrtfUpload(name="Öhr 👂.sofa", size=1)),
]


@pytest.mark.parametrize(("text", "expected"), VALID, ids=[t for t, _ in VALID])
def test_valid_message_parses_to_its_dataclass(text, expected):
    assert parse_message(text) == expected


@pytest.mark.parametrize(("text", "expected"), VALID, ids=[t for t, _ in VALID])
def test_a_parsed_message_encodes_back_to_what_was_sent(text, expected):
    sent = {k for k, v in json.loads(text).items() if v is not None}
    assert parse_message(encode(expected)) == expected
    assert set(json.loads(encode(expected))) == sent


# each bad field ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "code", "words"), [
    ({}, ErrorCode.MISSING_FIELD, "needs at least one of 'hrtf'"),
    ({"hrtf": None, "reference": None}, ErrorCode.MISSING_FIELD, "needs at least one of"),
    ({"hrtf": 1}, ErrorCode.BAD_TYPE, "'hrtf' in 'set_rendering' must be a string"),
    ({"hrtf": "KEMAR"}, ErrorCode.BAD_VALUE, "'kemar', 'spherical-head' or 'sofa:'"),
    ({"hrtf": "sofa:" + DIGEST[:-1]}, ErrorCode.BAD_VALUE, "64 lowercase hex digits"),
    ({"hrtf": "sofa:" + DIGEST.upper()}, ErrorCode.BAD_VALUE, "64 lowercase hex digits"),
    ({"hrtf": "/etc/passwd"}, ErrorCode.BAD_VALUE, "'hrtf' in 'set_rendering'"),
    ({"hrtf": "kemar", "head_radius_m": 0.09}, ErrorCode.BAD_VALUE,
     "send it with \"hrtf\": \"spherical-head\""),
    ({"head_radius_m": 0.09}, ErrorCode.BAD_VALUE, "spherical head's radius"),
    ({"hrtf": "spherical-head", "head_radius_m": 0.049}, ErrorCode.OUT_OF_RANGE,
     "'head_radius_m' in 'set_rendering' must be a finite number from 0.05 to 0.12"),
    ({"hrtf": "spherical-head", "head_radius_m": 0.13}, ErrorCode.OUT_OF_RANGE, "0.05 to 0.12"),
    ({"hrtf": "spherical-head", "head_radius_m": "9 cm"}, ErrorCode.BAD_TYPE, "a number"),
    ({"hrtf": "spherical-head", "head_radius_m": True}, ErrorCode.BAD_TYPE, "a number"),
    ({"acoustics": 0}, ErrorCode.BAD_TYPE, "'acoustics' in 'set_rendering' must be true or false"),
    ({"reference": "yes"}, ErrorCode.BAD_TYPE, "'reference' in 'set_rendering' must be true"),
    ({"hrtf": "kemar", "room": "club"}, ErrorCode.UNKNOWN_FIELD, "has no field 'room'"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_set_rendering_refuses_each_bad_field(fields, code, words):
    error = refused(type="set_rendering", **fields)
    assert error.code is code
    assert words in error.message


@pytest.mark.parametrize(("fields", "code", "words"), [
    ({}, ErrorCode.MISSING_FIELD, "needs the field 'preset'"),
    ({"preset": 3}, ErrorCode.BAD_TYPE, "'preset' in 'set_room_acoustics' must be a string"),
    ({"preset": "cathedral"}, ErrorCode.BAD_VALUE,
     "must be one of off, dry-studio, rehearsal-room, club, concert-hall, custom"),
    ({"preset": "off", "wet": 0.5}, ErrorCode.BAD_VALUE,
     "'wet' in 'set_room_acoustics' cannot be set with \"preset\": \"off\""),
    ({"preset": "custom", "rt60_s": 1.0}, ErrorCode.MISSING_FIELD,
     "\"preset\": \"custom\" needs 'dims_m'"),
    ({"preset": "custom", "dims_m": [5, 5, 3]}, ErrorCode.MISSING_FIELD, "needs 'rt60_s'"),
    ({"preset": "club", "dims_m": [5, 5]}, ErrorCode.BAD_VALUE, "an array of 3 numbers, got 2"),
    ({"preset": "club", "dims_m": "5x5x3"}, ErrorCode.BAD_TYPE, "an array of 3 numbers"),
    ({"preset": "club", "dims_m": [5, 1.5, 3]}, ErrorCode.OUT_OF_RANGE,
     "'dims_m[1]' in 'set_room_acoustics' must be a room side from 2 to 60 m, got 1.5"),
    ({"preset": "club", "dims_m": [5, -4, 3]}, ErrorCode.OUT_OF_RANGE, "'dims_m[1]'"),
    ({"preset": "club", "dims_m": [61, 5, 3]}, ErrorCode.OUT_OF_RANGE,
     "'dims_m[0]' in 'set_room_acoustics' must be a finite number from -60 to 60"),
    ({"preset": "club", "dims_m": [5, True, 3]}, ErrorCode.BAD_TYPE, "'dims_m[1]'"),
    ({"preset": "club", "rt60_s": 0.05}, ErrorCode.OUT_OF_RANGE, "from 0.1 to 4"),
    ({"preset": "club", "rt60_s": 10**400}, ErrorCode.OUT_OF_RANGE, "'rt60_s'"),
    ({"preset": "club", "wet": 1.01}, ErrorCode.OUT_OF_RANGE, "'wet' in 'set_room_acoustics'"),
    ({"preset": "club", "wet": -0.1}, ErrorCode.OUT_OF_RANGE, "from 0 to 1"),
    ({"preset": "club", "max_order": 3}, ErrorCode.OUT_OF_RANGE, "an integer from 0 to 2"),
    ({"preset": "club", "max_order": 1.0}, ErrorCode.BAD_TYPE, "must be an integer"),
    ({"preset": "club", "materials": "brick"}, ErrorCode.UNKNOWN_FIELD, "no field 'materials'"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_set_room_acoustics_refuses_each_bad_field(fields, code, words):
    error = refused(type="set_room_acoustics", **fields)
    assert error.code is code
    assert words in error.message


def test_an_upload_over_the_limit_is_refused_before_any_byte_naming_the_limit():
    error = refused(type="hrtf_upload", name="huge.sofa", size=MAX + 1, id=5)
    assert error.code is ErrorCode.OUT_OF_RANGE and error.msg_id == 5
    assert "at most 33554432 bytes (32.0 MiB)" in error.message
    assert "33554433 bytes (32.0 MiB)" in error.message


@pytest.mark.parametrize(("fields", "code", "words"), [
    ({"size": 10}, ErrorCode.MISSING_FIELD, "needs the field 'name'"),
    ({"name": "a.sofa"}, ErrorCode.MISSING_FIELD, "needs the field 'size'"),
    ({"name": "", "size": 10}, ErrorCode.BAD_VALUE, "1 to 120 characters, got 0"),
    ({"name": "   ", "size": 10}, ErrorCode.BAD_VALUE, "1 to 120 characters, got 0"),
    ({"name": "x" * 121, "size": 10}, ErrorCode.BAD_VALUE, "got 121"),
    ({"name": "a\u202eb.sofa", "size": 10}, ErrorCode.BAD_VALUE, "printable characters"),
    ({"name": "a.sofa", "size": 0}, ErrorCode.OUT_OF_RANGE, "'size' in 'hrtf_upload'"),
    ({"name": "a.sofa", "size": -1}, ErrorCode.OUT_OF_RANGE, "'size'"),
    ({"name": "a.sofa", "size": 10.5}, ErrorCode.BAD_TYPE, "must be an integer"),
    ({"name": "a.sofa", "size": "10"}, ErrorCode.BAD_TYPE, "must be an integer"),
    ({"name": "a.sofa", "size": 2**60}, ErrorCode.OUT_OF_RANGE, "'size'"),
    ({"name": "a.sofa", "size": 10, "data": "AAAA"}, ErrorCode.UNKNOWN_FIELD, "no field 'data'"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_hrtf_upload_refuses_each_bad_field(fields, code, words):
    error = refused(type="hrtf_upload", **fields)
    assert error.code is code
    assert words in error.message


def test_server_messages_are_refused_from_clients():
    for kind in ("rendering", "hrtf_uploaded"):
        error = refused(type=kind)
        assert error.code is ErrorCode.UNKNOWN_TYPE and "sent by the server" in error.message


# the protocol's numbers are the engine's -------------------------------------------------------

def test_presets_and_ranges_are_the_room_models():
    room_model = pytest.importorskip("dsp.room_model")
    assert tuple(room_model.PRESETS) == limits.ROOM_PRESETS
    assert ("off", *room_model.PRESETS, "custom") == ROOM_CHOICES
    assert (limits.MIN_ROOM_SIDE_M, limits.MAX_ROOM_SIDE_M) == room_model.DIMS_RANGE_M
    assert (limits.MIN_RT60_S, limits.MAX_RT60_S) == room_model.RT60_RANGE_S
    assert tuple(range(limits.MAX_REFLECTION_ORDER + 1)) == room_model.MAX_ORDERS


def test_head_radii_are_ones_the_spherical_head_makes():
    from hrtf.spherical_head import DEFAULT_HEAD_RADIUS_M, spherical_head_set

    assert limits.MIN_HEAD_RADIUS_M <= DEFAULT_HEAD_RADIUS_M <= limits.MAX_HEAD_RADIUS_M
    for radius in (limits.MIN_HEAD_RADIUS_M, limits.MAX_HEAD_RADIUS_M):
        assert spherical_head_set(radius).taps > 0


# server → client --------------------------------------------------------------------------------

def test_rendering_always_says_the_head_radius_even_when_there_is_none():
    out = json.loads(encode(Rendering("kemar", "MIT KEMAR", None, True, False, msg_id=3)))
    assert out == {"type": "rendering", "hrtf": "kemar", "hrtf_name": "MIT KEMAR",
                   "head_radius_m": None, "acoustics": True, "reference": False, "id": 3}


def test_room_state_shows_the_acoustics_or_null():
    dry = json.loads(encode(RoomState("band", 1, (), ())))
    assert dry["acoustics"] is None
    described = {"name": "club", "dims_m": [20.0, 14.0, 6.0], "rt60_s": 1.004, "max_order": 1,
                 "wet": 0.35}
    wet = RoomState("band", 2, (), (), acoustics=RoomAcoustics.from_description(described))
    assert json.loads(encode(wet))["acoustics"] == {**described, "rt60_s": 1.004}


# binary frames in the session -------------------------------------------------------------------

def joined_session() -> SignalingSession:
    session = SignalingSession()
    session.receive_text(message(type="join", room="r", name="A"), 0.0)
    session.state = State.JOINED
    session.data_to_send()
    return session


def codes(session: SignalingSession) -> list[str]:
    return [json.loads(text)["code"] for text in session.data_to_send()]


def test_binary_frames_are_chunks_only_while_an_upload_is_open():
    session = joined_session()
    assert session.receive_binary(b"abc", 1.0) == []
    assert codes(session) == ["not_text"]
    session.open_upload()
    assert session.receive_binary(b"abc", 1.1) == [HrtfChunk(b"abc")]
    assert session.receive_binary(bytearray(b"de"), 1.2) == [HrtfChunk(b"de")]
    assert codes(session) == []
    session.close_upload()
    assert session.receive_binary(b"f", 1.3) == []
    assert codes(session) == ["not_text"]


def test_chunks_do_not_count_as_messages_against_the_rate():
    session = joined_session()
    session.open_upload()
    for k in range(500):  # far past the burst of 100 messages
        assert session.receive_binary(b"x" * 64, 2.0 + k * 1e-4) == [HrtfChunk(b"x" * 64)]
    assert codes(session) == []
    assert session.receive_text(message(type="ping", t_ms=1), 2.1)  # the bucket is still full


def test_bytes_in_flight_after_an_upload_ended_are_dropped_quietly_up_to_the_announced_size():
    session = joined_session()
    session.open_upload()
    session.close_upload(drain_bytes=1000)
    assert session.receive_binary(b"x" * 600, 1.0) == []
    assert session.receive_binary(b"x" * 400, 1.0) == []
    assert codes(session) == []
    assert session.receive_binary(b"x", 1.0) == []  # beyond what was announced: refused
    assert codes(session) == ["not_text"]


def test_a_flood_of_binary_frames_outside_an_upload_closes_the_connection():
    session = joined_session()
    for k in range(session.limits.max_strikes):
        session.receive_binary(b"x" * 10, 1.0 + k * 0.01)
    assert session.state is State.CLOSED
    assert session.close_requested.code == 1008


def test_no_chunk_is_taken_before_the_room_is_joined():
    session = SignalingSession()
    session.open_upload()
    assert session.receive_binary(b"abc", 0.0) == []
    assert codes(session) == ["not_text"]


def test_a_text_frame_far_past_the_message_limit_closes_with_1009():
    session = joined_session()
    assert session.receive_text("x" * (limits.MAX_TEXT_FRAME_BYTES + 1), 1.0) == []
    assert session.close_requested.code == CLOSE_MESSAGE_TOO_BIG
    just_over = joined_session()
    just_over.receive_text("x" * (limits.MAX_MESSAGE_BYTES + 1), 1.0)
    assert codes(just_over) == ["too_large"] and just_over.close_requested is None
