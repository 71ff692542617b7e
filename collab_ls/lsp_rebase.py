"""Language-server edits moved past the changes made since the server computed them.

A rename or a formatting takes the real server some time; meanwhile peers keep
typing. The server's ``TextEdit`` ranges are positions in the text as it was
(a version the server saw), so before they are applied to the session's text
they are carried through every change made since (the ``contentChanges`` that
went to the server after that version, in its position encoding):

- a change wholly before an edit shifts it (lines and characters);
- a change wholly after it leaves it alone;
- a change that touches the edited range itself means a peer edited exactly
  there: that edit is dropped (the peer's text wins) and counted.

An insertion at the very position an edit starts counts as before it, so text a
peer typed there is kept ahead of the edit. Positions are carried by the lines
and characters of each change alone: a lone ``\r`` typed just before a ``\n``
(the two then make one line break) moves later edits a line too far. Pure
functions over LSP JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from collab_ls.line_index import split_lines
from collab_ls.units import Encoding, units_len

__all__ = ["Conflict", "rebase_edits", "shift"]

Pos = tuple[int, int]


class Conflict(ValueError):
    """A change made since touches the range an edit replaces."""


def _pos(value: Any) -> Pos:
    return int(value["line"]), int(value["character"])


def shift(pos: Pos, start: Pos, end: Pos, text: str, enc: Encoding) -> Pos:
    """Where ``pos`` (at or after ``end``) is once ``[start, end)`` is replaced by ``text``."""
    lines = split_lines(text)  # every LSP line break: \n, \r\n and \r
    line, char = pos
    if line > end[0]:
        return line - (end[0] - start[0]) + len(lines) - 1, char
    last = units_len(lines[-1], enc)
    base = last if len(lines) > 1 else start[1] + last
    return start[0] + len(lines) - 1, base + (char - end[1])


def _rebase_range(
    a: Pos, b: Pos, changes: Iterable[dict[str, Any]], enc: Encoding
) -> tuple[Pos, Pos]:
    for change in changes:  # each with a range: rebase_edits checked
        rng = change["range"]
        start, end = _pos(rng["start"]), _pos(rng["end"])
        text = str(change.get("text", ""))
        if end <= a:  # before the edit (or an insertion where it starts)
            a, b = shift(a, start, end, text, enc), shift(b, start, end, text, enc)
        elif start >= b:  # after it
            continue
        else:
            raise Conflict(f"a change at {start}-{end} touches the edit at {a}-{b}")
    return a, b


def rebase_edits(
    edits: Sequence[Any], changes: Sequence[Sequence[dict[str, Any]]], enc: Encoding
) -> tuple[list[Any], int]:
    """``edits`` (``TextEdit`` JSON, on an older text) moved past ``changes`` (each a
    ``didChange``'s ``contentChanges``, oldest first); returns them and the number dropped.

    Raises:
        Conflict: never for one edit (it is dropped); only if ``changes`` hold a
            full-text change, after which no position can be carried over.
    """
    flat = [c for batch in changes for c in batch]
    if any(not isinstance(c.get("range"), dict) for c in flat):
        raise Conflict("the text was replaced whole since: the edits cannot be placed")
    out: list[Any] = []
    dropped = 0
    for edit in edits:
        if not isinstance(edit, dict) or not isinstance(edit.get("range"), dict):
            out.append(edit)  # malformed: refused later, with its own message
            continue
        try:
            rng = edit["range"]
            a, b = _rebase_range(_pos(rng["start"]), _pos(rng["end"]), flat, enc)
        except Conflict:
            dropped += 1
            continue
        except (KeyError, TypeError, ValueError):
            out.append(edit)
            continue
        out.append(
            {
                **edit,
                "range": {
                    "start": {"line": a[0], "character": a[1]},
                    "end": {"line": b[0], "character": b[1]},
                },
            }
        )
    return out, dropped
