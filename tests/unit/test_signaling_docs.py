"""docs/PROTOCOL.md cannot drift from the code: every example in it is parsed here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from signaling.ai_messages import AiHears
from signaling.errors import ErrorCode, ProtocolError
from signaling.messages import CLIENT_MESSAGES, Answer, Ice, Offer, parse_message, parse_object
from signaling.metronome_messages import MetronomeState
from signaling.recording_messages import Recording, RecordingInfo, RecordingNow, Recordings
from signaling.render_messages import HrtfUploaded, Rendering, RoomAcoustics
from signaling.server_messages import (
    SERVER_MESSAGE_TYPES,
    ErrorMessage,
    FrameChanged,
    IceServer,
    Joined,
    Member,
    Placement,
    Pong,
    RoomState,
    ServerClosing,
    Stats,
)
from signaling.social_messages import ChatHistory, ChatLine, Levels
from signaling.wire import encode

PROTOCOL = (Path(__file__).parents[2] / "docs" / "PROTOCOL.md").read_text()
BLOCKS = re.findall(r"^```json (\w+)(?: (\w+))?\n(.*?)\n```$", PROTOCOL, re.DOTALL | re.MULTILINE)
CLIENT = [text for tag, _, text in BLOCKS if tag == "client"]
SERVER = [text for tag, _, text in BLOCKS if tag == "server"]
REFUSED = [(code, text) for tag, code, text in BLOCKS if tag == "refused"]


def rounded(value):
    """JSON values with floats rounded to 6 decimals (a quaternion is renormalised on parsing)."""
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return round(value, 6) if isinstance(value, float) else value


def room_state(d: dict) -> RoomState:
    return RoomState(
        room=d["room"], revision=d["revision"],
        members=tuple(Member(**m) for m in d["members"]),
        stage=tuple(Placement(p["source"], p["label"], tuple(p["position_m"]), p["yaw_deg"],
                              p["pitch_deg"]) for p in d["stage"]),
        locked=d["locked"],
        acoustics=(RoomAcoustics(**{**d["acoustics"], "dims_m": tuple(d["acoustics"]["dims_m"])})
                   if d["acoustics"] is not None else None),
        recording=RecordingNow(**d["recording"]) if "recording" in d else None,
        frame_ms=d["frame_ms"],
        metronome=MetronomeState(**d["metronome"]) if "metronome" in d else None,
    )


def server_message(d: dict):
    """Build the server dataclass a documented example claims to be."""
    kind, msg_id = d["type"], d.get("id")
    if kind in ("offer", "answer", "ice"):
        message = parse_object(d)
        assert isinstance(message, Offer | Answer | Ice)
        return message
    if kind == "joined":
        return Joined(d["participant"], d["seat"], room_state(d["state"]),
                      tuple(d["grants"]),
                      tuple(IceServer(tuple(s["urls"]), s.get("username"), s.get("credential"))
                            for s in d["ice_servers"]), frame_ms=d["frame_ms"], msg_id=msg_id)
    if kind == "room_state":
        return room_state(d)
    if kind == "error":
        return ErrorMessage(ErrorCode(d["code"]), d["message"], msg_id)
    if kind == "stats":
        return Stats(**{k: v for k, v in d.items() if k != "type"})
    if kind == "server_closing":
        return ServerClosing(d["reason"], d["retry_after_s"])
    if kind == "rendering":
        return Rendering(d["hrtf"], d["hrtf_name"], d["head_radius_m"], d["acoustics"],
                         d["reference"], msg_id)
    if kind == "hrtf_uploaded":
        return HrtfUploaded(d["digest"], d["name"], d["directions"], d["taps"], msg_id)
    if kind == "recording":
        info = d["recording"]
        return Recording(d["active"], RecordingInfo.from_dict(info) if info else None, msg_id)
    if kind == "recordings":
        return Recordings(d["room"], tuple(RecordingInfo.from_dict(r) for r in d["recordings"]),
                          msg_id)
    if kind == "chat":
        return chat_line(d)
    if kind == "chat_history":
        return ChatHistory(tuple(chat_line(line) for line in d["lines"]))
    if kind == "levels":
        return Levels(d["levels"])
    if kind == "ai_hears":
        return AiHears(d["ai"], d["bpm"], d["key"], d["chord"], d["locked"], d["waiting"],
                       d["lead_ms"], d["style"], d["playing"], d["coming"], d["arrives_ms"],
                       d["late"])
    if kind == "frame_changed":
        return FrameChanged(d["frame_ms"], d["by"])
    assert kind == "pong"
    return Pong(d["t_ms"], msg_id)


def chat_line(d: dict) -> ChatLine:
    return ChatLine(d["member"], d["name"], d["text"], d["at_s"])


def test_doc_has_examples_of_every_kind():
    assert len(CLIENT) >= len(CLIENT_MESSAGES) and SERVER and REFUSED


def test_doc_names_the_websocket_endpoint():
    assert "`/ws`" in PROTOCOL


@pytest.mark.parametrize("text", CLIENT)
def test_client_example_validates(text):
    message = parse_message(text)
    assert rounded(json.loads(encode(message))) == rounded(json.loads(text))


def test_every_client_message_type_has_an_example():
    assert {json.loads(text)["type"] for text in CLIENT} == set(CLIENT_MESSAGES)


@pytest.mark.parametrize("text", SERVER)
def test_server_example_is_what_encode_writes(text):
    example = json.loads(text)
    assert json.loads(encode(server_message(example))) == example


def test_every_server_message_type_has_an_example():
    assert {json.loads(text)["type"] for text in SERVER} == set(SERVER_MESSAGE_TYPES)


@pytest.mark.parametrize(("code", "text"), REFUSED)
def test_refused_example_earns_its_code(code, text):
    with pytest.raises(ProtocolError) as info:
        parse_message(text)
    assert info.value.code == code


def test_error_code_table_lists_exactly_the_codes():
    section = PROTOCOL.split("## Error codes", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE)
    assert sorted(documented) == sorted(ErrorCode)


def test_the_numbers_the_page_states_are_the_codes():
    """What a client relies on, stated in docs/PROTOCOL.md, is what the server does: the close
    codes of a seat taken over and of a removal, the largest frame a connection reads, and how
    an uploaded set's ``taps`` are trimmed."""
    from hrtf.hrirset import ONSET_MARGIN, TAIL_THRESHOLD_DB
    from signaling.limits import MAX_FRAME_BYTES
    from signaling.session import CLOSE_KICKED, CLOSE_REPLACED

    flat = " ".join(PROTOCOL.split())
    assert f"older connection is closed with code {CLOSE_REPLACED}" in flat
    assert f"its connection closes with code {CLOSE_KICKED}" in flat
    assert f"A frame over {MAX_FRAME_BYTES:,} bytes" in flat
    assert f"all but {ONSET_MARGIN} samples of it" in flat
    assert f"the tail below {TAIL_THRESHOLD_DB:.0f} dB of the peak" in flat
