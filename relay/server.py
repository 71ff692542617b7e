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

A host embedding the relay in its own event loop connects its own link with
:meth:`Relay.connect_local`: an in-memory connection (:mod:`relay.local`)
served like any websocket one, minus the framing and the loopback socket.

This module is the service: its settings, starting and stopping, and the
host's API. The rest is in:

* :mod:`relay.connection`: each connection, from admission to leave (sync,
  forwarding, limits, keepalive) and the close codes;
* :mod:`relay.registry`: the rooms in memory, loaded from, saved to and
  evicted with the store, and the host's operations on them;
* :mod:`relay.http`: plain HTTP on the same port: ``/healthz``,
  ``/metrics`` and the host's admin endpoints ``/rooms/<room>[/rotate|/remove]``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from relay import protocol
from relay.connection import ConnectionHandler
from relay.keepalive import DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT, check_ping_settings
from relay.links import Access, SessionLinks, session_links
from relay.local import LocalConnection, local_pair
from relay.metrics import RelayMetrics
from relay.peer import CLOSE_TIMEOUT, Peer, TokenBucket
from relay.protocol import AwarenessMessage, CloseCode, ProtocolError
from relay.redis_store import RedisStore
from relay.registry import RelayError, RoomRegistry
from relay.room import Room, UpdateRejectedError
from relay.routing import RpcRouter
from relay.service import Service
from relay.store import SqliteStore

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

#: The name of :class:`~relay.peer.Peer` before it had its own module.
_Peer = Peer


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
        self._max_message_bytes = max_message_bytes
        self._ssl = ssl
        # The relay stops a store it started (given as a path, or not started yet).
        self._owns_store = False
        self._store: SqliteStore | RedisStore | None = None
        if isinstance(store, SqliteStore | RedisStore):
            self._store = store
        elif store is not None:
            self._store = SqliteStore(store)
        self._server: Server | None = None
        self._port: int | None = None
        # In-process connections (connect_local): their client ends, and the
        # tasks serving their relay ends.
        self._local: dict[LocalConnection, asyncio.Task[None]] = {}
        self._was_started = False
        self.metrics = RelayMetrics(
            rooms=lambda: len(self._registry.rooms),
            connections=lambda: len(self._handler.peers),
        )
        self._registry = RoomRegistry(self._store, self.metrics, idle_timeout=idle_timeout)
        self._router = RpcRouter(self.metrics)
        if isinstance(self._store, RedisStore):
            self._store.set_feed(_NodeFeed(self))
            self._router = RpcRouter(self.metrics, self._store.publish_rpc)
        self._handler = ConnectionHandler(
            self._registry,
            self._router,
            self.metrics,
            max_queue=max_queue,
            max_peers_per_room=max_peers_per_room,
            max_rooms=max_rooms,
            rate_limit=rate_limit,
            rate_burst=rate_burst,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
        )

    @property
    def max_queue(self) -> int:
        """Messages queued per peer before it counts as a slow consumer."""
        return self._handler.max_queue

    @max_queue.setter
    def max_queue(self, value: int) -> None:
        self._handler.max_queue = value

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
        return dict(self._registry.rooms)

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
        return self._registry.create(room, secret, read_only_secret=read_only_secret)

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
        return await self._registry.rotate_secret(room, access, secret)

    def remove_peer(
        self, room: str, *, client_id: int | None = None, peer_id: str | None = None
    ) -> int:
        """Disconnect a peer (4403), by the awareness client id it announced or its peer id.

        Removing a peer does not stop it from coming back with its link:
        rotate that link too to keep it out.

        Returns:
            How many connections were closed.
        """
        return self._registry.remove_peer(room, client_id=client_id, peer_id=peer_id)

    def room_info(self, room: str) -> dict[str, Any] | None:
        """The connected peers of a room in memory, for the admin endpoint."""
        return self._registry.info(room)

    async def connect_local(self, url: str) -> LocalConnection:
        """Open an in-process connection, for a link in the relay's own event loop.

        The relay serves it as it serves a websocket connection to ``url``
        (admission by its path and secret, then the same room, limits and
        keepalive), but messages pass as objects: see :mod:`relay.local`.

        Args:
            url: A join URL of this relay (only its path and query are used).

        Returns:
            The client end; close it to leave.

        Raises:
            ConnectionRefusedError: If the relay is not running.
        """
        if self._server is None:
            raise ConnectionRefusedError(f"relay not running, cannot connect to {self.base_url}")
        client, server = local_pair(url)
        task = asyncio.create_task(self._handler.handle(server), name="relay-local")
        self._local[client] = task
        task.add_done_callback(lambda _: self._local.pop(client, None))
        return client

    async def _room_for(self, room_id: str) -> Room | None:
        """The room in memory, or loaded from the store; ``None`` if neither has it."""
        return await self._registry.room_for(room_id)

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
        for room in self._registry.rooms.values():
            self._registry.persist_secrets(room)
        from relay import http

        async def process_request(conn: ServerConnection, request: Request) -> Response | None:
            return await http.process_request(self, conn, request)

        try:
            self._server = await serve(
                self._handler.handle,
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
            self._registry.start_sweeping()
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
        for client in list(self._local):
            await client.close(CloseCode.GOING_AWAY)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT + 1):
                await server.wait_closed()
        except TimeoutError:
            # Peers that stopped reading cannot complete the closing handshake.
            for ws in self._handler.connections:
                ws.transport.abort()
            await server.wait_closed()
        if self._local:
            await asyncio.gather(*self._local.values(), return_exceptions=True)
        await self._registry.cancel_tasks()
        if self._store is not None and self._owns_store:
            await self._store.stop()
        _log.info("relay on port %s stopped", self._port)


class _NodeFeed:
    """What the other relay nodes send through Redis, applied to this node's rooms."""

    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    def remote_update(self, room_id: str, update: bytes) -> None:
        room = self._relay._registry.rooms.get(room_id)
        if room is None:
            return
        try:
            room.apply_remote(update)
        except UpdateRejectedError as exc:
            _log.error("room %s: update from another node rejected: %s", room_id, exc)

    def remote_awareness(self, room_id: str, message: bytes) -> None:
        room = self._relay._registry.rooms.get(room_id)
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
        room = self._relay._registry.rooms.get(room_id)
        if room is not None:
            self._relay._router.deliver_remote(room, to, message)

    def local_awareness(self, room_id: str) -> bytes | None:
        room = self._relay._registry.rooms.get(room_id)
        return None if room is None else room.local_awareness_message()

    def secrets_changed(self, room_id: str, rw_digest: bytes, ro_digest: bytes | None) -> None:
        room = self._relay._registry.rooms.get(room_id)
        if room is not None:
            self._relay._registry.secrets_changed(room, rw_digest, ro_digest)
