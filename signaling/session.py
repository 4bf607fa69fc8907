"""The signaling protocol for one WebSocket connection, without I/O (in the manner of websockets).

The shell feeds every frame it reads to :meth:`SignalingSession.receive_text` (or
:meth:`~SignalingSession.receive_binary`) with the current time, acts on the messages it
returns, then writes out :meth:`~SignalingSession.data_to_send` and, once
:attr:`~SignalingSession.close_requested` is set, closes the connection with that code and
reason. The server answers through :meth:`~SignalingSession.accept_join`,
:meth:`~SignalingSession.reject_join`, :meth:`~SignalingSession.refuse` and
:meth:`~SignalingSession.send`, and collects ``data_to_send()`` after each.

States::

    AWAITING_JOIN --join--> JOINING --accept_join()--> JOINED --leave--> AWAITING_JOIN
                               \\--reject_join()--> AWAITING_JOIN
    any state --too many errors, or close()--> CLOSED

Before ``joined`` only ``join`` and ``ping`` are accepted (``not_joined`` otherwise); a second
``join`` is ``already_joined``. Every refused message, rate-limited ones included, is a strike;
``max_strikes`` within ``strike_window_s`` close the connection (code 1008, RFC 6455 §7.4.1).
A text frame far past the message limit closes it at once (1009, as the WebSocket layer did
before upload chunks raised its frame limit).

Binary frames are refused (``not_text``) except while the server has an HRTF upload open
(:meth:`SignalingSession.open_upload`): then each one is handed on as an
:class:`~signaling.render_messages.HrtfChunk`, which the server counts against the upload (its
bytes, not the message rate). After an upload ends early, the bytes the client may still have
in flight (:meth:`~SignalingSession.close_upload`'s ``drain_bytes``) are dropped quietly.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from signaling.errors import ErrorCode, InvalidState, ProtocolError
from signaling.limits import MAX_TEXT_FRAME_BYTES
from signaling.messages import ClientMessage, Join, Leave, Ping, parse_message
from signaling.ratelimit import StrikeCounter, TokenBucket
from signaling.render_messages import HrtfChunk
from signaling.server_messages import (
    ErrorMessage,
    IceServer,
    Joined,
    Pong,
    RoomState,
    ServerMessage,
)
from signaling.wire import encode

#: WebSocket close codes (RFC 6455, section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
#: A connection the server cannot go on with: its media connection failed or went silent, or
#: its room failed ("internal error").
CLOSE_SERVER_ERROR = 1011
#: The seat's old connection, when a newer one for the same seat joins (application range,
#: RFC 6455 section 7.4.2).
CLOSE_REPLACED = 4000
#: A member an admin removed (application range).
CLOSE_KICKED = 4003


class State(Enum):
    """Where a connection stands in the protocol."""

    AWAITING_JOIN = "awaiting_join"
    JOINING = "joining"
    JOINED = "joined"
    CLOSED = "closed"


@dataclass(frozen=True)
class SessionLimits:
    """Per-connection manners. The defaults allow one message per 20 ms tick on average."""

    rate_per_s: float = 50.0
    burst: float = 100.0
    max_strikes: int = 10
    strike_window_s: float = 10.0


@dataclass(frozen=True)
class CloseRequest:
    """What the shell should close the WebSocket with."""

    code: int
    reason: str


class SignalingSession:
    """Sans-I/O protocol state for one signaling connection.

    Parameters
    ----------
    limits
        Message rate and error tolerance for this connection.
    """

    def __init__(self, limits: SessionLimits | None = None) -> None:
        self.limits = limits or SessionLimits()
        self.state = State.AWAITING_JOIN
        #: Set once the connection must close; the shell closes with it after sending.
        self.close_requested: CloseRequest | None = None
        #: The ``join`` being decided by the server (state ``JOINING``).
        self.pending_join: Join | None = None
        self._bucket = TokenBucket(self.limits.rate_per_s, self.limits.burst)
        self._strikes = StrikeCounter(self.limits.max_strikes, self.limits.strike_window_s)
        self._outgoing: list[str] = []
        #: Whether binary frames are an open upload's bytes (set by the server).
        self.upload_open = False
        #: Bytes of binary frames still to drop quietly after an upload ended early.
        self._drain_bytes = 0

    # -- input from the client ---------------------------------------------------------------

    def receive_text(self, text: str, now: float) -> list[ClientMessage]:
        """Take one text frame received at ``now`` (seconds, monotonic).

        Returns the messages the server should act on: empty when the frame was refused or
        the session is closed, else the one parsed message. ``ping`` is answered here
        (``pong``) and returned too. After this, call :meth:`data_to_send` and check
        :attr:`close_requested`.
        """
        if self.state is State.CLOSED:
            return []
        if len(text) > MAX_TEXT_FRAME_BYTES:  # characters: a lower bound of its bytes
            self.close(CLOSE_MESSAGE_TOO_BIG, "message too big")
            return []
        if not self._bucket.allow(now):
            self._refuse(ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"at most {self.limits.rate_per_s:g} messages per second, in bursts of up to "
                f"{self.limits.burst:g}: this message was dropped",
            ), now)
            return []
        try:
            message = parse_message(text)
            self._check_state(message)
        except ProtocolError as exc:
            self._refuse(exc, now)
            return []
        if isinstance(message, Join):
            self.state = State.JOINING
            self.pending_join = message
        elif isinstance(message, Leave):
            self.state = State.AWAITING_JOIN
        elif isinstance(message, Ping):
            self.send(Pong(t_ms=message.t_ms, msg_id=message.msg_id))
        return [message]

    def receive_binary(self, data: bytes, now: float) -> list[ClientMessage | HrtfChunk]:
        """Take one binary frame: an open upload's chunk, returned as :class:`HrtfChunk`;
        else dropped quietly while draining an upload that ended early, or refused
        (``not_text``), as signaling is JSON text."""
        if self.state is State.CLOSED:
            return []
        if self.upload_open and self.state is State.JOINED:
            return [HrtfChunk(bytes(data))]
        if 0 < len(data) <= self._drain_bytes:
            self._drain_bytes -= len(data)
            return []
        self._drain_bytes = 0
        self._refuse(ProtocolError(
            ErrorCode.NOT_TEXT,
            f"messages are JSON in text frames; a binary frame of {len(data)} bytes was dropped",
        ), now)
        return []

    def open_upload(self) -> None:
        """Hand binary frames on as :class:`HrtfChunk` until :meth:`close_upload`."""
        self.upload_open = True
        self._drain_bytes = 0

    def close_upload(self, drain_bytes: int = 0) -> None:
        """Refuse binary frames again, but for the next ``drain_bytes`` bytes of them, dropped
        quietly: what the client sent before it learnt that its upload ended (or was refused)."""
        self.upload_open = False
        self._drain_bytes = max(0, drain_bytes)

    def _check_state(self, message: ClientMessage) -> None:
        if isinstance(message, Ping):
            return
        if isinstance(message, Join):
            if self.state is not State.AWAITING_JOIN:
                raise ProtocolError(
                    ErrorCode.ALREADY_JOINED,
                    f"this connection has already sent 'join' (state {self.state.value}); "
                    "send 'leave' first to join again",
                    message.msg_id,
                )
        elif self.state is not State.JOINED:
            raise ProtocolError(
                ErrorCode.NOT_JOINED,
                f"{message.TYPE!r} needs a joined room (state {self.state.value}): "
                "send 'join' and wait for 'joined'",
                message.msg_id,
            )

    def _refuse(self, exc: ProtocolError, now: float) -> None:
        self.send(ErrorMessage.from_exception(exc))
        if self._strikes.record(now):
            self.send(ErrorMessage(
                ErrorCode.TOO_MANY_ERRORS,
                f"{self.limits.max_strikes} refused messages within "
                f"{self.limits.strike_window_s:g} s: closing the connection",
            ))
            self.close(CLOSE_POLICY_VIOLATION, "too many protocol errors")

    # -- the server's side -------------------------------------------------------------------

    def accept_join(self, participant: str, seat: str, state: RoomState,
                    grants: tuple[str, ...] = (), ice_servers: tuple[IceServer, ...] = ()) -> None:
        """Confirm the pending ``join``: queue ``joined`` (with what the member may do and the
        ICE servers its peer connection uses) and move to ``JOINED``.

        Raises
        ------
        InvalidState
            Unless the session is ``JOINING``.
        """
        join = self._take_pending_join("accept_join")
        self.state = State.JOINED
        self.send(Joined(participant=participant, seat=seat, state=state, grants=grants,
                         ice_servers=ice_servers, frame_ms=state.frame_ms,
                         msg_id=join.msg_id))

    def reject_join(self, code: ErrorCode, message: str) -> None:
        """Refuse the pending ``join`` (room full, bad token…): queue the error, await a join.

        Not a strike: the client did nothing wrong by asking.

        Raises
        ------
        InvalidState
            Unless the session is ``JOINING``.
        """
        join = self._take_pending_join("reject_join")
        self.state = State.AWAITING_JOIN
        self.send(ErrorMessage(code, message, join.msg_id))

    def _take_pending_join(self, method: str) -> Join:
        if self.state is not State.JOINING or self.pending_join is None:
            raise InvalidState(f"{method}() needs state JOINING; the session is {self.state.name}")
        join, self.pending_join = self.pending_join, None
        return join

    def refuse(self, message: ClientMessage, code: ErrorCode, text: str, now: float) -> None:
        """Refuse a parsed message the server cannot act on (``unknown_source``…).

        Queues an ``error`` echoing the message's ``id`` and counts a strike, which may set
        :attr:`close_requested`.
        """
        if self.state is not State.CLOSED:
            self._refuse(ProtocolError(code, text, message.msg_id), now)

    def send(self, message: ServerMessage) -> None:
        """Queue a message for the client; dropped once the session is closed."""
        if self.state is not State.CLOSED:
            self._outgoing.append(encode(message))

    def send_encoded(self, text: str) -> None:
        """Queue a message already encoded with :func:`~signaling.wire.encode` (a broadcast
        encodes once for all recipients)."""
        if self.state is not State.CLOSED:
            self._outgoing.append(text)

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Ask the shell to close the connection; later input and sends are dropped."""
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            self.pending_join = None
            self.close_requested = CloseRequest(code, reason)

    # -- output --------------------------------------------------------------------------------

    def data_to_send(self) -> list[str]:
        """The text frames to write, oldest first; the queue is emptied."""
        out, self._outgoing = self._outgoing, []
        return out

