"""Room access tokens: who may enter which room, until when, and what they may do there.

A token is a JWT (RFC 7519) signed with HMAC-SHA256 and the server's secret, in the manner of
LiveKit's access tokens. Its claims:

- ``iss``: ``"spatialjam"``; ``sub``: the identity (one person: a second connection with the same
  identity takes the first one's place); ``name``: a display name (optional);
- ``room``: the one room it opens;
- ``iat``, ``nbf``, ``exp``: issued, valid from, valid until (seconds since the epoch);
- ``grants``: any of :data:`GRANTS` —

  ``join``
      enter the room (listen, and shape one's own mix: head, personal overrides);
  ``publish``
      be heard: without it the server renders nothing from this participant;
  ``move``
      move and turn *other* members' sources on the shared stage (one's own always moves);
  ``admin``
      remove a member (``kick``), lock the room, add, change and remove an AI musician, set
      the room's acoustics (``set_room_acoustics``).

Verification takes the time as an argument (no clock inside) and raises :class:`AccessError`
with a stable :class:`~signaling.errors.ErrorCode` and a message a person can act on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import jwt

from signaling import limits
from signaling.errors import ErrorCode

ISSUER = "spatialjam"
ALGORITHM = "HS256"
GRANTS = ("join", "publish", "move", "admin")
#: What ``spatialjam token`` grants unless told otherwise: a player, not a stage manager.
DEFAULT_GRANTS = ("join", "publish")
#: HS256 keys shorter than the hash are weak (RFC 7518, section 3.2).
MIN_SECRET_BYTES = 32
#: Clock skew forgiven between the minting machine and the server.
LEEWAY_S = 30
MAX_TTL_S = 366 * 24 * 3600
_IDENTITY_RE = re.compile(r"[A-Za-z0-9_.@+-]{1,64}")


class AccessError(Exception):
    """A token or action refused: ``code`` for clients to switch on, ``message`` for people."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Access:
    """What one connection may do: from a verified token, or everything in an open room."""

    identity: str | None
    room: str | None  # None: any room (open rooms)
    grants: frozenset[str]
    expires_at: float | None = None
    name: str | None = None

    def allows(self, grant: str) -> bool:
        return grant in self.grants

    def check_room(self, room: str) -> None:
        if self.room is not None and self.room != room:
            raise AccessError(ErrorCode.UNAUTHORIZED,
                              f"this access token opens room {self.room!r}, not {room!r}")

    def require(self, grant: str, action: str) -> None:
        """Raise :class:`AccessError` (``forbidden``) unless the token grants ``grant``."""
        if grant not in self.grants:
            raise AccessError(ErrorCode.FORBIDDEN,
                              f"{action} needs the {grant!r} grant, and your access token has "
                              f"{', '.join(sorted(self.grants)) or 'none'}; ask the room's host "
                              f"for a token with --grant {grant}")


#: Rooms without tokens (the loopback development default): every grant.
OPEN = Access(identity=None, room=None, grants=frozenset(GRANTS))


def parse_grants(values: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Grant names, each known and once; ``admin`` implies all the others."""
    unknown = [g for g in values if g not in GRANTS]
    if unknown:
        raise ValueError(f"unknown grant {unknown[0]!r}; grants are {', '.join(GRANTS)}")
    if "admin" in values:
        return GRANTS
    return tuple(g for g in GRANTS if g in values or g == "join")


def check_secret(secret: bytes) -> bytes:
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the token secret must be at least {MIN_SECRET_BYTES} bytes, "
                         f"got {len(secret)}")
    return secret


def mint(secret: bytes, *, room: str, identity: str, grants: Iterable[str] = DEFAULT_GRANTS,
         ttl_s: float, now: float, name: str | None = None) -> str:
    """A signed token for ``identity`` in ``room``, valid from ``now`` for ``ttl_s`` seconds."""
    if not limits.ROOM_RE.fullmatch(room):
        raise ValueError(f"room {room!r} is not a room name: 1 to 64 letters, digits, '-' or '_'")
    if not _IDENTITY_RE.fullmatch(identity):
        raise ValueError(f"identity {identity!r} must be 1 to 64 letters, digits or . _ @ + -")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"the lifetime must be more than 0 s and at most 366 days, "
                         f"got {ttl_s:g} s")
    claims = {"iss": ISSUER, "sub": identity, "room": room, "iat": int(now), "nbf": int(now),
              "exp": int(now + ttl_s), "grants": list(parse_grants(list(grants)))}
    if name:
        claims["name"] = name[:64]
    return jwt.encode(claims, check_secret(secret), algorithm=ALGORITHM)


def verify(secret: bytes, token: str | None, now: float) -> Access:
    """The access a token gives, or :class:`AccessError` saying why it gives none."""
    if not token:
        raise AccessError(ErrorCode.UNAUTHORIZED,
                          "this server needs a room access token: open the link your host "
                          "gave you (…/?room=ROOM&token=…), or mint one with 'spatialjam token'")
    if len(token) > 1024 or not limits.TOKEN_RE.fullmatch(token):
        raise AccessError(ErrorCode.UNAUTHORIZED, "the access token is not a token (damaged link?)")
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], issuer=ISSUER,
            options={"require": ["exp", "nbf", "iat", "sub", "iss"], "verify_exp": False,
                     "verify_nbf": False, "verify_iat": False})
    except jwt.InvalidSignatureError:
        raise AccessError(ErrorCode.UNAUTHORIZED,
                          "the access token was not signed by this server") from None
    except jwt.InvalidTokenError as exc:
        raise AccessError(ErrorCode.UNAUTHORIZED,
                          f"the access token cannot be used: {exc}") from None
    exp, nbf = claims["exp"], claims["nbf"]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (exp, nbf)):
        raise AccessError(ErrorCode.UNAUTHORIZED, "the access token's times are not numbers")
    if now > exp + LEEWAY_S:
        raise AccessError(ErrorCode.TOKEN_EXPIRED,
                          f"the access token expired {_ago(now - exp)} ago; ask the room's host "
                          "for a new link")
    if now < nbf - LEEWAY_S:
        raise AccessError(ErrorCode.TOKEN_EXPIRED,
                          f"the access token is valid only in {_ago(nbf - now)}")
    room, identity, grants = claims.get("room"), claims["sub"], claims.get("grants")
    if not isinstance(room, str) or not limits.ROOM_RE.fullmatch(room):
        raise AccessError(ErrorCode.UNAUTHORIZED, "the access token names no room")
    if not isinstance(identity, str) or not _IDENTITY_RE.fullmatch(identity):
        raise AccessError(ErrorCode.UNAUTHORIZED, "the access token names no identity")
    if not isinstance(grants, list) or not all(isinstance(g, str) for g in grants):
        raise AccessError(ErrorCode.UNAUTHORIZED, "the access token's grants are not a list")
    name = claims.get("name")
    return Access(identity=identity, room=room,
                  grants=frozenset(g for g in grants if g in GRANTS), expires_at=float(exp),
                  name=name if isinstance(name, str) else None)


def _ago(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"
