"""Errors of the signaling core, and the stable codes clients see.

Two kinds of failure are kept apart, as python-websockets does:

- :class:`ProtocolError` — the *peer* sent something the protocol does not allow. It carries a
  stable :class:`ErrorCode` and a message a person can act on; the session turns it into an
  ``error`` message for the client.
- :class:`InvalidState` — the *server* called the session at a moment its state does not allow
  (a bug on our side, never the client's). The message names the state.
"""

from __future__ import annotations

from enum import StrEnum

#: A client's correlation id, echoed in replies: a short string or a JSON-safe integer.
MessageId = str | int


class ErrorCode(StrEnum):
    """Stable ``code`` strings of ``error`` messages. Clients switch on them: extend, never rename.

    The table in ``docs/PROTOCOL.md`` lists the same codes (a test keeps the two in step).
    """

    # the text itself
    BAD_JSON = "bad_json"
    NOT_TEXT = "not_text"
    TOO_LARGE = "too_large"
    TOO_DEEP = "too_deep"
    # the message's shape
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    BAD_TYPE = "bad_type"
    BAD_VALUE = "bad_value"
    OUT_OF_RANGE = "out_of_range"
    BAD_SDP = "bad_sdp"
    # the connection's state and manners
    NOT_JOINED = "not_joined"
    ALREADY_JOINED = "already_joined"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_ERRORS = "too_many_errors"
    # decided by the server, not by the parser
    UNAUTHORIZED = "unauthorized"
    TOKEN_EXPIRED = "token_expired"
    FORBIDDEN = "forbidden"
    ROOM_LOCKED = "room_locked"
    KICKED = "kicked"
    ROOM_FULL = "room_full"
    UNKNOWN_SOURCE = "unknown_source"
    AI_EXISTS = "ai_exists"
    BAD_SOFA = "bad_sofa"
    UPLOAD_FAILED = "upload_failed"
    UNKNOWN_HRTF = "unknown_hrtf"
    RECORDING_UNAVAILABLE = "recording_unavailable"
    MEDIA_PORTS_EXHAUSTED = "media_ports_exhausted"
    INTERNAL_ERROR = "internal_error"


class ProtocolError(Exception):
    """A message the protocol refuses.

    Parameters
    ----------
    code
        The stable code sent to the client.
    message
        What was wrong and what would be right, naming the field.
    msg_id
        The offending message's client ``id``, when it could be read.
    """

    def __init__(self, code: ErrorCode, message: str, msg_id: MessageId | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.msg_id = msg_id


class InvalidState(Exception):
    """The server called a session method that the session's current state does not allow."""
