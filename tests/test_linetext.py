"""Tests for collab_ls.linetext.LineText against a naive reference: a str and a regex."""

from __future__ import annotations

import re
from itertools import accumulate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collab_ls.line_index import split_lines
from collab_ls.linetext import LineText
from collab_ls.units import Encoding, PositionError

U8, U16, U32 = Encoding.UTF8, Encoding.UTF16, Encoding.UTF32
_BREAK = re.compile(r"\r\n|\r|\n")

# -- the reference model ----------------------------------------------------------


def ref_lines(text: str) -> list[str]:
    """Lines with terminators, split at exactly the LSP line breaks."""
    out, pos = [], 0
    for m in _BREAK.finditer(text):
        out.append(text[pos : m.end()])
        pos = m.end()
    out.append(text[pos:])
    return out


def content(line: str) -> str:
    """A line without its terminator."""
    return _BREAK.sub("", line)


def ref_units(s: str, enc: Encoding) -> int:
    if enc is U8:
        return len(s.encode())
    if enc is U16:
        return len(s.encode("utf-16-le")) // 2
    return len(s)


def boundaries(text: str) -> list[int]:
    """The byte offset of every code-point boundary: ``result[i]`` for index ``i``."""
    return list(accumulate((len(c.encode()) for c in text), initial=0))


def ref_positions(text: str, enc: Encoding) -> dict[int, tuple[int, int]]:
    """Every valid position, keyed by byte offset."""
    out: dict[int, tuple[int, int]] = {}
    start = 0
    for n, line in enumerate(ref_lines(text)):
        body = content(line)
        for j in range(len(body) + 1):
            out[start + len(body[:j].encode())] = (n, ref_units(body[:j], enc))
        start += len(line.encode())
    return out


def assert_matches(lt: LineText, text: str) -> None:
    lt.check_invariants()
    lines = ref_lines(text)
    assert lt.text() == text
    assert lt.line_count == len(lines)
    assert lt.byte_len == len(text.encode())
    assert [lt.line(i) for i in range(len(lines))] == lines


def assert_positions(lt: LineText, text: str, enc: Encoding) -> None:
    """Every position round-trips; every other unit count clamps or raises."""
    valid = ref_positions(text, enc)
    for offset, (n, units) in valid.items():
        assert lt.to_offset_checked(n, units, enc) == (offset, False)
        assert lt.to_position(offset, enc) == (n, units)
    for offset in range(-1, lt.byte_len + 2):
        if offset not in valid:
            with pytest.raises(PositionError):
                lt.to_position(offset, enc)
    starts = [0, *accumulate(len(s.encode()) for s in ref_lines(text))]
    for n, line in enumerate(ref_lines(text)):
        body = content(line)
        total = ref_units(body, enc)
        ok = {ref_units(body[:j], enc) for j in range(len(body) + 1)}
        for units in range(total + 3):
            if units > total:
                end = starts[n] + len(body.encode())
                assert lt.to_offset_checked(n, units, enc) == (end, True)
            elif units not in ok:
                with pytest.raises(PositionError, match="inside a character"):
                    lt.to_offset(n, units, enc)
    count = len(starts) - 1
    for units in (0, 5, 10**6):
        assert lt.to_offset_checked(count, units, enc) == (lt.byte_len, True)
    for n, units in [(count + 1, 0), (-1, 0), (0, -1)]:
        with pytest.raises(PositionError):
            lt.to_offset(n, units, enc)


# -- strategies -------------------------------------------------------------------

PIECES = [
    "a", "b", "xyz", " ", "\t", "\n", "\n", "\r\n", "\r\n", "\r",
    "é", "中", "😀", "e\u0301", "👨\u200d👩\u200d👧",
    "\x0b", "\x0c", "\x1c", "\x85", "\u2028",  # not LSP line breaks
]  # fmt: skip
pieces = st.one_of(st.sampled_from(PIECES), st.characters(codec="utf-8"))
no_break = st.sampled_from([p for p in PIECES if p not in ("\n", "\r\n", "\r")])
short_texts = st.lists(pieces, max_size=30).map("".join)
many_lines = st.lists(
    st.tuples(st.lists(no_break, max_size=4).map("".join), st.sampled_from(["\n", "\r\n", "\r"])),
    max_size=90,
).map(lambda rows: "".join(a + b for a, b in rows))
documents = st.one_of(short_texts, many_lines, st.tuples(many_lines, short_texts).map("".join))
inserts = st.one_of(
    st.sampled_from(["", "x", "\n", "\r", "\r\n", "😀", "中", "\u0301"]),
    short_texts,
    many_lines,
)
block_sizes = st.sampled_from([2, 3, 4, 5, 8, 16, 256])
encodings = st.sampled_from(list(Encoding))


# -- properties -------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(documents, st.text()))
def test_split_lines_matches_reference(text: str) -> None:
    assert split_lines(text) == ref_lines(text)


@settings(max_examples=300, deadline=None)
@given(text=documents, block_lines=block_sizes)
def test_construction_matches_reference(text: str, block_lines: int) -> None:
    assert_matches(LineText(text, block_lines=block_lines), text)


@settings(max_examples=250, deadline=None)
@given(text=documents, block_lines=block_sizes, enc=encodings)
def test_positions_round_trip(text: str, block_lines: int, enc: Encoding) -> None:
    assert_positions(LineText(text, block_lines=block_lines), text, enc)


@settings(max_examples=600, deadline=None)
@given(text=documents, block_lines=block_sizes, data=st.data())
def test_replace_sequences_match_reference(
    text: str, block_lines: int, data: st.DataObject
) -> None:
    lt = LineText(text, block_lines=block_lines)
    cursor = 0
    for _ in range(data.draw(st.integers(1, 15), label="edits")):
        n = len(text)
        near = st.integers(max(0, cursor - 4), min(n, cursor + 4))
        i = data.draw(st.one_of(near, st.integers(0, n)), label="start")
        j = data.draw(st.one_of(st.integers(i, min(n, i + 3)), st.integers(i, n)), label="end")
        new = data.draw(inserts, label="insert")
        offsets = boundaries(text)
        # Queries between edits exercise the cached block totals and the finger.
        probe = data.draw(st.integers(0, n), label="probe")
        expected = ref_positions(text, U16).get(offsets[probe])
        if expected is not None:
            assert lt.to_position(offsets[probe], U16) == expected
            assert lt.to_offset(*expected, U16) == offsets[probe]
        assert lt.slice(offsets[i], offsets[j]) == text[i:j]
        assert lt.replace(offsets[i], offsets[j], new) == text[i:j]
        text = text[:i] + new + text[j:]
        cursor = i + len(new)
        assert_matches(lt, text)
    assert_positions(lt, text, data.draw(encodings, label="encoding"))


@settings(max_examples=300, deadline=None)
@given(text=documents, block_lines=block_sizes, data=st.data())
def test_slice_matches_reference(text: str, block_lines: int, data: st.DataObject) -> None:
    lt = LineText(text, block_lines=block_lines)
    raw = text.encode()
    offsets = set(boundaries(text))
    for _ in range(5):
        start = data.draw(st.integers(-1, len(raw) + 1))
        end = data.draw(st.integers(-1, len(raw) + 1))
        if 0 <= start <= end <= len(raw) and start in offsets and end in offsets:
            assert lt.slice(start, end) == raw[start:end].decode()
        else:
            with pytest.raises(PositionError):
                lt.slice(start, end)


@settings(max_examples=300, deadline=None)
@given(text=documents, block_lines=block_sizes, data=st.data())
def test_invalid_replace_raises_and_changes_nothing(
    text: str, block_lines: int, data: st.DataObject
) -> None:
    lt = LineText(text, block_lines=block_lines)
    raw = text.encode()
    offsets = set(boundaries(text))
    start = data.draw(st.integers(-2, len(raw) + 2))
    end = data.draw(st.integers(-2, len(raw) + 2))
    valid = 0 <= start <= end <= len(raw) and start in offsets and end in offsets
    if valid:
        return
    with pytest.raises(PositionError):
        lt.replace(start, end, data.draw(inserts))
    assert_matches(lt, text)


# -- line breaks, one by one ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "end", "new", "lines"),
    [
        ("a\rb", 2, 2, "\n", ["a\r\n", "b"]),  # \n after a lone \r: one break
        ("a\r\nb", 2, 3, "", ["a\r", "b"]),  # delete the \n of \r\n
        ("a\r\nb", 1, 2, "", ["a\n", "b"]),  # delete the \r of \r\n
        ("a\r\nb", 2, 2, "x", ["a\r", "x\n", "b"]),  # split a \r\n
        ("a\r\nb", 2, 2, "\r", ["a\r", "\r\n", "b"]),
        ("x\n\ny", 2, 2, "\r", ["x\n", "\r\n", "y"]),  # text ending in \r before a \n
        ("x\n\ny", 2, 2, "q\r", ["x\n", "q\r\n", "y"]),
        ("a\rX\nb", 2, 3, "", ["a\r\n", "b"]),  # deletion joins \r and \n
        ("a\ry\n\nb", 2, 4, "", ["a\r\n", "b"]),  # ... across a whole line
        ("a\r", 2, 2, "\nb", ["a\r\n", "b"]),  # append at the end
        ("abc", 3, 3, "\r", ["abc\r", ""]),
        ("abc\r", 4, 4, "\n", ["abc\r\n", ""]),
        ("", 0, 0, "", [""]),
        ("", 0, 0, "\n", ["\n", ""]),
        ("", 0, 0, "a\r\rb\r\n", ["a\r", "\r", "b\r\n", ""]),
        ("abc\n", 0, 4, "", [""]),  # delete everything
        ("abc\ndef", 0, 0, "1\n2\r\n", ["1\n", "2\r\n", "abc\n", "def"]),  # at the start
        ("abc\ndef", 2, 6, "X\nY", ["abX\n", "Yf"]),  # multi-line replace
        ("a\u2028b\x0bc\x0c\x1c\x85", 1, 1, "", ["a\u2028b\x0bc\x0c\x1c\x85"]),
    ],
)
def test_line_break_edits(text: str, start: int, end: int, new: str, lines: list[str]) -> None:
    for block_lines in (2, 256):
        lt = LineText(text, block_lines=block_lines)
        removed = lt.replace(start, end, new)
        expected = (text.encode()[:start] + new.encode() + text.encode()[end:]).decode()
        assert removed == text.encode()[start:end].decode()
        assert [lt.line(i) for i in range(lt.line_count)] == lines
        assert_matches(lt, expected)


def test_empty_document() -> None:
    lt = LineText()
    assert (lt.line_count, lt.byte_len, lt.text(), lt.line(0)) == (1, 0, "", "")
    assert lt.to_offset_checked(0, 0, U16) == (0, False)
    assert lt.to_offset_checked(0, 3, U16) == (0, True)
    assert lt.to_offset_checked(1, 7, U16) == (0, True)
    assert lt.to_position(0, U8) == (0, 0)
    with pytest.raises(PositionError):
        lt.to_offset(2, 0, U16)
    with pytest.raises(PositionError):
        lt.to_position(1, U16)
    with pytest.raises(IndexError):
        lt.line(1)


def test_clamping_rules() -> None:
    lt = LineText("ab😀\r\ncd\n")
    assert lt.to_offset_checked(0, 4, U16) == (6, False)
    assert lt.to_offset_checked(0, 5, U16) == (6, True)  # before the \r\n
    assert lt.to_offset_checked(0, 99, U8) == (6, True)
    with pytest.raises(PositionError, match="inside a character"):
        lt.to_offset(0, 3, U16)
    assert lt.to_offset_checked(1, 9, U32) == (10, True)
    assert lt.to_offset_checked(2, 0, U32) == (11, False)
    assert lt.to_offset_checked(3, 0, U32) == (11, True)  # line == line_count
    with pytest.raises(PositionError, match="past the end"):
        lt.to_offset(4, 0, U16)
    with pytest.raises(PositionError, match="line break"):
        lt.to_position(7, U16)  # between \r and \n
    with pytest.raises(PositionError, match="inside a character"):
        lt.to_position(3, U16)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="block_lines"):
        LineText("x", block_lines=1)
    lt = LineText("héllo")
    for start, end in [(-1, 0), (0, 7), (3, 1), (2, 2), (0, 2)]:
        with pytest.raises(PositionError):
            lt.replace(start, end, "x")
    assert_matches(lt, "héllo")


# -- big documents ----------------------------------------------------------------

UNIT = ["def f(x):  # café 中文 😀\r\n", "    return x + 1\n", "\n", "mac\r", "e\u0301 done\n"]


def test_ten_megabyte_document() -> None:
    unit = "".join(UNIT)
    unit_bytes = len(unit.encode())
    reps = 10_000_000 // unit_bytes
    text = unit * reps
    lt = LineText(text)
    assert lt.byte_len == reps * unit_bytes
    assert lt.line_count == reps * len(UNIT) + 1
    for rep in (0, 1, reps // 2, reps - 1):
        first_line, first_byte = rep * len(UNIT), rep * unit_bytes
        assert lt.to_offset(first_line, 0, U16) == first_byte
        for enc in Encoding:
            for offset, (n, units) in ref_positions(unit, enc).items():
                if n < len(UNIT):
                    assert lt.to_position(first_byte + offset, enc) == (first_line + n, units)
                    assert lt.to_offset(first_line + n, units, enc) == first_byte + offset
        assert lt.slice(first_byte, first_byte + unit_bytes) == unit
        assert [lt.line(first_line + k) for k in range(len(UNIT))] == UNIT
    assert lt.to_offset_checked(lt.line_count, 0, U16) == (lt.byte_len, True)
    assert lt.to_position(lt.byte_len, U16) == (lt.line_count - 1, 0)

    raw = bytearray(text.encode())

    def edit(start: int, end: int, new: str) -> None:
        assert lt.replace(start, end, new) == raw[start:end].decode()
        raw[start:end] = new.encode()

    mid = (reps // 2) * unit_bytes
    mac = mid + len("".join(UNIT[:4]).encode())  # just after the lone \r of "mac\r"
    edit(mac, mac, "\n")  # "mac\r" + "\n" -> one "\r\n": no new line
    assert lt.line_count == reps * len(UNIT) + 1
    edit(mid - 1000 * unit_bytes, mid - 400 * unit_bytes, "")  # across many blocks
    edit(mid + 7, mid + 7, "typed")
    edit(0, 0, "first\r\nsecond\n" * 300)  # a paste that splits blocks
    edit(len(raw), len(raw), "\nlast")
    edit(len(raw) - 3, len(raw), "")
    edit(len(raw) - 10 * unit_bytes, len(raw), "")
    assert lt.byte_len == len(raw)
    assert lt.text() == raw.decode()
    assert lt.line_count == len(ref_lines(raw.decode()))
    lt.check_invariants()


def test_megabyte_single_line() -> None:
    line = "x" * 1_000_000
    lt = LineText(line)
    assert lt.to_offset(0, 999_999, U16) == 999_999
    assert lt.to_offset_checked(0, 1_000_001, U16) == (1_000_000, True)
    assert lt.to_position(500_000, U16) == (0, 500_000)
    lt.replace(500_000, 500_000, "中\n")
    assert lt.line_count == 2
    assert lt.to_position(500_004, U16) == (1, 0)
    assert lt.to_offset(0, 500_001, U16) == 500_003
    with pytest.raises(PositionError):
        lt.to_position(500_001, U16)
    assert lt.text() == "x" * 500_000 + "中\n" + "x" * 500_000


def test_long_non_ascii_line() -> None:
    line = "é😀" * 20_000
    lt = LineText(line + "\nend")
    assert lt.to_offset(0, 3 * 10_000, U16) == 6 * 10_000
    assert lt.to_position(6 * 10_000 + 2, U16) == (0, 30_001)
    with pytest.raises(PositionError):
        lt.to_offset(0, 30_002, U16)
    assert lt.to_offset(0, 10**6, U32) == len(line.encode())
