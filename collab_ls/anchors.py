"""Yjs relative positions in a shared text: anchoring a byte offset, and finding it again.

A relative position (pycrdt :class:`~pycrdt.StickyIndex` as JSON, the Yjs
``RelativePosition``) names the character a position sticks to, so it stays
on that character while peers insert and delete before it.
:func:`anchor_at` makes one for a byte offset of a ``pycrdt.Text``;
:func:`resolve_anchor` finds its current byte offset, or None when it cannot
be placed (a peer's anchor is untrusted). Both work around pycrdt counting
bytes where Yjs counts UTF-16 units (see below), by reading the document's
items (:mod:`collab_ls.yjs_items`) when the text is not ASCII.
"""

from __future__ import annotations

import bisect
import weakref
from collections.abc import Mapping
from typing import Any

import pycrdt
from pycrdt import Assoc, StickyIndex

from collab_ls import yjs_items

__all__ = ["anchor_at", "decode_state_vector", "resolve_anchor", "snap_to_boundary"]


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
# name another item or none, and resolving that panics). "Raw" ids and offsets
# below are pycrdt's; they are exact at an item's first character (offset 0),
# and for a deleted item (no offset inside it). So in a non-ASCII text the item
# holding a character is found among the items of the document, decoded from
# its update (collab_ls.yjs_items), and the offset inside it counted here:
#
# - character -> id: the raw id names the right client, and a clock that many
#   bytes into the item where the true clock is that many UTF-16 units in. Of
#   that client's string items, those whose string is in the text where the
#   raw clock puts them include the right one; if there are several, the one
#   pycrdt puts there (exact: its first character), in this text.
# - id -> offset: the item holding the clock, which pycrdt places exactly.
#
# Only the items of one client within a window of clocks are decoded, the
# window bounded by probing raw ids; they are cached per version of the doc.


def _raw_id(text: pycrdt.Text, offset: int) -> tuple[int, int] | None:
    ref = text.sticky_index(offset, Assoc.AFTER).to_json().get("item")
    return (int(ref["client"]), int(ref["clock"])) if isinstance(ref, dict) else None


def _raw_offset(text: pycrdt.Text, client: int, clock: int, assoc: Assoc = Assoc.AFTER) -> int:
    anchor = {"item": {"client": client, "clock": clock}, "assoc": int(assoc)}
    return int(StickyIndex.from_json(anchor, text).get_index())


def _is_panic(exc: BaseException) -> bool:
    """pyo3's PanicException (a BaseException): pycrdt met an unknown or collected item."""
    return type(exc).__name__ == "PanicException"


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _utf16_units(data: bytes) -> int:
    return yjs_items.utf16_len(data.decode("utf-8", "surrogatepass"))


def _utf8_size(text: str, units: int) -> int:
    """The UTF-8 size of the first ``units`` UTF-16 units of ``text`` (not splitting a pair)."""
    prefix = text.encode("utf-16-le", "surrogatepass")[: 2 * units]
    if len(prefix) >= 2 and 0xD8 <= prefix[-1] <= 0xDB:  # half a surrogate pair
        prefix = prefix[:-2]
    return len(_utf8(prefix.decode("utf-16-le", "surrogatepass")))


class _DocItems:
    """The items of one version of a doc (state vector and delete set), decoded on demand.

    Decoding a whole document takes time in proportion to its history, so only
    the items of one client between two clocks are: yrs encodes the update
    "since" a state vector claiming all the rest, and decoding stops at the
    upper clock.
    """

    def __init__(self, version: tuple[bytes, bytes]) -> None:
        self.version = version
        self.state = decode_state_vector(version[0])
        self._windows: dict[int, tuple[int, int, list[yjs_items.Struct], list[int]]] = {}
        self._full: yjs_items.Update | None = None

    def covers(self, client: int, lo: int, hi: int) -> bool:
        """Whether the items of ``client`` starting in ``lo..hi`` are decoded already."""
        cached = self._windows.get(client)
        return cached is not None and cached[0] <= lo and cached[1] >= hi

    def items_between(
        self, doc: pycrdt.Doc[Any], client: int, lo: int, hi: int
    ) -> tuple[list[yjs_items.Struct], list[int]]:
        """The items of ``client`` as yrs holds them, at least those starting in ``lo..hi``.

        Returns them and their first clocks, in clock order.
        """
        cached = self._windows.get(client)
        if cached is None or cached[0] > lo or cached[1] < hi:
            if cached is not None:
                lo, hi = min(lo, cached[0]), max(hi, cached[1])
            items = self._decode(doc, client, lo, hi)
            cached = self._windows[client] = (lo, hi, items, [s.clock for s in items])
        return cached[2], cached[3]

    def _decode(
        self, doc: pycrdt.Doc[Any], client: int, lo: int, hi: int
    ) -> list[yjs_items.Struct]:
        # An update since clock c begins with the item holding c, cut at c: ask
        # for lo - 1 and drop that one, so that every item kept is whole.
        since = max(0, lo - 1)
        items = self._since(doc, client, since, hi)
        if since and items and items[0].ref == yjs_items.STRING:
            # Cutting a string inside a surrogate pair, yrs drops the half pair,
            # which shifts the clocks of all the items after it. Then the cut one
            # unit earlier is sound (at the pair's first half) and that item is two
            # units longer; otherwise one unit, the same or less (another item).
            probe = self._since(doc, client, since - 1, since - 1)
            if probe and probe[0].length - items[0].length == 2:
                items = self._since(doc, client, since - 1, hi)
        return items[1:] if since else items

    def _since(
        self, doc: pycrdt.Doc[Any], client: int, since: int, hi: int
    ) -> list[yjs_items.Struct]:
        """The structs of ``client`` from clock ``since`` (cut there) to the one holding ``hi``."""
        update = doc.get_update(yjs_items.encode_state_vector({**self.state, client: since}))
        out: list[yjs_items.Struct] = []
        for s in yjs_items.iter_structs(update):
            if s.clock > hi:
                break
            if s.client == client:
                out.append(s)
        return out

    def full(self, doc: pycrdt.Doc[Any]) -> yjs_items.Update:
        """All the items of the doc."""
        if self._full is None:
            self._full = yjs_items.decode_update(doc.get_update())
        return self._full


_DOC_ITEMS: weakref.WeakKeyDictionary[pycrdt.Doc[Any], _DocItems] = weakref.WeakKeyDictionary()


def _doc_items(doc: pycrdt.Doc[Any]) -> _DocItems:
    """The decoded items of ``doc``, cached until its state vector or delete set changes."""
    state = doc.get_state()
    version = (state, doc.get_update(state))  # no structs: the delete set
    found = _DOC_ITEMS.get(doc)
    if found is None or found.version != version:
        found = _DOC_ITEMS[doc] = _DocItems(version)
    return found


def _start_bound(text: pycrdt.Text, data: bytes, offset: int, raw: tuple[int, int]) -> int:
    """A byte offset at or before the start of the item holding byte ``offset``.

    From that start on, raw ids grow with the byte offset: one byte before the
    last offset found where they do not, is bound to be in an earlier item.
    """
    client, raw_clock = raw
    step = 1
    while True:
        at = snap_to_boundary(data, offset - step)
        if at <= 0:
            return 0
        if _raw_id(text, at) != (client, raw_clock - (offset - at)):
            return at + 1
        step *= 2


def _clock_bound(text: pycrdt.Text, client: int, clock: int, base: int) -> int:
    """A clock at or before the first one of the live item holding ``clock`` (at raw ``base``).

    Within that item, raw offsets grow with the clock: one clock after the last
    clock found where they do not, is bound to be in the item.
    """
    step = 1
    while clock - step > 0:
        try:
            raw: int | None = _raw_offset(text, client, clock - step)
        except BaseException as exc:  # a collected item
            if not _is_panic(exc):
                raise
            raw = None
        if raw != base - step:
            return clock - step + 1
        step *= 2
    return 0


def _exact_id(text: pycrdt.Text, data: bytes, offset: int, raw: tuple[int, int]) -> tuple[int, int]:
    """The Yjs id of the character at byte ``offset`` of a non-ASCII text, from its raw id."""
    client, raw_clock = raw
    doc = text.doc
    items = _doc_items(doc)
    # Its item starts at most `offset - start` bytes before it, so at most as
    # many clocks before the raw clock; it matches the text there.
    lo = max(0, raw_clock - offset)
    if not items.covers(client, lo, raw_clock):
        lo = max(lo, raw_clock - (offset - _start_bound(text, data, offset, raw)))
    structs, starts = items.items_between(doc, client, lo, raw_clock)
    found: list[tuple[yjs_items.Struct, int]] = []
    for s in structs[bisect.bisect_left(starts, lo) : bisect.bisect_right(starts, raw_clock)]:
        into = raw_clock - s.clock
        if into < s.size and s.text is not None:
            start = offset - into
            if data[start : start + s.size] == _utf8(s.text):
                found.append((s, start))
    # The item holding the character is one of those found; usually the only one.
    if len(found) > 1:  # e.g. a repeated string: ask pycrdt where each starts, if live
        found = [
            (s, start)
            for s, start in found
            if _raw_offset(text, client, s.clock) == start
            and _raw_offset(text, client, s.clock, Assoc.BEFORE) != start
        ]
    if len(found) > 1:  # the same string at the same place in another text
        full = items.full(doc)
        first = _raw_id(text, 0)
        head = None if first is None else full.find(*first)
        branch = None if head is None else full.parent(head)
        found = [(s, start) for s, start in found if full.parent(s) == branch]
    if len(found) != 1:
        return raw
    s, start = found[0]
    return client, s.clock + _utf16_units(data[start:offset])


def _id_at(text: pycrdt.Text, data: bytes, offset: int) -> tuple[int, int]:
    """The Yjs id (client, clock) of the character at byte ``offset``."""
    raw = _raw_id(text, offset)
    assert raw is not None
    if data.isascii():
        return raw
    try:
        # pycrdt is exact when its item holds only ASCII up to the offset: it
        # then counts bytes that are UTF-16 units. The item starts at or after
        # the bound, so ASCII from the bound on is enough (and cheap to check,
        # unlike decoding the document's items, which is O(document)).
        if data[_start_bound(text, data, offset, raw) : offset].isascii():
            return raw
        return _exact_id(text, data, offset, raw)
    except Exception:  # an update this reader does not know: as pycrdt counts
        return raw
    except BaseException as exc:
        if _is_panic(exc):
            return raw
        raise


def _exact_offset(
    text: pycrdt.Text, data: bytes, client: int, clock: int, before: bool
) -> int | None:
    """The byte offset of the character with id (client, clock) in a non-ASCII text."""
    raw = _raw_offset(text, client, clock)
    if _raw_offset(text, client, clock, Assoc.BEFORE) == raw:
        return raw  # a deleted item: pycrdt counts no offset inside it, so is exact
    # Exact too when the item holds only ASCII up to the character (bytes are
    # units there); its start is at or after `raw - (clock - bound)`.
    first = max(0, raw - (clock - _clock_bound(text, client, clock, raw)))
    if raw <= len(data) and data[first:raw].isascii():
        if before and raw < len(data):
            raw += len(data[raw : raw + 4].decode("utf-8", "ignore")[:1].encode())
        return raw
    doc = text.doc
    items = _doc_items(doc)
    lo = max(0, clock - len(data))  # a live item of this text is shorter than the text
    if not items.covers(client, lo, clock):
        lo = max(lo, _clock_bound(text, client, clock, raw))
    structs, starts = items.items_between(doc, client, lo, clock)
    i = bisect.bisect_right(starts, clock) - 1
    s = structs[i] if i >= 0 else None
    if s is None or s.text is None or clock >= s.clock + s.length:
        return None
    start = _raw_offset(text, client, s.clock)
    if data[start : start + s.size] != _utf8(s.text):
        return None  # an item of another text
    offset = start + _utf8_size(s.text, clock - s.clock)
    if before and offset < len(data):  # Yjs: after the character, as it is still there
        offset += len(data[offset : offset + 4].decode("utf-8", "ignore")[:1].encode())
    return offset


def anchor_at(text: pycrdt.Text, offset: int, data: bytes | None = None) -> dict[str, Any]:
    """The relative position (Yjs JSON) of byte ``offset`` of ``text``.

    Sticks to the character after the offset; at the end of the text (where
    there is none) to the one before it, or to the text itself when empty.
    ``offset`` must be a character boundary; it is clamped to the text.
    ``data`` is the text as UTF-8, if the caller has it.
    """
    if data is None:
        data = _utf8(str(text))
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
        data = _utf8(str(text))
    before = anchor.get("assoc") == int(Assoc.BEFORE)
    offset: int | None
    try:
        if item is None:
            offset = int(StickyIndex.from_json(anchor, text).get_index())
        elif data.isascii():  # bytes are UTF-16 units: pycrdt is exact
            offset = _raw_offset(text, client, clock, Assoc.BEFORE if before else Assoc.AFTER)
        else:
            offset = _exact_offset(text, data, client, clock, before)
    except Exception:
        return None
    except BaseException as exc:
        if _is_panic(exc):
            return None
        raise
    return None if offset is None else max(0, min(offset, len(data)))


def snap_to_boundary(data: bytes, offset: int) -> int:
    """``offset`` clamped into ``data`` and moved back to a UTF-8 character start."""
    offset = max(0, min(offset, len(data)))
    while 0 < offset < len(data) and (data[offset] & 0xC0) == 0x80:
        offset -= 1
    return offset
