"""The per-connection protocol core: states, replies, rate limit and strikes, with a fake clock."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signaling.errors import ErrorCode, InvalidState
from signaling.messages import Join, Leave, MoveSource, Ping
from signaling.server_messages import (
    SERVER_MESSAGE_TYPES,
    ErrorMessage,
    IceServer,
    Member,
    Placement,
    RoomState,
)
from signaling.session import (
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CloseRequest,
    SessionLimits,
    SignalingSession,
    State,
)
from signaling.wire import encode

STATE = RoomState(room="band", revision=1, members=(Member("p-1", "Ada", "cello"),),
                  stage=(Placement("p-1", "Ada", (2.0, 0.0, 0.0), 180.0),))
JOIN = json.dumps({"type": "join", "id": "j", "room": "band", "name": "Ada"})
SDP = "v=0\r\ns=-\r\n"
AFTER_JOIN = {
    "offer": {"type": "offer", "sdp": SDP},
    "answer": {"type": "answer", "sdp": SDP},
    "ice": {"type": "ice", "candidate": None},
    "leave": {"type": "leave"},
    "move_source": {"type": "move_source", "source": "p-1", "position_m": [0, 1, 0]},
    "turn_source": {"type": "turn_source", "source": "p-1", "yaw_deg": 90},
    "head_pose": {"type": "head_pose", "yaw_deg": 10},
    "mix_override": {"type": "mix_override", "source": "p-1", "mute": True},
    "mix_reset": {"type": "mix_reset", "all": True},
}


def sent(session: SignalingSession) -> list[dict]:
    return [json.loads(text) for text in session.data_to_send()]


def joined_session(limits: SessionLimits | None = None) -> SignalingSession:
    session = SignalingSession(limits)
    session.receive_text(JOIN, 0.0)
    session.accept_join("p-1", "seat-1", STATE)
    session.data_to_send()
    return session


# -- joining ---------------------------------------------------------------------------------


def test_join_is_returned_and_awaits_the_servers_decision():
    session = SignalingSession()
    assert session.receive_text(JOIN, 0.0) == [Join(room="band", name="Ada", msg_id="j")]
    assert session.state is State.JOINING
    assert session.data_to_send() == []


def test_accept_join_sends_joined_with_the_joins_id():
    session = SignalingSession()
    session.receive_text(JOIN, 0.0)
    session.accept_join("p-1", "seat-1", STATE, ("join", "publish"))
    [joined] = sent(session)
    assert joined == {"type": "joined", "participant": "p-1", "seat": "seat-1",
                      "state": json.loads(encode(STATE)), "grants": ["join", "publish"],
                      "ice_servers": [], "frame_ms": 20.0, "id": "j"}
    assert session.state is State.JOINED


def test_joined_carries_the_rooms_frame():
    session = SignalingSession()
    session.receive_text(JOIN, 0.0)
    session.accept_join("p-1", "seat-1", dataclasses.replace(STATE, frame_ms=5.0), ("join",))
    [joined] = sent(session)
    assert joined["frame_ms"] == 5.0 and joined["state"]["frame_ms"] == 5.0


def test_accept_join_hands_the_ice_servers_on_as_rtc_ice_server_dictionaries():
    session = SignalingSession()
    session.receive_text(JOIN, 0.0)
    session.accept_join("p-1", "seat-1", STATE, ("join",), (
        IceServer(urls=("stun:stun.example.org:3478",)),
        IceServer(urls=("turn:turn.example.org:3478?transport=udp",), username="1:p-1",
                  credential="c2VjcmV0")))
    [joined] = sent(session)
    assert joined["ice_servers"] == [
        {"urls": ["stun:stun.example.org:3478"]},
        {"urls": ["turn:turn.example.org:3478?transport=udp"], "username": "1:p-1",
         "credential": "c2VjcmV0"}]


def test_reject_join_sends_the_error_and_allows_another_join():
    session = SignalingSession(SessionLimits(max_strikes=1))
    session.receive_text(JOIN, 0.0)
    session.reject_join(ErrorCode.ROOM_FULL, "room 'band' has no free seat")
    assert sent(session) == [{"type": "error", "code": "room_full",
                              "message": "room 'band' has no free seat", "id": "j"}]
    assert session.state is State.AWAITING_JOIN and session.close_requested is None
    assert session.receive_text(JOIN, 1.0)


@pytest.mark.parametrize("method", ["accept_join", "reject_join"])
def test_deciding_a_join_that_was_not_asked_is_invalid_state(method):
    session = SignalingSession()
    args = ("p-1", "seat", STATE) if method == "accept_join" else (ErrorCode.ROOM_FULL, "full")
    with pytest.raises(InvalidState, match="needs state JOINING; the session is AWAITING_JOIN"):
        getattr(session, method)(*args)


@pytest.mark.parametrize("message_type", sorted(AFTER_JOIN))
def test_message_before_join_is_not_joined(message_type):
    session = SignalingSession()
    assert session.receive_text(json.dumps({**AFTER_JOIN[message_type], "id": 5}), 0.0) == []
    [error] = sent(session)
    assert (error["code"], error["id"]) == ("not_joined", 5)
    assert repr(message_type) in error["message"]


def test_message_while_join_is_pending_is_not_joined():
    session = SignalingSession()
    session.receive_text(JOIN, 0.0)
    session.receive_text(json.dumps(AFTER_JOIN["offer"]), 0.0)
    assert sent(session)[0]["code"] == "not_joined"


@pytest.mark.parametrize("message_type", sorted(AFTER_JOIN))
def test_message_after_join_is_returned(message_type):
    session = joined_session()
    [message] = session.receive_text(json.dumps(AFTER_JOIN[message_type]), 1.0)
    assert message_type == message.TYPE
    assert session.data_to_send() == []


def test_second_join_while_pending_is_already_joined():
    session = SignalingSession()
    session.receive_text(JOIN, 0.0)
    assert session.receive_text(JOIN, 0.0) == []
    assert sent(session)[0]["code"] == "already_joined"


def test_second_join_when_joined_is_already_joined():
    session = joined_session()
    session.receive_text(JOIN, 1.0)
    assert sent(session)[0]["code"] == "already_joined"
    assert session.state is State.JOINED


def test_leave_allows_joining_again():
    session = joined_session()
    assert session.receive_text('{"type": "leave"}', 1.0) == [Leave()]
    assert session.state is State.AWAITING_JOIN
    assert session.receive_text(JOIN, 2.0)[0].TYPE == "join"


# -- replies -------------------------------------------------------------------------------------


@pytest.mark.parametrize("joined", [False, True])
def test_ping_is_answered_with_pong_in_any_state(joined):
    session = joined_session() if joined else SignalingSession()
    assert session.receive_text('{"type": "ping", "t_ms": 12.5, "id": 9}', 1.0) == \
        [Ping(t_ms=12.5, msg_id=9)]
    assert sent(session) == [{"type": "pong", "t_ms": 12.5, "id": 9}]


def test_malformed_message_earns_an_error_with_its_id():
    session = joined_session()
    bad = {"type": "move_source", "id": "m", "source": "p-1", "position_m": [1e9, 0, 0]}
    assert session.receive_text(json.dumps(bad), 1.0) == []
    [error] = sent(session)
    assert (error["type"], error["code"], error["id"]) == ("error", "out_of_range", "m")


def test_binary_frame_is_not_text():
    session = SignalingSession()
    assert session.receive_binary(b"\x00\x01", 0.0) == []
    assert sent(session)[0]["code"] == "not_text"


def test_refuse_echoes_the_messages_id_and_counts_a_strike():
    session = joined_session(SessionLimits(max_strikes=2))
    [move] = session.receive_text(json.dumps({**AFTER_JOIN["move_source"], "id": 3}), 1.0)
    session.refuse(move, ErrorCode.UNKNOWN_SOURCE, "no source 'p-1' in room 'band'", 1.0)
    assert sent(session) == [{"type": "error", "code": "unknown_source",
                              "message": "no source 'p-1' in room 'band'", "id": 3}]
    session.refuse(MoveSource("x", (0.0, 0.0, 0.0)), ErrorCode.UNKNOWN_SOURCE, "no 'x'", 1.0)
    assert session.close_requested == CloseRequest(CLOSE_POLICY_VIOLATION,
                                                   "too many protocol errors")


def test_data_to_send_empties_the_queue():
    session = SignalingSession()
    session.receive_text("{", 0.0)
    assert len(session.data_to_send()) == 1
    assert session.data_to_send() == []


def test_encode_is_compact_ascii_json():
    text = encode(Member("p-1", "Zoë", "🎻"))
    assert text == ('{"id":"p-1","name":"Zo\\u00eb","instrument":"\\ud83c\\udfbb",'
                    '"muted":false,"ai":false}')


def test_encode_refuses_a_non_finite_number():
    with pytest.raises(ValueError, match="JSON compliant"):
        encode(ErrorMessage(ErrorCode.INTERNAL_ERROR, "x", msg_id=float("nan")))


# -- rate limit and strikes ----------------------------------------------------------------------


def test_burst_passes_and_the_next_message_is_rate_limited():
    session = SignalingSession(SessionLimits(rate_per_s=10, burst=3, max_strikes=100))
    ping = '{"type": "ping", "t_ms": 1}'
    assert [len(session.receive_text(ping, 0.0)) for _ in range(4)] == [1, 1, 1, 0]
    assert [m["type"] for m in sent(session)] == ["pong"] * 3 + ["error"]


def test_rate_limit_lifts_as_the_clock_advances():
    session = SignalingSession(SessionLimits(rate_per_s=10, burst=1, max_strikes=100))
    ping = '{"type": "ping", "t_ms": 1}'
    assert session.receive_text(ping, 0.0)
    assert not session.receive_text(ping, 0.05)
    assert session.receive_text(ping, 0.1)


def test_rate_limited_error_says_the_limit():
    session = SignalingSession(SessionLimits(rate_per_s=10, burst=1, max_strikes=100))
    session.receive_text("{}", 0.0)
    session.receive_text("{}", 0.0)
    error = sent(session)[-1]
    assert error["code"] == "rate_limited" and "10 messages per second" in error["message"]


def test_too_many_errors_in_the_window_request_a_close():
    session = SignalingSession(SessionLimits(max_strikes=3, strike_window_s=10))
    for t in (0.0, 1.0):
        session.receive_text("garbage", t)
    assert session.close_requested is None
    session.receive_text("garbage", 2.0)
    assert session.close_requested == CloseRequest(CLOSE_POLICY_VIOLATION,
                                                   "too many protocol errors")
    assert session.state is State.CLOSED
    assert [m["code"] for m in sent(session)] == ["bad_json"] * 3 + ["too_many_errors"]


def test_errors_spread_beyond_the_window_never_close():
    session = SignalingSession(SessionLimits(max_strikes=3, strike_window_s=10))
    for i in range(20):
        session.receive_text("garbage", i * 6.0)
    assert session.close_requested is None


def test_flood_is_closed_after_a_bounded_number_of_replies():
    session = joined_session(SessionLimits(rate_per_s=50, burst=100, max_strikes=10))
    head = '{"type": "head_pose", "yaw_deg": 0}'
    replies = 0
    for i in range(10_000):
        session.receive_text(head, 1.0 + i * 1e-4)
        replies += len(session.data_to_send())
        if session.close_requested:
            break
    assert session.close_requested.code == CLOSE_POLICY_VIOLATION
    assert i < 200 and replies == 11  # 10 rate_limited errors, then too_many_errors


def test_closed_session_ignores_input_and_drops_sends():
    session = joined_session()
    session.close(CLOSE_NORMAL, "room closed")
    assert session.close_requested == CloseRequest(CLOSE_NORMAL, "room closed")
    assert session.receive_text('{"type": "ping", "t_ms": 1}', 1.0) == []
    assert session.receive_binary(b"x", 1.0) == []
    session.send(STATE)
    assert session.data_to_send() == []


def test_close_keeps_the_first_reason():
    session = SignalingSession()
    session.close(CLOSE_NORMAL, "bye")
    session.close(CLOSE_POLICY_VIOLATION, "later")
    assert session.close_requested == CloseRequest(CLOSE_NORMAL, "bye")


# -- robustness ----------------------------------------------------------------------------------

VALID_TEXTS = [JOIN, '{"type": "ping", "t_ms": 1}',
               *(json.dumps(m) for m in AFTER_JOIN.values())]
FRAMES = st.one_of(
    st.sampled_from(VALID_TEXTS),
    st.text(max_size=80),
    st.text('{}[]":, 0123456789.eE+-truefalsnNaIiy\\u', max_size=40),
    st.binary(max_size=20),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(FRAMES, st.floats(0, 0.5)), max_size=40), st.booleans())
def test_any_frame_sequence_never_crashes_the_session(frames, accept):
    session = SignalingSession(SessionLimits(rate_per_s=20, burst=10, max_strikes=5))
    now, replies = 0.0, 0
    for frame, step in frames:
        now += step
        events = (session.receive_binary(frame, now) if isinstance(frame, bytes)
                  else session.receive_text(frame, now))
        assert len(events) <= 1
        if session.state is State.JOINING:
            if accept:
                session.accept_join("p-1", "seat", STATE)
            else:
                session.reject_join(ErrorCode.ROOM_FULL, "full")
        for text in session.data_to_send():
            text.encode("utf-8")
            reply = json.loads(text)
            assert reply["type"] in SERVER_MESSAGE_TYPES
            replies += 1
    assert replies <= len(frames) + 1
