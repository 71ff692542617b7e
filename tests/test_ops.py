"""Property tests of the primitive operations and their transformation (TP1)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from collab_ls.ops import Del, Ins, Op, apply_to_bytes, from_delta, transform

ALPHABET = "ab\n\r中é😀"


def _boundaries(data: bytes) -> list[int]:
    text = data.decode()
    out = [0]
    for ch in text:
        out.append(out[-1] + len(ch.encode()))
    return out


@st.composite
def text_and_ops(draw: st.DrawFn, base: str | None = None) -> tuple[str, list[Op]]:
    text = base if base is not None else draw(st.text(alphabet=ALPHABET, max_size=12))
    data = text.encode()
    ops: list[Op] = []
    for _ in range(draw(st.integers(0, 4))):
        bounds = _boundaries(data)
        i = draw(st.integers(0, len(bounds) - 1))
        if draw(st.booleans()) or len(bounds) == 1:
            ins = draw(st.text(alphabet=ALPHABET, min_size=1, max_size=3))
            op: Op = Ins(bounds[i], ins)
        else:
            j = draw(st.integers(i, len(bounds) - 1))
            if j == i:
                continue
            op = Del(bounds[i], bounds[j] - bounds[i])
        ops.append(op)
        data = apply_to_bytes(data, [op])
    return text, ops


@st.composite
def concurrent(draw: st.DrawFn) -> tuple[str, list[Op], list[Op]]:
    text, a = draw(text_and_ops())
    _, b = draw(text_and_ops(base=text))
    return text, a, b


@settings(max_examples=3000, deadline=None)
@given(concurrent())
def test_transform_converges(case: tuple[str, list[Op], list[Op]]) -> None:
    text, a, b = case
    a2, b2 = transform(a, b)
    base = text.encode()
    left = apply_to_bytes(apply_to_bytes(base, a), b2)
    right = apply_to_bytes(apply_to_bytes(base, b), a2)
    assert left == right
    left.decode()  # never splits a character


@settings(max_examples=500, deadline=None)
@given(concurrent())
def test_transform_keeps_every_insert(case: tuple[str, list[Op], list[Op]]) -> None:
    _, a, b = case
    a2, _ = transform(a, b)
    inserted = sum(op.size for op in a if isinstance(op, Ins))
    assert sum(op.size for op in a2 if isinstance(op, Ins)) == inserted


def test_insert_tie_puts_first_list_first() -> None:
    a2, b2 = transform([Ins(1, "A")], [Ins(1, "B")])
    assert apply_to_bytes(apply_to_bytes(b"xy", [Ins(1, "B")]), a2) == b"xABy"
    assert apply_to_bytes(apply_to_bytes(b"xy", [Ins(1, "A")]), b2) == b"xABy"


def test_delete_split_around_concurrent_insert() -> None:
    a2, _ = transform([Del(0, 4)], [Ins(2, "Z")])
    assert apply_to_bytes(b"abZcd", a2) == b"Z"


def test_from_delta_matches_pycrdt() -> None:
    import pycrdt

    doc = pycrdt.Doc()
    text = doc.get("t", type=pycrdt.Text)
    text.insert(0, "héllo wörld")
    deltas: list[list[Op]] = []
    text.observe(lambda e: deltas.append(from_delta(e.delta)))
    before = str(text).encode()
    with doc.transaction():
        text.insert(3, "😀")
        del text[8:10]
    after = apply_to_bytes(before, [op for ops in deltas for op in ops])
    assert after == str(text).encode()
