"""The server's model of one editor buffer, addressed by UTF-8 byte offsets.

:class:`LineText` converts between LSP positions (line, character in an
:class:`~collab_ls.units.Encoding`) and the UTF-8 byte offsets pycrdt indexes
by, and applies edits given as byte ranges, at a cost per operation that does
not grow with the document.

Lines keep their terminator (``\\n``, ``\\r\\n`` or ``\\r``: the LSP line breaks, not
:meth:`str.splitlines`'s wider set); the last line has none, so ``"abc\\n"`` has
the lines ``"abc\\n"`` and ``""``. A ``\\r\\n`` is always one terminator.

The line store it is built on, with the layout that makes those costs, is
:class:`~collab_ls.line_index.LineIndex`; this module adds the conversions
between positions and offsets, slicing and editing.

Long lines: a conversion on an ASCII line is O(1) whatever its length
(``str.isascii`` is O(1) in CPython); on a non-ASCII line it is O(line length),
as is :meth:`LineText.replace` on any line (it copies the lines it touches).
"""

from __future__ import annotations

from collab_ls.line_index import LineIndex, split_lines
from collab_ls.units import (
    Encoding,
    PositionError,
    blen,
    byte_to_index,
    byte_to_units,
    units_len,
    units_to_byte,
)

__all__ = ["LineText"]


def _content_len(s: str) -> int:
    """Length of line ``s`` without its terminator (ASCII, so bytes and units alike)."""
    if s.endswith("\n"):
        return len(s) - 2 if s.endswith("\r\n") else len(s) - 1
    return len(s) - 1 if s.endswith("\r") else len(s)


class LineText(LineIndex):
    """A mutable document indexed by UTF-8 byte offsets and LSP positions.

    Made from its initial content as a :class:`~collab_ls.line_index.LineIndex`
    is: ``LineText(text, block_lines=...)``.
    """

    def to_offset(self, line: int, character: int, enc: Encoding) -> int:
        """Convert an LSP position to a byte offset; see :meth:`to_offset_checked`."""
        return self.to_offset_checked(line, character, enc)[0]

    def to_offset_checked(self, line: int, character: int, enc: Encoding) -> tuple[int, bool]:
        """Convert an LSP position to a byte offset, saying whether it was clamped.

        As LSP has it, a ``character`` past the end of the line's content (its
        terminator excluded) means the end of the content, and
        ``line == line_count`` (any ``character``) the end of the document;
        both count as clamped.

        Returns:
            ``(offset, clamped)``; ``character`` counts ``enc`` code units.

        Raises:
            PositionError: A negative value, ``line > line_count``, or a
                ``character`` inside a character (mid surrogate pair or mid
                UTF-8 sequence).
        """
        if line < 0 or character < 0:
            raise PositionError(f"negative position (line {line}, character {character})")
        if line >= self._nlines:
            if line == self._nlines:
                return self._nbytes, True
            raise PositionError(f"line {line} past the end of a document of {self._nlines} lines")
        k, line0, start = self._block_of_line(line)
        blk = self._blocks[k]
        i = line - line0
        start += blk.before(i)
        s = blk.lines[i]
        content = _content_len(s)
        if s.isascii():
            if character > content:
                return start + content, True
            return start + character, False
        term = len(s) - content
        if character > units_len(s, enc) - term:
            return start + blk.lens[i] - term, True
        try:
            return start + units_to_byte(s, character, enc), False
        except PositionError:
            raise PositionError(
                f"position (line {line}, character {character}) falls inside a character"
                f" (the line has {units_len(s, enc) - term} {enc.value} units)"
            ) from None

    def to_position(self, offset: int, enc: Encoding) -> tuple[int, int]:
        """Convert a byte offset to an LSP position ``(line, character)``.

        Raises:
            PositionError: ``offset`` is outside ``[0, byte_len]``, inside a
                multi-byte character, or between the ``\\r`` and ``\\n`` of a
                ``\\r\\n``.
        """
        self._check_range(offset, offset)
        k, i, line, _, local = self._find_byte(offset)
        blk = self._blocks[k]
        s = blk.lines[i]
        if local > blk.lens[i] - len(s) + _content_len(s):
            raise PositionError(f"byte offset {offset} falls inside the line break of line {line}")
        if s.isascii():
            return line, local
        try:
            return line, byte_to_units(s, local, enc)
        except PositionError:
            msg = f"byte offset {offset} falls inside a character of line {line}"
            raise PositionError(msg) from None

    def slice(self, start: int, end: int) -> str:
        """Return the text between byte offsets ``start`` and ``end``.

        Costs O(log n + B) plus the slice (plus its end lines when not ASCII).

        Raises:
            PositionError: The range is reversed, outside the document, or an
                end falls inside a character.
        """
        self._check_range(start, end)
        ka, ia, _, _, ra = self._find_byte(start)
        kz, iz, _, _, rz = self._find_byte(end)
        first = self._blocks[ka].lines[ia]
        last = self._blocks[kz].lines[iz]
        ra_c = _char_index(first, ra, start)
        rz_c = _char_index(last, rz, end)
        if (ka, ia) == (kz, iz):
            return first[ra_c:rz_c]
        middle = self._middle(ka, ia, kz, iz)
        return "".join([first[ra_c:], *middle, last[:rz_c]])

    def replace(self, start: int, end: int, text: str) -> str:
        """Replace the bytes ``[start, end)`` with ``text``.

        Line breaks are re-split where the edit meets its neighbours: e.g. a
        ``\\n`` inserted after a lone ``\\r`` makes one ``\\r\\n`` with it.
        Costs O(log n) plus the lines touched (O(B) when blocks split or
        merge, or when the edit is far from the block's previous one).

        Returns:
            The removed text.

        Raises:
            PositionError: The range is reversed, outside the document, or an
                end falls inside a character. Nothing is changed then.
        """
        self._check_range(start, end)
        ka, ia, la, sa, rs = self._find_byte(start)
        blocks = self._blocks
        if end - sa < blocks[ka].lens[ia] or la == self._nlines - 1:
            kz, iz, lz, re_ = ka, ia, la, end - sa
        else:
            kz, iz, lz, _, re_ = self._find_byte(end)
        line_a = blocks[ka].lines[ia]
        line_z = blocks[kz].lines[iz]
        rs_c = _char_index(line_a, rs, start)
        re_c = _char_index(line_z, re_, end)
        # Validated: nothing raises from here on.
        if la == lz:
            removed = line_a[rs_c:re_c]
        else:
            middle = self._middle(ka, ia, kz, iz)
            removed = "".join([line_a[rs_c:], *middle, line_z[:re_c]])
        prefix = line_a[:rs_c]
        new = "".join((prefix, text, line_z[re_c:]))
        text_bytes = blen(text)
        new_bytes = rs + text_bytes + blocks[kz].lens[iz] - re_
        if new.startswith("\n") and la > 0:
            # A lone \r ending the previous line and this \n make one break.
            pk, pi = (ka, ia - 1) if ia else (ka - 1, len(blocks[ka - 1].lines) - 1)
            prev = blocks[pk].lines[pi]
            if prev.endswith("\r"):
                new = prev + new
                new_bytes += blocks[pk].lens[pi]
                ka, ia, la = pk, pi, la - 1
        if "\n" not in text and "\r" not in text and not prefix.endswith("\r"):
            # The only line break in ``new`` is line_z's own, at its end.
            new_lines = [new]
            new_lens = [new_bytes]
        else:
            new_lines = split_lines(new)
            if lz < self._nlines - 1:
                new_lines.pop()  # ``new`` ends with line_z's terminator
            new_lens = [blen(s) for s in new_lines]
        dlines = len(new_lines) - (lz - la + 1)
        dbytes = text_bytes - (end - start)
        self._nlines += dlines
        self._nbytes += dbytes
        if ka == kz:
            blk = blocks[ka]
            blk.splice(ia, iz, new_lines, new_lens, dbytes)
            m = len(blk.lines)
            if m <= self._block_lines and (m >= self._block_lines >> 2 or len(blocks) == 1):
                self._bump(ka, dlines, dbytes)
                return removed
            self._rechunk(ka, ka, blk.lines, blk.lens)
        else:
            a, z = blocks[ka], blocks[kz]
            lines = a.lines[:ia] + new_lines + z.lines[iz + 1 :]
            self._rechunk(ka, kz, lines, a.lens[:ia] + new_lens + z.lens[iz + 1 :])
        return removed

    # -- internals -----------------------------------------------------------

    def _check_range(self, start: int, end: int) -> None:
        if start > end:
            raise PositionError(f"byte range [{start}, {end}) is reversed")
        if start < 0 or end > self._nbytes:
            raise PositionError(
                f"byte range [{start}, {end}) outside a document of {self._nbytes} bytes"
            )


def _char_index(s: str, local: int, offset: int) -> int:
    """Code-point index of byte ``local`` of line ``s``, at ``offset`` in the document."""
    try:
        return byte_to_index(s, local)
    except PositionError:
        raise PositionError(f"byte offset {offset} falls inside a character") from None
