"""The lib0 encoding primitives the y-websocket wire format is made of.

Yjs encodes its messages with lib0 (``lib0/encoding`` and ``lib0/decoding``).
The relay's wire format (:mod:`relay.protocol`) uses three of its types::

    varUint       unsigned LEB128: 7 bits a byte, least significant first,
                  the high bit set on every byte but the last
    varUint8Array varUint(length) then that many bytes
    varString     a varUint8Array of UTF-8

:class:`Reader` reads them strictly, where pycrdt's own ``Decoder`` is
lenient (it reads past the end, silently truncates, and ignores trailing
bytes): anything malformed or truncated raises :class:`ProtocolError` with a
text fit for a log line or a websocket close reason. The writers build the
same types; :mod:`relay.protocol` re-exports what it always exported.
"""

from __future__ import annotations

__all__ = [
    "MAX_VAR_UINT",
    "ProtocolError",
    "Reader",
    "check_var_uint",
    "write_var_bytes",
    "write_var_string",
    "write_var_uint",
]

#: Largest integer accepted in a varUint (lib0 itself stops at 2**53 - 1).
MAX_VAR_UINT = 2**64 - 1


class ProtocolError(ValueError):
    """A message that is not valid y-websocket; the text says what is wrong."""


class Reader:
    """A bounds-checked reader over one message.

    Every method names the field it reads, for the error text; ``what``
    names the whole (``"message"``, ``"state vector"``, ...).
    """

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def var_uint(self, field: str) -> int:
        """Read a varUint.

        Raises:
            ProtocolError: If it is truncated, longer than 10 bytes or
                larger than :data:`MAX_VAR_UINT`.
        """
        value = 0
        shift = 0
        start = self._pos
        while True:
            if self._pos >= len(self._data):
                raise ProtocolError(
                    f"truncated {self._what}: {field} ends at byte {start}"
                    if self._pos == start
                    else f"truncated {self._what}: unterminated varint for {field} at byte {start}"
                )
            byte = self._data[self._pos]
            self._pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
            if shift >= 70:
                raise ProtocolError(
                    f"bad {self._what}: varint for {field} at byte {start} too long"
                )
        if value > MAX_VAR_UINT:
            raise ProtocolError(f"bad {self._what}: varint for {field} at byte {start} too large")
        return value

    def var_bytes(self, field: str) -> bytes:
        """Read a varUint8Array.

        Raises:
            ProtocolError: If its length is malformed or past the end.
        """
        start = self._pos
        length = self.var_uint(f"length of {field}")
        end = self._pos + length
        if end > len(self._data):
            raise ProtocolError(
                f"truncated {self._what}: {field} at byte {start} claims {length} bytes, "
                f"only {len(self._data) - self._pos} left"
            )
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def var_string(self, field: str) -> str:
        """Read a varString.

        Raises:
            ProtocolError: If it is malformed or not UTF-8.
        """
        raw = self.var_bytes(field)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"bad {self._what}: {field} is not UTF-8 ({exc.reason})") from None

    def end(self) -> None:
        """Check that everything was read.

        Raises:
            ProtocolError: If bytes are left.
        """
        extra = len(self._data) - self._pos
        if extra:
            raise ProtocolError(f"bad {self._what}: {extra} trailing bytes after the message")


def write_var_uint(value: int) -> bytes:
    """Encode a varUint (as ``pycrdt.write_var_uint``; see :func:`check_var_uint`)."""
    out: list[int] = []
    while value > 127:
        out.append(128 | (127 & value))
        value >>= 7
    out.append(value)
    return bytes(out)


def write_var_bytes(data: bytes) -> bytes:
    """Encode a varUint8Array (as ``pycrdt.write_message``)."""
    return write_var_uint(len(data)) + data


def write_var_string(text: str) -> bytes:
    """Encode a varString: the UTF-8 bytes, prefixed with their (not the text's) length."""
    return write_var_bytes(text.encode("utf-8"))


def check_var_uint(name: str, value: int) -> None:
    """Check that an integer fits in a varUint.

    Raises:
        ValueError: If it is not between 0 and :data:`MAX_VAR_UINT`.
    """
    if not 0 <= value <= MAX_VAR_UINT:
        raise ValueError(f"{name} must be between 0 and 2**64 - 1, not {value}")
