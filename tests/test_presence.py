"""Unit tests of the presence core: colours, states and cursors anchored in the CRDT."""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collab_ls import presence, yjs_items
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


def _peers(content: str, n: int) -> list[pycrdt.Text]:
    """``n`` synced docs (clients 1..n) holding ``content`` under files/f."""
    docs: list[pycrdt.Doc[Any]] = [pycrdt.Doc(client_id=i + 1) for i in range(n)]
    docs[0].get("files", type=pycrdt.Map)["f"] = pycrdt.Text(content)
    for doc in docs[1:]:
        doc.apply_update(docs[0].get_update())
    return [doc.get("files", type=pycrdt.Map)["f"] for doc in docs]


def _sync_all(texts: list[pycrdt.Text]) -> None:
    for src in texts:
        for dst in texts:
            if src is not dst:
                _sync(src, dst)


BASE_CHARS = "ab中😀é\n "
# Each phase inserts characters no earlier phase used, so that after a merge the
# characters that were there before the phase are told apart from new ones.
PHASE_INSERTS = (["x", "文", "🎉", "x🎉"], ["ü", "\t", "𝄞", "ü𝄞"])


def _numbering(merged: str, inserts: list[str], known: int, dead: set[int]) -> list[int | None]:
    """The characters of ``merged`` numbered as at the start of the phase (None: inserted since).

    Those there at the start are numbered ``0 .. known - 1``; those not ``dead`` are
    read back in order from the merged text, where new ones are from ``inserts``.
    """
    alive = iter(i for i in range(known) if i not in dead)
    fresh = set("".join(inserts))
    out: list[int | None] = [None if ch in fresh else next(alive) for ch in merged]
    assert next(alive, None) is None
    return out


def _edit_round(
    data: st.DataObject,
    texts: list[pycrdt.Text],
    inserts: list[str],
    known: int,
    dead: set[int],
    keep: int | None,
) -> list[list[int | None]]:
    """Concurrent edits: each replica inserts and deletes, unsynced; never character ``keep``.

    Returns each replica's numbering of its characters (see :func:`_numbering`);
    the numbers of the characters deleted are added to ``dead``.
    """
    start = _numbering(str(texts[0]), inserts, known, dead)
    out = []
    for text in texts:
        ids = list(start)
        for _ in range(data.draw(st.integers(0, 3))):
            current = str(text)
            deletable = [i for i, k in enumerate(ids) if k != keep]
            if data.draw(st.booleans()) or not deletable:
                at = data.draw(st.integers(0, len(current)))
                new = data.draw(st.sampled_from(inserts))
                text.insert(len(current[:at].encode()), new)
                ids[at:at] = [None] * len(new)
            else:
                at = data.draw(st.sampled_from(deletable))
                offset = len(current[:at].encode())
                del text[offset : offset + len(current[at].encode())]
                gone = ids.pop(at)
                if gone is not None:
                    dead.add(gone)
        out.append(ids)
    return out


@settings(max_examples=500, deadline=None)
@given(
    st.text(alphabet=BASE_CHARS, max_size=30),
    st.integers(2, 3),
    st.data(),
    st.sampled_from(list(Encoding)),
)
def test_anchored_cursor_follows_its_character(
    text: str, peers: int, data: st.DataObject, enc: Encoding
) -> None:
    """A cursor before character c stays before c under concurrent inserts and deletes.

    First the replicas edit concurrently and sync (items get split, deleted,
    interleaved between clients); then one of them places a cursor before a
    character, and they edit and sync again, never deleting that character.
    Every replica must find the cursor before it, before and after syncing.
    """
    texts = _peers(text + "|", peers)
    known, dead = len(text) + 1, set[int]()
    for _ in range(data.draw(st.integers(0, 2))):
        _edit_round(data, texts, PHASE_INSERTS[0], known, dead, keep=len(text))  # the "|"
        _sync_all(texts)
    merged = str(texts[0])
    assert all(str(t) == merged for t in texts)
    target = data.draw(st.integers(0, len(merged) - 1))
    owner = texts[data.draw(st.integers(0, peers - 1))]
    pos = position(merged, target, enc)
    encoded = presence.encode_ranges(owner, LineText(merged), [(pos, pos)], enc)
    assert presence.decode_ranges(owner, LineText(merged), encoded, enc) == [(pos, pos)]
    known, dead = len(merged), set()
    for _ in range(data.draw(st.integers(1, 3))):
        numbering = _edit_round(data, texts, PHASE_INSERTS[1], known, dead, target)
        for replica, ids in zip(texts, numbering, strict=True):
            now = str(replica)
            (decoded,) = presence.decode_ranges(replica, LineText(now), encoded, enc)
            assert index_of(now, *decoded[1], enc) == ids.index(target)
        _sync_all(texts)
    now = str(texts[0])
    expected = _numbering(now, PHASE_INSERTS[1], known, dead).index(target)
    for replica in texts:
        assert str(replica) == now
        (decoded,) = presence.decode_ranges(replica, LineText(now), encoded, enc)
        assert index_of(now, *decoded[1], enc) == expected


def test_an_item_after_a_deleted_one_of_the_same_client() -> None:
    """P = "é", then a deleted "x", then C = "ab", all from one client.

    Raw (byte-counted) ids inside C line up with those inside P: P's clock plus
    the byte offset in P (2 for "a") is C's clock; only the items say where C starts.
    """
    text, other = _peers("", 2)
    text.insert(0, "é")  # clock 1 (clock 0 is the text)
    text.insert(2, "x")  # clock 2
    del text[2:3]
    text.insert(2, "ab")  # clocks 3 and 4, after the deleted "x"
    assert str(text) == "éab"
    assert presence._raw_id(text, 2) == (1, 3)  # exact at the start of an item...
    assert presence._raw_id(text, 0) == (1, 1)  # ...so P's raw ids run on into C's
    anchors = [presence.anchor_at(text, offset) for offset in (0, 2, 3)]
    assert [a["item"]["clock"] for a in anchors] == [1, 3, 4]
    assert presence.anchor_at(text, 4) == {"item": {"client": 1, "clock": 4}, "assoc": -1}
    _sync(text, other)
    other.insert(0, "😀")  # 4 bytes before everything
    _sync(other, text)
    for replica in (text, other):
        assert [presence.resolve_anchor(replica, a) for a in anchors] == [4, 6, 7]
        # Sticking to the deleted "x": where it was, with no character to step over.
        gone = {"item": {"client": 1, "clock": 2}, "assoc": -1}
        assert presence.resolve_anchor(replica, gone) == 6


def test_the_same_string_at_the_same_place_in_another_text() -> None:
    """A client's item in another text can look like the one holding a character."""
    host, guest = pycrdt.Doc(client_id=1), pycrdt.Doc(client_id=2)
    files = host.get("files", type=pycrdt.Map)
    files["f"] = pycrdt.Text("ééééé")  # the text is clock 0, its characters 1 to 5
    files["g"] = pycrdt.Text()  # clock 6
    guest.apply_update(host.get_update())
    guest.get("files", type=pycrdt.Map)["g"].insert(0, "aaaaaa")
    host.apply_update(guest.get_update(host.get_state()))
    files["g"].insert(6, "é")  # clock 7, at byte 6 of g
    f = files["f"]
    # The fourth "é" of f is at byte 6, 6 bytes into its item: raw clock 1 + 6 = 7,
    # which names g's "é", also found at byte 6 of its own text.
    assert presence._raw_id(f, 6) == (1, 7)
    anchor = presence.anchor_at(f, 6)
    assert anchor == {"item": {"client": 1, "clock": 4}, "assoc": 0}
    assert presence.resolve_anchor(f, anchor) == 6


def test_decoded_items_are_whole_and_in_place_from_any_clock() -> None:
    """yrs cuts the first item of an update "since" a clock there, even inside an emoji."""
    (text,) = _peers("a😀b😀😀c", 1)
    text.insert(len("a😀".encode()), "中😀")
    text.insert(0, "😀")
    del text[len("😀a😀中".encode()) : len("😀a😀中😀b".encode())]
    text.insert(len(str(text).encode()), "é😀")
    doc = text.doc
    state = doc.get_state()
    end = presence.decode_state_vector(state)[1]
    full = yjs_items.decode_update(doc.get_update()).structs[1]
    for lo in range(end):
        for hi in (lo, end - 1):
            items = presence._DocItems((state, doc.get_update(state)))
            got, starts = items.items_between(doc, 1, lo, hi)
            assert starts == [s.clock for s in got]
            want = [s for s in full if lo <= s.clock <= hi and s.length]
            assert [s for s in got if lo <= s.clock <= hi and s.length] == want, (lo, hi)


def test_cached_items_are_dropped_when_a_deletion_splits_one() -> None:
    """A deletion leaves the state vector as it was, and splits the item holding it."""
    (text,) = _peers("é" * 10, 1)
    assert presence.anchor_at(text, 8)["item"] == {"client": 1, "clock": 5}
    del text[2:4]  # the second "é"
    assert presence.anchor_at(text, 6)["item"] == {"client": 1, "clock": 5}
    assert presence.resolve_anchor(text, {"item": {"client": 1, "clock": 5}, "assoc": 0}) == 6
