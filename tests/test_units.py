"""Tests for collab_ls.units: known values, then properties against naive references."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collab_ls.units import (
    Encoding,
    PositionError,
    blen,
    byte_to_index,
    byte_to_units,
    index_to_byte,
    index_to_units,
    units_len,
    units_to_byte,
    units_to_index,
    utf8_slice,
)

U8, U16, U32 = Encoding.UTF8, Encoding.UTF16, Encoding.UTF32
FAMILY = "👨\u200d👩\u200d👧"  # man ZWJ woman ZWJ girl: 5 code points
COMBINING = "e\u0301"  # e + combining acute: 2 code points, one grapheme


def ref_units(s: str, enc: Encoding) -> int:
    """Naive length of ``s`` in code units of ``enc``."""
    if enc is U8:
        return len(s.encode("utf-8"))
    if enc is U16:
        return len(s.encode("utf-16-le")) // 2
    return len(s)


# -- known values -------------------------------------------------------------


@pytest.mark.parametrize(
    ("s", "u8", "u16", "u32"),
    [
        ("", 0, 0, 0),
        ("abc", 3, 3, 3),
        ("é", 2, 1, 1),
        ("中", 3, 1, 1),
        ("😀", 4, 2, 1),
        (COMBINING, 3, 2, 2),
        (FAMILY, 18, 8, 5),
        ("a😀b中", 9, 5, 4),
        ("\r\n", 2, 2, 2),
    ],
)
def test_lengths(s: str, u8: int, u16: int, u32: int) -> None:
    assert blen(s) == u8
    assert (units_len(s, U8), units_len(s, U16), units_len(s, U32)) == (u8, u16, u32)


def test_index_conversions_known_values() -> None:
    s = "a😀b"
    assert [index_to_units(s, i, U16) for i in range(4)] == [0, 1, 3, 4]
    assert [index_to_units(s, i, U8) for i in range(4)] == [0, 1, 5, 6]
    assert [index_to_units(s, i, U32) for i in range(4)] == [0, 1, 2, 3]
    assert [index_to_byte(s, i) for i in range(4)] == [0, 1, 5, 6]
    assert units_to_index(s, 3, U16) == 2
    assert units_to_index(s, 5, U8) == 2
    assert byte_to_index(s, 6) == 3
    assert units_to_byte(s, 3, U16) == 5
    assert byte_to_units(s, 5, U16) == 3
    assert byte_to_units(s, 5, U32) == 2
    assert units_to_byte("中é", 1, U32) == 3


@pytest.mark.parametrize(
    ("s", "units", "enc"),
    [
        ("a😀b", 2, U16),  # between the surrogates
        ("a😀b", 2, U8),  # inside the 4-byte sequence
        ("a😀b", 3, U8),
        ("a😀b", 4, U8),
        ("é", 1, U8),
        ("中", 2, U8),
        (FAMILY, 1, U16),
        (FAMILY, 1, U8),
    ],
)
def test_mid_character_raises(s: str, units: int, enc: Encoding) -> None:
    with pytest.raises(PositionError, match="inside a character"):
        units_to_index(s, units, enc)
    with pytest.raises(PositionError):
        units_to_byte(s, units, enc)


def test_combining_marks_and_zwj_are_separate_code_points() -> None:
    # Positions count code units, not graphemes: between "e" and U+0301 is valid.
    assert units_to_index(COMBINING, 1, U16) == 1
    assert units_to_index(COMBINING, 1, U8) == 1
    assert byte_to_index(COMBINING, 1) == 1
    with pytest.raises(PositionError):
        byte_to_index(COMBINING, 2)  # inside U+0301 (2 bytes)
    # After "👨" and after the ZWJ.
    assert units_to_index(FAMILY, 2, U16) == 1
    assert units_to_index(FAMILY, 3, U16) == 2
    assert units_to_index(FAMILY, 7, U8) == 2


@pytest.mark.parametrize("enc", list(Encoding))
def test_out_of_range_raises(enc: Encoding) -> None:
    for s in ("abc", "a中"):
        n = units_len(s, enc)
        for bad in (-1, n + 1):
            with pytest.raises(PositionError, match="outside"):
                units_to_index(s, bad, enc)
            with pytest.raises(PositionError, match="outside"):
                units_to_byte(s, bad, enc)
        for bad in (-1, len(s) + 1):
            with pytest.raises(PositionError, match="outside"):
                index_to_units(s, bad, enc)
            with pytest.raises(PositionError):
                index_to_byte(s, bad)
        for bad in (-1, blen(s) + 1):
            with pytest.raises(PositionError):
                byte_to_units(s, bad, enc)
            with pytest.raises(PositionError):
                byte_to_index(s, bad)


def test_utf8_slice_known_values() -> None:
    assert utf8_slice("a中b", 1, 4) == "中"
    assert utf8_slice("a中b", 0, 5) == "a中b"
    assert utf8_slice("abc", 1, 1) == ""
    for start, end in [(2, 4), (1, 3), (-1, 2), (0, 6), (3, 1)]:
        with pytest.raises(PositionError):
            utf8_slice("a中b", start, end)
    with pytest.raises(PositionError):
        utf8_slice("abc", 2, 1)
    with pytest.raises(PositionError):
        utf8_slice("abc", 0, 4)


def test_encoding_parse() -> None:
    assert Encoding.parse(None) is U16
    assert Encoding.parse("utf-8") is U8
    assert Encoding.parse("utf-16") is U16
    assert Encoding.parse("UTF-32") is U32
    assert U8 == "utf-8" and str(U16) == "utf-16"
    with pytest.raises(ValueError, match="unknown position encoding 'latin-1'"):
        Encoding.parse("latin-1")
    assert issubclass(PositionError, ValueError)


def test_lone_surrogates_are_measured_not_rejected() -> None:
    s = "a\ud800b"
    assert blen(s) == 5
    assert units_len(s, U16) == 3
    assert index_to_byte(s, 2) == 4
    assert byte_to_index(s, 4) == 2


def test_ascii_fast_path_on_a_long_string() -> None:
    s = "x" * 1_000_000
    assert blen(s) == 1_000_000
    assert units_to_index(s, 999_999, U16) == 999_999
    assert byte_to_units(s, 500_000, U16) == 500_000
    assert utf8_slice(s, 10, 13) == "xxx"


# -- properties -----------------------------------------------------------------

SPECIAL = ["a", " ", "\n", "\r\n", "é", "中", "😀", "🎉", COMBINING, FAMILY, "\u200d", "\U0010ffff"]
texts = st.lists(
    st.one_of(st.sampled_from(SPECIAL), st.characters(codec="utf-8")),
    max_size=20,
).map("".join)
encodings = st.sampled_from(list(Encoding))


@settings(max_examples=600, deadline=None)
@given(s=texts, enc=encodings)
def test_index_to_units_agrees_with_reference(s: str, enc: Encoding) -> None:
    assert units_len(s, enc) == ref_units(s, enc)
    assert blen(s) == len(s.encode())
    for i in range(len(s) + 1):
        units = index_to_units(s, i, enc)
        assert units == ref_units(s[:i], enc)
        assert units_to_index(s, units, enc) == i
        assert index_to_byte(s, i) == len(s[:i].encode())
        assert byte_to_index(s, index_to_byte(s, i)) == i


@settings(max_examples=600, deadline=None)
@given(s=texts, enc=encodings)
def test_every_unit_count_converts_or_raises(s: str, enc: Encoding) -> None:
    boundaries = {ref_units(s[:i], enc): i for i in range(len(s) + 1)}
    for units in range(-1, units_len(s, enc) + 2):
        if units in boundaries:
            i = boundaries[units]
            assert units_to_index(s, units, enc) == i
            assert units_to_byte(s, units, enc) == len(s[:i].encode())
        else:
            with pytest.raises(PositionError):
                units_to_index(s, units, enc)
            with pytest.raises(PositionError):
                units_to_byte(s, units, enc)


@settings(max_examples=600, deadline=None)
@given(s=texts, enc=encodings)
def test_every_byte_offset_converts_or_raises(s: str, enc: Encoding) -> None:
    boundaries = {len(s[:i].encode()): i for i in range(len(s) + 1)}
    for b in range(-1, blen(s) + 2):
        if b in boundaries:
            i = boundaries[b]
            assert byte_to_index(s, b) == i
            assert byte_to_units(s, b, enc) == ref_units(s[:i], enc)
        else:
            with pytest.raises(PositionError):
                byte_to_index(s, b)
            with pytest.raises(PositionError):
                byte_to_units(s, b, enc)


@settings(max_examples=400, deadline=None)
@given(s=texts, data=st.data())
def test_utf8_slice_agrees_with_reference(s: str, data: st.DataObject) -> None:
    raw = s.encode()
    start = data.draw(st.integers(-1, len(raw) + 1))
    end = data.draw(st.integers(-1, len(raw) + 1))
    boundaries = {len(s[:i].encode()) for i in range(len(s) + 1)}
    if start <= end and start in boundaries and end in boundaries:
        assert utf8_slice(s, start, end) == raw[start:end].decode()
    else:
        with pytest.raises(PositionError):
            utf8_slice(s, start, end)
