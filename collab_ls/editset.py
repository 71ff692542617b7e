"""A set of disjoint replacements over a base text, built up change by change.

The reconciliation core uses an :class:`EditSet` twice:

* to turn the operations it is about to send to the editor into a few
  non-overlapping ``TextEdit`` s, all expressed against the editor's current
  text (LSP requires the edits of one ``TextDocumentEdit`` to refer to the
  original document);
* to summarise the changes an editor reported after that edit, so they can
  be compared with it: the echo of an applied edit is recognised by its
  *result*, because editors re-chunk changes and report their own minimal
  diffs (inserting ``a`` next to another ``a`` may be reported one character
  off).

Segments are kept sorted by base offset, never overlap, and record the base
bytes they replace (``old``) and the bytes that now stand there (``new``), so
both the base text and the current text of every touched region are known
without keeping a copy of the whole document. All offsets are UTF-8 bytes.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass

BaseSlice = Callable[[int, int], bytes]


@dataclass(slots=True)
class Segment:
    """Base bytes ``[start, end)`` (which were ``old``) now read ``new``."""

    start: int
    end: int
    old: bytes
    new: bytes

    @property
    def delta(self) -> int:
        """Length change this segment makes."""
        return len(self.new) - (self.end - self.start)


class EditSet:
    """Disjoint replacements over a base text; see the module docstring."""

    __slots__ = ("segments",)

    def __init__(self) -> None:
        self.segments: list[Segment] = []

    def __bool__(self) -> bool:
        return bool(self.segments)

    @property
    def delta(self) -> int:
        """Total length change in bytes."""
        return sum(s.delta for s in self.segments)

    def add(
        self,
        pos: int,
        size: int,
        inserted: bytes,
        *,
        removed: bytes | None = None,
        base: BaseSlice | None = None,
    ) -> None:
        """Compose a change given in *current* coordinates.

        Args:
            pos: Current byte offset of the change.
            size: Number of current bytes replaced.
            inserted: Bytes inserted at ``pos``.
            removed: The current bytes ``[pos, pos + size)``, when known.
            base: Reads base bytes; needed when ``removed`` is not given.
        """
        segs = self.segments
        end = pos + size
        # Find the first segment whose current range touches [pos, end].
        shift = 0
        i = 0
        while i < len(segs):
            s = segs[i]
            cur_start = s.start + shift
            cur_end = cur_start + len(s.new)
            if cur_end >= pos:
                break
            shift += s.delta
            i += 1
        j = i
        shift_first = shift
        while j < len(segs):
            s = segs[j]
            cur_start = s.start + shift
            if cur_start > end:
                break
            shift += s.delta
            j += 1
        touched = segs[i:j]
        if not touched:
            if removed is None:
                if base is None:
                    raise ValueError("EditSet.add needs removed or base")
                removed = base(pos - shift_first, end - shift_first)
            seg = Segment(pos - shift_first, end - shift_first, removed, inserted)
            segs.insert(i, seg)
            return
        first, last = touched[0], touched[-1]
        first_cur = first.start + shift_first
        last_cur_end = last.start + (shift - last.delta) + len(last.new)
        merged_cur_start = min(pos, first_cur)
        merged_cur_end = max(end, last_cur_end)
        # Current and base bytes of the merged region, gaps read from `removed`
        # (they all lie inside [pos, end), see the reconcile module's notes) or base.
        cur_parts: list[bytes] = []
        old_parts: list[bytes] = []
        if pos < first_cur:
            gap = self._gap(pos, first_cur, pos, removed, base, shift_first)
            cur_parts.append(gap)
            old_parts.append(gap)
        running = shift_first
        prev_cur_end: int | None = None
        for s in touched:
            cur_start = s.start + running
            if prev_cur_end is not None and cur_start > prev_cur_end:
                gap = self._gap(prev_cur_end, cur_start, pos, removed, base, running)
                cur_parts.append(gap)
                old_parts.append(gap)
            cur_parts.append(s.new)
            old_parts.append(s.old)
            running += s.delta
            prev_cur_end = cur_start + len(s.new)
        if end > last_cur_end:
            gap = self._gap(last_cur_end, end, pos, removed, base, running)
            cur_parts.append(gap)
            old_parts.append(gap)
        cur = b"".join(cur_parts)
        new = cur[: pos - merged_cur_start] + inserted + cur[end - merged_cur_start :]
        base_start = first.start if first_cur <= pos else pos - shift_first
        base_end = merged_cur_end - running
        assert merged_cur_end - merged_cur_start == len(cur)
        segs[i:j] = [Segment(base_start, base_end, b"".join(old_parts), new)]

    @staticmethod
    def _gap(
        start: int,
        end: int,
        pos: int,
        removed: bytes | None,
        base: BaseSlice | None,
        shift: int,
    ) -> bytes:
        """Current bytes ``[start, end)`` of a region no segment covers."""
        if removed is not None:
            return removed[start - pos : end - pos]
        if base is None:
            raise ValueError("EditSet.add needs removed or base")
        return base(start - shift, end - shift)

    def shift_before(self, base_pos: int) -> int:
        """Length change made by the segments that end at or before ``base_pos``."""
        shift = 0
        for s in self.segments:
            if s.end > base_pos:
                break
            shift += s.delta
        return shift

    def span(self) -> tuple[int, int]:
        """Base range covered from the first to the last segment."""
        return self.segments[0].start, self.segments[-1].end

    def render(self, start: int, end: int, base_bytes: bytes) -> bytes:
        """Apply the segments inside base ``[start, end)`` to that base region."""
        out: list[bytes] = []
        cursor = start
        for s in self.segments:
            if s.end < start or s.start > end:
                continue
            out.append(base_bytes[cursor - start : s.start - start])
            out.append(s.new)
            cursor = s.end
        out.append(base_bytes[cursor - start : end - start])
        return b"".join(out)

    def base_bytes(self, start: int, end: int, current: BaseSlice) -> bytes:
        """Base bytes of ``[start, end)`` given a reader of the *current* text.

        Regions no segment covers read from the current text at shifted offsets;
        covered regions come from the segments' ``old`` bytes. ``[start, end)``
        must not cut through a segment.
        """
        out: list[bytes] = []
        cursor = start
        shift = 0
        k = bisect_left([s.start for s in self.segments], start)
        shift = sum(s.delta for s in self.segments[:k])
        for s in self.segments[k:]:
            if s.start >= end and not (s.start == s.end == end):
                break
            if s.start > cursor:
                out.append(current(cursor + shift, s.start + shift))
            out.append(s.old)
            shift += s.delta
            cursor = s.end
        if cursor < end:
            out.append(current(cursor + shift, end + shift))
        return b"".join(out)


def same_result(sent: EditSet, seen: EditSet, current: BaseSlice) -> bool:
    """Whether two edit sets over one base produce the same text.

    Args:
        sent: The edit sent to the editor (its segments carry ``old`` bytes).
        seen: The changes the editor reported since, composed.
        current: Reads the editor's current text (``base`` with ``seen`` applied).

    The comparison covers only the region between the first and the last
    segment of either set, so it costs the size of that region, not the
    document's.
    """
    if sent.delta != seen.delta:
        return False
    if not sent and not seen:
        return True
    starts, ends = [], []
    for es in (sent, seen):
        if es:
            lo, hi = es.span()
            starts.append(lo)
            ends.append(hi)
    lo, hi = min(starts), max(ends)
    base = seen.base_bytes(lo, hi, current)
    expected = sent.render(lo, hi, base)
    actual = current(lo, hi + seen.delta)
    return expected == actual
