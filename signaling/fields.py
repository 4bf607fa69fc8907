"""Field readers: one untrusted JSON object in, typed and range-checked Python values out.

Every failure is a :class:`~signaling.errors.ProtocolError` whose message names the field and
the message type, says what was wrong and what would be right. JSON's type system is taken
literally: ``true`` is not a number, ``1.0`` is not an integer, ``null`` is not a string.
"""

from __future__ import annotations

import math
import re
from typing import Any

from signaling.errors import ErrorCode, ProtocolError
from signaling.wire import describe


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, with an article, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


#: Format characters that names need: joiners in emoji sequences (👩‍🎤) and in Indic and
#: Persian scripts. Other format characters (bidi overrides among them) stay refused.
_JOINERS = frozenset("\u200c\u200d")


def _printable(value: str) -> bool:
    return value.isprintable() or all(c.isprintable() or c in _JOINERS for c in value)


def _range(lo: float, hi: float) -> str:
    return f"from {lo:g} to {hi:g}"


class Reader:
    """Reads the fields of one decoded message object, naming it in every error.

    Parameters
    ----------
    obj
        The decoded JSON object; its field set has already been checked by the caller.
    message_type
        The message's ``type``, used in error messages.
    """

    def __init__(self, obj: dict[str, Any], message_type: str) -> None:
        self.obj = obj
        self.message_type = message_type

    def fail(self, code: ErrorCode, field: str, what: str) -> ProtocolError:
        """The error for ``field``: ``'field' in 'type' <what>``."""
        return ProtocolError(code, f"{field!r} in {self.message_type!r} {what}")

    def present(self, field: str) -> bool:
        """Whether ``field`` is there and not ``null`` (optional fields treat null as absent)."""
        return self.obj.get(field) is not None

    def string(
        self,
        field: str,
        *,
        max_chars: int,
        min_chars: int = 1,
        pattern: re.Pattern[str] | None = None,
        printable: bool = False,
        strip: bool = False,
        expected: str = "",
    ) -> str:
        """A string field, optionally stripped, checked for length and characters.

        ``pattern`` must match the whole string; ``printable`` refuses control, format (but
        for the zero-width joiners), separator (but for the space) and unassigned characters
        and lone surrogates, as :meth:`str.isprintable` does. ``expected``
        describes the allowed characters in the error message.
        """
        value = self.obj.get(field)
        if not isinstance(value, str):
            raise self.fail(ErrorCode.BAD_TYPE, field, f"must be a string, got {json_type(value)}")
        if strip:
            value = value.strip()
        if not min_chars <= len(value) <= max_chars:
            size = f"{min_chars} to {max_chars}" if min_chars else f"at most {max_chars}"
            raise self.fail(
                ErrorCode.BAD_VALUE, field, f"must have {size} characters, got {len(value)}"
            )
        if (pattern is not None and not pattern.fullmatch(value)) or (
            printable and not _printable(value)
        ):
            what = expected or (
                "printable characters" if printable or pattern is None else pattern.pattern
            )
            raise self.fail(
                ErrorCode.BAD_VALUE, field, f"must be {what}, got {describe(value)}"
            )
        return value

    def number(self, field: str, lo: float, hi: float) -> float:
        """A finite number (integer or not, never a boolean) in ``[lo, hi]``, as a float."""
        return self._number(self.obj.get(field), field, lo, hi)

    def _number(self, value: Any, field: str, lo: float, hi: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(ErrorCode.BAD_TYPE, field, f"must be a number, got {json_type(value)}")
        # compare before float(): a 400-digit integer would overflow the conversion
        if not (isinstance(value, int) or math.isfinite(value)) or not lo <= value <= hi:
            raise self.fail(
                ErrorCode.OUT_OF_RANGE, field,
                f"must be a finite number {_range(lo, hi)}, got {describe(value)}",
            )
        return float(value)

    def integer(self, field: str, lo: int, hi: int) -> int:
        """An integer (not ``1.0``, not a boolean) in ``[lo, hi]``."""
        value = self.obj.get(field)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(
                ErrorCode.BAD_TYPE, field, f"must be an integer, got {json_type(value)}"
            )
        if not lo <= value <= hi:
            raise self.fail(
                ErrorCode.OUT_OF_RANGE, field,
                f"must be an integer {_range(lo, hi)}, got {describe(value)}",
            )
        return value

    def boolean(self, field: str) -> bool:
        """``true`` or ``false``; not 0, 1 or ``"true"``."""
        value = self.obj.get(field)
        if not isinstance(value, bool):
            raise self.fail(
                ErrorCode.BAD_TYPE, field, f"must be true or false, got {json_type(value)}"
            )
        return value

    def vector(self, field: str, length: int, limit: float) -> tuple[float, ...]:
        """An array of exactly ``length`` finite numbers, each within ``±limit``."""
        value = self.obj.get(field)
        if not isinstance(value, list):
            raise self.fail(
                ErrorCode.BAD_TYPE, field,
                f"must be an array of {length} numbers, got {json_type(value)}",
            )
        if len(value) != length:
            raise self.fail(
                ErrorCode.BAD_VALUE, field,
                f"must be an array of {length} numbers, got {len(value)} items",
            )
        return tuple(
            self._number(item, f"{field}[{i}]", -limit, limit) for i, item in enumerate(value)
        )
