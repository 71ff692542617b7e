"""End-to-end presence: a peer's cursor in one real Neovim is an extmark in the other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.nvim_driver import Fleet, Neovim, fleet, make_project, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

REL = "notes/today.txt"
CONTENT = "# shared notes\nlast 中文 line\n"


@pytest.fixture
def nvims(tmp_path: Path) -> Iterator[Fleet]:
    with fleet(tmp_path / "work") as f:
        yield f


def _peer_cursors(ed: Neovim) -> list[tuple[int, int, str]]:
    marks: list[Any] = ed.lua(
        "local ns = vim.api.nvim_get_namespaces()['collab_peers']"
        " if not ns then return {} end"
        " return vim.api.nvim_buf_get_extmarks(..., ns, 0, -1, { details = true })",
        ed.bufnr(REL),
    )
    out = []
    for _, row, col, details in marks:
        group = details.get("hl_group") or ""
        if isinstance(group, str) and group.startswith("CollabPeerCursor_"):
            out.append((row, col, group))
    return out


def test_peer_cursor_shows_as_an_extmark(nvims: Fleet, tmp_path: Path) -> None:
    host = nvims.start("host", make_project(tmp_path / "host", {REL: CONTENT}))
    host.edit(REL)
    url = host.share()
    host.wait_connected(REL)
    guest = nvims.start("guest", make_project(tmp_path / "guest", {REL: CONTENT}))
    guest.edit(REL)
    guest.join(url)
    guest.wait_connected(REL)
    # The guest moves onto the space right after 中文 (character 7, byte 11).
    guest.input("gg0j7l")
    wait_until(
        lambda: any((r, c) == (1, 11) for r, c, _ in _peer_cursors(host)),
        20,
        f"the guest's cursor as an extmark in the host (have {_peer_cursors(host)})",
    )
    labels = host.lua(
        "local ns = vim.api.nvim_get_namespaces()['collab_peers']"
        " local out = {} for _, m in ipairs(vim.api.nvim_buf_get_extmarks(..., ns, 0, -1,"
        " { details = true })) do if m[4].virt_text then"
        " out[#out + 1] = m[4].virt_text[1][1] end end return out",
        host.bufnr(REL),
    )
    assert any(label.strip() for label in labels)
    # The host types before it on the same line: collab-ls re-anchors the cursor on
    # the same character (Neovim negotiates UTF-8: characters are bytes).
    host.insert_at(1, 0, "ab")

    def reported() -> Any:
        peers = host.lua("return require('collab').peers()")
        return peers and peers[0]["cursor"] == {"line": 1, "character": 13}

    wait_until(reported, 20, "the guest's cursor re-reported after the host's edit")
    assert (1, 13) in [(r, c) for r, c, _ in _peer_cursors(host)]
