"""The LSP framing of stdin (collab_ls.stdio.Framer), without I/O."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from collab_ls.stdio import Framer


def frame(body: bytes, *, extra: bytes = b"", eol: bytes = b"\r\n") -> bytes:
    return b"Content-Length: " + str(len(body)).encode() + eol + extra + eol + body


BODIES = [
    json.dumps({"jsonrpc": "2.0", "method": "m", "params": {"i": i}}).encode() for i in range(5)
]


def test_messages_in_one_chunk_come_out_in_order() -> None:
    assert Framer().feed(b"".join(frame(b) for b in BODIES)) == BODIES


def test_other_headers_bare_newlines_and_a_stray_blank_line() -> None:
    data = (
        b"\r\n"  # a blank line before any length is skipped
        + frame(BODIES[0], extra=b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n")
        + frame(BODIES[1], eol=b"\n")
        + b"content-length:  "
        + str(len(BODIES[2])).encode()
        + b"  \r\n\r\n"
        + BODIES[2]
    )
    assert Framer().feed(data) == BODIES[:3]


def test_a_body_may_hold_newlines_and_header_like_text() -> None:
    body = b'{"text": "\\nContent-Length: 3\\n\\n"}\nContent-Length: 99\r\n\r\n'
    assert Framer().feed(frame(body) + frame(BODIES[0])) == [body, BODIES[0]]


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1))
def test_any_cut_into_chunks_gives_the_same_messages(sizes: list[int]) -> None:
    data = b"".join(frame(b) for b in BODIES)
    framer, out, pos, i = Framer(), [], 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        out += framer.feed(data[pos : pos + n])
        pos, i = pos + n, i + 1
    assert out == BODIES


def test_an_incomplete_message_waits_for_the_rest() -> None:
    framer = Framer()
    data = frame(BODIES[0])
    assert framer.feed(data[:-1]) == []
    assert framer.feed(data[-1:]) == [BODIES[0]]
