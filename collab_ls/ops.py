"""Primitive text operations in UTF-8 byte offsets, and their transformation.

Everything the reconciliation core does to a text is a sequence of primitive
operations, applied one after another:

* ``Ins(pos, text)`` inserts ``text`` at byte offset ``pos``;
* ``Del(pos, size)`` deletes ``size`` bytes starting at ``pos``.

Offsets are UTF-8 byte offsets because that is what pycrdt's ``Text`` counts
(``len(Text("é")) == 2``); every offset here falls on a character boundary.

``transform(a, b)`` is the classic two-party operational transformation
(Jupiter style): given two operation lists ``a`` and ``b`` made concurrently on
the same text, it returns ``a2`` (``a`` rebased to apply after ``b``) and
``b2`` (``b`` rebased to apply after ``a``) such that
``apply(apply(s, a), b2) == apply(apply(s, b), a2)`` (property TP1, checked by
``tests/test_ops.py``). On an insert/insert tie at the same offset the
operations of ``a`` go first. Only two parties ever transform against each
other here (one editor and its server), so TP2 is not needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from collab_ls.units import blen


@dataclass(frozen=True, slots=True)
class Ins:
    """Insert ``text`` at byte offset ``pos``."""

    pos: int
    text: str

    @property
    def size(self) -> int:
        """Length of the inserted text in UTF-8 bytes."""
        return blen(self.text)


@dataclass(frozen=True, slots=True)
class Del:
    """Delete ``size`` bytes at byte offset ``pos``."""

    pos: int
    size: int


Op = Ins | Del


def replacement(start: int, end: int, text: str) -> list[Op]:
    """Operations replacing bytes ``[start, end)`` with ``text``."""
    ops: list[Op] = []
    if end > start:
        ops.append(Del(start, end - start))
    if text:
        ops.append(Ins(start, text))
    return ops


def from_delta(delta: Iterable[dict[str, Any]]) -> list[Op]:
    """Turn a pycrdt ``TextEvent.delta`` into sequential operations."""
    ops: list[Op] = []
    cursor = 0
    for item in delta:
        if "retain" in item:
            cursor += int(item["retain"])
        elif "insert" in item:
            text = item["insert"]
            if isinstance(text, str) and text:
                ops.append(Ins(cursor, text))
                cursor += blen(text)
        elif "delete" in item:
            size = int(item["delete"])
            if size:
                ops.append(Del(cursor, size))
    return ops


def apply_to_bytes(data: bytes, ops: Iterable[Op]) -> bytes:
    """Reference implementation: apply operations to UTF-8 bytes (tests, small texts)."""
    for op in ops:
        if isinstance(op, Ins):
            data = data[: op.pos] + op.text.encode() + data[op.pos :]
        else:
            data = data[: op.pos] + data[op.pos + op.size :]
    return data


def _transform_op(a: Op, b: Op, a_first: bool) -> list[Op]:
    """Rebase one operation ``a`` to apply after ``b`` (both made on the same text)."""
    if isinstance(a, Ins):
        if isinstance(b, Ins):
            if a.pos < b.pos or (a.pos == b.pos and a_first):
                return [a]
            return [Ins(a.pos + b.size, a.text)]
        if a.pos <= b.pos:
            return [a]
        if a.pos >= b.pos + b.size:
            return [Ins(a.pos - b.size, a.text)]
        return [Ins(b.pos, a.text)]
    if isinstance(b, Ins):
        end = a.pos + a.size
        if b.pos >= end:
            return [a]
        if b.pos <= a.pos:
            return [Del(a.pos + b.size, a.size)]
        before = b.pos - a.pos
        return [Del(a.pos, before), Del(a.pos + b.size, a.size - before)]
    a_end, b_end = a.pos + a.size, b.pos + b.size
    overlap = max(0, min(a_end, b_end) - max(a.pos, b.pos))
    remaining = a.size - overlap
    if remaining == 0:
        return []
    if a.pos < b.pos:
        start = a.pos
    elif a.pos < b_end:
        start = b.pos
    else:
        start = a.pos - b.size
    return [Del(start, remaining)]


def transform(a: Sequence[Op], b: Sequence[Op]) -> tuple[list[Op], list[Op]]:
    """Transform two concurrent operation lists against each other.

    Args:
        a: Operations made on a text ``s``; they win insert ties.
        b: Other operations made on the same ``s``.

    Returns:
        ``(a2, b2)`` such that applying ``a`` then ``b2`` gives the same text as
        applying ``b`` then ``a2``.
    """
    a_out: list[Op] = []
    b_cur: list[Op] = list(b)
    for op in a:
        rebased, b_cur = _transform_single(op, b_cur)
        a_out.extend(rebased)
    return a_out, b_cur


def _transform_single(a: Op, bs: Sequence[Op]) -> tuple[list[Op], list[Op]]:
    """``transform([a], bs)``: ``a`` may split into pieces on the way."""
    a_cur: list[Op] = [a]
    b_out: list[Op] = []
    for b in bs:
        if len(a_cur) == 1:
            only = a_cur[0]
            b_out.extend(_transform_op(b, only, False))
            a_cur = _transform_op(only, b, True)
        else:
            a_cur, b_pieces = transform(a_cur, [b])
            b_out.extend(b_pieces)
    return a_cur, b_out
