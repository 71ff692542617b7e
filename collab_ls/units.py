"""Text measures in the units LSP and pycrdt count in.

An LSP position counts characters in the negotiated position encoding: UTF-8
bytes, UTF-16 code units (the default) or UTF-32 code units (code points).
pycrdt's ``Text`` counts UTF-8 bytes. Python strings are indexed by code point.
Every conversion between these lives here, so the rest of collab-ls never does
its own arithmetic on units.

Conventions:

* ``index`` is a code-point index into a Python ``str``.
* ``units`` is a count of code units in an :class:`Encoding`.
* ``byte`` offsets are UTF-8 byte offsets (an ``Encoding.UTF8`` unit count).

Every function has an ASCII fast path (``str.isascii()`` is O(1) in CPython,
which caches the flag on the string), so on ASCII text a conversion costs O(1)
whatever the string's length. On non-ASCII text a conversion encodes the
string and costs O(len(s)); callers keep ``s`` short (one line).

An offset that falls inside a character (inside a multi-byte UTF-8 sequence,
or between the two UTF-16 code units of a surrogate pair) raises
:class:`PositionError`; so does one outside the string. Clamping is the
caller's decision.

Strings are expected to be well-formed Unicode. Lone surrogates (which only a
malformed JSON escape can produce) are measured as one code point each (three
UTF-8 bytes, one UTF-16 unit) rather than raising, but a lone high surrogate
directly followed by a lone low one is unsupported.
"""

from __future__ import annotations

import enum

__all__ = [
    "Encoding",
    "PositionError",
    "blen",
    "byte_to_index",
    "byte_to_units",
    "index_to_byte",
    "index_to_units",
    "units_len",
    "units_to_byte",
    "units_to_index",
    "utf8_slice",
]

# "surrogatepass" only matters for lone surrogates; valid text never calls it.
_ERRORS = "surrogatepass"


class Encoding(enum.StrEnum):
    """An LSP ``PositionEncodingKind``: what a position's ``character`` counts."""

    UTF8 = "utf-8"
    UTF16 = "utf-16"
    UTF32 = "utf-32"

    @classmethod
    def parse(cls, value: str | None) -> Encoding:
        """Parse a ``PositionEncodingKind`` string.

        Args:
            value: ``"utf-8"``, ``"utf-16"`` or ``"utf-32"`` (case-insensitive),
                or ``None`` when the client negotiated nothing.

        Returns:
            The encoding; ``UTF16``, the LSP default, for ``None``.

        Raises:
            ValueError: ``value`` is not a known encoding.
        """
        if value is None:
            return cls.UTF16
        try:
            return cls(value.lower())
        except ValueError:
            known = ", ".join(e.value for e in cls)
            raise ValueError(f"unknown position encoding {value!r} (known: {known})") from None


class PositionError(ValueError):
    """A position or offset outside its text, or inside a character."""


def blen(s: str) -> int:
    """Return the UTF-8 byte length of ``s`` (O(1) when ``s`` is ASCII)."""
    if s.isascii():
        return len(s)
    return len(s.encode("utf-8", _ERRORS))


def units_len(s: str, enc: Encoding) -> int:
    """Return the length of ``s`` in code units of ``enc``.

    UTF-16 length is the code-point count plus one per non-BMP character.
    """
    if enc is Encoding.UTF32 or s.isascii():
        return len(s)
    if enc is Encoding.UTF8:
        return len(s.encode("utf-8", _ERRORS))
    return len(s.encode("utf-16-le", _ERRORS)) >> 1


def _check_index(s: str, idx: int) -> None:
    if not 0 <= idx <= len(s):
        raise PositionError(f"index {idx} outside a string of {len(s)} characters")


def index_to_units(s: str, idx: int, enc: Encoding) -> int:
    """Convert a code-point index into ``s`` to a count of ``enc`` code units.

    Raises:
        PositionError: ``idx`` is outside ``[0, len(s)]``.
    """
    _check_index(s, idx)
    if enc is Encoding.UTF32 or s.isascii():
        return idx
    return units_len(s[:idx], enc)


def index_to_byte(s: str, idx: int) -> int:
    """Convert a code-point index into ``s`` to a UTF-8 byte offset.

    Raises:
        PositionError: ``idx`` is outside ``[0, len(s)]``.
    """
    _check_index(s, idx)
    if s.isascii():
        return idx
    return len(s[:idx].encode("utf-8", _ERRORS))


def _out_of_range(units: int, total: int, enc: Encoding) -> PositionError:
    return PositionError(
        f"{enc.value} offset {units} outside a string of {total} {enc.value} units"
    )


def _mid_char(units: int, total: int, enc: Encoding) -> PositionError:
    return PositionError(
        f"{enc.value} offset {units} falls inside a character (string of {total} {enc.value} units)"
    )


def _utf8_checked(b: bytes, units: int) -> None:
    """Raise unless ``units`` is a character boundary of UTF-8 ``b``."""
    if not 0 <= units <= len(b):
        raise _out_of_range(units, len(b), Encoding.UTF8)
    # A continuation byte (0b10xxxxxx) never starts a character.
    if units < len(b) and b[units] & 0xC0 == 0x80:
        raise _mid_char(units, len(b), Encoding.UTF8)


def _utf16_checked(e: bytes, units: int) -> None:
    """Raise unless ``units`` is a character boundary of UTF-16-LE ``e``."""
    total = len(e) >> 1
    if not 0 <= units <= total:
        raise _out_of_range(units, total, Encoding.UTF16)
    if 0 < units < total:
        prev = e[2 * units - 2] | e[2 * units - 1] << 8
        cur = e[2 * units] | e[2 * units + 1] << 8
        if 0xD800 <= prev <= 0xDBFF and 0xDC00 <= cur <= 0xDFFF:
            raise _mid_char(units, total, Encoding.UTF16)


def units_to_index(s: str, units: int, enc: Encoding) -> int:
    """Convert a count of ``enc`` code units into ``s`` to a code-point index.

    Raises:
        PositionError: ``units`` is negative, past the end of ``s``, or falls
            inside a character.
    """
    if enc is Encoding.UTF32 or s.isascii():
        if not 0 <= units <= len(s):
            raise _out_of_range(units, units_len(s, enc), enc)
        return units
    if enc is Encoding.UTF8:
        b = s.encode("utf-8", _ERRORS)
        _utf8_checked(b, units)
        return len(b[:units].decode("utf-8", _ERRORS))
    e = s.encode("utf-16-le", _ERRORS)
    _utf16_checked(e, units)
    return len(e[: 2 * units].decode("utf-16-le", _ERRORS))


def byte_to_index(s: str, b: int) -> int:
    """Convert a UTF-8 byte offset into ``s`` to a code-point index.

    Raises:
        PositionError: ``b`` is outside ``s`` or inside a multi-byte character.
    """
    return units_to_index(s, b, Encoding.UTF8)


def units_to_byte(s: str, units: int, enc: Encoding) -> int:
    """Convert a count of ``enc`` code units into ``s`` to a UTF-8 byte offset.

    Raises:
        PositionError: as :func:`units_to_index`.
    """
    if s.isascii():
        if not 0 <= units <= len(s):
            raise _out_of_range(units, len(s), enc)
        return units
    if enc is Encoding.UTF8:
        _utf8_checked(s.encode("utf-8", _ERRORS), units)
        return units
    return index_to_byte(s, units_to_index(s, units, enc))


def byte_to_units(s: str, b: int, enc: Encoding) -> int:
    """Convert a UTF-8 byte offset into ``s`` to a count of ``enc`` code units.

    Raises:
        PositionError: ``b`` is outside ``s`` or inside a multi-byte character.
    """
    if s.isascii():
        if not 0 <= b <= len(s):
            raise _out_of_range(b, len(s), Encoding.UTF8)
        return b
    raw = s.encode("utf-8", _ERRORS)
    _utf8_checked(raw, b)
    if enc is Encoding.UTF8:
        return b
    return units_len(raw[:b].decode("utf-8", _ERRORS), enc)


def utf8_slice(s: str, start_byte: int, end_byte: int) -> str:
    """Return the part of ``s`` between two UTF-8 byte offsets.

    Meant for short strings: a non-ASCII ``s`` is encoded whole.

    Raises:
        PositionError: the offsets are out of order, outside ``s``, or inside
            a character.
    """
    if start_byte > end_byte:
        raise PositionError(f"byte range [{start_byte}, {end_byte}) is reversed")
    if s.isascii():
        if start_byte < 0 or end_byte > len(s):
            raise _out_of_range(start_byte if start_byte < 0 else end_byte, len(s), Encoding.UTF8)
        return s[start_byte:end_byte]
    b = s.encode("utf-8", _ERRORS)
    _utf8_checked(b, start_byte)
    _utf8_checked(b, end_byte)
    return b[start_byte:end_byte].decode("utf-8", _ERRORS)
