"""Presence through real collab-ls processes and the embedded relay (pytest-lsp clients)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types

from collab_ls.units import Encoding
from tests.editor_model import position
from tests.lsp_editor import LspEditor, eventually

pytestmark = pytest.mark.timeout(120)

REL = "src/main.txt"
INITIAL = "first line\nsecond: é中😀|tail\nthird\n"


def _workspace(tmp: Path, name: str, content: str = INITIAL) -> Path:
    root = tmp / name
    (root / "src").mkdir(parents=True)
    (root / REL).write_text(content)
    (root / "other.txt").write_text("other file\n")
    return root


class Peer:
    """An LspEditor that records presence notifications."""

    def __init__(self, editor: LspEditor) -> None:
        self.ed = editor
        self.peers: list[Any] = []
        self.chats: list[Any] = []

    async def start(self, name: str, *args: str) -> None:
        await self.ed.start(*args, "--name", name)
        client = self.ed.client

        @client.feature("$/collab/peers")
        def on_peers(params: Any) -> None:
            self.peers.append(params)

        @client.feature("$/collab/chat")
        def on_chat(params: Any) -> None:
            self.chats.append(params)

        @client.feature(types.WORKSPACE_INLAY_HINT_REFRESH)
        def on_refresh(params: None) -> None:
            return None

    @property
    def shown(self) -> list[types.ShowDocumentParams]:
        return list(self.ed.client.shown_documents)

    def last(self) -> list[Any]:
        return list(self.peers[-1].peers) if self.peers else []

    def cursor_of(self, name: str) -> tuple[int, int] | None:
        for p in self.last():
            if p.name == name and p.cursor is not None:
                return (p.cursor.line, p.cursor.character)
        return None

    def send_cursor(self, rel: str, pos: tuple[int, int]) -> None:
        uri = self.ed.buffers[rel].uri
        point = {"line": pos[0], "character": pos[1]}
        self.ed.client.protocol.notify(
            "$/collab/cursor", {"uri": uri, "ranges": [{"start": point, "end": point}]}
        )


@pytest.fixture
async def peers(tmp_path: Path) -> AsyncIterator[tuple[Peer, Peer]]:
    host = Peer(LspEditor("host", _workspace(tmp_path, "host"), "neovim"))
    guest = Peer(LspEditor("guest", _workspace(tmp_path, "guest", "stale\n"), "visual-studio-code"))
    try:
        await host.start("ana", "--share")
        await eventually(lambda: any("--join" in m for m in host.ed.messages), what="join URL")
        host.ed.open(REL)
        url = await host.ed.command("collab.shareUrl")
        await guest.start("bo", "--join", url)
        guest.ed.open(REL)
        await eventually(lambda: guest.ed.buffers[REL].text == INITIAL, what="initial sync")
        yield host, guest
    finally:
        await asyncio.gather(host.ed.stop(), guest.ed.stop(), return_exceptions=True)


async def test_cursor_report_reaches_the_other_peer_in_its_encoding(
    peers: tuple[Peer, Peer],
) -> None:
    host, guest = peers
    assert host.ed.encoding is Encoding.UTF8 and guest.ed.encoding is Encoding.UTF16
    index = INITIAL.index("|tail")  # right after multi-byte text
    host.send_cursor(REL, position(INITIAL, index, host.ed.encoding))
    expected = position(INITIAL, index, Encoding.UTF16)
    await eventually(lambda: guest.cursor_of("ana") == expected, what="ana's cursor at bo")
    entry = next(p for p in guest.last() if p.name == "ana")
    assert entry.uri == guest.ed.buffers[REL].uri
    assert entry.colour.startswith("#")
    # The guest types before the cursor: it moves with its character.
    guest.ed.type(REL, 0, "中😀\n")
    text = "中😀\n" + INITIAL
    moved = position(text, text.index("|tail"), Encoding.UTF16)
    await eventually(lambda: guest.cursor_of("ana") == moved, what="ana's cursor moved")
    # And the host sees it in UTF-8 after the guest's edit reached it.
    await eventually(lambda: host.ed.buffers[REL].text == text, what="host got the edit")
    hints = await guest.ed.client.text_document_inlay_hint_async(
        types.InlayHintParams(
            text_document=types.TextDocumentIdentifier(uri=guest.ed.buffers[REL].uri),
            range=types.Range(types.Position(0, 0), types.Position(10, 0)),
        )
    )
    assert hints is not None
    assert [(h.label, h.position.line, h.position.character) for h in hints] == [("ana", *moved)]


async def test_hover_position_is_a_cursor_for_stock_clients(peers: tuple[Peer, Peer]) -> None:
    host, guest = peers
    index = INITIAL.index("😀")
    pos = position(INITIAL, index, Encoding.UTF16)
    result = await guest.ed.client.text_document_hover_async(
        types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=guest.ed.buffers[REL].uri),
            position=types.Position(*pos),
        )
    )
    assert result is None
    expected = position(INITIAL, index, Encoding.UTF8)
    await eventually(lambda: host.cursor_of("bo") == expected, what="bo's hover at ana")
    peers_list = await host.ed.command("collab.peers")
    assert [p["name"] for p in peers_list] == ["ana", "bo"]


async def test_follow_chat_and_leaving(peers: tuple[Peer, Peer]) -> None:
    host, guest = peers
    host.send_cursor(REL, (2, 1))
    await eventually(lambda: guest.cursor_of("ana") == (2, 1), what="ana's cursor")
    result = await guest.ed.client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="collab.follow", arguments=["ana"])
    )
    assert result["following"] == "ana"
    await eventually(lambda: bool(guest.shown), what="showDocument on follow")
    assert guest.shown[-1].uri == guest.ed.buffers[REL].uri
    assert guest.shown[-1].take_focus is True
    assert guest.shown[-1].selection is not None
    assert guest.shown[-1].selection.start.line == 2
    # The followed peer switches file: the follower is taken there.
    host.ed.open("other.txt")
    host.send_cursor("other.txt", (0, 3))
    await eventually(
        lambda: guest.shown[-1].uri.endswith("/guest/other.txt"), what="follow to other.txt"
    )
    await guest.ed.client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="collab.unfollow", arguments=[])
    )
    # Chat reaches the other peer as $/collab/chat and showMessage.
    await host.ed.client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="collab.chat", arguments=["hello 中 😀"])
    )
    await eventually(lambda: any(c.text == "hello 中 😀" for c in guest.chats), what="chat")
    # (each message comes in its own notification: wait for them, not just the first)
    await eventually(
        lambda: any("ana: hello 中 😀" in m for m in guest.ed.messages), what="showMessage"
    )
    await eventually(lambda: any(c.self for c in host.chats), what="own chat echo")
    # The guest leaves: it disappears from the host's peers.
    await eventually(lambda: host.cursor_of("bo") is not None or bool(host.last()), what="bo")
    await guest.ed.stop()
    await eventually(lambda: host.peers and host.last() == [], what="bo gone")


async def test_last_edit_position_is_a_cursor_for_stock_clients(
    peers: tuple[Peer, Peer],
) -> None:
    host, guest = peers
    index = INITIAL.index("|tail")
    guest.ed.type(REL, index, "中😀")  # a stock client: no $/collab/cursor, just typing
    text = INITIAL[:index] + "中😀" + INITIAL[index:]
    expected = position(text, index + 2, Encoding.UTF8)  # right after what was typed
    await eventually(lambda: host.cursor_of("bo") == expected, what="bo's edit position at ana")


async def test_undo_reverts_only_the_callers_edits_and_redo_restores(
    peers: tuple[Peer, Peer],
) -> None:
    host, guest = peers
    host.ed.type(REL, 0, "HOST ")
    await eventually(lambda: guest.ed.buffers[REL].text.startswith("HOST "), what="host edit")
    guest.ed.type(REL, len(guest.ed.buffers[REL].text), "guest line\n")
    both = "HOST " + INITIAL + "guest line\n"
    await eventually(lambda: host.ed.buffers[REL].text == both, what="guest edit at the host")
    result = await host.ed.client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="collab.undo", arguments=[host.ed.buffers[REL].uri])
    )
    assert result["done"] is True and result["document"] == REL
    undone = INITIAL + "guest line\n"  # the guest's line stays
    await eventually(lambda: host.ed.buffers[REL].text == undone, what="undo at the host")
    await eventually(lambda: guest.ed.buffers[REL].text == undone, what="undo at the guest")
    # Nothing more of the host's own to undo: the guest's edit is never undone.
    again = await host.ed.command("collab.undo")
    assert again["done"] is False
    assert host.ed.buffers[REL].text == undone
    redone = await host.ed.command("collab.redo")
    assert redone["done"] is True
    await eventually(lambda: host.ed.buffers[REL].text == both, what="redo at the host")
    await eventually(lambda: guest.ed.buffers[REL].text == both, what="redo at the guest")
    # The undo was not recorded as a new local edit of the host: undo works once more.
    assert (await host.ed.command("collab.undo"))["done"] is True
    await eventually(lambda: guest.ed.buffers[REL].text == undone, what="second undo")


async def test_open_with_peers_opens_the_file_a_peer_opens(peers: tuple[Peer, Peer]) -> None:
    host, guest = peers
    result = await guest.ed.client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="collab.openWithPeers", arguments=[True])
    )
    assert result == {"openWithPeers": True}
    host.ed.open("other.txt")
    host.send_cursor("other.txt", (0, 2))
    await eventually(
        lambda: any(d.uri.endswith("/guest/other.txt") for d in guest.shown),
        what="showDocument of other.txt at the guest",
    )
    shown = next(d for d in guest.shown if d.uri.endswith("/guest/other.txt"))
    assert shown.take_focus is False
    # Off: the host's files stay where they are.
    await guest.ed.client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="collab.openWithPeers", arguments=[False])
    )
    count = len(guest.shown)
    (host.ed.root / "third.txt").write_text("third\n")
    host.ed.open("third.txt")
    host.send_cursor("third.txt", (0, 1))
    await eventually(lambda: guest.cursor_of("ana") == (0, 1), what="ana in third.txt")
    assert len(guest.shown) == count


async def test_register_notification_reaches_the_other_peer(peers: tuple[Peer, Peer]) -> None:
    host, guest = peers
    got: list[Any] = []

    @guest.ed.client.feature("$/collab/register")
    def on_register(params: Any) -> None:
        got.append(params)

    host.ed.client.protocol.notify(
        "$/collab/register", {"register": "a", "contents": ["yanked 中", "two"], "regtype": "V"}
    )
    host.ed.client.protocol.notify(  # the clipboard stays local
        "$/collab/register", {"register": "+", "contents": ["secret"], "regtype": "v"}
    )
    await eventually(lambda: bool(got), what="$/collab/register at the guest")
    assert got[0].register == "a"
    assert list(got[0].contents) == ["yanked 中", "two"]
    assert got[0].regtype == "V" and got[0].name == "ana"
    await asyncio.sleep(0.3)
    assert len(got) == 1


async def test_three_peers_see_the_two_others_cursors(tmp_path: Path) -> None:
    host = Peer(LspEditor("host", _workspace(tmp_path, "host"), "neovim"))
    bo = Peer(LspEditor("bo", _workspace(tmp_path, "bo"), "visual-studio-code"))
    cy = Peer(LspEditor("cy", _workspace(tmp_path, "cy"), "neovim"))
    try:
        await host.start("ana", "--share")
        await eventually(lambda: any("--join" in m for m in host.ed.messages), what="join URL")
        host.ed.open(REL)
        url = await host.ed.command("collab.shareUrl")
        await bo.start("bo", "--join", url)
        await cy.start("cy", "--join", url)
        for p in (bo, cy):
            p.ed.open(REL)
        await eventually(
            lambda: bo.ed.buffers[REL].text == INITIAL == cy.ed.buffers[REL].text,
            what="initial sync of both guests",
        )
        index = INITIAL.index("|tail")
        host.send_cursor(REL, position(INITIAL, index, Encoding.UTF8))
        bo.send_cursor(REL, position(INITIAL, 3, Encoding.UTF16))
        await eventually(
            lambda: (
                cy.cursor_of("ana") == position(INITIAL, index, Encoding.UTF8)
                and cy.cursor_of("bo") == position(INITIAL, 3, Encoding.UTF8)
            ),
            what="ana's and bo's cursors at cy",
        )
        names = sorted(p.name for p in cy.last())
        assert names == ["ana", "bo"]
        await eventually(lambda: bo.cursor_of("ana") is not None, what="ana's cursor at bo")
        await eventually(lambda: host.cursor_of("bo") is not None, what="bo's cursor at ana")
    finally:
        await asyncio.gather(host.ed.stop(), bo.ed.stop(), cy.ed.stop(), return_exceptions=True)
