"""Client message parsing: every valid shape accepted, every malformed kind refused by code."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signaling.admin_messages import Kick, LockRoom, SetFrame
from signaling.ai_messages import AiAdd, AiRemove, AiUpdate
from signaling.errors import ErrorCode, ProtocolError
from signaling.limits import MAX_DEPTH, MAX_MESSAGE_BYTES, MAX_SDP_BYTES
from signaling.messages import (
    CLIENT_MESSAGES,
    Answer,
    HeadPose,
    Ice,
    Join,
    Leave,
    MixOverride,
    MixReset,
    MoveSource,
    Offer,
    Ping,
    TurnSource,
    parse_message,
)
from signaling.metronome_messages import HearMetronome, SetMetronome
from signaling.recording_messages import ListRecordings, StartRecording, StopRecording
from signaling.render_messages import HrtfUpload, SetRendering, SetRoomAcoustics
from signaling.social_messages import MuteSelf, SendChat
from signaling.wire import decode, encode

SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
CANDIDATE = "candidate:1 1 udp 2130706431 192.0.2.1 40000 typ host"


def message(**fields) -> str:
    return json.dumps(fields)


def refused(text: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_message(text)
    return info.value


VALID = [
    (message(type="join", room="band", name="Ada", instrument="cello"),
     Join(room="band", name="Ada", instrument="cello")),
    (message(type="join", room="a-B_9", name="  Zoë 🎻 ", seat="s-1_x", token="a.b.c", id="j"),
     Join(room="a-B_9", name="Zoë 🎻", seat="s-1_x", token="a.b.c", msg_id="j")),
    (message(type="join", room="band", name="👩\u200d🎤 Mia", instrument="सितार"),
     Join(room="band", name="👩\u200d🎤 Mia", instrument="सितार")),
    (message(type="join", room="band", name="Ada", instrument=None, seat=None),
     Join(room="band", name="Ada")),
    (message(type="offer", sdp=SDP, id=7), Offer(sdp=SDP, msg_id=7)),
    (message(type="answer", sdp="v=0\nno-crlf\n"), Answer(sdp="v=0\nno-crlf\n")),
    (message(type="ice", candidate=CANDIDATE, sdpMid="0", sdpMLineIndex=0,
             usernameFragment="sXbp"),
     Ice(candidate=CANDIDATE, sdp_mid="0", sdp_mline_index=0, username_fragment="sXbp")),
    (message(type="ice", candidate=CANDIDATE, sdpMLineIndex=1),
     Ice(candidate=CANDIDATE, sdp_mline_index=1)),
    (message(type="ice", candidate=None), Ice(candidate=None)),
    (message(type="ice", candidate="", sdpMid="0", sdpMLineIndex=0),
     Ice(candidate=None, sdp_mid="0", sdp_mline_index=0)),
    (message(type="leave", id=-3), Leave(msg_id=-3)),
    (message(type="move_source", source="p-2", position_m=[1.5, -1000, 1000]),
     MoveSource(source="p-2", position_m=(1.5, -1000.0, 1000.0))),
    (message(type="turn_source", source="ai-1", yaw_deg=-720),
     TurnSource(source="ai-1", yaw_deg=-720.0)),
    (message(type="turn_source", source="p-2", yaw_deg=90, pitch_deg=10.5),
     TurnSource(source="p-2", yaw_deg=90.0, pitch_deg=10.5)),
    (message(type="head_pose", yaw_deg=30),
     HeadPose(yaw_deg=30.0, pitch_deg=0.0, roll_deg=0.0)),
    (message(type="head_pose", yaw_deg=30, pitch_deg=-5, roll_deg=720),
     HeadPose(yaw_deg=30.0, pitch_deg=-5.0, roll_deg=720.0)),
    (message(type="head_pose", quaternion=[1, 0, 0, 0]),
     HeadPose(quaternion=(1.0, 0.0, 0.0, 0.0))),
    (message(type="mix_override", source="p-2", gain=0), MixOverride(source="p-2", gain=0.0)),
    (message(type="mix_override", source="p-2", position_m=[0, 0, 0], gain=4, mute=False),
     MixOverride(source="p-2", position_m=(0.0, 0.0, 0.0), gain=4.0, mute=False)),
    (message(type="mix_reset", source="p-2"), MixReset(source="p-2")),
    (message(type="mix_reset", all=True), MixReset()),
    (message(type="ping", t_ms=0), Ping(t_ms=0.0)),
    (message(type="ping", t_ms=183220.5, id=2**53 - 1), Ping(t_ms=183220.5, msg_id=2**53 - 1)),
    (message(type="ai_add"), AiAdd()),
    (message(type="ai_add", role="call_response", instrument="bass", temperature=0.1, bpm=240,
             volume=0), AiAdd(role="call_response", instrument="bass", temperature=0.1,
                              bpm=240.0, volume=0.0)),
    (message(type="ai_update", ai="ai-1", bpm=0), AiUpdate(ai="ai-1", bpm=0.0)),
    (message(type="ai_update", ai="ai-1", metronome=True), AiUpdate(ai="ai-1", metronome=True)),
    (message(type="ai_remove", ai="ai-1", id="x"), AiRemove(ai="ai-1", msg_id="x")),
    (message(type="kick", member="p-2"), Kick(member="p-2")),
    (message(type="kick", member="p-2", reason="  wrong room ", id=3),
     Kick(member="p-2", reason="wrong room", msg_id=3)),
    (message(type="lock_room", locked=True), LockRoom(locked=True)),
    (message(type="lock_room", locked=False, id="l"), LockRoom(locked=False, msg_id="l")),
    (message(type="set_rendering", reference=True), SetRendering(reference=True)),
    (message(type="set_room_acoustics", preset="off"), SetRoomAcoustics(preset="off")),
    (message(type="hrtf_upload", name="ears.sofa", size=1), HrtfUpload(name="ears.sofa", size=1)),
    (message(type="start_recording"), StartRecording()),
    (message(type="start_recording", binaural_of="p-2", id=4),
     StartRecording(binaural_of="p-2", msg_id=4)),
    (message(type="stop_recording"), StopRecording()),
    (message(type="list_recordings", id="r"), ListRecordings(msg_id="r")),
    (message(type="chat", text="  from the top, bar 17  ", id=9),
     SendChat(text="from the top, bar 17", msg_id=9)),
    (message(type="chat", text="<b>Zoë</b> 🎻"), SendChat(text="<b>Zoë</b> 🎻")),
    (message(type="mute_self", muted=True), MuteSelf(muted=True)),
    (message(type="mute_self", muted=False), MuteSelf(muted=False)),
    (message(type="set_metronome", on=True), SetMetronome(on=True)),
    (message(type="set_frame", frame_ms=2.5), SetFrame(2.5)),
    (message(type="set_metronome", on=True, bpm=92.5, beats_per_bar=3, accent=False,
             count_in_bars=2, id="m"),
     SetMetronome(on=True, bpm=92.5, beats_per_bar=3, accent=False, count_in_bars=2,
                  msg_id="m")),
    (message(type="hear_metronome", mode="stage"), HearMetronome(mode="stage")),
    # The room's key, in the room's spelling; "" declares none.
    (message(type="set_metronome", on=False, key="d minor"), SetMetronome(on=False, key="D minor")),
    (message(type="set_metronome", on=True, key=" A# "), SetMetronome(on=True, key="Bb major")),
    (message(type="set_metronome", on=True, key="F♯ m"), SetMetronome(on=True, key="F# minor")),
    (message(type="set_metronome", on=True, key=""), SetMetronome(on=True, key="")),
]


@pytest.mark.parametrize(("text", "expected"), VALID, ids=[t for t, _ in VALID])
def test_valid_message_parses_to_its_dataclass(text, expected):
    assert parse_message(text) == expected


def test_every_message_type_has_a_valid_example():
    assert {type(m).TYPE for _, m in VALID} == set(CLIENT_MESSAGES)


@pytest.mark.parametrize(("text", "expected"), VALID, ids=[t for t, _ in VALID])
def test_encoded_message_parses_back_to_itself(text, expected):
    assert parse_message(encode(expected)) == expected


def test_server_only_types_are_named_as_such():
    from signaling.messages import _SERVER_ONLY
    from signaling.server_messages import SERVER_MESSAGE_TYPES

    assert set(SERVER_MESSAGE_TYPES) - set(CLIENT_MESSAGES) == _SERVER_ONLY
    assert "sent by the server" in refused(message(type="room_state")).message


def test_quaternion_is_normalised():
    pose = parse_message(message(type="head_pose", quaternion=[0, 0, 0, 1.005]))
    assert pose.quaternion == pytest.approx((0.0, 0.0, 0.0, 1.0), abs=1e-12)


def test_parsed_message_is_frozen():
    with pytest.raises(AttributeError):
        parse_message(message(type="ping", t_ms=1)).t_ms = 2


# -- refused: one case per kind, with the code it earns ---------------------------------------

MALFORMED = [
    # the text
    ("{", ErrorCode.BAD_JSON),
    ('{"type": "ping", "t_ms": 1} x', ErrorCode.BAD_JSON),
    ('{"type": "ping", "t_ms": NaN}', ErrorCode.BAD_JSON),
    ('{"type": "ping", "t_ms": Infinity}', ErrorCode.BAD_JSON),
    ('{"type": "ping", "t_ms": -Infinity}', ErrorCode.BAD_JSON),
    ('{"type": "ping", "type": "leave"}', ErrorCode.BAD_JSON),
    ('{"type": "ping", "t_ms": ' + "9" * 5000 + "}", ErrorCode.BAD_JSON),
    ("\ufeff{}", ErrorCode.BAD_JSON),
    ("", ErrorCode.BAD_JSON),
    # the shape
    ("[]", ErrorCode.NOT_AN_OBJECT),
    ('"join"', ErrorCode.NOT_AN_OBJECT),
    ("null", ErrorCode.NOT_AN_OBJECT),
    ("{}", ErrorCode.MISSING_FIELD),
    (message(type=5), ErrorCode.BAD_TYPE),
    (message(type="dance"), ErrorCode.UNKNOWN_TYPE),
    (message(type="joined"), ErrorCode.UNKNOWN_TYPE),
    (message(type="Ping", t_ms=1), ErrorCode.UNKNOWN_TYPE),
    (message(type="leave", extra=1), ErrorCode.UNKNOWN_FIELD),
    (message(type="move_source", source="p-2", postion_m=[0, 0, 0]), ErrorCode.UNKNOWN_FIELD),
    (message(type="ice", candidate=CANDIDATE, sdp_mid="0"), ErrorCode.UNKNOWN_FIELD),
    (message(type="join", room="band"), ErrorCode.MISSING_FIELD),
    (message(type="ping"), ErrorCode.MISSING_FIELD),
    (message(type="ice", candidate=CANDIDATE), ErrorCode.MISSING_FIELD),
    (message(type="ice", sdpMid="0"), ErrorCode.MISSING_FIELD),
    (message(type="head_pose"), ErrorCode.MISSING_FIELD),
    (message(type="head_pose", pitch_deg=3), ErrorCode.MISSING_FIELD),
    (message(type="mix_override", source="p-2"), ErrorCode.MISSING_FIELD),
    (message(type="mix_override", source="p-2", gain=None), ErrorCode.MISSING_FIELD),
    (message(type="mix_reset"), ErrorCode.MISSING_FIELD),
    # JSON types taken literally
    (message(type="ping", t_ms=True), ErrorCode.BAD_TYPE),
    (message(type="ping", t_ms="1"), ErrorCode.BAD_TYPE),
    (message(type="ping", t_ms=None), ErrorCode.BAD_TYPE),
    (message(type="move_source", source="p", position_m=[1, False, 0]), ErrorCode.BAD_TYPE),
    (message(type="move_source", source="p", position_m={"x": 1}), ErrorCode.BAD_TYPE),
    (message(type="move_source", source=3, position_m=[0, 0, 0]), ErrorCode.BAD_TYPE),
    (message(type="mix_override", source="p", gain=True), ErrorCode.BAD_TYPE),
    (message(type="mix_override", source="p", mute=1), ErrorCode.BAD_TYPE),
    (message(type="mix_override", source="p", mute="false"), ErrorCode.BAD_TYPE),
    (message(type="mix_reset", all=1), ErrorCode.BAD_TYPE),
    (message(type="ice", candidate=CANDIDATE, sdpMLineIndex=0.0), ErrorCode.BAD_TYPE),
    (message(type="ice", candidate=CANDIDATE, sdpMLineIndex=True), ErrorCode.BAD_TYPE),
    (message(type="join", room=["band"], name="Ada"), ErrorCode.BAD_TYPE),
    (message(type="offer", sdp=None), ErrorCode.BAD_TYPE),
    (message(type="leave", id=True), ErrorCode.BAD_TYPE),
    (message(type="leave", id=1.5), ErrorCode.BAD_TYPE),
    (message(type="leave", id=2**53), ErrorCode.OUT_OF_RANGE),
    (message(type="leave", id=""), ErrorCode.BAD_VALUE),
    (message(type="leave", id="x" * 65), ErrorCode.BAD_VALUE),
    (message(type="leave", id="a\tb"), ErrorCode.BAD_VALUE),
    (message(type="leave", id=[1]), ErrorCode.BAD_TYPE),
    # strings: lengths and characters
    (message(type="join", room="", name="Ada"), ErrorCode.BAD_VALUE),
    (message(type="join", room="r" * 65, name="Ada"), ErrorCode.BAD_VALUE),
    (message(type="join", room="my band", name="Ada"), ErrorCode.BAD_VALUE),
    (message(type="join", room="bänd", name="Ada"), ErrorCode.BAD_VALUE),
    (message(type="join", room="band\n", name="Ada"), ErrorCode.BAD_VALUE),
    (message(type="join", room="band", name="   "), ErrorCode.BAD_VALUE),
    (message(type="join", room="band", name="n" * 41), ErrorCode.BAD_VALUE),
    (message(type="join", room="band", name="Ada\x00"), ErrorCode.BAD_VALUE),
    (message(type="join", room="band", name="A\u202eda"), ErrorCode.BAD_VALUE),
    (message(type="join", room="band", name="Ada", instrument="i" * 41), ErrorCode.BAD_VALUE),
    (message(type="join", room="band", name="Ada", seat="../etc"), ErrorCode.BAD_VALUE),
    (message(type="join", room="band", name="Ada", token="a b"), ErrorCode.BAD_VALUE),
    (message(type="move_source", source="p 2", position_m=[0, 0, 0]), ErrorCode.BAD_VALUE),
    (message(type="move_source", source="p", position_m=[0, 0]), ErrorCode.BAD_VALUE),
    (message(type="move_source", source="p", position_m=[0, 0, 0, 0]), ErrorCode.BAD_VALUE),
    (message(type="ice", candidate="typ host", sdpMid="0"), ErrorCode.BAD_VALUE),
    (message(type="ice", candidate=CANDIDATE + "\n", sdpMid="0"), ErrorCode.BAD_VALUE),
    (message(type="ice", candidate="candidate:" + "1" * 1015, sdpMid="0"), ErrorCode.BAD_VALUE),
    (message(type="ice", candidate=CANDIDATE, sdpMid="é"), ErrorCode.BAD_VALUE),
    (message(type="head_pose", yaw_deg=0, quaternion=[1, 0, 0, 0]), ErrorCode.BAD_VALUE),
    (message(type="head_pose", quaternion=[1, 0, 0]), ErrorCode.BAD_VALUE),
    (message(type="mix_reset", source="p", all=True), ErrorCode.BAD_VALUE),
    (message(type="mix_reset", all=False), ErrorCode.BAD_VALUE),
    # numbers: ranges and finiteness
    (message(type="move_source", source="p", position_m=[1000.001, 0, 0]),
     ErrorCode.OUT_OF_RANGE),
    (message(type="move_source", source="p", position_m=[0, 0, -1e6]), ErrorCode.OUT_OF_RANGE),
    ('{"type": "move_source", "source": "p", "position_m": [1e400, 0, 0]}',
     ErrorCode.OUT_OF_RANGE),
    ('{"type": "move_source", "source": "p", "position_m": [0, -1e999, 0]}',
     ErrorCode.OUT_OF_RANGE),
    ('{"type": "move_source", "source": "p", "position_m": [0, 0, ' + "9" * 400 + "]}",
     ErrorCode.OUT_OF_RANGE),
    (message(type="turn_source", source="p", yaw_deg=720.5), ErrorCode.OUT_OF_RANGE),
    (message(type="head_pose", yaw_deg=0, roll_deg=-1000), ErrorCode.OUT_OF_RANGE),
    (message(type="head_pose", quaternion=[0.5, 0, 0, 0]), ErrorCode.OUT_OF_RANGE),
    (message(type="head_pose", quaternion=[0, 0, 0, 0]), ErrorCode.OUT_OF_RANGE),
    (message(type="head_pose", quaternion=[1, 1, 0, 0]), ErrorCode.OUT_OF_RANGE),
    (message(type="mix_override", source="p", gain=-0.1), ErrorCode.OUT_OF_RANGE),
    (message(type="mix_override", source="p", gain=4.01), ErrorCode.OUT_OF_RANGE),
    (message(type="ice", candidate=CANDIDATE, sdpMLineIndex=256), ErrorCode.OUT_OF_RANGE),
    (message(type="ice", candidate=CANDIDATE, sdpMLineIndex=-1), ErrorCode.OUT_OF_RANGE),
    (message(type="ping", t_ms=2.0**53), ErrorCode.OUT_OF_RANGE),
    (message(type="kick"), ErrorCode.MISSING_FIELD),
    (message(type="kick", member="p 2"), ErrorCode.BAD_VALUE),
    (message(type="kick", member="p-2", reason="x" * 121), ErrorCode.BAD_VALUE),
    (message(type="lock_room", locked=1), ErrorCode.BAD_TYPE),
    (message(type="lock_room", locked="true"), ErrorCode.BAD_TYPE),
    (message(type="chat"), ErrorCode.MISSING_FIELD),
    (message(type="chat", text="   "), ErrorCode.BAD_VALUE),
    (message(type="chat", text="x" * 501), ErrorCode.BAD_VALUE),
    (message(type="chat", text="bar\n17"), ErrorCode.BAD_VALUE),
    (message(type="chat", text=17), ErrorCode.BAD_TYPE),
    (message(type="mute_self", muted="yes"), ErrorCode.BAD_TYPE),
    (message(type="set_metronome"), ErrorCode.MISSING_FIELD),
    (message(type="set_metronome", on=True, bpm=301), ErrorCode.OUT_OF_RANGE),
    (message(type="set_metronome", on=True, bpm=29.9), ErrorCode.OUT_OF_RANGE),
    (message(type="set_metronome", on=True, beats_per_bar=0), ErrorCode.OUT_OF_RANGE),
    (message(type="set_metronome", on=True, beats_per_bar=3.5), ErrorCode.BAD_TYPE),
    (message(type="set_metronome", on=True, count_in_bars=5), ErrorCode.OUT_OF_RANGE),
    (message(type="set_metronome", on=True, key="H major"), ErrorCode.BAD_VALUE),
    (message(type="set_metronome", on=True, key="D dorian"), ErrorCode.BAD_VALUE),
    (message(type="set_metronome", on=True, key=2), ErrorCode.BAD_TYPE),
    (message(type="hear_metronome", mode="left"), ErrorCode.BAD_VALUE),
    (message(type="hear_metronome", mode="Centre!"), ErrorCode.BAD_VALUE),
    # SDP
    (message(type="offer", sdp="hello"), ErrorCode.BAD_SDP),
    (message(type="offer", sdp="v=0"), ErrorCode.BAD_SDP),
    (message(type="offer", sdp="v=1\r\n"), ErrorCode.BAD_SDP),
    (message(type="answer", sdp="v=0\r\na=\x00\r\n"), ErrorCode.BAD_SDP),
    (message(type="answer", sdp="v=0\r\na=\ud800\r\n"), ErrorCode.BAD_SDP),
]


@pytest.mark.parametrize(("text", "code"), MALFORMED, ids=[t[:60] for t, _ in MALFORMED])
def test_malformed_message_is_refused_with_its_code(text, code):
    assert refused(text).code is code


@pytest.mark.parametrize(("text", "code"), MALFORMED, ids=[t[:60] for t, _ in MALFORMED])
def test_refusal_message_is_one_readable_ascii_line(text, code):
    error = refused(text)
    assert error.message and "\n" not in error.message
    assert error.message.isascii()
    assert len(error.message) < 400


def test_refusal_names_the_offending_field():
    error = refused(message(type="move_source", source="p", position_m=[0, 1e6, 0]))
    assert "'position_m[1]'" in error.message and "'move_source'" in error.message
    assert "-1000 to 1000" in error.message


def test_unknown_field_refusal_lists_the_fields_that_exist():
    error = refused(message(type="move_source", source="p", postion_m=[0, 0, 0]))
    assert "'postion_m'" in error.message and "position_m" in error.message.split(";")[1]


def test_refusal_carries_the_client_id():
    assert refused(message(type="ping", t_ms="x", id="p1")).msg_id == "p1"
    assert refused(message(type="nope", id=12)).msg_id == 12


def test_refusal_of_an_unreadable_id_carries_none():
    assert refused(message(type="ping", t_ms=1, id=True)).msg_id is None


def test_bool_is_not_a_number_even_where_one_would_fit():
    assert refused(message(type="turn_source", source="p", yaw_deg=True)).code is \
        ErrorCode.BAD_TYPE


def test_integer_and_float_numbers_are_both_accepted():
    a = parse_message(message(type="turn_source", source="p", yaw_deg=90))
    b = parse_message(message(type="turn_source", source="p", yaw_deg=90.0))
    assert a == b and isinstance(a.yaw_deg, float)


# -- size and depth -------------------------------------------------------------------------------


def test_message_at_the_size_limit_is_accepted():
    head = message(type="join", room="band", name="Ada", instrument="")
    padded = head[:-1] + " " * (MAX_MESSAGE_BYTES - len(head)) + "}"
    assert len(padded.encode()) == MAX_MESSAGE_BYTES
    assert parse_message(padded) == Join(room="band", name="Ada")


def test_message_over_the_size_limit_is_too_large():
    head = message(type="leave")
    assert refused(head[:-1] + " " * (MAX_MESSAGE_BYTES - len(head) + 1) + "}").code is \
        ErrorCode.TOO_LARGE


def test_size_counts_utf8_bytes_not_characters():
    wide = '{"type": "leave", "id": "' + "é" * 40 + '"}' + " " * (MAX_MESSAGE_BYTES - 80)
    assert len(wide) <= MAX_MESSAGE_BYTES < len(wide.encode())
    assert refused(wide).code is ErrorCode.TOO_LARGE


def test_huge_text_is_refused_before_parsing():
    assert refused("[" * (10 * MAX_MESSAGE_BYTES)).code is ErrorCode.TOO_LARGE


def test_sdp_at_the_limit_is_accepted_and_one_byte_more_is_too_large():
    body = "v=0\r\n" + "a" * (MAX_SDP_BYTES - 5)
    assert parse_message(message(type="offer", sdp=body)) == Offer(sdp=body)
    assert refused(message(type="offer", sdp=body + "a")).code is ErrorCode.TOO_LARGE


def nested_position(depth: int) -> str:
    """A move_source whose JSON nests ``depth`` levels, the deepest inside ``position_m[0]``."""
    inner = "[" * (depth - 2) + "]" * (depth - 2)
    return '{"type": "move_source", "source": "p", "position_m": [' + inner + ", 0, 0]}"


def test_nesting_to_the_depth_limit_is_merely_the_wrong_type():
    error = refused(nested_position(MAX_DEPTH))
    assert error.code is ErrorCode.BAD_TYPE and "'position_m[0]'" in error.message


def test_nesting_past_the_depth_limit_is_too_deep():
    assert refused(nested_position(MAX_DEPTH + 1)).code is ErrorCode.TOO_DEEP


def test_nesting_past_the_interpreter_recursion_limit_is_too_deep():
    depth = MAX_MESSAGE_BYTES // 2 - 1
    assert refused("[" * depth + "]" * depth).code is ErrorCode.TOO_DEEP


def test_deep_objects_are_too_deep():
    text = '{"a":' * 20 + "1" + "}" * 20
    assert refused(text).code is ErrorCode.TOO_DEEP


# -- properties -----------------------------------------------------------------------------------

JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
                | st.text(max_size=20))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=5),
    max_leaves=30,
)
FIELD_NAMES = sorted({"type", "id", *(f for cls in CLIENT_MESSAGES.values()
                                      for f in (*cls.REQUIRED, *cls.OPTIONAL))})


def assert_parses_or_refuses(text: str) -> None:
    try:
        parse_message(text)
    except ProtocolError as exc:
        assert isinstance(exc.code, ErrorCode) and exc.message


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_categories=()), max_size=200))
def test_arbitrary_text_raises_only_protocol_error(text):
    assert_parses_or_refuses(text)


@settings(max_examples=300, deadline=None)
@given(st.text('{}[]":, 0123456789.eE+-truefalsnNaIiy\\u', max_size=60))
def test_json_like_text_raises_only_protocol_error(text):
    assert_parses_or_refuses(text)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_arbitrary_json_value_raises_only_protocol_error(value):
    assert_parses_or_refuses(json.dumps(value))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(CLIENT_MESSAGES)),
       st.dictionaries(st.sampled_from(FIELD_NAMES), JSON_VALUES | st.lists(
           st.floats(allow_nan=True) | st.integers() | st.booleans(), max_size=5), max_size=6))
def test_known_type_with_arbitrary_fields_raises_only_protocol_error(message_type, fields):
    text = json.dumps({**fields, "type": message_type})
    try:
        parsed = parse_message(text)
    except ProtocolError as exc:
        assert isinstance(exc.code, ErrorCode)
        return
    assert message_type == type(parsed).TYPE
    for value in json.loads(encode(parsed)).values():
        if isinstance(value, float):
            assert math.isfinite(value)


def reference_depth(value) -> int:
    """Nesting depth by walking the values: the oracle for the text-based check."""
    if isinstance(value, dict):
        return 1 + max(map(reference_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(reference_depth, value), default=0)
    return 0


DEEP_VALUES = st.recursive(
    st.none() | st.integers() | st.text('[]{}"\\ab', max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text('[]{}"\\ab', max_size=4), inner, max_size=3),
    max_leaves=40,
)


def wrapped(value_and_kinds: tuple) -> object:
    """``value`` inside one list (True) or object (False) per kind, with bracket-laden siblings."""
    value, kinds = value_and_kinds
    for in_list in kinds:
        value = [value, "]]"] if in_list else {"{": value, "}": "{["}
    return value


@settings(max_examples=300, deadline=None)
@given(st.tuples(DEEP_VALUES, st.lists(st.booleans(), max_size=10)).map(wrapped))
def test_depth_check_agrees_with_walking_the_values(value):
    text = json.dumps(value, ensure_ascii=False)
    try:
        assert decode(text) == value
        assert reference_depth(value) <= MAX_DEPTH
    except ProtocolError as exc:
        assert exc.code is ErrorCode.TOO_DEEP
        assert reference_depth(value) > MAX_DEPTH


@pytest.mark.parametrize(("fields", "code"), [
    ({"type": "ai_add", "role": "drummer"}, ErrorCode.BAD_VALUE),
    ({"type": "ai_add", "instrument": "kazoo"}, ErrorCode.BAD_VALUE),
    ({"type": "ai_add", "style": "polka"}, ErrorCode.BAD_VALUE),
    ({"type": "ai_add", "bpm": 20}, ErrorCode.OUT_OF_RANGE),  # 0 follows; else 40 to 240
    ({"type": "ai_add", "temperature": 0}, ErrorCode.OUT_OF_RANGE),
    ({"type": "ai_add", "volume": True}, ErrorCode.BAD_TYPE),
    ({"type": "ai_add", "metronome": 1}, ErrorCode.BAD_TYPE),
    ({"type": "ai_update", "role": "improvise"}, ErrorCode.MISSING_FIELD),
    ({"type": "ai_remove", "ai": "ai 1"}, ErrorCode.BAD_VALUE),
])
def test_ai_settings_out_of_their_range_are_refused(fields, code):
    assert refused(json.dumps(fields)).code == code


def test_the_ai_styles_are_the_textures_the_sidecar_plays():
    from ai_accompany.texture import STYLE_NAMES
    from signaling.ai_messages import AI_STYLES

    assert AI_STYLES == STYLE_NAMES
    for style in AI_STYLES:
        assert parse_message(json.dumps({"type": "ai_add", "style": style})) == AiAdd(style=style)


def test_the_frames_a_room_may_tick_at_are_the_engines():
    """``set_frame`` offers exactly the engine's frames (repeated in the protocol's core)."""
    from hrtf.constants import FRAME_CHOICES_MS as ENGINE
    from signaling.admin_messages import FRAME_CHOICES_MS

    assert FRAME_CHOICES_MS == ENGINE
    for ms in ENGINE:
        assert parse_message(json.dumps({"type": "set_frame", "frame_ms": ms})) == SetFrame(ms)
    for bad, code in ((7, "bad_value"), (40, "out_of_range"), ("5", "bad_type"),
                      (True, "bad_type")):
        with pytest.raises(ProtocolError) as refused:
            parse_message(json.dumps({"type": "set_frame", "frame_ms": bad}))
        assert refused.value.code == code, bad


def test_the_room_names_a_key_as_the_ai_says_it_hears_one():
    """``room_state.metronome.key`` and ``ai_hears.key`` spell a key alike (the sidecar keeps
    its own names: it imports nothing of signaling)."""
    from ai_accompany.brain import _key_name
    from signaling.metronome_messages import key_name, key_parts

    for tonic in range(12):
        for mode in ("major", "minor"):
            assert key_name(tonic, mode) == _key_name(tonic, mode)
            assert key_parts(key_name(tonic, mode)) == (tonic, mode)
