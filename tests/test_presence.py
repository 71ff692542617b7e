"""Unit tests of the presence core: colours, states and cursors anchored in the CRDT."""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collab_ls import presence
from collab_ls.linetext import LineText
from collab_ls.units import Encoding
from tests.editor_model import index_of, position

TEXT = "ab é中😀 cd\nzweite Zeile 😀😀\r\n末行"


def _replicas(content: str) -> tuple[pycrdt.Text, pycrdt.Text]:
    """Two synced docs holding ``content`` under files/f."""
    a: pycrdt.Doc[Any] = pycrdt.Doc()
    files = a.get("files", type=pycrdt.Map)
    files["f"] = pycrdt.Text(content)
    b: pycrdt.Doc[Any] = pycrdt.Doc()
    b.apply_update(a.get_update())
    return files["f"], b.get("files", type=pycrdt.Map)["f"]


def _sync(src: pycrdt.Text, dst: pycrdt.Text) -> None:
    dst.doc.apply_update(src.doc.get_update(dst.doc.get_state()))


def test_colour_is_stable_and_from_the_palette() -> None:
    assert presence.colour_for("ana") == presence.colour_for("ana")
    assert presence.colour_for("ana") in presence.PALETTE
    colours = {presence.colour_for(n) for n in ("ana", "bo", "chen", "dee", "eli", "fay")}
    assert len(colours) > 1


def test_peer_state_parsing_is_defensive() -> None:
    assert presence.PeerState.parse(1, None) is None
    assert presence.PeerState.parse(1, {}) is None  # a Yjs client with no user
    p = presence.PeerState.parse(7, {"user": {"name": 3}, "ranges": "x", "document": 5})
    assert p is not None
    assert (p.name, p.document, p.ranges) == ("peer 7", None, [])
    assert p.colour == presence.colour_for("peer 7")
    state = presence.local_state("ana", "#123456", "a.txt", [])
    q = presence.PeerState.parse(2, state)
    assert q == presence.PeerState(2, "ana", "#123456", "a.txt", [])
    others = presence.other_peers({1: state, 2: state, 3: {}}, own_id=1)
    assert [o.client_id for o in others] == [2]


@pytest.mark.parametrize("enc", list(Encoding))
def test_cursor_round_trip_between_replicas(enc: Encoding) -> None:
    ta, tb = _replicas(TEXT)
    lines = LineText(TEXT)
    for index in range(len(TEXT) + 1):
        if TEXT[index - 1 : index + 1] == "\r\n":
            continue
        pos = position(TEXT, index, enc)
        encoded = presence.encode_ranges(ta, lines, [(pos, pos)], enc)
        decoded = presence.decode_ranges(tb, lines, encoded, enc)
        assert decoded == [(pos, pos)], (index, pos)


@pytest.mark.parametrize("enc", list(Encoding))
def test_cursor_stays_on_its_character_under_edits_before_it(enc: Encoding) -> None:
    ta, tb = _replicas(TEXT)
    lines = LineText(TEXT)
    target = TEXT.index("😀 cd")  # cursor just before the emoji
    pos = position(TEXT, target, enc)
    anchor_pos = position(TEXT, 0, enc)
    encoded = presence.encode_ranges(ta, lines, [(anchor_pos, pos)], enc)
    # B inserts CJK and emoji before the cursor and deletes a character before it.
    tb.insert(0, "中文😀\n")
    n = len("中文😀\n".encode())
    del tb[n + 1 : n + 2]  # the "b"
    new_text = str(tb)
    decoded = presence.decode_ranges(tb, LineText(new_text), encoded, enc)
    (anchor, head) = decoded[0]
    assert new_text[index_of(new_text, *head, enc) :].startswith("😀 cd")
    assert anchor == (1, 0)  # the anchor sticks to "a", now on the second line


def test_cursor_at_the_end_and_in_an_empty_text() -> None:
    ta, tb = _replicas("abc")
    enc = Encoding.UTF16
    encoded = presence.encode_ranges(ta, LineText("abc"), [((0, 3), (0, 3))], enc)
    tb.insert(0, "xy")
    assert presence.decode_ranges(tb, LineText(str(tb)), encoded, enc) == [((0, 5), (0, 5))]
    ea, eb = _replicas("")
    encoded = presence.encode_ranges(ea, LineText(""), [((0, 0), (0, 0))], enc)
    assert presence.decode_ranges(eb, LineText(""), encoded, enc) == [((0, 0), (0, 0))]


def test_unknown_or_garbage_anchors_are_dropped() -> None:
    ta, tb = _replicas("hello")
    ta.insert(5, " world")  # B has not received this yet
    encoded = presence.encode_ranges(ta, LineText(str(ta)), [((0, 8), (0, 8))], Encoding.UTF8)
    assert presence.decode_ranges(tb, LineText(str(tb)), encoded, Encoding.UTF8) == []
    _sync(ta, tb)
    assert presence.decode_ranges(tb, LineText(str(tb)), encoded, Encoding.UTF8) == [
        ((0, 8), (0, 8))
    ]
    garbage: list[Any] = [
        1,
        {"head": None},
        {"head": {"item": {"client": "x", "clock": 1}}},
        {"head": {"item": {"client": 1, "clock": 10**9}, "assoc": 0}},
        {"head": {"nothing": 1}},
    ]
    assert presence.decode_ranges(tb, LineText(str(tb)), garbage, Encoding.UTF8) == []
    assert presence.decode_ranges(tb, LineText(str(tb)), "nope", Encoding.UTF8) == []


def test_positions_outside_the_buffer_are_clamped() -> None:
    lines = LineText("ab\n中\n")
    assert presence.to_offset(lines, (9, 9), Encoding.UTF16) == lines.byte_len
    assert presence.to_offset(lines, (1, 99), Encoding.UTF16) == 6
    assert presence.to_offset(lines, (1, 1), Encoding.UTF8) == 3  # inside 中: its start
    assert presence.to_position(lines, 4, Encoding.UTF16) == (1, 0)  # snapped back
    assert presence.to_position(lines, 99, Encoding.UTF16) == (2, 0)
    assert presence.snap_to_boundary("中".encode(), 2) == 0


@pytest.mark.xfail(
    reason="pycrdt 0.14 counts offsets inside an item in bytes where Yjs clocks count UTF-16"
    " units; after a non-ASCII character next to a deleted one the item start can be"
    " mislocated (see collab_ls/presence.py)",
    strict=False,
)
@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet="ab中😀é\n ", max_size=30),
    st.data(),
    st.sampled_from(list(Encoding)),
)
def test_anchored_cursor_follows_its_character(
    text: str, data: st.DataObject, enc: Encoding
) -> None:
    """A cursor before character c stays before c under remote inserts and deletes of others."""
    base = text + "|"
    ta, tb = _replicas(base)
    index = data.draw(st.integers(0, len(text)))
    pos = position(base, index, enc)
    encoded = presence.encode_ranges(ta, LineText(base), [(pos, pos)], enc)
    chars = list(base)
    ids = list(range(len(base)))  # identity of each character; the cursor is before `index`
    fresh = len(base)
    for _ in range(data.draw(st.integers(0, 6))):
        current = "".join(chars)
        assert str(tb) == current
        deletable = [i for i, k in enumerate(ids) if k != index]
        if data.draw(st.booleans()) or not deletable:
            at = data.draw(st.integers(0, len(current)))
            new = data.draw(st.sampled_from(["x", "中", "😀", "\n", "é😀"]))
            tb.insert(len(current[:at].encode()), new)
            chars[at:at] = list(new)
            ids[at:at] = range(fresh, fresh + len(new))
            fresh += len(new)
        else:
            at = data.draw(st.sampled_from(deletable))
            start = len(current[:at].encode())
            del tb[start : start + len(current[at].encode())]
            del chars[at]
            del ids[at]
    now = str(tb)
    decoded = presence.decode_ranges(tb, LineText(now), encoded, enc)
    assert len(decoded) == 1
    assert index_of(now, *decoded[0][1], enc) == ids.index(index)
