"""One peer connection of the relay: its send queue and writer, limits, pings and identity.

A :class:`Peer` is what a :class:`~relay.room.Room` knows as a
:class:`~relay.room.PeerHandle`: ``send`` never blocks (a bounded queue,
drained by :meth:`Peer.write_loop`; a peer whose queue overflows is a slow
consumer and is dropped). :meth:`Peer.kick` takes a peer out of its room at
once (its awareness removed for everyone) and has the server close it.

Besides, a peer keeps the awareness client ids its connection announced and
did not remove (:attr:`Peer.awareness_ids`), which address RPC messages to it
and stamp the ones it sends (:mod:`relay.routing`), and watches its
connection with pings (:mod:`relay.keepalive`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from websockets.exceptions import ConnectionClosed

from relay import protocol
from relay.keepalive import ping_until_silent
from relay.links import Access
from relay.local import RelayConnection
from relay.metrics import RelayMetrics
from relay.protocol import CloseCode, RpcFlags
from relay.room import Room

__all__ = [
    "CLOSE_TIMEOUT",
    "MAX_PENDING_COMMITS",
    "ContextLogger",
    "Peer",
    "PendingCommit",
    "TokenBucket",
    "address",
    "close",
    "describe_close",
]

#: Seconds a closing handshake may take before the TCP connection is dropped;
#: a peer that stopped reading never completes it.
CLOSE_TIMEOUT = 5.0
#: Updates of one connection being written before the reader waits (backpressure).
MAX_PENDING_COMMITS = 256


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = time.monotonic()

    def take(self, now: float | None = None) -> bool:
        """Take one token; False when the bucket is empty."""
        now = time.monotonic() if now is None else now
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class ContextLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every record with ``[room=... peer=...]`` and attaches the fields."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        fields = dict(self.extra or {})
        context = " ".join(f"{k}={v}" for k, v in fields.items())
        kwargs["extra"] = {**fields, **kwargs.get("extra", {})}
        return f"[{context}] {msg}", kwargs


class PendingCommit:
    """An update accepted by the room's replica, waiting for its store write."""

    __slots__ = ("raw", "received", "update", "written")

    def __init__(
        self, update: bytes, raw: bytes, received: float, written: asyncio.Future[None]
    ) -> None:
        self.update = update
        self.raw = raw
        self.received = received
        self.written = written


class Peer:
    """One connection in a room (websocket or in-process): a bounded queue and its writer."""

    def __init__(
        self,
        ws: RelayConnection,
        room: Room,
        peer_id: str,
        *,
        metrics: RelayMetrics,
        max_queue: int,
        received_at: Callable[[], float | None],
        log: ContextLogger,
    ) -> None:
        """Create a peer; it joins no room by itself.

        Args:
            ws: Its connection.
            room: The room it is in.
            peer_id: A short id for logs.
            metrics: The relay's metrics.
            max_queue: Messages queued before it counts as a slow consumer.
            received_at: The ``perf_counter`` time the message being sent
                was received, if timed (for the fan-out latency).
            log: Its logger.
        """
        self._ws = ws
        self._room = room
        self._peer_id = peer_id
        self._metrics = metrics
        self._received_at = received_at
        self._queue: asyncio.Queue[tuple[bytes, float | None]] = asyncio.Queue(max_queue)
        # With a store: updates accepted and being written, committed in order
        # by one task once written (None ends it).
        self.commits: asyncio.Queue[PendingCommit | None] = asyncio.Queue(MAX_PENDING_COMMITS)
        self.log = log
        self.close_code: int | None = None
        self.close_reason = ""
        self.kicked = asyncio.Event()
        # Insertion-ordered: the last one is the most recently announced.
        self._awareness_ids: dict[int, None] = {}

    @property
    def peer_id(self) -> str:
        return self._peer_id

    @property
    def room(self) -> Room:
        """The room the peer is in."""
        return self._room

    @property
    def queued(self) -> int:
        """Messages waiting in this peer's send queue (its writer is behind)."""
        return self._queue.qsize()

    @property
    def awareness_ids(self) -> tuple[int, ...]:
        """The awareness client ids it announced and did not remove, oldest first."""
        return tuple(self._awareness_ids)

    @property
    def rpc_sender(self) -> int:
        """The ``from`` of its RPC messages: its latest awareness client id, 0 if none."""
        return next(reversed(self._awareness_ids), 0)

    @property
    def rpc_flags(self) -> RpcFlags:
        """The flags of its RPC messages."""
        if self._room.peer_access(self) is Access.READ_ONLY:
            return RpcFlags.READ_ONLY
        return RpcFlags.NONE

    def holds(self, client_id: int) -> bool:
        """Whether it announced ``client_id`` and did not remove it."""
        return client_id in self._awareness_ids

    def announced(self, client_id: int) -> None:
        """Record that its connection announced a present awareness state for ``client_id``."""
        self._awareness_ids.pop(client_id, None)
        self._awareness_ids[client_id] = None

    def forget(self, client_id: int) -> None:
        """Drop ``client_id`` (removed by this peer, or announced by another since)."""
        self._awareness_ids.pop(client_id, None)

    def send(self, data: bytes) -> None:
        if self.close_code is not None:
            return
        try:
            self._queue.put_nowait((data, self._received_at()))
        except asyncio.QueueFull:
            self.kick(CloseCode.SLOW_CONSUMER, "slow consumer: send queue full", "slow_consumer")

    def kick(self, code: int, reason: str, why: str) -> None:
        """Drop the peer from its room and have its handler close it."""
        if self.close_code is not None:
            return
        self.close_code = code
        self.close_reason = protocol.close_reason(reason)
        self._metrics.rejected.inc(reason=why)
        self.log.warning("closing connection (%d): %s", code, reason, extra={"event": why})
        self._room.leave(self)
        self.kicked.set()

    async def write_loop(self) -> None:
        metrics = self._metrics
        while True:
            data, received = await self._queue.get()
            await self._ws.send(data)
            metrics.messages_out.inc()
            metrics.bytes_out.inc(len(data))
            if received is not None:
                metrics.fanout_latency.observe(time.perf_counter() - received)

    async def watch_pings(self, interval: float, pong_within: float) -> None:
        """Ping the connection; kick the peer (1011) when it stops answering."""
        await ping_until_silent(self._ws, interval, pong_within)
        reason = f"keepalive ping timeout: no pong within {pong_within:g} s"
        self.kick(CloseCode.INTERNAL_ERROR, reason, "ping_timeout")


def address(ws: RelayConnection) -> str:
    """``host:port`` of the remote end, ``?`` if unknown."""
    try:
        host, port = ws.remote_address[:2]
    except (TypeError, ValueError):
        return "?"
    return f"{host}:{port}"


async def close(ws: RelayConnection, code: int, reason: str) -> None:
    """Close a connection; abort it if the closing handshake takes longer than CLOSE_TIMEOUT."""
    # Keep reading while closing: a peer that flooded us has filled the
    # incoming buffer, reading is paused, and its close frame would never be
    # read without this.
    drain = asyncio.create_task(_drain(ws))
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await ws.close(code, reason)
    except TimeoutError:
        ws.transport.abort()
    finally:
        drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drain


async def _drain(ws: RelayConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


def describe_close(ws: RelayConnection) -> str:
    """How a connection ended, for the log."""
    code = ws.close_code
    if code is None:
        return "connection lost"
    return f"code {code}" + (f" {ws.close_reason!r}" if ws.close_reason else "")
