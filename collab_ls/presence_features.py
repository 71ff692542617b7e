"""The presence features of the language server: cursors, inlay hints and commands.

Stock editors never report their cursor, but hover, document highlight and
completion requests carry it: each one tells presence
(:class:`~collab_ls.presence_shell.Presence`) where this user is. Peers'
cursors come back as inlay hints, and the ``collab.*`` commands let the user
list peers, follow one, chat, undo or redo their own edits and choose whether
to open the files peers open.
"""

from __future__ import annotations

from typing import Any

from lsprotocol import types

from collab_ls.presence_shell import FollowError
from collab_ls.protocol import (
    CMD_CHAT,
    CMD_FOLLOW,
    CMD_OPEN_WITH_PEERS,
    CMD_PEERS,
    CMD_REDO,
    CMD_UNDO,
    CMD_UNFOLLOW,
)

# Not under TYPE_CHECKING: pygls evaluates a command handler's annotations
# (``ls: CollabServer``) when the command is executed with arguments. Hence
# collab_ls.server imports this module only when it builds a server.
from collab_ls.server import CollabServer

__all__ = ["register_presence"]


def _record_position(ls: CollabServer, uri: str, position: types.Position) -> None:
    if ls.presence is not None:
        ls.presence.position_seen(uri, position.line, position.character)


def _argument(args: tuple[Any, ...], what: str) -> str:
    # pygls passes `arguments` either spread or as one list, depending on the client.
    if len(args) == 1 and isinstance(args[0], list):
        args = tuple(args[0])
    if not args or not isinstance(args[0], str) or not args[0]:
        raise ValueError(f"{what} is required")
    return args[0]


def _optional_argument(args: tuple[Any, ...]) -> str | None:
    if len(args) == 1 and isinstance(args[0], list):
        args = tuple(args[0])
    return args[0] if args and isinstance(args[0], str) and args[0] else None


def register_presence(server: CollabServer) -> None:
    """Presence features: cursor sources, inlay hints and the presence commands."""

    # Stock clients never report their cursor, but these requests carry it.
    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(ls: CollabServer, params: types.HoverParams) -> None:
        _record_position(ls, params.text_document.uri, params.position)

    @server.feature(types.TEXT_DOCUMENT_DOCUMENT_HIGHLIGHT)
    def highlight(ls: CollabServer, params: types.DocumentHighlightParams) -> None:
        _record_position(ls, params.text_document.uri, params.position)

    @server.feature(types.TEXT_DOCUMENT_COMPLETION)
    def completion(ls: CollabServer, params: types.CompletionParams) -> None:
        _record_position(ls, params.text_document.uri, params.position)

    @server.feature(types.TEXT_DOCUMENT_INLAY_HINT)
    def inlay_hint(ls: CollabServer, params: types.InlayHintParams) -> list[types.InlayHint]:
        if ls.presence is None:
            return []
        r = params.range
        hints = ls.presence.inlay_hints(
            params.text_document.uri,
            (r.start.line, r.start.character),
            (r.end.line, r.end.character),
        )
        return [
            types.InlayHint(
                position=types.Position(line=pos[0], character=pos[1]),
                label=name,
                tooltip=f"{name}'s cursor (collab-ls)",
                padding_left=True,
                padding_right=True,
            )
            for pos, name, _colour in hints
        ]

    @server.command(CMD_PEERS)
    def peers(ls: CollabServer, *args: Any) -> list[dict[str, Any]]:
        return ls.presence.peers() if ls.presence else []

    @server.command(CMD_FOLLOW)
    def follow(ls: CollabServer, *args: Any) -> dict[str, Any]:
        name = _argument(args, "collab.follow: the name of the peer to follow")
        if ls.presence is None:
            raise FollowError("the session is not up")
        return ls.presence.follow(name)

    @server.command(CMD_UNFOLLOW)
    def unfollow(ls: CollabServer, *args: Any) -> dict[str, Any]:
        return ls.presence.unfollow() if ls.presence else {"following": None}

    @server.command(CMD_UNDO)
    def undo(ls: CollabServer, *args: Any) -> dict[str, Any]:
        return ls.undo(_optional_argument(args), redo=False)

    @server.command(CMD_REDO)
    def redo(ls: CollabServer, *args: Any) -> dict[str, Any]:
        return ls.undo(_optional_argument(args), redo=True)

    @server.command(CMD_OPEN_WITH_PEERS)
    def open_with_peers(ls: CollabServer, *args: Any) -> dict[str, Any]:
        if len(args) == 1 and isinstance(args[0], list):
            args = tuple(args[0])
        on = not ls.open_with_peers if not args else args[0] is True or args[0] == "true"
        ls.open_with_peers = on
        if ls.presence is not None:
            ls.presence.open_with_peers = on
        return {"openWithPeers": on}

    @server.command(CMD_CHAT)
    def chat(ls: CollabServer, *args: Any) -> dict[str, Any]:
        message = _argument(args, "collab.chat: the message")
        if ls.presence is None:
            raise ValueError("the session is not up")
        return ls.presence.chat(message)
