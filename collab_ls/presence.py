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
character while peers insert and delete before it.

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
from pycrdt import Assoc, StickyIndex

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


# ------------------------------------------------------------------- anchors


def decode_state_vector(data: bytes) -> dict[int, int]:
    """A Yjs state vector (``Doc.get_state()``): client id -> next clock."""
    decoder = pycrdt.Decoder(data)
    count = decoder.read_var_uint()
    out: dict[int, int] = {}
    for _ in range(count):
        client = decoder.read_var_uint()
        out[client] = decoder.read_var_uint()
    return out


# pycrdt 0.14 (yrs with byte offsets) builds and resolves sticky indices with
# the offset *inside an item* counted in bytes, while Yjs item clocks count
# UTF-16 units: past a non-ASCII character the clock it names is wrong (it can
# name another item or none, and resolving that panics). So the clock is
# corrected here, both ways, from the start of the item holding the position,
# found by bisection (within one item, raw clock - byte offset is constant).


def _raw_id(text: pycrdt.Text, offset: int) -> tuple[int, int] | None:
    ref = text.sticky_index(offset, Assoc.AFTER).to_json().get("item")
    return (int(ref["client"]), int(ref["clock"])) if isinstance(ref, dict) else None


def _item_start(text: pycrdt.Text, data: bytes, offset: int) -> tuple[int, int, int]:
    """``(byte offset, client, clock)`` of the start of the item holding byte ``offset``."""
    found = _raw_id(text, offset)
    assert found is not None
    client, clock = found
    lo, hi = 0, offset
    while lo < hi:
        mid = (lo + hi) // 2
        while mid > lo and (data[mid] & 0xC0) == 0x80:
            mid -= 1
        if _raw_id(text, mid) == (client, clock - (offset - mid)):
            hi = mid
        else:
            lo = mid + 1
            while lo < hi and (data[lo] & 0xC0) == 0x80:
                lo += 1
    return hi, client, clock - (offset - hi)


def _utf16_units(data: bytes) -> int:
    return len(data.decode("utf-8", "surrogatepass").encode("utf-16-le", "surrogatepass")) // 2


def _id_at(text: pycrdt.Text, data: bytes, offset: int) -> tuple[int, int]:
    """The Yjs id (client, clock) of the character at byte ``offset``."""
    if data.isascii():
        found = _raw_id(text, offset)
        assert found is not None
        return found
    start, client, clock = _item_start(text, data, offset)
    return client, clock + _utf16_units(data[start:offset])


def anchor_at(text: pycrdt.Text, offset: int, data: bytes | None = None) -> dict[str, Any]:
    """The relative position (Yjs JSON) of byte ``offset`` of ``text``.

    Sticks to the character after the offset; at the end of the text (where
    there is none) to the one before it, or to the text itself when empty.
    ``offset`` must be a character boundary; it is clamped to the text.
    ``data`` is the text as UTF-8, if the caller has it.
    """
    if data is None:
        data = str(text).encode("utf-8", "surrogatepass")
    offset = max(0, min(offset, len(data)))
    if offset < len(data):
        client, clock = _id_at(text, data, offset)
        return {"item": {"client": client, "clock": clock}, "assoc": int(Assoc.AFTER)}
    if not data:
        return dict(text.sticky_index(0, Assoc.BEFORE).to_json())
    last = snap_to_boundary(data, offset - 1)
    client, clock = _id_at(text, data, last)
    return {"item": {"client": client, "clock": clock}, "assoc": int(Assoc.BEFORE)}


def resolve_anchor(
    text: pycrdt.Text,
    anchor: Any,
    state: Mapping[int, int] | None = None,
    data: bytes | None = None,
) -> int | None:
    """The current byte offset of a relative position, or None if it cannot be placed.

    Args:
        text: The shared text the position belongs to.
        anchor: The JSON relative position (from a peer, so untrusted).
        state: The decoded state vector of the doc (:func:`decode_state_vector`);
            a position naming an item this replica has not received yet (the
            awareness update overtook the document update) is not placed.
        data: ``str(text)`` as UTF-8, if the caller has it.
    """
    if not isinstance(anchor, dict):
        return None
    item, kind = anchor.get("item"), anchor.get("type")
    ref = item if item is not None else kind
    if not isinstance(ref, dict):
        return None
    client, clock = ref.get("client"), ref.get("clock")
    if not isinstance(client, int) or not isinstance(clock, int) or clock < 0:
        return None
    if state is None:
        state = decode_state_vector(text.doc.get_state())
    if clock >= state.get(client, 0):
        return None
    if data is None:
        data = str(text).encode("utf-8", "surrogatepass")
    before = anchor.get("assoc") == int(Assoc.BEFORE)
    try:
        if item is None:
            offset = StickyIndex.from_json(anchor, text).get_index()
            return max(0, min(int(offset), len(data)))
        raw = StickyIndex.from_json(
            {"item": {"client": client, "clock": clock}, "assoc": 0}, text
        ).get_index()
        raw = max(0, min(int(raw), len(data)))
        if raw >= len(data):
            return len(data)
        if not data.isascii():
            start, _, start_clock = _item_start(text, data, snap_to_boundary(data, raw))
            units = clock - start_clock
            chars = data[start:].decode("utf-8", "surrogatepass")
            prefix = chars.encode("utf-16-le", "surrogatepass")[: 2 * units]
            raw = start + len(prefix.decode("utf-16-le", "surrogatepass").encode("utf-8"))
            raw = min(raw, len(data))
    except Exception:
        return None
    except BaseException as exc:  # pyo3's PanicException: an unknown or collected item
        if type(exc).__name__ == "PanicException":
            return None
        raise
    if before and raw < len(data):
        raw += len(data[raw : raw + 4].decode("utf-8", "ignore")[:1].encode())
    return raw


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


def snap_to_boundary(data: bytes, offset: int) -> int:
    """``offset`` clamped into ``data`` and moved back to a UTF-8 character start."""
    offset = max(0, min(offset, len(data)))
    while 0 < offset < len(data) and (data[offset] & 0xC0) == 0x80:
        offset -= 1
    return offset


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
