"""The relay: a y-websocket server that carries rooms between collab-ls peers.

Clients connect to ``ws[s]://HOST:PORT/<room>?secret=<secret>``: the room id
is the path, the secret a query parameter, so the standard Yjs
``WebsocketProvider`` (which takes ``params``) can connect as well as
:class:`collab_ls.relay_link.RelayLink`.

Rooms and secrets (trust on first use): a room that does not exist (in
memory or in the store) is created by its first connection, with that
connection's secret as the read-write secret and its ``ro`` parameter, if
any, as the read-only secret (see :mod:`relay.links`). Both must be at least
22 characters (128 bits). This is safe because room ids are random 128-bit
strings made by the host that starts a session: nobody can guess one to
squat it before the host connects. A host embedding a :class:`Relay` can
also register its room up front with :meth:`Relay.create_room`. A wrong or
missing secret gets the websocket accepted and then closed with 4403 and a
reason naming the room; the room is untouched.

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

Plain HTTP on the same port (see :mod:`relay.http`): ``/healthz``,
``/metrics`` and the host's admin endpoints ``/rooms/<room>[/rotate|/remove]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl as ssl_module
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.http11 import Request, Response

from relay import protocol
from relay.keepalive import DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT, check_ping_settings
from relay.links import (
    MIN_SECRET_CHARS,
    READ_ONLY_PARAM,
    SECRET_PARAM,
    Access,
    SessionLinks,
    new_secret,
    session_links,
)
from relay.metrics import RelayMetrics
from relay.peer import (
    CLOSE_TIMEOUT,
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
from relay.redis_store import RedisStore
from relay.room import ReadOnlyError, Room, UpdateRejectedError
from relay.routing import RpcRouter
from relay.service import Service
from relay.store import SqliteStore, StoreError

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MAX_PEERS_PER_ROOM",
    "DEFAULT_MAX_ROOMS",
    "DEFAULT_PING_INTERVAL",
    "DEFAULT_PING_TIMEOUT",
    "DEFAULT_RATE_BURST",
    "DEFAULT_RATE_LIMIT",
    "Relay",
    "RelayError",
    "TokenBucket",
]

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_PEERS_PER_ROOM = 64
DEFAULT_MAX_ROOMS = 10_000
#: Messages per second per connection, sustained; a fast typist sends ~20.
DEFAULT_RATE_LIMIT = 500.0
#: Messages a connection may send at once (a reconnect, a burst of awareness).
DEFAULT_RATE_BURST = 2000
#: Seconds a room without peers stays in memory when a store can reload it.
DEFAULT_IDLE_TIMEOUT = 600.0

_log = logging.getLogger(__name__)

_MESSAGE_KINDS: dict[type[Message], str] = {
    SyncStep1: "sync_step1",
    SyncStep2: "sync_step2",
    SyncUpdate: "update",
    AwarenessMessage: "awareness",
    QueryAwareness: "query_awareness",
    AuthDenied: "auth",
    RpcSend: "rpc",
}

#: The name of :class:`~relay.peer.Peer` before it had its own module.
_Peer = Peer


class RelayError(Exception):
    """Misuse of a :class:`Relay` (started twice, not started, room conflict, no such room)."""


class Relay(Service):
    """A y-websocket relay server, as an async context manager.

    Example::

        async with Relay(port=0) as relay:
            relay.create_room(room_id, secret, read_only_secret=ro_secret)
            links = relay.links(room_id, secret, ro_secret)
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_queue: int = 1024,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_peers_per_room: int = DEFAULT_MAX_PEERS_PER_ROOM,
        max_rooms: int = DEFAULT_MAX_ROOMS,
        rate_limit: float | None = DEFAULT_RATE_LIMIT,
        rate_burst: int = DEFAULT_RATE_BURST,
        store: SqliteStore | RedisStore | Path | str | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        ssl: ssl_module.SSLContext | None = None,
        ping_interval: float | None = DEFAULT_PING_INTERVAL,
        ping_timeout: float = DEFAULT_PING_TIMEOUT,
    ) -> None:
        """Configure a relay; nothing listens until :meth:`start`.

        Args:
            host: The interface to listen on.
            port: The port; 0 picks a free one (see :attr:`port`).
            max_queue: Messages queued per peer before it counts as a slow consumer.
            max_message_bytes: Larger incoming messages close their connection (1009).
            max_peers_per_room: Connections a room admits at once (4503 beyond).
            max_rooms: Rooms held in memory at once; a new room beyond is refused (4503).
            rate_limit: Messages per second a connection may send, sustained
                (4429 beyond); ``None`` for no limit.
            rate_burst: Messages a connection may send at once.
            store: A SQLite store, or the path of one; or a
                :class:`~relay.redis_store.RedisStore` shared with other relay
                nodes (scale-out). The relay starts and stops it unless it was
                started already. ``None`` keeps rooms in memory only.
            idle_timeout: Seconds after which a room without peers is evicted
                from memory (only with a store, which reloads it on demand).
            ssl: A server TLS context: the relay then speaks ``wss://``.
            ping_interval: Seconds between the pings of each connection;
                ``None`` sends none (a silent peer then lingers until its
                awareness times out, 30 s).
            ping_timeout: Seconds a pong may take before its connection is
                dropped as dead (1011).
        """
        if max_queue < 1 or max_message_bytes < 1 or max_peers_per_room < 1 or max_rooms < 1:
            raise ValueError(
                "max_queue, max_message_bytes, max_peers_per_room, max_rooms must be >= 1"
            )
        if rate_limit is not None and (rate_limit <= 0 or rate_burst < 1):
            raise ValueError("rate_limit must be positive and rate_burst at least 1")
        check_ping_settings(ping_interval, ping_timeout)
        self.host = host
        self._requested_port = port
        self.max_queue = max_queue
        self._max_message_bytes = max_message_bytes
        self._max_peers = max_peers_per_room
        self._max_rooms = max_rooms
        self._rate = rate_limit
        self._burst = rate_burst
        self._idle_timeout = idle_timeout
        self._ssl = ssl
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        # The relay stops a store it started (given as a path, or not started yet).
        self._owns_store = False
        self._store: SqliteStore | RedisStore | None = None
        if isinstance(store, SqliteStore | RedisStore):
            self._store = store
        elif store is not None:
            self._store = SqliteStore(store)
        self._rooms: dict[str, Room] = {}
        self._pinned: set[str] = set()
        self._loading: dict[str, asyncio.Future[Room | None]] = {}
        self._server: Server | None = None
        self._port: int | None = None
        self._was_started = False
        self._peer_ids = itertools.count(1)
        self._connections: set[ServerConnection] = set()
        self._peers: dict[str, Peer] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # The perf_counter time the message being forwarded was received.
        self._received_at: float | None = None
        self.metrics = RelayMetrics(
            rooms=lambda: len(self._rooms), connections=lambda: len(self._peers)
        )
        self._router = RpcRouter(self.metrics)
        if self._store is not None:
            self._store_callbacks(self._store)
        if isinstance(self._store, RedisStore):
            self._store.set_feed(_NodeFeed(self))
            self._router = RpcRouter(self.metrics, self._store.publish_rpc)

    @property
    def started(self) -> bool:
        """Whether the relay is listening."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The port the relay listens on.

        Raises:
            RelayError: If the relay was not started.
        """
        if self._port is None:
            raise RelayError("relay not started")
        return self._port

    @property
    def store(self) -> SqliteStore | RedisStore | None:
        """The store, if any."""
        return self._store

    @property
    def rooms(self) -> dict[str, Room]:
        """The rooms held in memory, by id (a copy)."""
        return dict(self._rooms)

    @property
    def base_url(self) -> str:
        """``ws://host:port`` (``wss://`` with TLS)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'wss' if self._ssl else 'ws'}://{host}:{self.port}"

    def url(self, room: str, secret: str) -> str:
        """The URL a client uses to join a room.

        Args:
            room: The room id.
            secret: The room secret (read-write or read-only).

        Returns:
            ``ws://host:port/<room>?secret=<secret>``, quoted as needed.
        """
        return session_links(self.base_url, room, secret).read_write

    def links(self, room: str, secret: str, read_only_secret: str | None = None) -> SessionLinks:
        """The room's join URLs on this relay (read-write, read-only and the host's)."""
        return session_links(self.base_url, room, secret, read_only_secret)

    def create_room(self, room: str, secret: str, *, read_only_secret: str | None = None) -> Room:
        """Register a room before anyone connects (or get it if it exists).

        A room registered this way stays in memory for the life of the relay.

        Args:
            room: The room id.
            secret: Its read-write secret (at least 22 characters).
            read_only_secret: Its read-only secret, if it has one; for an
                existing room, replaces the read-only secret.

        Returns:
            The room.

        Raises:
            RelayError: If the room exists with another read-write secret, or
                a secret is too short.
        """
        existing = self._rooms.get(room)
        if existing is not None:
            if not existing.secret_matches(secret):
                raise RelayError(f"room {room} already exists with another secret")
            if read_only_secret is not None and existing.access(read_only_secret) is None:
                self._revoke(existing, Access.READ_ONLY, read_only_secret)
            self._pinned.add(room)
            return existing
        for value in (secret, read_only_secret):
            if value is not None and len(value) < MIN_SECRET_CHARS:
                raise RelayError(f"secrets must have at least {MIN_SECRET_CHARS} characters")
        created = self._add_room(Room(room, secret, read_only_secret))
        self._pinned.add(room)
        self._persist_secrets(created)
        return created

    async def rotate_secret(
        self, room: str, access: Access = Access.READ_ONLY, secret: str | None = None
    ) -> str:
        """Replace one of a room's secrets (revoke a link); its holders are disconnected (4403).

        Args:
            room: The room id.
            access: Which link to rotate.
            secret: The new secret (default: a fresh 128-bit one).

        Returns:
            The new secret.

        Raises:
            RelayError: If there is no such room or the secret is too short.
        """
        target = await self._room_for(room)
        if target is None:
            raise RelayError(f"no room {room}")
        secret = secret or new_secret()
        if len(secret) < MIN_SECRET_CHARS:
            raise RelayError(f"secrets must have at least {MIN_SECRET_CHARS} characters")
        self._revoke(target, access, secret)
        if self._store is not None:
            await self._store.save_room(target.room_id, target.rw_digest, target.ro_digest)
        return secret

    def remove_peer(
        self, room: str, *, client_id: int | None = None, peer_id: str | None = None
    ) -> int:
        """Disconnect a peer (4403), by the awareness client id it announced or its peer id.

        Removing a peer does not stop it from coming back with its link:
        rotate that link too to keep it out.

        Returns:
            How many connections were closed.
        """
        target = self._rooms.get(room)
        if target is None:
            return 0
        removed = 0
        for handle in target.peers:
            if not isinstance(handle, Peer):
                continue
            if handle.peer_id == peer_id or (
                client_id is not None and client_id in target.awareness_clients(handle)
            ):
                handle.kick(CloseCode.FORBIDDEN, "removed from the session by the host", "removed")
                removed += 1
        return removed

    def room_info(self, room: str) -> dict[str, Any] | None:
        """The connected peers of a room in memory, for the admin endpoint."""
        target = self._rooms.get(room)
        if target is None:
            return None
        peers = []
        for handle in target.peers:
            access = target.peer_access(handle)
            peers.append(
                {
                    "peer": handle.peer_id,
                    "access": None if access is None else access.value,
                    "clients": target.awareness_clients(handle),
                }
            )
        return {"room": room, "read_only_link": target.ro_digest is not None, "peers": peers}

    async def start(self) -> None:
        """Start listening (and open the store).

        Raises:
            RelayError: If the relay was started before.
            StoreError: If the store cannot be opened.
            OSError: If the address cannot be bound.
        """
        if self._was_started:
            raise RelayError("relay already started (a Relay runs once)")
        self._was_started = True
        if self._store is not None and not self._store.started:
            await self._store.start()
            self._owns_store = True
        for room in self._rooms.values():
            self._persist_secrets(room)
        from relay import http

        async def process_request(conn: ServerConnection, request: Request) -> Response | None:
            return await http.process_request(self, conn, request)

        try:
            self._server = await serve(
                self._handle,
                self.host,
                self._requested_port,
                max_size=self._max_message_bytes,
                close_timeout=CLOSE_TIMEOUT,
                # Each peer pings by itself (Peer.watch_pings), to leave its
                # room as soon as a pong is late.
                ping_interval=None,
                # Like y-websocket's reference server: per-connection deflate
                # would compress every forwarded update once per peer.
                compression=None,
                ssl=self._ssl,
                process_request=process_request,
                logger=_log.getChild("websockets"),
            )
        except BaseException:
            if self._store is not None and self._owns_store:
                await self._store.stop()
            raise
        self._port = int(self._server.sockets[0].getsockname()[1])
        if self._store is not None:
            self._spawn(self._sweep_idle_rooms())
        _log.info(
            "relay listening on %s (store: %s)",
            self.base_url,
            self._store.path if self._store else "none, rooms in memory",
        )

    async def stop(self) -> None:
        """Close every connection (1001), stop listening and close the store. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT + 1):
                await server.wait_closed()
        except TimeoutError:
            # Peers that stopped reading cannot complete the closing handshake.
            for ws in self._connections:
                ws.transport.abort()
            await server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._store is not None and self._owns_store:
            await self._store.stop()
        _log.info("relay on port %s stopped", self._port)

    # Rooms

    def _add_room(self, room: Room, position: str | None = None) -> Room:
        self._rooms[room.room_id] = room
        if self._store is not None:
            store = self._store
            room_id = room.room_id
            room.on_direct_update = lambda update: self._spawn(store.append(room_id, update))
            if isinstance(store, RedisStore):
                room.on_local_awareness = lambda raw: store.publish_awareness(room_id, raw)
                # No await since the room was added: nothing written after
                # ``position`` can be missed.
                store.follow(room_id, position)
        return room

    def _persist_secrets(self, room: Room) -> None:
        if self._store is not None and self._store.started:
            self._spawn(self._store.save_room(room.room_id, room.rw_digest, room.ro_digest))

    def _revoke(self, room: Room, access: Access, secret: str | None) -> None:
        for handle in room.set_secret(access, secret):
            if isinstance(handle, Peer):
                handle.kick(CloseCode.FORBIDDEN, f"the {access.value} link was revoked", "revoked")

    async def _room_for(self, room_id: str) -> Room | None:
        """The room in memory, or loaded from the store; ``None`` if neither has it."""
        room = self._rooms.get(room_id)
        if room is not None or self._store is None or not self._store.started:
            return room
        pending = self._loading.get(room_id)
        if pending is None:
            pending = asyncio.ensure_future(self._load_room(self._store, room_id))
            self._loading[room_id] = pending
            pending.add_done_callback(lambda _: self._loading.pop(room_id, None))
        await asyncio.shield(pending)
        return self._rooms.get(room_id)

    async def _load_room(self, store: SqliteStore | RedisStore, room_id: str) -> Room | None:
        stored = await store.load_room(room_id)
        if stored is None or room_id in self._rooms:
            return self._rooms.get(room_id)
        room = Room.from_digests(room_id, stored.rw_digest, stored.ro_digest)
        room.load(stored.updates)
        self.metrics.rooms_loaded.inc()
        _log.info("room %s loaded from the store (%d rows)", room_id, len(stored.updates))
        return self._add_room(room, stored.position)

    async def _sweep_idle_rooms(self) -> None:
        period = max(0.05, min(self._idle_timeout / 2, 30.0))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for room_id, room in list(self._rooms.items()):
                if room_id in self._pinned or room.peers:
                    continue
                if now - room.last_active >= self._idle_timeout:
                    del self._rooms[room_id]
                    if isinstance(self._store, RedisStore):
                        self._store.unfollow(room_id)
                    self.metrics.rooms_evicted.inc()
                    _log.info("room %s evicted from memory (idle)", room_id)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("background task failed: %s", task.exception())

    def _store_callbacks(self, store: SqliteStore | RedisStore) -> None:
        metrics = self.metrics

        def on_commit(seconds: float, count: int) -> None:
            metrics.store_write_latency.observe(seconds)

        def on_compact(room_id: str) -> None:
            metrics.compactions.inc()

        store.set_callbacks(on_commit=on_commit, on_compact=on_compact)

    async def _save_new_room(self, store: SqliteStore | RedisStore, room: Room) -> None:
        if not isinstance(store, RedisStore):
            await store.save_room(room.room_id, room.rw_digest, room.ro_digest)
            return
        # Another node may have created the room meanwhile: its secrets win
        # (the room's document is still synced from the shared log).
        rw, ro = await store.create_room(room.room_id, room.rw_digest, room.ro_digest)
        if (rw, ro) != (room.rw_digest, room.ro_digest):
            _log.info("room %s was created on another node first", room.room_id)
            self._secrets_changed(room, rw, ro)

    def _secrets_changed(self, room: Room, rw: bytes, ro: bytes | None) -> None:
        for access, digest, old in (
            (Access.READ_WRITE, rw, room.rw_digest),
            (Access.READ_ONLY, ro, room.ro_digest),
        ):
            if digest == old:
                continue
            for handle in room.set_digest(access, digest):
                if isinstance(handle, Peer):
                    reason = f"the {access.value} link was revoked"
                    handle.kick(CloseCode.FORBIDDEN, reason, "revoked")

    # Connections

    async def _handle(self, ws: ServerConnection) -> None:
        self._connections.add(ws)
        try:
            await self._handle_connection(ws)
        finally:
            self._connections.discard(ws)

    async def _refuse(
        self, ws: ServerConnection, log: ContextLogger, code: int, reason: str, why: str
    ) -> None:
        log.warning("refused: %s", reason, extra={"event": why})
        self.metrics.rejected.inc(reason=why)
        await close(ws, code, protocol.close_reason(reason))

    async def _handle_connection(self, ws: ServerConnection) -> None:
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
        try:
            room = await self._room_for(room_id)
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
            if len(self._rooms) >= self._max_rooms:
                reason = f"relay full ({self._max_rooms} rooms), try later"
                await self._refuse(ws, log, CloseCode.FULL, reason, "relay_full")
                return
            room = self._add_room(Room(room_id, secret, ro_secret))
            if self._store is not None:
                try:
                    await self._save_new_room(self._store, room)
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
        self._peers[peer_id] = peer
        self.metrics.connections_accepted.inc(access=access.value)
        log.info("joined %s (%d peers)", access.value, len(room.peers), extra={"event": "join"})
        try:
            await self._serve_peer(ws, room, peer)
        finally:
            self._peers.pop(peer_id, None)

    async def _serve_peer(self, ws: ServerConnection, room: Room, peer: Peer) -> None:
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

    async def _read_loop(self, ws: ServerConnection, room: Room, peer: Peer) -> None:
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
        if self._store is None:
            self._commit(room, peer, update, raw, received)
            return
        # Keep reading while the write is in flight: a burst from one peer
        # goes into one commit. The commit loop forwards in order once written.
        written = self._store.append_nowait(room.room_id, update)
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


class _NodeFeed:
    """What the other relay nodes send through Redis, applied to this node's rooms."""

    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    def remote_update(self, room_id: str, update: bytes) -> None:
        room = self._relay._rooms.get(room_id)
        if room is None:
            return
        try:
            room.apply_remote(update)
        except UpdateRejectedError as exc:
            _log.error("room %s: update from another node rejected: %s", room_id, exc)

    def remote_awareness(self, room_id: str, message: bytes) -> None:
        room = self._relay._rooms.get(room_id)
        if room is None:
            return
        try:
            parsed = protocol.parse_message(message)
        except ProtocolError as exc:
            _log.warning("room %s: bad awareness from another node: %s", room_id, exc)
            return
        if isinstance(parsed, AwarenessMessage):
            room.apply_remote_awareness(parsed, message)

    def remote_rpc(self, room_id: str, to: int, message: bytes) -> None:
        room = self._relay._rooms.get(room_id)
        if room is not None:
            self._relay._router.deliver_remote(room, to, message)

    def local_awareness(self, room_id: str) -> bytes | None:
        room = self._relay._rooms.get(room_id)
        return None if room is None else room.local_awareness_message()

    def secrets_changed(self, room_id: str, rw_digest: bytes, ro_digest: bytes | None) -> None:
        room = self._relay._rooms.get(room_id)
        if room is not None:
            self._relay._secrets_changed(room, rw_digest, ro_digest)
