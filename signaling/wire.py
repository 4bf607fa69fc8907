"""The JSON text layer: untrusted text in, plain values out; typed messages in, compact text out.

Decoding follows RFC 8259 more strictly than :func:`json.loads` does by default: ``NaN``,
``Infinity`` and ``-Infinity`` are refused (RFC 8259, section 6 has no such numbers), and so are
duplicate keys (section 4 leaves their meaning undefined). Size is checked before parsing and
nesting depth right after (the parser itself stops at the interpreter's recursion limit), so a
hostile text of :data:`~signaling.limits.MAX_MESSAGE_BYTES` costs a few milliseconds at most.
"""

from __future__ import annotations

import dataclasses
import json
import re
from enum import Enum
from typing import Any, ClassVar, NoReturn

from signaling.errors import ErrorCode, ProtocolError
from signaling.limits import MAX_DEPTH, MAX_MESSAGE_BYTES


def describe(value: Any, limit: int = 40) -> str:
    """A short, ASCII-only rendering of an untrusted value for an error message."""
    text = ascii(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refuse_constant(name: str) -> NoReturn:
    raise ProtocolError(
        ErrorCode.BAD_JSON,
        f"{name} is not valid JSON: numbers must be finite (RFC 8259, section 6)",
    )


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ProtocolError(ErrorCode.BAD_JSON, f"duplicate key {describe(key)}")
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(
    parse_constant=_refuse_constant, object_pairs_hook=_object_without_duplicates
)


_STRING_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET_RE = re.compile(r"[^\[\]{}]+")
_EMPTY_PAIR_RE = re.compile(r"\[\]|\{\}")


def _deeper_than(text: str, limit: int) -> bool:
    """Whether a *valid* JSON text nests containers more than ``limit`` levels deep.

    Works on the text at C speed instead of walking the decoded values: strings are cut out
    (valid JSON, so every quote outside a string opens one), then only brackets are kept, and
    each pass of ``[]``/``{}`` removal strips every innermost container, one level per pass.
    The text is empty after exactly as many passes as its depth (the top level counts as 1).
    """
    brackets = _NOT_BRACKET_RE.sub("", _STRING_RE.sub("", text))
    for _ in range(limit):
        if not brackets:
            return False
        brackets = _EMPTY_PAIR_RE.sub("", brackets)
    return bool(brackets)


def decode(text: str) -> Any:
    """Parse one untrusted JSON text into plain Python values.

    Raises
    ------
    ProtocolError
        ``too_large`` past :data:`MAX_MESSAGE_BYTES` UTF-8 bytes, ``bad_json`` for anything RFC
        8259 does not allow (and for duplicate keys), ``too_deep`` past :data:`MAX_DEPTH`.
    """
    size = len(text)  # characters: a lower bound of the UTF-8 size, without encoding
    if size <= MAX_MESSAGE_BYTES:
        size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"a message may be at most {MAX_MESSAGE_BYTES} bytes of UTF-8; "
            f"this one has at least {size}",
        )
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            ErrorCode.BAD_JSON,
            f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
        ) from None
    except RecursionError:
        raise ProtocolError(
            ErrorCode.TOO_DEEP, f"objects and arrays may nest at most {MAX_DEPTH} levels"
        ) from None
    except ValueError as exc:  # e.g. an integer longer than sys.get_int_max_str_digits()
        message = f"not valid JSON: {describe(str(exc), 80)}"
        raise ProtocolError(ErrorCode.BAD_JSON, message) from None
    if _deeper_than(text, MAX_DEPTH):
        raise ProtocolError(
            ErrorCode.TOO_DEEP, f"objects and arrays may nest at most {MAX_DEPTH} levels"
        )
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, WireMessage):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, Enum):
        return value.value
    return value


class WireMessage:
    """Base of every message dataclass: a ``type`` string and a generic :meth:`to_dict`.

    Python field ``msg_id`` goes on the wire as ``id``; other names map through ``WIRE_NAMES``.
    A field whose value is ``None`` is left out unless it is listed in ``NULLABLE``.
    """

    __slots__ = ()
    TYPE: ClassVar[str] = ""
    WIRE_NAMES: ClassVar[dict[str, str]] = {"msg_id": "id"}
    NULLABLE: ClassVar[frozenset[str]] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        """The message as plain JSON values, ``type`` first."""
        out: dict[str, Any] = {"type": self.TYPE} if self.TYPE else {}
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if value is None and field.name not in self.NULLABLE:
                continue
            name = self.WIRE_NAMES.get(field.name, WireMessage.WIRE_NAMES.get(field.name))
            out[name or field.name] = _plain(value)
        return out


def encode(message: WireMessage) -> str:
    """Compact JSON text for a message (ASCII only, no spaces; non-finite numbers raise)."""
    return json.dumps(message.to_dict(), separators=(",", ":"), allow_nan=False)
