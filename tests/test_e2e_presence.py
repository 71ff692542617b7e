"""End-to-end presence: a peer's cursor in one real Neovim is an extmark in the other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.nvim_driver import Fleet, Neovim, fleet, make_project, wait_converged, wait_until

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


OTHER = "notes/other.txt"
OTHER_CONTENT = "the other file\n"


def _pair(nvims: Fleet, tmp_path: Path) -> tuple[Neovim, Neovim]:
    """A host (ana) and a guest (bo), both in REL and connected."""
    files = {REL: CONTENT, OTHER: OTHER_CONTENT}
    host = nvims.start("host", make_project(tmp_path / "host", files))
    host.lua("require('collab').setup({ name = 'ana' })")
    host.edit(REL)
    url = host.share()
    host.wait_connected(REL)
    guest = nvims.start("guest", make_project(tmp_path / "guest", files))
    guest.lua("require('collab').setup({ name = 'bo' })")
    guest.edit(REL)
    guest.join(url)
    guest.wait_connected(REL)
    return host, guest


def test_yank_is_pasteable_from_the_same_register_in_the_other(
    nvims: Fleet, tmp_path: Path
) -> None:
    host, guest = _pair(nvims, tmp_path)
    host.cursor_to(1, 0)
    host.input('"ayy')
    wait_until(
        lambda: guest.nvim.funcs.getreg("a") == "last 中文 line\n",
        20,
        "register a yanked in the host, in the guest",
    )
    assert guest.nvim.funcs.getregtype("a") == "V"
    # An unnamed yank reaches the guest's unnamed register: a plain `p` pastes it.
    host.cursor_to(0, 2)
    host.input("yiw")
    wait_until(lambda: guest.nvim.funcs.getreg('"') == "shared", 20, "unnamed register")
    guest.cursor_to(0, 0)
    guest.input('"ap')
    text = wait_until(
        lambda: host.text(REL).count("last 中文 line") == 2 and host.text(REL),
        20,
        "the guest's paste of register a, in both buffers",
    )
    assert text == "# shared notes\nlast 中文 line\nlast 中文 line\n"


def test_follow_opens_the_file_the_other_moves_to(nvims: Fleet, tmp_path: Path) -> None:
    host, guest = _pair(nvims, tmp_path)
    wait_until(lambda: host.lua("return #require('collab').peers()") == 1, 20, "bo at ana")
    guest.nvim.command("CollabFollow ana")
    host.edit(OTHER)
    host.wait_connected(OTHER)
    host.cursor_to(0, 4)
    wait_until(
        lambda: str(guest.nvim.current.buffer.name).endswith("/guest/" + OTHER),
        20,
        f"the guest's Neovim in {OTHER}",
    )
    wait_until(lambda: guest.text(OTHER) == OTHER_CONTENT, 20, "the followed file's text")
    guest.nvim.command("CollabUnfollow")


def test_u_undoes_only_your_own_edit(nvims: Fleet, tmp_path: Path) -> None:
    host, guest = _pair(nvims, tmp_path)
    host.insert_at(0, 0, "HOST ")
    guest.wait_contains("HOST ", REL, 20)
    guest.insert_at(1, 0, "GUEST ")
    host.wait_contains("GUEST ", REL, 20)
    both = "HOST # shared notes\nGUEST last 中文 line\n"
    wait_converged([host, guest], REL, 20, "both edits everywhere", lambda t: t == both)
    host.input("u")
    undone = "# shared notes\nGUEST last 中文 line\n"
    wait_converged([host, guest], REL, 20, "the host's undo", lambda t: t == undone)
    host.input("<C-r>")
    wait_converged([host, guest], REL, 20, "the host's redo", lambda t: t == both)
