"""The line store under :class:`~collab_ls.linetext.LineText`: lines in blocks, found fast.

:class:`LineIndex` holds a document as its lines, each with its UTF-8 length,
and finds the line of a line number or of a byte offset, and the byte offset
of a line, at a cost that does not grow with the document.
:func:`split_lines` cuts text into lines the way it does: at the LSP line
breaks, each line keeping its terminator (see :mod:`collab_ls.linetext`).

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
"""

from __future__ import annotations

import re
from bisect import bisect_right
from itertools import accumulate, chain, islice, pairwise

from collab_ls.units import blen

__all__ = ["DEFAULT_BLOCK_LINES", "LineIndex", "split_lines"]

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


class LineIndex:
    """A document's lines in blocks, indexed by line number and UTF-8 byte offset.

    The base of :class:`~collab_ls.linetext.LineText`, which adds LSP
    positions and edits; see the module docstring for the layout.

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
