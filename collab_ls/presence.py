"""Presence, the pure core: peer states, colours and cursors anchored in the CRDT.

Every peer publishes one awareness state (the standard Yjs awareness
protocol, carried by :class:`~collab_ls.relay_link.RelayLink`)::

    {"user": {"name": "ana", "color": "#e6194b"},
     "document": "src/app.py" | null,
     "ranges": [{"anchor": RelPos, "head": RelPos}, ...]}

``user`` follows the y-codemirror / y-monaco convention so Yjs editors show
the same name and colour. ``document`` is the workspace-relative path (the
key of ``files`` in the session document). Each range is a selection whose
``head`` is the cursor; ``anchor == head`` for a bare cursor. A ``RelPos`` is a
Yjs relative position (pycrdt :class:`~pycrdt.StickyIndex` as JSON): it names
the character the position sticks to, so a cursor stays on the same
character while peers insert and delete before it. Relative positions are
made and resolved by :mod:`collab_ls.anchors` (:func:`anchor_at`,
:func:`resolve_anchor`, :func:`decode_state_vector` and
:func:`snap_to_boundary` are re-exported here).

Conversions between LSP positions and CRDT offsets go through
:class:`~collab_ls.linetext.LineText` (UTF-8 byte offsets, the unit of pycrdt
``Text`` indices) and never raise on bad input: presence is best effort, a
position it cannot place is dropped or clamped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pycrdt

from collab_ls.anchors import _DocItems as _DocItems
from collab_ls.anchors import _raw_id as _raw_id
from collab_ls.anchors import anchor_at as anchor_at
from collab_ls.anchors import decode_state_vector as decode_state_vector
from collab_ls.anchors import resolve_anchor as resolve_anchor
from collab_ls.anchors import snap_to_boundary as snap_to_boundary
from collab_ls.linetext import LineText
from collab_ls.units import Encoding, PositionError

PALETTE = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#9a6324",
    "#469990",
    "#808000",
    "#000075",
    "#e6a000",
)
"""Peer colours: distinct on light and dark backgrounds."""

Pos = tuple[int, int]
"""An LSP position ``(line, character)`` in some encoding."""


def colour_for(name: str) -> str:
    """A stable colour for a peer name (the same in every replica and every run)."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest()
    return PALETTE[int.from_bytes(digest[:4], "big") % len(PALETTE)]


# ---------------------------------------------------------------- positions


def to_offset(lines: LineText, pos: Pos, enc: Encoding) -> int:
    """An LSP position to a byte offset of ``lines``, clamped into the text."""
    line, character = pos
    line = max(0, min(line, lines.line_count))
    character = max(0, character)
    try:
        return lines.to_offset(line, character, enc)
    except PositionError:
        # Inside a character: the start of that character.
        while character > 0:
            character -= 1
            try:
                return lines.to_offset(line, character, enc)
            except PositionError:
                continue
        return lines.to_offset(line, 0, enc)


def to_position(lines: LineText, offset: int, enc: Encoding) -> Pos:
    """A byte offset of ``lines`` to an LSP position, clamped and snapped back to a boundary."""
    offset = max(0, min(offset, lines.byte_len))
    while True:
        try:
            return lines.to_position(offset, enc)
        except PositionError:
            if offset == 0:
                return (0, 0)
            offset -= 1


def encode_ranges(
    text: pycrdt.Text,
    lines: LineText,
    ranges: Iterable[tuple[Pos, Pos]],
    enc: Encoding,
) -> list[dict[str, Any]]:
    """Editor selections ``(anchor, head)`` to awareness ranges anchored in ``text``.

    ``lines`` is the editor's buffer; when it differs from the shared text
    (edits in flight), offsets are snapped to the shared text's characters.
    """
    offsets = [(to_offset(lines, a, enc), to_offset(lines, h, enc)) for a, h in ranges]
    data = str(text).encode("utf-8", "surrogatepass")
    offsets = [(snap_to_boundary(data, a), snap_to_boundary(data, h)) for a, h in offsets]
    return [
        {"anchor": anchor_at(text, a, data), "head": anchor_at(text, h, data)} for a, h in offsets
    ]


def decode_ranges(
    text: pycrdt.Text,
    lines: LineText,
    ranges: Any,
    enc: Encoding,
    state: Mapping[int, int] | None = None,
) -> list[tuple[Pos, Pos]]:
    """Awareness ranges to ``(anchor, head)`` positions in ``lines`` (unplaceable ones dropped)."""
    if not isinstance(ranges, list):
        return []
    if state is None:
        state = decode_state_vector(text.doc.get_state())
    data = str(text).encode("utf-8", "surrogatepass")
    out: list[tuple[Pos, Pos]] = []
    for r in ranges:
        if not isinstance(r, dict):
            continue
        head = resolve_anchor(text, r.get("head"), state, data)
        if head is None:
            continue
        anchor = resolve_anchor(text, r.get("anchor"), state, data)
        if anchor is None:
            anchor = head
        out.append((to_position(lines, anchor, enc), to_position(lines, head, enc)))
    return out


# -------------------------------------------------------------- peer states


@dataclass(frozen=True)
class PeerState:
    """One peer's awareness state, read defensively."""

    client_id: int
    name: str
    colour: str
    document: str | None
    ranges: list[Any]

    @classmethod
    def parse(cls, client_id: int, state: Any) -> PeerState | None:
        """Read an awareness state; None if it is not a collab-ls (or Yjs editor) peer."""
        if not isinstance(state, dict):
            return None
        user = state.get("user")
        if not isinstance(user, dict):
            return None
        name = user.get("name")
        name = name if isinstance(name, str) and name else f"peer {client_id}"
        colour = user.get("color")
        if not isinstance(colour, str) or not colour.startswith("#"):
            colour = colour_for(name)
        document = state.get("document")
        ranges = state.get("ranges")
        return cls(
            client_id,
            name,
            colour,
            document if isinstance(document, str) else None,
            ranges if isinstance(ranges, list) else [],
        )


def local_state(
    name: str, colour: str, document: str | None, ranges: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """This peer's awareness state (see the module docstring)."""
    return {
        "user": {"name": name, "color": colour},
        "document": document,
        "ranges": list(ranges),
    }


def other_peers(states: Mapping[int, Any], own_id: int) -> list[PeerState]:
    """Every other peer with a readable state, by name then client id."""
    peers = [PeerState.parse(cid, st) for cid, st in states.items() if cid != own_id]
    return sorted((p for p in peers if p is not None), key=lambda p: (p.name, p.client_id))


def lsp_range(anchor: Pos, head: Pos) -> dict[str, Any]:
    """An LSP ``Range`` (start before end) of a selection."""
    start, end = (anchor, head) if anchor <= head else (head, anchor)
    return {
        "start": {"line": start[0], "character": start[1]},
        "end": {"line": end[0], "character": end[1]},
    }


def lsp_position(pos: Pos) -> dict[str, int]:
    """An LSP ``Position``."""
    return {"line": pos[0], "character": pos[1]}
