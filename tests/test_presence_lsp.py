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
    assert any("ana: hello 中 😀" in m for m in guest.ed.messages)
    assert any(c.self for c in host.chats)
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
