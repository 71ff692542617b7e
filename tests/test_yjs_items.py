"""Unit tests of the Yjs update reader, and interop checks against Node Yjs itself."""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from collab_ls import presence, yjs_items
from collab_ls.yjs_items import (
    ANY,
    DELETED,
    DOC,
    EMBED,
    FORMAT,
    GC,
    JSON,
    SKIP,
    STRING,
    TYPE,
    DeleteSet,
    Struct,
    Update,
    UpdateDecodeError,
    decode_update,
    encode_state_vector,
    iter_structs,
)

INTEROP = Path(__file__).parent / "interop"


def _doc(client_id: int) -> pycrdt.Doc[Any]:
    return pycrdt.Doc(client_id=client_id)


def _sync(*docs: pycrdt.Doc[Any]) -> None:
    for a in docs:
        for b in docs:
            if a is not b:
                b.apply_update(a.get_update(b.get_state()))


def _strings(update: Update, client: int) -> list[tuple[int, int, str | None]]:
    return [(s.clock, s.length, s.text) for s in update.structs[client] if s.ref == STRING]


def test_string_lengths_are_utf16_units() -> None:
    doc = _doc(7)
    text = doc.get("t", type=pycrdt.Text)
    text.insert(0, "aé中😀b")
    update = decode_update(doc.get_update())
    (item,) = update.structs[7]
    assert (item.clock, item.length, item.ref, item.text) == (0, 6, STRING, "aé中😀b")
    assert item.size == len("aé中😀b".encode())
    assert item.parent == "t" and update.parent(item) == "t"
    assert update.is_live(item)
    assert update.find(7, 5) is item and update.find(7, 6) is None and update.find(8, 0) is None


def test_texts_in_a_map_and_their_parents() -> None:
    doc = _doc(3)
    files = doc.get("files", type=pycrdt.Map)
    files["a.py"] = pycrdt.Text("print('中文')\n")
    files["b.md"] = pycrdt.Text("# 😀")
    a, b = files["a.py"], files["b.md"]
    a.insert(len(str(a).encode()), "x = 'é'\n")  # appended: parent implied by the origin
    b.insert(0, "> ")  # prepended: parent implied by the right origin
    update = decode_update(doc.get_update())
    types = {s.parent_sub: s for s in update.structs[3] if s.ref == TYPE}
    assert set(types) == {"a.py", "b.md"}
    for key, item in types.items():
        assert (item.type_ref, item.parent, item.keyed) == (2, "files", True)
        assert update.parent(item) == "files", key
    branch_a = (3, types["a.py"].clock)
    branch_b = (3, types["b.md"].clock)
    runs_a = update.text_runs(branch_a)
    assert "".join(r.text for r in runs_a) == str(a)  # appended: clock order is text order
    implied = [s for s in update.structs[3] if s.ref == STRING and s.parent is None]
    assert {update.parent(s) for s in implied} == {branch_a, branch_b}
    assert sorted(r.text for r in update.text_runs(branch_b)) == sorted(["# 😀", "> "])


def test_deletions_split_items_and_fill_the_delete_set() -> None:
    doc = _doc(5)
    text = doc.get("t", type=pycrdt.Text)
    text.insert(0, "ab😀cd中")
    start = len(b"ab")
    del text[start : start + len("😀c".encode())]  # clocks 2..4 (the emoji is two units)
    update = decode_update(doc.get_update())
    assert update.deleted.ranges == {5: [(2, 3)]}
    assert (5, 2) in update.deleted and (5, 4) in update.deleted
    assert (5, 1) not in update.deleted and (5, 5) not in update.deleted
    structs = update.structs[5]
    assert [(s.clock, s.length, s.ref) for s in structs] == [
        (0, 2, STRING),
        (2, 3, DELETED),  # garbage-collected content: only its length is left
        (5, 2, STRING),
    ]
    assert [update.is_live(s) for s in structs] == [True, False, True]
    assert [r.text for s in structs for r in update.live_runs(s)] == ["ab", "d中"]
    assert [update.parent(s) for s in structs] == ["t"] * 3


def test_live_runs_of_a_partly_deleted_item() -> None:
    # Without garbage collection (or in a merged update), a deleted range can
    # cover part of a string item.
    item = Struct(9, 10, 6, STRING, parent="t", text="a😀bcd", size=8)
    update = Update({9: [item]}, DeleteSet({9: [(11, 2), (14, 1)]}))
    assert [(r.clock, r.text) for r in update.live_runs(item)] == [(10, "a"), (13, "b"), (15, "d")]
    assert not update.is_live(item)
    assert update.text_runs("t") == update.live_runs(item)


def test_delete_set_merges_ranges() -> None:
    ds = DeleteSet({1: [(5, 2), (0, 3), (3, 1), (9, 0)]})
    assert ds.ranges == {1: [(0, 4), (5, 2)]}
    assert ds.cuts(1, 2, 5) == [(2, 4), (5, 7)]
    assert ds.cuts(1, 7, 3) == [] and ds.cuts(2, 0, 9) == []
    assert (1, 4) not in ds and (1, 6) in ds and "x" not in ds


def test_garbage_collected_structs() -> None:
    doc = _doc(11)
    files = doc.get("files", type=pycrdt.Map)
    files["f"] = pycrdt.Text("old 😀 text")
    files["f"] = pycrdt.Text("new")  # the old text and its content are collected
    update = decode_update(doc.get_update())
    old, gc, new, _ = update.structs[11]
    assert (old.ref, old.parent_sub, old.clock) == (DELETED, "f", 0)  # the old map entry
    assert (gc.ref, gc.clock, gc.length) == (GC, 1, 11)  # "old 😀 text": 11 UTF-16 units
    assert not gc.is_item and update.parent(gc) is None and not update.is_live(gc)
    # The new entry replaces the old one: its key and parent are implied by that origin.
    assert (new.ref, new.type_ref, new.origin, new.parent_sub, new.keyed) == (
        TYPE,
        2,
        (11, 0),
        None,
        True,
    )
    assert update.parent(new) == "files"
    assert update.text_runs((11, new.clock)) == [yjs_items.TextRun(11, 13, "new")]
    assert update.deleted.ranges == {11: [(0, 12)]}


def test_several_clients_and_parents_across_them() -> None:
    a, b, c = _doc(1), _doc(2), _doc(3)
    a.get("files", type=pycrdt.Map)["f"] = pycrdt.Text("base ")
    _sync(a, b, c)
    texts = [d.get("files", type=pycrdt.Map)["f"] for d in (a, b, c)]
    texts[0].insert(0, "α")
    texts[1].insert(len(b"base "), "😀")
    texts[2].insert(len(b"base "), "中")
    _sync(a, b, c)
    texts[1].insert(len(str(texts[1]).encode()), "!")  # origin: an item of another client
    _sync(a, b, c)
    update = decode_update(b.get_update())
    assert set(update.structs) == {1, 2, 3}
    branch = (1, 0)
    runs = update.text_runs(branch)
    assert sorted("".join(r.text for r in runs)) == sorted(str(texts[0]))
    bang = next(s for s in update.structs[2] if s.text == "!")
    assert bang.parent is None and bang.origin is not None and bang.origin[0] != 2
    assert update.parent(bang) == branch


def test_every_content_kind_pycrdt_writes() -> None:
    doc = _doc(21)
    arr = doc.get("arr", type=pycrdt.Array)
    arr.extend([1, -70000, 2.5, "s", True, False, None, {"k": [1, "x"]}, 2**40, b"\x00bin"])
    m = doc.get("m", type=pycrdt.Map)
    m["sub"] = pycrdt.Map({"a": 1})
    m["doc"] = pycrdt.Doc()
    xml = doc.get("x", type=pycrdt.XmlFragment)
    element = xml.children.append(pycrdt.XmlElement("p", {"class": "c"}))
    element.children.append(pycrdt.XmlText("héllo"))
    text = doc.get("t", type=pycrdt.Text)
    text.insert(0, "ab😀")
    text.insert_embed(1, {"img": "x"})
    text.format(0, 2, {"bold": True})
    update = decode_update(doc.get_update())  # every byte read, or it raises
    refs = {s.ref for s in update.structs[21]}
    assert {ANY, TYPE, DOC, STRING, EMBED, FORMAT} <= refs
    assert next(s for s in update.structs[21] if s.ref == ANY).length == 10
    type_refs = {s.type_ref for s in update.structs[21] if s.ref == TYPE}
    assert type_refs == {1, 3, 6}  # Map, XmlElement, XmlText
    xml_text = next(s for s in update.structs[21] if s.type_ref == 6)
    assert update.parent(next(s for s in update.structs[21] if s.text == "héllo")) == (
        21,
        xml_text.clock,
    )
    attribute = next(s for s in update.structs[21] if s.parent_sub == "class")
    assert attribute.keyed and update.text_runs((21, xml_text.clock - 2)) == []


def _var_uint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _var_string(s: str) -> bytes:
    raw = s.encode()
    return _var_uint(len(raw)) + raw


def test_hand_written_update_with_gc_skip_json_binary_and_values() -> None:
    """Structs pycrdt does not write: GC, Skip, legacy JSON, binary, every ``any`` tag."""
    any_values = (
        bytes([127, 126, 121, 120])  # undefined, null, false, true
        + bytes([125, 0xC1, 0x01])  # integer -65 (sign bit, continuation)
        + bytes([124]) + b"\x00" * 4  # float32
        + bytes([123]) + b"\x00" * 8  # float64
        + bytes([122]) + b"\x00" * 8  # bigint
        + bytes([119]) + _var_string("s")
        + bytes([118, 1]) + _var_string("k") + bytes([117, 1, 127])  # {"k": [undefined]}
        + bytes([116]) + _var_uint(2) + b"\x01\x02"
    )  # fmt: skip
    client = 2**52 + 3  # a large client id: an 8-byte varUint
    structs = (
        bytes([0]) + _var_uint(2)  # GC, 2 clocks
        + bytes([10]) + _var_uint(3)  # Skip, 3 clocks
        + bytes([2, 1]) + _var_string("r") + _var_uint(2) + _var_string("1") + _var_string('"x"')
        + bytes([3, 1]) + _var_string("r") + _var_uint(3) + b"abc"  # binary
        + bytes([8 | 0x80]) + _var_uint(client) + _var_uint(6) + _var_uint(11) + any_values
        + bytes([4 | 0x80 | 0x40]) + _var_uint(client) + _var_uint(1)  # origin: GC'ed
        + _var_uint(client) + _var_uint(7) + _var_string("é😀")
    )  # fmt: skip
    update = (
        _var_uint(1) + _var_uint(6) + _var_uint(client) + _var_uint(0) + structs
        + _var_uint(1) + _var_uint(client) + _var_uint(1) + _var_uint(0) + _var_uint(2)
    )  # fmt: skip
    decoded = decode_update(update)
    got = [
        (s.clock, s.length, s.ref, s.parent, s.origin, s.right_origin)
        for s in decoded.structs[client]
    ]
    assert got == [
        (0, 2, GC, None, None, None),
        (2, 3, SKIP, None, None, None),
        (5, 2, JSON, "r", None, None),
        (7, 1, 3, "r", None, None),
        (8, 11, ANY, None, (client, 6), None),
        (19, 3, STRING, None, (client, 1), (client, 7)),
    ]
    assert decoded.deleted.ranges == {client: [(0, 2)]}
    # Parents as Yjs finds them: from the origin, or the right origin if that is GC'ed.
    assert [decoded.parent(s) for s in decoded.structs[client]] == [None, None, "r", "r", "r", "r"]
    for cut in range(len(update)):  # every truncation is an error, never a wrong answer
        with pytest.raises(UpdateDecodeError):
            decode_update(update[:cut])
    with pytest.raises(UpdateDecodeError):
        decode_update(update + b"\x00")
    with pytest.raises(UpdateDecodeError):
        list(iter_structs(bytes([1, 1, 1, 0, 11])))  # an unknown content kind
    with pytest.raises(UpdateDecodeError):
        list(iter_structs(bytes([1, 1, 1, 0, 8, 1]) + _var_string("r") + bytes([1, 115])))


def test_structs_are_decoded_lazily() -> None:
    doc = _doc(4)
    text = doc.get("t", type=pycrdt.Text)
    text.insert(0, "first")
    text.insert(0, "second")
    update = doc.get_update()
    first = next(iter_structs(update[: len(update) // 2 + 4]))  # the rest is never read
    assert first.text == "first"
    assert [s.text for s in iter_structs(update)] == ["first", "second"]


def test_state_vectors_round_trip() -> None:
    a, b = _doc(2**40 + 1), _doc(9)
    a.get("t", type=pycrdt.Text).insert(0, "😀" * 200)
    _sync(a, b)
    b.get("t", type=pycrdt.Text).insert(0, "x")
    state = presence.decode_state_vector(b.get_state())
    assert state == {2**40 + 1: 400, 9: 1}
    assert presence.decode_state_vector(encode_state_vector(state)) == state
    # An update "since" a state vector: here, only the structs of client 9.
    since = b.get_update(encode_state_vector({**state, 9: 0}))
    assert {s.client for s in iter_structs(since)} == {9}


def test_utf16_len() -> None:
    assert [yjs_items.utf16_len(s) for s in ("", "ab", "é", "中", "😀", "a😀中")] == [
        0,
        2,
        1,
        1,
        2,
        4,
    ]


# --------------------------------------------------------- interop with Yjs


def _yjs(script: str, stdin: str = "") -> Any:
    """Run an ES module with Node, ``yjs`` importable; its stdout parsed as JSON."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the interop tests need Node 18+ on PATH")
    if not (INTEROP / "node_modules" / "yjs").is_dir():
        pytest.fail("tests/interop/node_modules is missing: run `npm ci --prefix tests/interop`")
    done = subprocess.run(
        [node, "--input-type=module", "-e", script],
        cwd=INTEROP,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


_YJS_DOC = """
import * as Y from 'yjs'
const a = new Y.Doc(), b = new Y.Doc()
a.clientID = 1001; b.clientID = 2**52 + 7
const sync = () => {
  Y.applyUpdate(b, Y.encodeStateAsUpdate(a, Y.encodeStateVector(b)))
  Y.applyUpdate(a, Y.encodeStateAsUpdate(b, Y.encodeStateVector(a)))
}
const files = a.getMap('files')
const t = new Y.Text(); files.set('a.py', t); t.insert(0, 'héllo 😀 中文\\n')
files.set('gone', new Y.Text('collected 😀'))
sync()
const tb = b.getMap('files').get('a.py')
tb.insert(3, '🎉x'); tb.delete(8, 3); t.insert(0, 'é'); t.format(0, 2, {bold: true})
t.insertEmbed(1, {img: 'x'})
files.delete('gone')
const arr = a.getArray('arr')
arr.insert(0, [1, -7, 2.5, 'str', true, null, {k: [1, 'x']}, new Uint8Array([1, 2])])
arr.insert(0, [new Uint8Array([3])])
const xml = b.getXmlFragment('xml'); const el = new Y.XmlElement('p'); xml.insert(0, [el])
el.setAttribute('class', 'c'); el.insert(0, [new Y.XmlText('ü')])
b.getMap('m').set('sub', new Y.Doc())
sync()
const parentOf = (item) => {
  const p = item.parent
  if (p._item) return [p._item.id.client, p._item.id.clock]
  for (const [name, type] of a.share) if (type === p) return name
  return null
}
const structs = []
for (const [client, list] of a.store.clients) for (const s of list) {
  const item = s.constructor.name === 'Item'
  structs.push([client, s.id.clock, s.length, item ? s.content.getRef() : 0,
    item ? s.deleted : true, item ? parentOf(s) : null,
    item && s.content.getRef() === 4 ? s.content.str : null])
}
const update = Buffer.from(Y.encodeStateAsUpdate(a)).toString('base64')
console.log(JSON.stringify({update, structs}))
"""


def test_decoding_yjs_updates_as_yjs_sees_them() -> None:
    out = _yjs(_YJS_DOC)
    update = decode_update(base64.b64decode(out["update"]))
    got = []
    for structs in update.structs.values():
        for s in structs:
            parent = update.parent(s) if s.is_item else None
            live = bool(s.is_item and update.is_live(s))
            got.append(
                [s.client, s.clock, s.length, s.ref, not live, parent, s.text]
                if s.is_item
                else [s.client, s.clock, s.length, 0, True, None, None]
            )
    want = [
        [*row[:5], tuple(row[5]) if isinstance(row[5], list) else row[5], row[6]]
        for row in out["structs"]
    ]
    assert sorted(got, key=str) == sorted(want, key=str)
    refs = {row[3] for row in want}
    assert {0, 1, 3, 4, 5, 6, 7, 8, 9} <= refs  # GC, deleted, binary ... doc


_YJS_POSITIONS = """
import * as Y from 'yjs'
const out = []
for (const line of (await new Promise(r => {
  let s = ''; process.stdin.on('data', d => s += d); process.stdin.on('end', () => r(s))
})).trim().split('\\n')) {
  const doc = new Y.Doc()
  Y.applyUpdate(doc, Buffer.from(line, 'base64'))
  const text = doc.getMap('files').get('f')
  const after = [], before = []
  for (let i = 0; i < text.length; i++) {  // every UTF-16 unit
    after.push(Y.relativePositionToJSON(Y.createRelativePositionFromTypeIndex(text, i, 0)))
    before.push(Y.relativePositionToJSON(Y.createRelativePositionFromTypeIndex(text, i + 1, -1)))
  }
  out.push({text: text.toString(), after, before})
}
console.log(JSON.stringify(out))
"""


def _fragmented(seed: int) -> pycrdt.Text:
    """A text edited by three replicas in turns: many small items, deletions, non-ASCII."""
    rnd = random.Random(seed)
    docs = [_doc(100 + i) for i in range(3)]
    docs[0].get("files", type=pycrdt.Map)["f"] = pycrdt.Text("")
    _sync(*docs)
    texts = [d.get("files", type=pycrdt.Map)["f"] for d in docs]
    for _ in range(12):
        for t in texts:
            for _ in range(rnd.randint(1, 4)):
                s = str(t)
                if s and rnd.random() < 0.3:
                    i = rnd.randrange(len(s))
                    at = len(s[:i].encode())
                    del t[at : at + len(s[i : i + rnd.randint(1, 3)].encode())]
                else:
                    i = rnd.randint(0, len(s))
                    t.insert(len(s[:i].encode()), rnd.choice(["é", "x", "中文", "😀", "ab", "\n"]))
        _sync(*docs)
    return texts[0]


def test_positions_are_the_ones_yjs_makes() -> None:
    """Relative positions made here name the characters Yjs names, and read back as Yjs does."""
    texts = [_fragmented(seed) for seed in range(20)]
    lines = "\n".join(base64.b64encode(t.doc.get_update()).decode() for t in texts)
    for text, yjs in zip(texts, _yjs(_YJS_POSITIONS, lines), strict=True):
        s = str(text)
        assert yjs["text"] == s
        data = s.encode()
        unit = offset = 0  # of each character, in UTF-16 units (Yjs indices) and bytes
        for ch in s:
            width, size = yjs_items.utf16_len(ch), len(ch.encode())
            made = presence.anchor_at(text, offset, data)
            assert made == {"item": yjs["after"][unit]["item"], "assoc": 0}, (s, offset)
            assert presence.resolve_anchor(text, yjs["after"][unit], None, data) == offset
            before = yjs["before"][unit + width - 1]  # sticks to the character's last unit
            assert presence.resolve_anchor(text, before, None, data) == offset + size
            unit, offset = unit + width, offset + size
