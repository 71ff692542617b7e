"""The editor's side of the reconciliation: its changes and edits, located in bytes.

An editor reports changes in LSP positions (``didChange``: :class:`RangeChange`,
:class:`FullChange`) and is sent edits in LSP positions
(``workspace/applyEdit``: an :class:`OutgoingEdit` of :class:`TextEdit`
values). :class:`~collab_ls.reconcile.EditorSync` works in the UTF-8 byte
offsets of its shadow :class:`~collab_ls.linetext.LineText`:
:func:`locate_change` turns a change into the byte span it replaces, and
:func:`text_edit` a byte span into a ``TextEdit``. A whole-document change and
an edit are narrowed with :func:`common_affixes` to what differs, so that they
leave untouched text alone. Pure, like the reconciliation itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from collab_ls.linetext import LineText
from collab_ls.units import Encoding, PositionError

__all__ = [
    "Change",
    "FullChange",
    "OutgoingEdit",
    "RangeChange",
    "TextEdit",
    "common_affixes",
    "locate_change",
    "text_edit",
]


@dataclass(frozen=True, slots=True)
class RangeChange:
    """An incremental ``TextDocumentContentChangeEvent`` (LSP positions)."""

    start_line: int
    start_character: int
    end_line: int
    end_character: int
    text: str


@dataclass(frozen=True, slots=True)
class FullChange:
    """A whole-document ``TextDocumentContentChangeEvent``."""

    text: str


Change = RangeChange | FullChange


@dataclass(frozen=True, slots=True)
class TextEdit:
    """One LSP ``TextEdit`` (positions in the negotiated encoding)."""

    start_line: int
    start_character: int
    end_line: int
    end_character: int
    new_text: str


@dataclass(frozen=True, slots=True)
class OutgoingEdit:
    """A ``workspace/applyEdit`` to send: ``edits`` against ``version``."""

    edit_id: int
    version: int | None
    edits: tuple[TextEdit, ...]


def locate_change(shadow: LineText, change: Change, encoding: Encoding) -> tuple[int, int, str]:
    """Locate an editor's change in the text it was made to.

    Args:
        shadow: The editor's text before the change.
        change: The change; positions count ``encoding`` code units.
        encoding: The negotiated position encoding.

    Returns:
        ``(start, end, text)``: ``text`` replaces the bytes ``[start, end)``.

    Raises:
        PositionError: A position is not in ``shadow``, or the range is reversed.
    """
    if isinstance(change, FullChange):
        return _full_change_span(shadow, change.text)
    start = shadow.to_offset(change.start_line, change.start_character, encoding)
    end = shadow.to_offset(change.end_line, change.end_character, encoding)
    if end < start:
        raise PositionError(
            f"range end ({change.end_line}:{change.end_character}) is before its start "
            f"({change.start_line}:{change.start_character})"
        )
    return start, end, change.text


def _full_change_span(shadow: LineText, new: str) -> tuple[int, int, str]:
    """A whole-document change as the smallest replacement (costs the document size).

    Replacing everything in the CRDT would duplicate peers' concurrent
    edits, so the change is narrowed to what actually differs.
    """
    old_b, new_b = shadow.text().encode(), new.encode()
    p, q = common_affixes(old_b, new_b)
    return p, len(old_b) - q, new_b[p : len(new_b) - q].decode()


def text_edit(
    shadow: LineText, start: int, end: int, old: bytes, new: bytes, encoding: Encoding
) -> TextEdit | None:
    """A minimal ``TextEdit`` for base bytes ``[start, end)`` -> ``new``.

    Args:
        shadow: The editor's text the edit applies to.
        start: Where the replaced bytes start in ``shadow``.
        end: Where they end.
        old: The replaced bytes.
        new: What replaces them.
        encoding: The negotiated position encoding.

    Returns:
        The edit, ``None`` when ``old`` and ``new`` are the same.
    """
    if old == new:
        return None
    # Trim the common prefix and suffix so the edit leaves untouched text
    # (notably the final newline) alone, as editors apply such edits verbatim.
    p, q = common_affixes(old, new)
    start += p
    end -= q
    text = new[p : len(new) - q].decode()
    try:
        sl, sc = shadow.to_position(start, encoding)
    except PositionError:
        # Between the \r and \n of a line break: take the \r in.
        start -= 1
        text = "\r" + text
        sl, sc = shadow.to_position(start, encoding)
    try:
        el, ec = shadow.to_position(end, encoding)
    except PositionError:
        end += 1
        text += "\n"
        el, ec = shadow.to_position(end, encoding)
    return TextEdit(sl, sc, el, ec, text)


def common_affixes(a: bytes, b: bytes) -> tuple[int, int]:
    """Lengths of the common prefix and suffix of two UTF-8 strings, on character bounds."""

    def continuation(data: bytes, i: int) -> bool:
        return i < len(data) and (data[i] & 0xC0) == 0x80

    limit = min(len(a), len(b))
    p = 0
    while p < limit and a[p] == b[p]:
        p += 1
    while p and (continuation(a, p) or continuation(b, p)):
        p -= 1
    q = 0
    while q < limit - p and a[len(a) - 1 - q] == b[len(b) - 1 - q]:
        q += 1
    while q and continuation(a, len(a) - q):
        q -= 1
    # Keep a \r\n line break whole.
    if p and a[p - 1 : p + 1] == b"\r\n":
        p -= 1
    if q and len(a) - q > 0 and a[len(a) - q - 1 : len(a) - q + 1] == b"\r\n":
        q -= 1
    return p, q
