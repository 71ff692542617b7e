"""The relay's websocket connections: admitting each one, then serving it as a peer.

Admission: the room id is the path, the secret the ``secret`` query
parameter. A room unknown in memory and in the store is created by its first
connection (trust on first use, see :mod:`relay.server`); otherwise the
secret must be the room's read-write or read-only one, and the room must
have room for one more peer.

Per connection: the relay sends its SyncStep1 and the current awareness,
answers SyncStep1 with SyncStep2, stores updates (with a store), forwards
them to the other peers and then applies them to the room document (which
late joiners sync from), and removes a peer's awareness when it leaves.
RPC messages (collab-ls' own type, :mod:`relay.protocol`) are addressed by
awareness client id and delivered by :mod:`relay.routing`; read-only peers
may send them. Every message is parsed and checked before it is stored,
forwarded or applied, and counts against the size and rate limits. Each
connection is pinged every ``ping_interval`` seconds; one whose pong is
``ping_timeout`` seconds late is dead (a frozen process, a lost network) and
leaves its room at once, its awareness removed for everyone
(:mod:`relay.keepalive`). Close codes (:class:`~relay.protocol.CloseCode`),
each with a reason:

* 4400 malformed message, 1009 message bigger than ``max_message_bytes``;
* 4403 wrong, missing or revoked secret, or removed by the host;
* 4405 a read-only connection sent a change;
* 4408 slow consumer: its bounded send queue overflowed;
* 4429 more messages than the per-connection rate limit (token bucket);
* 4503 room full (``max_peers_per_room``) or relay full (``max_rooms``);
* 1011 the store failed, or the keepalive ping timed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from relay import protocol
from relay.links import MIN_SECRET_CHARS, READ_ONLY_PARAM, SECRET_PARAM
from relay.local import RelayConnection
from relay.metrics import RelayMetrics
from relay.peer import (
    ContextLogger,
    Peer,
    PendingCommit,
    TokenBucket,
    address,
    close,
    describe_close,
)
from relay.protocol import (
    AuthDenied,
    AwarenessMessage,
    CloseCode,
    Message,
    ProtocolError,
    QueryAwareness,
    RpcSend,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
)
from relay.registry import RoomRegistry
from relay.room import ReadOnlyError, Room, UpdateRejectedError
from relay.routing import RpcRouter
from relay.store import StoreError

__all__ = ["ConnectionHandler"]

# The relay's records keep the logger name they always had.
_log = logging.getLogger("relay.server")

_MESSAGE_KINDS: dict[type[Message], str] = {
    SyncStep1: "sync_step1",
    SyncStep2: "sync_step2",
    SyncUpdate: "update",
    AwarenessMessage: "awareness",
    QueryAwareness: "query_awareness",
    AuthDenied: "auth",
    RpcSend: "rpc",
}


class ConnectionHandler:
    """Serves the websocket connections of one relay, each until it leaves."""

    def __init__(
        self,
        registry: RoomRegistry,
        router: RpcRouter,
        metrics: RelayMetrics,
        *,
        max_queue: int,
        max_peers_per_room: int,
        max_rooms: int,
        rate_limit: float | None,
        rate_burst: int,
        ping_interval: float | None,
        ping_timeout: float,
    ) -> None:
        """Serve nothing yet; the limits are :class:`~relay.server.Relay`'s."""
        self._registry = registry
        self._router = router
        self.metrics = metrics
        #: Messages queued per peer before it counts as a slow consumer.
        self.max_queue = max_queue
        self._max_peers = max_peers_per_room
        self._max_rooms = max_rooms
        self._rate = rate_limit
        self._burst = rate_burst
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._peer_ids = itertools.count(1)
        #: The open websocket connections, admitted or not.
        self.connections: set[RelayConnection] = set()
        #: The connected peers, by peer id.
        self.peers: dict[str, Peer] = {}
        # The perf_counter time the message being forwarded was received.
        self._received_at: float | None = None

    async def handle(self, ws: RelayConnection) -> None:
        """Serve one connection until it closes (the websockets server's handler)."""
        self.connections.add(ws)
        try:
            await self._handle_connection(ws)
        finally:
            self.connections.discard(ws)

    async def _refuse(
        self, ws: RelayConnection, log: ContextLogger, code: int, reason: str, why: str
    ) -> None:
        log.warning("refused: %s", reason, extra={"event": why})
        self.metrics.rejected.inc(reason=why)
        await close(ws, code, protocol.close_reason(reason))

    async def _handle_connection(self, ws: RelayConnection) -> None:
        peer_id = f"#{next(self._peer_ids)}@{address(ws)}"
        target = urlsplit(ws.request.path if ws.request is not None else "/")
        room_id = unquote(target.path.lstrip("/"))
        query = parse_qs(target.query)
        secret = query.get(SECRET_PARAM, [None])[0]
        ro_secret = query.get(READ_ONLY_PARAM, [None])[0]
        log = ContextLogger(_log, {"room": room_id or "-", "peer": peer_id})
        if not room_id:
            await self._refuse(
                ws,
                log,
                CloseCode.BAD_MESSAGE,
                "missing room id in path: use /<room>?secret=...",
                "no_room",
            )
            return
        registry = self._registry
        try:
            room = await registry.room_for(room_id)
        except (StoreError, UpdateRejectedError) as exc:
            await self._refuse(ws, log, CloseCode.INTERNAL_ERROR, f"store: {exc}", "store_error")
            return
        if room is None and secret:
            # Created with no await since the lookup: clients racing to open
            # a new room all land in the same one.
            short = [v for v in (secret, ro_secret) if v is not None and len(v) < MIN_SECRET_CHARS]
            if short:
                reason = f"a new room needs secrets of at least {MIN_SECRET_CHARS} characters"
                await self._refuse(ws, log, CloseCode.FORBIDDEN, reason, "short_secret")
                return
            if len(registry.rooms) >= self._max_rooms:
                reason = f"relay full ({self._max_rooms} rooms), try later"
                await self._refuse(ws, log, CloseCode.FULL, reason, "relay_full")
                return
            room = registry.add(Room(room_id, secret, ro_secret))
            if registry.store is not None:
                try:
                    await registry.save_new_room(registry.store, room)
                except StoreError as exc:
                    await self._refuse(ws, log, CloseCode.INTERNAL_ERROR, str(exc), "store_error")
                    return
            log.info(
                "room created by its first connection%s",
                " (with a read-only link)" if ro_secret else "",
                extra={"event": "room_created"},
            )
        access = None if room is None else room.access(secret)
        if room is None or access is None:
            reason = f"wrong or missing secret for room {room_id}"
            await self._refuse(ws, log, CloseCode.FORBIDDEN, reason, "bad_secret")
            return
        if len(room.peers) >= self._max_peers:
            reason = f"room full ({self._max_peers} peers), try later"
            await self._refuse(ws, log, CloseCode.FULL, reason, "room_full")
            return
        peer = Peer(
            ws,
            room,
            peer_id,
            metrics=self.metrics,
            max_queue=self.max_queue,
            received_at=lambda: self._received_at,
            log=log,
        )
        room.join(peer, access)
        self.peers[peer_id] = peer
        self.metrics.connections_accepted.inc(access=access.value)
        log.info("joined %s (%d peers)", access.value, len(room.peers), extra={"event": "join"})
        try:
            await self._serve_peer(ws, room, peer)
        finally:
            self.peers.pop(peer_id, None)

    async def _serve_peer(self, ws: RelayConnection, room: Room, peer: Peer) -> None:
        writer = asyncio.create_task(peer.write_loop())
        reader = asyncio.create_task(self._read_loop(ws, room, peer))
        kicked = asyncio.create_task(peer.kicked.wait())
        committer = asyncio.create_task(self._commit_loop(room, peer))
        tasks = [writer, reader, kicked]
        if self._ping_interval is not None:
            tasks.append(
                asyncio.create_task(peer.watch_pings(self._ping_interval, self._ping_timeout))
            )
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await task
            # Updates already accepted are written: commit them to the room
            # even though their sender is leaving, or the room would lack
            # what the store has.
            await peer.commits.put(None)
            await committer
            room.leave(peer)
            if peer.close_code is not None:
                await close(ws, peer.close_code, peer.close_reason)
        log_done = peer.log.info if peer.close_code is None else peer.log.debug
        log_done(
            "left (%d peers): %s", len(room.peers), describe_close(ws), extra={"event": "leave"}
        )

    async def _read_loop(self, ws: RelayConnection, room: Room, peer: Peer) -> None:
        bucket = None if self._rate is None else TokenBucket(self._rate, self._burst)
        metrics = self.metrics
        try:
            async for data in ws:
                if peer.close_code is not None:
                    return
                received = time.perf_counter()
                metrics.bytes_in.inc(len(data))
                if bucket is not None and not bucket.take():
                    reason = f"rate limit: more than {self._rate:g} messages/s"
                    peer.kick(CloseCode.RATE_LIMITED, reason, "rate_limited")
                    return
                if isinstance(data, str):
                    metrics.messages_in.inc(type="invalid")
                    reason = "text frame: y-websocket messages are binary"
                    peer.kick(CloseCode.BAD_MESSAGE, reason, "bad_message")
                    return
                try:
                    message = protocol.parse_message(data)
                    metrics.messages_in.inc(type=_MESSAGE_KINDS[type(message)])
                    if isinstance(message, SyncStep2 | SyncUpdate):
                        await self._handle_update(room, peer, message.update, data, received)
                    elif isinstance(message, RpcSend):
                        self._router.route(room, peer, message)
                    else:
                        room.handle(peer, message, data)
                        if isinstance(message, AwarenessMessage):
                            self._router.note_awareness(room, peer, message)
                except ProtocolError as exc:
                    metrics.messages_in.inc(type="invalid")
                    peer.kick(CloseCode.BAD_MESSAGE, str(exc), "bad_message")
                    return
                except UpdateRejectedError as exc:
                    peer.kick(CloseCode.BAD_MESSAGE, str(exc), "bad_message")
                    return
                except ReadOnlyError as exc:
                    peer.kick(CloseCode.READ_ONLY, str(exc), "read_only")
                    return
                except StoreError as exc:
                    peer.kick(CloseCode.INTERNAL_ERROR, str(exc), "store_error")
                    return
        except ConnectionClosedError as exc:
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                metrics.rejected.inc(reason="too_big")
                peer.log.warning("closed (1009): %s", exc.sent.reason, extra={"event": "too_big"})

    async def _handle_update(
        self, room: Room, peer: Peer, update: bytes, raw: bytes, received: float
    ) -> None:
        if not room.accept_update(peer, update):
            return
        store = self._registry.store
        if store is None:
            self._commit(room, peer, update, raw, received)
            return
        # Keep reading while the write is in flight: a burst from one peer
        # goes into one commit. The commit loop forwards in order once written.
        written = store.append_nowait(room.room_id, update)
        await peer.commits.put(PendingCommit(update, raw, received, written))

    async def _commit_loop(self, room: Room, peer: Peer) -> None:
        failed = False
        while (item := await peer.commits.get()) is not None:
            try:
                await item.written
            except StoreError as exc:
                if not failed:
                    failed = True
                    room.abandon_update()
                    peer.kick(CloseCode.INTERNAL_ERROR, str(exc), "store_error")
                continue
            try:
                self._commit(room, peer, item.update, item.raw, item.received)
            except UpdateRejectedError as exc:
                peer.kick(CloseCode.BAD_MESSAGE, str(exc), "bad_message")

    def _commit(self, room: Room, peer: Peer, update: bytes, raw: bytes, received: float) -> None:
        self._received_at = received
        try:
            room.commit_update(peer, update, raw)
        finally:
            self._received_at = None
