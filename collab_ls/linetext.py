"""The server's model of one editor buffer, addressed by UTF-8 byte offsets.

:class:`LineText` converts between LSP positions (line, character in an
:class:`~collab_ls.units.Encoding`) and the UTF-8 byte offsets pycrdt indexes
by, and applies edits given as byte ranges, at a cost per operation that does
not grow with the document.

Lines keep their terminator (``\\n``, ``\\r\\n`` or ``\\r``: the LSP line breaks, not
:meth:`str.splitlines`'s wider set); the last line has none, so ``"abc\\n"`` has
the lines ``"abc\\n"`` and ``""``. A ``\\r\\n`` is always one terminator.

Layout (B = ``block_lines``): lines live in blocks of at most B lines (at
least B/4 when there are several), each keeping every line's UTF-8 length.
Fenwick trees over the blocks' line and byte counts find the block of a line
or offset in O(log(n/B)) Python steps; an edit inside a block updates them as
fast. Splitting or merging blocks leaves them to an O(n/B) rebuild at the next
lookup; blocks are born 3/4 full, so that happens at most once per B/8 line
insertions or deletions at one place. The last block found is remembered (a
finger), so work at one place skips even the O(log) search. Inside a block,
line starts come from running byte totals, built by an O(B) ``accumulate`` in
C when needed and then kept up to date in time proportional to the lines an
edit touches plus its distance from the block's previous edit: typing and
Enter at a cursor cost O(log B).

Long lines: a conversion on an ASCII line is O(1) whatever its length
(``str.isascii`` is O(1) in CPython); on a non-ASCII line it is O(line length),
as is :meth:`LineText.replace` on any line (it copies the lines it touches).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from itertools import accumulate, chain, islice, pairwise

from collab_ls.units import (
    Encoding,
    PositionError,
    blen,
    byte_to_index,
    byte_to_units,
    units_len,
    units_to_byte,
)

__all__ = ["DEFAULT_BLOCK_LINES", "LineText", "split_lines"]

# Rebuilding a block's totals is O(B) in C; splits (and index rebuilds) are rarer as B grows.
DEFAULT_BLOCK_LINES = 256

_BREAK = re.compile(r"(\r\n|\r|\n)")
_NEAR = 32  # how far (in lines) a block's pending shift is moved rather than dropped


def split_lines(text: str) -> list[str]:
    """Split ``text`` at LSP line breaks, keeping each line's terminator.

    Returns:
        The lines; the last has no terminator (and is ``""`` when ``text`` is
        empty or ends with a line break).
    """
    if "\r" not in text:
        if "\n" not in text:
            return [text]
        parts = text.split("\n")
        return [*(s + "\n" for s in islice(parts, len(parts) - 1)), parts[-1]]
    parts = _BREAK.split(text)
    lines = [c + t for c, t in zip(parts[0:-1:2], parts[1::2], strict=True)]
    lines.append(parts[-1])
    return lines


def _content_len(s: str) -> int:
    """Length of line ``s`` without its terminator (ASCII, so bytes and units alike)."""
    if s.endswith("\n"):
        return len(s) - 2 if s.endswith("\r\n") else len(s) - 1
    return len(s) - 1 if s.endswith("\r") else len(s)


class _Block:
    """A run of consecutive lines with their UTF-8 byte lengths.

    ``acc`` (when not ``None``) holds running byte totals, kept lazily: the
    true total through line ``j`` is ``acc[j] + shift`` for ``j >= shift_at``
    and ``acc[j]`` before, so an edit only adds to ``shift`` instead of
    rewriting every later entry.
    """

    __slots__ = ("acc", "lens", "lines", "nbytes", "shift", "shift_at")

    def __init__(self, lines: list[str], lens: list[int]) -> None:
        self.lines = lines
        self.lens = lens
        self.nbytes = sum(lens)
        self.acc: list[int] | None = None
        self.shift = 0
        self.shift_at = 0

    def before(self, i: int) -> int:
        """Bytes in the lines before line ``i``."""
        acc = self.acc
        if acc is None:
            return sum(islice(self.lens, i))
        if not i:
            return 0
        return acc[i - 1] + self.shift if i > self.shift_at else acc[i - 1]

    def find(self, rem: int) -> int:
        """Index of the line holding byte ``rem`` (``len(lines)`` at the very end)."""
        acc = self.acc
        if acc is None:
            acc = self.acc = list(accumulate(self.lens))
            self.shift = 0
        d = self.shift
        if not d:
            return bisect_right(acc, rem)
        p = self.shift_at
        i = bisect_right(acc, rem, 0, p)
        return i if i < p else bisect_right(acc, rem - d, p)

    def splice(self, ia: int, iz: int, lines: list[str], lens: list[int], dbytes: int) -> None:
        """Replace lines ``ia..iz`` (inclusive) with ``lines``."""
        if ia == iz and len(lines) == 1:
            self.lines[ia] = lines[0]
            self.lens[ia] = lens[0]
        else:
            self.lines[ia : iz + 1] = lines
            self.lens[ia : iz + 1] = lens
        self.nbytes += dbytes
        acc = self.acc
        if acc is None:
            return
        d, p = self.shift, self.shift_at
        if d and p != ia:
            # Move the shift's start to ``ia`` if it is near, else drop ``acc``.
            if abs(p - ia) > _NEAR:
                self.acc = None
                return
            if p < ia:
                acc[p:ia] = [t + d for t in acc[p:ia]]
            else:
                acc[ia:p] = [t - d for t in acc[ia:p]]
        d += dbytes
        self.shift, self.shift_at = d, ia
        if ia != iz or len(lines) != 1:
            base = acc[ia - 1] if ia else 0
            acc[ia : iz + 1] = [t - d for t in islice(accumulate(lens, initial=base), 1, None)]


class LineText:
    """A mutable document indexed by UTF-8 byte offsets and LSP positions.

    Args:
        text: The initial content.
        block_lines: Most lines per block (tests use small values to exercise
            block splits and merges).

    Raises:
        ValueError: ``block_lines`` is below 2.
    """

    def __init__(self, text: str = "", *, block_lines: int = DEFAULT_BLOCK_LINES) -> None:
        if block_lines < 2:
            raise ValueError(f"block_lines must be at least 2, got {block_lines}")
        self._block_lines = block_lines
        lines = split_lines(text)
        lens = list(map(len, lines)) if text.isascii() else [blen(s) for s in lines]
        self._blocks = self._chunk(lines, lens)
        self._nlines = len(lines)
        self._nbytes = sum(lens)
        # Fenwick trees (1-based) of block line and byte counts, stale if _dirty.
        self._ft_lines: list[int] = []
        self._ft_bytes: list[int] = []
        self._ft_top = 0
        self._dirty = True
        # The finger: a block (-1: none) and its first line and byte offset.
        self._fk, self._fl, self._fb = -1, 0, 0

    @property
    def byte_len(self) -> int:
        """The document's length in UTF-8 bytes."""
        return self._nbytes

    @property
    def line_count(self) -> int:
        """The number of lines (at least 1; one more than the line breaks)."""
        return self._nlines

    def text(self) -> str:
        """Return the whole document (O(n): for tests and full syncs)."""
        return "".join(chain.from_iterable(b.lines for b in self._blocks))

    def line(self, i: int) -> str:
        """Return line ``i``, with its terminator.

        Raises:
            IndexError: ``i`` is outside ``[0, line_count)``.
        """
        if not 0 <= i < self._nlines:
            raise IndexError(f"line {i} outside a document of {self._nlines} lines")
        k, line0, _ = self._block_of_line(i)
        return self._blocks[k].lines[i - line0]

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

    def check_invariants(self) -> None:
        """Check the internal structure against a recount (O(n), for tests).

        Raises:
            AssertionError: An invariant does not hold.
        """
        lines: list[str] = []
        for b in self._blocks:
            assert 0 < len(b.lines) <= self._block_lines, "block size out of bounds"
            assert len(self._blocks) == 1 or len(b.lines) >= self._block_lines >> 2
            assert b.lens == [blen(s) for s in b.lines], "stale line lengths"
            assert b.nbytes == sum(b.lens), "stale block size"
            if b.acc is not None:
                true = [t + (b.shift if j >= b.shift_at else 0) for j, t in enumerate(b.acc)]
                assert true == list(accumulate(b.lens)), "stale block totals"
            lines.extend(b.lines)
        assert (self._nlines, self._nbytes) == (len(lines), sum(map(blen, lines)))
        assert lines == split_lines("".join(lines)), "lines not split at line breaks"
        if (k := self._fk) >= 0:
            assert self._fl == sum(len(b.lines) for b in self._blocks[:k]), "stale finger"
            assert self._fb == sum(b.nbytes for b in self._blocks[:k]), "stale finger"
        if not self._dirty:
            saved = self._ft_lines, self._ft_bytes, self._ft_top
            self._index()
            assert saved == (self._ft_lines, self._ft_bytes, self._ft_top), "stale index"

    # -- internals -----------------------------------------------------------

    def _rechunk(self, ka: int, kz: int, lines: list[str], lens: list[int]) -> None:
        """Replace blocks ``ka..kz`` (inclusive) with blocks made of ``lines``."""
        blocks = self._blocks
        if len(lines) < self._block_lines >> 2 and kz - ka + 1 < len(blocks):
            # Too small: take in a neighbour so blocks stay at least 1/4 full.
            if kz + 1 < len(blocks):
                kz += 1
                lines, lens = lines + blocks[kz].lines, lens + blocks[kz].lens
            else:
                ka -= 1
                lines, lens = blocks[ka].lines + lines, blocks[ka].lens + lens
        blocks[ka : kz + 1] = self._chunk(lines, lens)
        self._dirty = True
        self._fk = -1

    def _chunk(self, lines: list[str], lens: list[int]) -> list[_Block]:
        """Cut ``lines`` into near-equal blocks about 3/4 full."""
        m = len(lines)
        count = max(1, -(-m // max(1, self._block_lines * 3 // 4)))
        cuts = [j * m // count for j in range(count + 1)]
        return [_Block(lines[a:b], lens[a:b]) for a, b in pairwise(cuts)]

    def _index(self) -> None:
        """Rebuild the Fenwick trees from the blocks (O(n/B))."""
        blocks = self._blocks
        n = len(blocks)
        ftl = [0, *(len(b.lines) for b in blocks)]
        ftb = [0, *(b.nbytes for b in blocks)]
        for i in range(1, n + 1):
            j = i + (i & -i)
            if j <= n:
                ftl[j] += ftl[i]
                ftb[j] += ftb[i]
        self._ft_lines, self._ft_bytes = ftl, ftb
        self._ft_top = 1 << (n.bit_length() - 1)
        self._dirty = False

    def _bump(self, k: int, dlines: int, dbytes: int) -> None:
        """Record that block ``k`` grew by ``dlines`` lines and ``dbytes`` bytes."""
        if k < self._fk:  # (replace leaves the finger on k itself; kept for safety)
            self._fl += dlines
            self._fb += dbytes
        if self._dirty:
            return
        ftl, ftb = self._ft_lines, self._ft_bytes
        n = len(ftl) - 1
        i = k + 1
        while i <= n:
            ftl[i] += dlines
            ftb[i] += dbytes
            i += i & -i

    def _descend(self, key: list[int], other: list[int], target: int) -> tuple[int, int, int]:
        """Fenwick search for the last block starting at or before ``target``.

        Returns:
            ``(block, its start in key units, its start in other units)``;
            the block is ``len(blocks)`` when ``target`` is the total.
        """
        n = len(key) - 1
        pos = start = ostart = 0
        step = self._ft_top
        while step:
            nxt = pos + step
            if nxt <= n and start + key[nxt] <= target:
                pos = nxt
                start += key[nxt]
                ostart += other[nxt]
            step >>= 1
        return pos, start, ostart

    def _block_of_line(self, line: int) -> tuple[int, int, int]:
        """Find the block of ``line`` (in range): ``(block, first line, first byte)``."""
        k = self._fk
        if k < 0 or not 0 <= line - self._fl < len(self._blocks[k].lines):
            if self._dirty:
                self._index()
            self._fk, self._fl, self._fb = self._descend(self._ft_lines, self._ft_bytes, line)
        return self._fk, self._fl, self._fb

    def _block_of_byte(self, offset: int) -> tuple[int, int, int]:
        """Find the block of byte ``offset`` (in range): ``(block, first line, first byte)``.

        An offset between two blocks belongs to the second; ``byte_len`` to
        the last.
        """
        k = self._fk
        if k >= 0:
            rem = offset - self._fb
            size = self._blocks[k].nbytes
            if 0 <= rem < size or (rem == size and k == len(self._blocks) - 1):
                return k, self._fl, self._fb
        if self._dirty:
            self._index()
        k, byte0, line0 = self._descend(self._ft_bytes, self._ft_lines, offset)
        if k == len(self._blocks):  # offset == byte_len
            k -= 1
            byte0 -= self._blocks[k].nbytes
            line0 -= len(self._blocks[k].lines)
        self._fk, self._fl, self._fb = k, line0, byte0
        return k, line0, byte0

    def _find_byte(self, offset: int) -> tuple[int, int, int, int, int]:
        """Locate byte ``offset`` (in range); between two lines it belongs to the second.

        Returns:
            ``(block, index in block, line number, line's first byte, offset
            in the line)``.
        """
        k, line0, byte0 = self._block_of_byte(offset)
        blk = self._blocks[k]
        i = blk.find(offset - byte0)
        if i == len(blk.lines):
            i -= 1  # the end of the document, in the last line
        start = byte0 + blk.before(i)
        return k, i, line0 + i, start, offset - start

    def _middle(self, ka: int, ia: int, kz: int, iz: int) -> list[str]:
        """The lines strictly between ``(ka, ia)`` and ``(kz, iz)``."""
        blocks = self._blocks
        if ka == kz:
            return blocks[ka].lines[ia + 1 : iz]
        inner = chain.from_iterable(b.lines for b in blocks[ka + 1 : kz])
        return [*blocks[ka].lines[ia + 1 :], *inner, *blocks[kz].lines[:iz]]

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
