"""The relay: a y-websocket server that carries rooms between collab-ls peers.

Clients connect to ``ws://HOST:PORT/<room>?secret=<secret>``: the room id is
the path, the secret a query parameter, so the standard Yjs
``WebsocketProvider`` (which takes ``params``) can connect as well as
:class:`collab_ls.relay_link.RelayLink`.

Rooms and secrets (trust on first use): a room that does not exist is
created by its first connection, with that connection's secret; every later
connection must present the same secret. This is safe because room ids are
random 128-bit strings made by the host that starts a session: nobody can
guess one to squat it before the host connects. A host embedding a
:class:`Relay` can also register its room up front with
:meth:`Relay.create_room`. A wrong or missing secret gets the websocket
accepted and then closed with code 4403 and a reason naming the room; the
room is untouched.

Per connection: the relay sends its SyncStep1 and the current awareness,
answers SyncStep1 with SyncStep2, forwards updates and awareness to the other
peers of the room before applying them to the room document (which late
joiners sync from), and removes a peer's awareness when it leaves. Every
message is parsed and checked before it is forwarded or applied: a malformed
one closes only its connection (4400, or 1009 when bigger than
``max_message_bytes``). Each peer has a bounded send queue drained by one
writer task; a peer whose queue overflows is closed with 4408 and never
stalls the others. Rooms live in memory for the life of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import MutableMapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from relay import protocol
from relay.protocol import CloseCode, ProtocolError
from relay.room import Room, UpdateRejectedError

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "Relay", "RelayError"]

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: Seconds a closing handshake may take before the TCP connection is dropped;
#: a peer that stopped reading never completes it.
CLOSE_TIMEOUT = 5.0

_log = logging.getLogger(__name__)


class RelayError(Exception):
    """Misuse of a :class:`Relay` (started twice, not started, room conflict)."""


class _ContextLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every record with ``[room=... peer=...]``."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        context = " ".join(f"{k}={v}" for k, v in (self.extra or {}).items())
        return f"[{context}] {msg}", kwargs


class _Peer:
    """One websocket connection in a room: a bounded queue and its writer."""

    def __init__(
        self, ws: ServerConnection, room: Room, peer_id: str, max_queue: int, log: _ContextLogger
    ) -> None:
        self._ws = ws
        self._room = room
        self._peer_id = peer_id
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(max_queue)
        self.log = log
        self.close_code: int | None = None
        self.close_reason = ""
        self.kicked = asyncio.Event()

    @property
    def peer_id(self) -> str:
        return self._peer_id

    def send(self, data: bytes) -> None:
        if self.close_code is not None:
            return
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            self.kick(CloseCode.SLOW_CONSUMER, "slow consumer: send queue full")

    def kick(self, code: int, reason: str) -> None:
        """Drop the peer from its room and have its handler close it."""
        if self.close_code is not None:
            return
        self.close_code = code
        self.close_reason = protocol.close_reason(reason)
        self.log.warning("closing connection (%d): %s", code, reason)
        self._room.leave(self)
        self.kicked.set()

    async def write_loop(self) -> None:
        while True:
            data = await self._queue.get()
            await self._ws.send(data)


class Relay:
    """A y-websocket relay server, as an async context manager.

    Example::

        async with Relay(port=0) as relay:
            relay.create_room(room_id, secret)
            url = relay.url(room_id, secret)
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_queue: int = 1024,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        """Configure a relay; nothing listens until :meth:`start`.

        Args:
            host: The interface to listen on.
            port: The port; 0 picks a free one (see :attr:`port`).
            max_queue: Messages queued per peer before it counts as a slow consumer.
            max_message_bytes: Larger incoming messages close their connection (1009).
        """
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.host = host
        self._requested_port = port
        self._max_queue = max_queue
        self._max_message_bytes = max_message_bytes
        self._rooms: dict[str, Room] = {}
        self._server: Server | None = None
        self._port: int | None = None
        self._was_started = False
        self._peer_ids = itertools.count(1)
        self._connections: set[ServerConnection] = set()

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
    def rooms(self) -> dict[str, Room]:
        """The rooms by id (a copy)."""
        return dict(self._rooms)

    def url(self, room: str, secret: str) -> str:
        """The URL a client uses to join a room.

        Args:
            room: The room id.
            secret: The room secret.

        Returns:
            ``ws://host:port/<room>?secret=<secret>``, quoted as needed.
        """
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}/{quote(room, safe='')}?{urlencode({'secret': secret})}"

    def create_room(self, room: str, secret: str) -> Room:
        """Register a room before anyone connects (or get it if it exists).

        Args:
            room: The room id.
            secret: Its secret.

        Returns:
            The room.

        Raises:
            RelayError: If the room exists with another secret.
        """
        existing = self._rooms.get(room)
        if existing is not None:
            if not existing.secret_matches(secret):
                raise RelayError(f"room {room} already exists with another secret")
            return existing
        created = Room(room, secret)
        self._rooms[room] = created
        return created

    async def start(self) -> None:
        """Start listening.

        Raises:
            RelayError: If the relay was started before.
            OSError: If the address cannot be bound.
        """
        if self._was_started:
            raise RelayError("relay already started (a Relay runs once)")
        self._was_started = True
        self._server = await serve(
            self._handle,
            self.host,
            self._requested_port,
            max_size=self._max_message_bytes,
            close_timeout=CLOSE_TIMEOUT,
            # Like y-websocket's reference server: per-connection deflate would
            # compress every forwarded update once per peer.
            compression=None,
            logger=_log.getChild("websockets"),
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        _log.info("relay listening on ws://%s:%d", self.host, self._port)

    async def stop(self) -> None:
        """Close every connection (1001) and stop listening. Idempotent."""
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
        _log.info("relay on port %s stopped", self._port)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _handle(self, ws: ServerConnection) -> None:
        self._connections.add(ws)
        try:
            await self._handle_connection(ws)
        finally:
            self._connections.discard(ws)

    async def _handle_connection(self, ws: ServerConnection) -> None:
        peer_id = f"#{next(self._peer_ids)}@{_address(ws)}"
        target = urlsplit(ws.request.path if ws.request is not None else "/")
        room_id = unquote(target.path.lstrip("/"))
        secrets = parse_qs(target.query).get("secret")
        secret = secrets[0] if secrets else None
        log = _ContextLogger(_log, {"room": room_id or "-", "peer": peer_id})
        if not room_id:
            log.warning("refused: no room id in the path")
            await _close(
                ws, CloseCode.BAD_MESSAGE, "missing room id in path: use /<room>?secret=..."
            )
            return
        # Get-or-create with no await in between: clients racing to open a new
        # room all land in the same one.
        room = self._rooms.get(room_id)
        if room is None and secret:
            room = self._rooms[room_id] = Room(room_id, secret)
            log.info("room created by its first connection")
        if room is None or not room.secret_matches(secret):
            reason = f"wrong or missing secret for room {room_id}"
            log.warning("refused: %s", reason)
            await _close(ws, CloseCode.FORBIDDEN, protocol.close_reason(reason))
            return
        peer = _Peer(ws, room, peer_id, self._max_queue, log)
        room.join(peer)
        log.info("joined (%d peers)", len(room.peers))
        await self._serve_peer(ws, room, peer)

    async def _serve_peer(self, ws: ServerConnection, room: Room, peer: _Peer) -> None:
        writer = asyncio.create_task(peer.write_loop())
        reader = asyncio.create_task(self._read_loop(ws, room, peer))
        kicked = asyncio.create_task(peer.kicked.wait())
        tasks = (writer, reader, kicked)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await task
            room.leave(peer)
            if peer.close_code is not None:
                await _close(ws, peer.close_code, peer.close_reason)
        log_done = peer.log.info if peer.close_code is None else peer.log.debug
        log_done("left (%d peers): %s", len(room.peers), _describe_close(ws))

    async def _read_loop(self, ws: ServerConnection, room: Room, peer: _Peer) -> None:
        try:
            async for data in ws:
                if peer.close_code is not None:
                    return
                if isinstance(data, str):
                    peer.kick(CloseCode.BAD_MESSAGE, "text frame: y-websocket messages are binary")
                    return
                try:
                    message = protocol.parse_message(data)
                    room.handle(peer, message, data)
                except (ProtocolError, UpdateRejectedError) as exc:
                    peer.kick(CloseCode.BAD_MESSAGE, str(exc))
                    return
        except ConnectionClosedError as exc:
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                peer.log.warning("closed (1009): %s", exc.sent.reason)


def _address(ws: ServerConnection) -> str:
    try:
        host, port = ws.remote_address[:2]
    except (TypeError, ValueError):
        return "?"
    return f"{host}:{port}"


async def _close(ws: ServerConnection, code: int, reason: str) -> None:
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await ws.close(code, reason)
    except TimeoutError:
        ws.transport.abort()


def _describe_close(ws: ServerConnection) -> str:
    code = ws.close_code
    if code is None:
        return "connection lost"
    return f"code {code}" + (f" {ws.close_reason!r}" if ws.close_reason else "")
