"""Presence, the shell: this editor's cursor out, the peers in, follow mode and chat.

Glue between the pure core (:mod:`collab_ls.presence`), the awareness of the
relay link, the session document and the language client (through the
:class:`PresenceClient` callbacks the server provides). Everything here runs
on the server's event loop, outside the edit path: the edit path only records
the last change (:meth:`Presence.edited`) and at most starts a timer.

Updates are batched: every cause (a cursor report, an edit, a peer's
awareness update, a peer's edit) marks work and starts one timer of
:data:`DEBOUNCE` seconds; when it fires, the local state is published once
and ``$/collab/peers`` is sent if what this editor should show changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pycrdt

from collab_ls import presence
from collab_ls.binding import DocBinding
from collab_ls.linetext import LineText
from collab_ls.presence import PeerState, Pos
from collab_ls.protocol import NOTIFY_CHAT, NOTIFY_PEERS
from collab_ls.reconcile import Change, RangeChange
from collab_ls.session import Session, path_uri
from collab_ls.units import Encoding, blen

DEBOUNCE = 0.03
"""Seconds between a cause and the update it triggers (updates are batched)."""
CPU_SHARE = 0.1
"""Presence takes at most about this share of the CPU: in a very large
non-ASCII document, where anchoring a cursor costs milliseconds, updates are
spaced out (at 10 MB: a few per second) instead of taxing every keystroke."""
MAX_DELAY = 1.0
"""Seconds: the longest the spacing gets."""


class PresenceClient(Protocol):
    """What presence needs from the language server."""

    def notify(self, method: str, params: Any) -> None:
        """Send a notification to the editor."""

    def show_document(self, uri: str, cursor: Pos | None, *, take_focus: bool = True) -> None:
        """``window/showDocument``, the cursor (if any) selected."""

    def refresh_inlay_hints(self) -> None:
        """``workspace/inlayHint/refresh``, if the editor supports it."""

    def show_message(self, message: str) -> None:
        """``window/showMessage`` (info)."""


@dataclass(frozen=True)
class PeerView:
    """A peer as this editor should show it (its coordinates, its encoding)."""

    peer: PeerState
    uri: str | None
    ranges: list[tuple[Pos, Pos]]

    @property
    def cursor(self) -> Pos | None:
        return self.ranges[0][1] if self.ranges else None

    def to_json(self) -> dict[str, Any]:
        cursor = self.cursor
        return {
            "id": self.peer.client_id,
            "name": self.peer.name,
            "colour": self.peer.colour,
            "document": self.peer.document,
            "uri": self.uri,
            "ranges": [presence.lsp_range(a, h) for a, h in self.ranges],
            "cursor": None if cursor is None else presence.lsp_position(cursor),
        }


class FollowError(ValueError):
    """``collab.follow`` named nobody in the session."""


class Presence:
    """Presence of one editor in the session."""

    def __init__(
        self,
        *,
        name: str,
        doc: pycrdt.Doc[Any],
        session: Session,
        awareness: pycrdt.Awareness,
        encoding: Encoding,
        root: Path,
        bindings: Mapping[str, DocBinding],
        client: PresenceClient,
        logger: logging.Logger,
    ) -> None:
        self.name = name
        self.colour = presence.colour_for(name)
        self._doc = doc
        self._session = session
        self._awareness = awareness
        self._encoding = encoding
        self._root = root
        self._bindings = bindings
        self._client = client
        self._log = logger
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._delay = DEBOUNCE
        self._document: str | None = None
        self._ranges: list[dict[str, Any]] = []
        self._local_dirty = True
        self._explicit = False  # the editor reports its cursor itself ($/collab/cursor)
        self._pending_edit: tuple[DocBinding, Change] | None = None
        self._last_peers: list[dict[str, Any]] | None = None
        self._following: int | None = None
        self._follow_last: tuple[str, Pos] | None = None
        self._chat_live = False
        self.open_with_peers = False
        """Open the shared files peers open (``collab.openWithPeers``)."""
        self._peer_docs: dict[int, str | None] = {}
        self._sub: str | None = None
        self._chat_sub: pycrdt.Subscription | None = None

    # --------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Publish this peer and start watching the others and the chat."""
        self._sub = self._awareness.observe(self._on_awareness)
        self._chat_sub = self._session.chat.observe(self._on_chat)
        self._publish()

    def stop(self) -> None:
        """Stop watching (the link is going away)."""
        if self._timer:
            self._timer.cancel()
            self._timer = None
        if self._sub is not None:
            self._awareness.unobserve(self._sub)
            self._sub = None
        if self._chat_sub is not None:
            self._session.chat.unobserve(self._chat_sub)
            self._chat_sub = None

    def connected(self) -> None:
        """The link synced with the relay: chat entries from now on are news, not history."""
        self._chat_live = True

    # ---------------------------------------------------------- local cursor

    def cursor_report(self, params: Any) -> None:
        """``$/collab/cursor``: ``{uri, ranges: [Range]}`` with ``end`` as the cursor."""
        params = _plain(params)
        try:
            uri = params["uri"]
            ranges = [
                (
                    (int(r["start"]["line"]), int(r["start"]["character"])),
                    (int(r["end"]["line"]), int(r["end"]["character"])),
                )
                for r in params["ranges"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            self._log.warning("ignored a malformed %s: %s", "$/collab/cursor", exc)
            return
        self._explicit = True
        self._pending_edit = None
        self._set_cursor(uri, ranges)

    def position_seen(self, uri: str, line: int, character: int) -> None:
        """A position from a request the editor sent anyway (hover, highlight, completion)."""
        if not self._explicit:
            self._pending_edit = None
            self._set_cursor(uri, [((line, character), (line, character))])

    def edited(self, binding: DocBinding, changes: list[Change]) -> None:
        """The editor changed ``binding`` (called on the edit path: records only)."""
        if not self._explicit and changes:
            self._pending_edit = (binding, changes[-1])
            self._local_dirty = True
        if self._timer is None and (self._pending_edit or len(self._awareness.states) > 1):
            self._schedule()

    def text_moved(self, binding: DocBinding) -> None:
        """A peer's edit reached ``binding``: peers' positions there may have moved."""
        if self._timer is None and len(self._awareness.states) > 1:
            self._schedule()

    def documents_changed(self) -> None:
        """A document was opened or closed (coordinates of peers there change)."""
        self._schedule()

    def _set_cursor(self, uri: str, ranges: list[tuple[Pos, Pos]]) -> None:
        binding = self._bindings.get(uri)
        text = self._session.text(binding.key) if binding and binding.bound else None
        if binding is None or text is None:
            document, anchored = None, []
        else:
            document = binding.key
            anchored = presence.encode_ranges(text, binding.sync.shadow, ranges, self._encoding)
        self._document, self._ranges = document, anchored
        self._local_dirty = True
        self._schedule()

    def _take_pending_edit(self) -> None:
        pending, self._pending_edit = self._pending_edit, None
        if pending is None:
            return
        binding, change = pending
        text = self._session.text(binding.key) if binding.bound else None
        if text is None or not isinstance(change, RangeChange):
            return
        lines = binding.sync.shadow
        start = presence.to_offset(
            lines, (change.start_line, change.start_character), self._encoding
        )
        end = min(start + blen(change.text), lines.byte_len)
        head = presence.to_position(lines, end, self._encoding)
        self._document = binding.key
        self._ranges = presence.encode_ranges(text, lines, [(head, head)], self._encoding)

    def _publish(self) -> None:
        self._local_dirty = False
        self._awareness.set_local_state(
            presence.local_state(self.name, self.colour, self._document, self._ranges)
        )

    # ------------------------------------------------------------------ peers

    def _on_awareness(self, topic: str, change: tuple[dict[str, Any], Any]) -> None:
        if topic == "change" and change[1] != "local":
            self._schedule()

    def _schedule(self) -> None:
        if self._timer is None:
            self._timer = self._loop.call_later(self._delay, self._flush)

    def _flush(self) -> None:
        self._timer = None
        started = time.perf_counter()
        try:
            self._take_pending_edit()
            if self._local_dirty:
                self._publish()
            views = self.views()
            payload = [v.to_json() for v in views]
            if payload != self._last_peers:
                self._last_peers = payload
                self._client.notify(NOTIFY_PEERS, {"peers": payload})
                self._client.refresh_inlay_hints()
            self._follow(views)
            self._open_peers_documents(views)
        except Exception:
            self._log.exception("presence update failed")
        spent = time.perf_counter() - started
        self._delay = min(MAX_DELAY, max(DEBOUNCE, spent / CPU_SHARE))

    def views(self) -> list[PeerView]:
        """Every other peer, in this editor's coordinates."""
        peers = presence.other_peers(self._awareness.states, self._awareness.client_id)
        if not peers:
            return []
        state = presence.decode_state_vector(self._doc.get_state())
        by_key = {b.key: b for b in self._bindings.values() if b.bound}
        lines_cache: dict[str, LineText] = {}
        out = []
        for peer in peers:
            key = peer.document
            text = self._session.text(key) if key else None
            if key is None or text is None:
                out.append(PeerView(peer, None, []))
                continue
            binding = by_key.get(key)
            if binding is not None:
                uri, lines = binding.uri, binding.sync.shadow
            else:
                uri = path_uri(self._root, key)
                if key not in lines_cache:
                    lines_cache[key] = LineText(str(text))
                lines = lines_cache[key]
            ranges = presence.decode_ranges(text, lines, peer.ranges, self._encoding, state)
            out.append(PeerView(peer, uri, ranges))
        return out

    def peers(self) -> list[dict[str, Any]]:
        """``collab.peers``: everyone in the session, this peer first."""
        me = {
            "id": self._awareness.client_id,
            "name": self.name,
            "colour": self.colour,
            "document": self._document,
            "self": True,
        }
        others = [{**v.to_json(), "self": False} for v in self.views()]
        return [me, *others]

    def inlay_hints(self, uri: str, start: Pos, end: Pos) -> list[tuple[Pos, str, str]]:
        """Peer cursors in ``uri`` between ``start`` and ``end``: ``(position, name, colour)``."""
        hints = []
        for view in self.views():
            cursor = view.cursor
            if view.uri == uri and cursor is not None and start <= cursor <= end:
                hints.append((cursor, view.peer.name, view.peer.colour))
        return hints

    # ----------------------------------------------------------------- follow

    def follow(self, name: str) -> dict[str, Any]:
        """``collab.follow``: follow the peer called ``name`` (case-insensitive)."""
        peers = presence.other_peers(self._awareness.states, self._awareness.client_id)
        match = [p for p in peers if p.name == name] or [
            p for p in peers if p.name.casefold() == name.casefold()
        ]
        if not match:
            here = ", ".join(p.name for p in peers) or "nobody else"
            raise FollowError(f"no peer called {name!r} in the session (here: {here})")
        self._following = match[0].client_id
        self._follow_last = None
        self._schedule()
        return {"following": match[0].name}

    def unfollow(self) -> dict[str, Any]:
        """``collab.unfollow``."""
        self._following = None
        self._follow_last = None
        return {"following": None}

    @property
    def following(self) -> int | None:
        """The client id of the followed peer, if any."""
        return self._following

    def _follow(self, views: list[PeerView]) -> None:
        if self._following is None:
            return
        view = next((v for v in views if v.peer.client_id == self._following), None)
        if view is None:
            self._following = self._follow_last = None
            self._client.show_message("collab-ls: the peer you followed left; not following")
            return
        cursor = view.cursor
        if view.uri is None or cursor is None:
            return
        where = (view.uri, cursor)
        if where != self._follow_last:
            self._follow_last = where
            self._client.show_document(view.uri, cursor)

    # ------------------------------------------------------ open with peers

    def _open_peers_documents(self, views: list[PeerView]) -> None:
        """Open, in the background, a shared file a peer moved to that is not open here."""
        # A document the session does not hold yet counts once it does.
        seen = {v.peer.client_id: v.peer.document if v.uri else None for v in views}
        opened = {b.key for b in self._bindings.values()}
        for view in views:
            key = view.peer.document
            if (
                self.open_with_peers
                and key is not None
                and key != self._peer_docs.get(view.peer.client_id)
                and key not in opened
                and view.uri is not None
            ):
                opened.add(key)
                self._client.show_document(view.uri, None, take_focus=False)
        self._peer_docs = seen

    # ------------------------------------------------------------------- chat

    def chat(self, message: str) -> dict[str, Any]:
        """``collab.chat``: append a message to the session's chat."""
        entry = {
            "client": self._awareness.client_id,
            "name": self.name,
            "colour": self.colour,
            "text": message,
            "time": int(time.time() * 1000),
        }
        self._session.chat.append(entry)
        self._client.notify(NOTIFY_CHAT, {**_chat_view(entry), "self": True})
        return {"sent": True}

    def _on_chat(self, event: Any) -> None:
        if not self._chat_live:
            return  # the history that came with the first sync
        for part in getattr(event, "delta", []) or []:
            for entry in part.get("insert", []) if isinstance(part, dict) else []:
                if not isinstance(entry, dict) or entry.get("client") == self._awareness.client_id:
                    continue
                view = _chat_view(entry)
                self._loop.call_soon(self._deliver_chat, view)

    def _deliver_chat(self, view: dict[str, Any]) -> None:
        self._client.notify(NOTIFY_CHAT, {**view, "self": False})
        self._client.show_message(f"{view['name']}: {view['text']}")


def _plain(value: Any) -> Any:
    """pygls hands custom params over as namedtuples (``Object``): back to JSON values."""
    if hasattr(value, "_asdict"):
        value = value._asdict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _chat_view(entry: Mapping[str, Any]) -> dict[str, Any]:
    name = entry.get("name")
    name = name if isinstance(name, str) else "someone"
    colour = entry.get("colour")
    text = entry.get("text")
    stamp = entry.get("time")
    return {
        "name": name,
        "colour": colour if isinstance(colour, str) else presence.colour_for(name),
        "text": text if isinstance(text, str) else str(text),
        "time": int(stamp) if isinstance(stamp, int | float) else 0,
    }
