"""The custom LSP surface of collab-ls, defined once for the server and editor configs.

Positions are LSP positions in the encoding negotiated with the editor (the
``positionEncoding`` of the ``initialize`` result).

Commands (``workspace/executeCommand``):

``collab.shareUrl``
    Returns the session's join URL (a string), or ``null`` before the session
    is up.
``collab.status``
    Returns ``{"role": "host"|"guest", "url": str|null, "connected": bool,
    "documents": [relative paths]}``.
``collab.peers``
    Returns everyone in the session, this peer first: ``[{"id": int, "name":
    str, "colour": "#rrggbb", "document": str|null, "self": bool, ...}]``;
    other peers also carry the fields of a ``$/collab/peers`` entry.
``collab.follow`` (argument: a peer's name)
    Follow that peer: ``window/showDocument`` (``takeFocus: true``, the
    peer's cursor as ``selection``) whenever it changes file or moves, until
    ``collab.unfollow`` or the peer leaves. Returns ``{"following": name}``;
    an error if nobody has that name.
``collab.unfollow``
    Stop following. Returns ``{"following": null}``.
``collab.chat`` (argument: the message)
    Send a chat message to everyone in the session. Returns ``{"sent": true}``.
``collab.undo`` / ``collab.redo`` (optional argument: a document URI)
    Undo (redo) this peer's own last edit in that document, by default the
    one edited last; a peer's edits are never undone. The change reaches this
    editor as a ``workspace/applyEdit`` and every peer like any edit. Local
    edits less than 0.5 s apart are one step. Returns ``{"done": bool,
    "document": str|null}`` (``done`` is false when there is nothing to undo).
``collab.openWithPeers`` (argument: true or false; none: toggle)
    When on, a shared file a peer opens (its awareness ``document`` changes to
    a file not open here) is opened in this editor too, in the background:
    ``window/showDocument`` with ``takeFocus: false``. Also the
    ``openWithPeers`` initialization option. Returns ``{"openWithPeers": bool}``.

Notifications from the server:

``$/collab/status``
    ``{"connected": bool, "message": str, "url": str|null}`` whenever the
    link to the relay changes state (also shown with ``window/showMessage``).
``$/collab/peers``
    ``{"peers": [{"id": int, "name": str, "colour": "#rrggbb", "document":
    str|null, "uri": str|null, "ranges": [Range], "cursor": Position|null}]}``:
    every other peer, in this editor's coordinates, whenever that changes
    (batched, at most one per 30 ms). ``cursor`` is the head of the first
    range; ``uri``/``ranges`` are empty when the peer is in no shared file.
``$/collab/chat``
    ``{"name": str, "colour": str, "text": str, "time": ms since the epoch,
    "self": bool}`` for every chat message (this peer's own too, with
    ``self: true``). Others' messages also come as ``window/showMessage``.

``$/collab/register``
    ``{"register": str, "contents": [str], "regtype": str, "name": str}``: a
    peer yanked into a register (Vim register name, lines, ``getregtype()``
    value such as ``v``, ``V`` or ``<C-V>5``); ``name`` is who yanked.

Notifications to the server:

``$/collab/register``
    ``{"register": str, "contents": [str], "regtype": str}``: this editor
    yanked (sent by the Neovim config on ``TextYankPost``); collab-ls writes it
    into the session's ``registers`` map for every peer.

``$/collab/cursor``
    ``{"uri": str, "ranges": [Range]}``: this editor's cursor and selections;
    in each range ``start`` is the anchor and ``end`` the cursor (so ``start``
    may come after ``end`` for a backward selection). Once an editor sends
    this, collab-ls stops guessing the cursor from requests and edits.
"""

from __future__ import annotations

from typing import Final

CMD_SHARE_URL: Final = "collab.shareUrl"
CMD_STATUS: Final = "collab.status"
CMD_PEERS: Final = "collab.peers"
CMD_FOLLOW: Final = "collab.follow"
CMD_UNFOLLOW: Final = "collab.unfollow"
CMD_CHAT: Final = "collab.chat"
CMD_UNDO: Final = "collab.undo"
CMD_REDO: Final = "collab.redo"
CMD_OPEN_WITH_PEERS: Final = "collab.openWithPeers"
COMMANDS: Final = (
    CMD_SHARE_URL,
    CMD_STATUS,
    CMD_PEERS,
    CMD_FOLLOW,
    CMD_UNFOLLOW,
    CMD_CHAT,
    CMD_UNDO,
    CMD_REDO,
    CMD_OPEN_WITH_PEERS,
)

NOTIFY_STATUS: Final = "$/collab/status"
NOTIFY_PEERS: Final = "$/collab/peers"
NOTIFY_CHAT: Final = "$/collab/chat"
NOTIFY_CURSOR: Final = "$/collab/cursor"
NOTIFY_REGISTER: Final = "$/collab/register"
