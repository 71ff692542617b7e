"""An in-process connection between a host's relay link and its embedded relay.

A host that shares with ``--share`` and no ``--relay`` runs a
:class:`~relay.server.Relay` in its own event loop. Its own
:class:`~collab_ls.relay_link.RelayLink` reaches it through
:meth:`Relay.connect_local <relay.server.Relay.connect_local>` instead of a
loopback websocket: a pair of :class:`LocalConnection` objects passes each
message, as the same ``bytes`` object, straight into the other end's inbox.
No frames are encoded or decoded and no socket is written, yet both ends see
what they see over a websocket: the relay serves the host as a normal peer
(admission by path and secret, limits, awareness, RPC, read-only rules,
metrics, pings) and the link keeps its handshake, status and reconnection.

:class:`RelayConnection` is the subset of websockets' connection API both
ends use; websockets' client and server connections and
:class:`LocalConnection` all satisfy it. What a pair does, as websockets does:

* messages arrive in order; a send waits while the other end has
  :data:`MAX_INBOX` messages unread (backpressure, like a full TCP window);
* :meth:`LocalConnection.close` closes both ends with its code and reason:
  each reader gets the messages sent before, then its iteration ends (codes
  1000 and 1001) or raises :exc:`~websockets.exceptions.ConnectionClosedError`;
  ``close_code`` and ``close_reason`` are then the closer's on both ends;
* ``transport.abort()`` drops both ends as a lost connection (1006, no reason);
* pings are answered at once: both ends share a process and an event loop.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from websockets.frames import Close
from websockets.http11 import Request

__all__ = [
    "LOCAL_ADDRESS",
    "MAX_INBOX",
    "LocalConnection",
    "RelayConnection",
    "local_pair",
]

#: ``remote_address`` of both ends (the relay's peer ids read ``#n@local:0``).
LOCAL_ADDRESS: Final = ("local", 0)
#: Unread messages at which a send waits for the reader.
MAX_INBOX = 1024

# Codes whose close ends iteration quietly, as websockets' ConnectionClosedOK does.
_NORMAL_CODES = frozenset({1000, 1001})
_ABNORMAL_CLOSURE = 1006


class Abortable(Protocol):
    """What a connection's ``transport`` offers here: dropping it without a handshake."""

    def abort(self) -> None: ...


class RelayConnection(Protocol):
    """The websocket connection API the relay and the relay link use."""

    @property
    def request(self) -> Request | None: ...

    @property
    def remote_address(self) -> Any: ...

    @property
    def transport(self) -> Abortable: ...

    @property
    def close_code(self) -> int | None: ...

    @property
    def close_reason(self) -> str | None: ...

    def __aiter__(self) -> AsyncIterator[str | bytes]: ...

    async def send(self, message: bytes) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...

    async def wait_closed(self) -> None: ...

    async def ping(self) -> Awaitable[float]: ...


class _Link:
    """What the two ends of a pair share: how and whether it closed."""

    __slots__ = ("close_code", "close_reason", "closed", "closer", "ends")

    def __init__(self) -> None:
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.closed = asyncio.Event()
        self.ends: tuple[LocalConnection, ...] = ()
        self.closer: LocalConnection | None = None

    def close(self, code: int, reason: str | None, closer: LocalConnection | None) -> None:
        if self.close_code is not None:
            return
        self.close_code, self.close_reason, self.closer = code, reason, closer
        for end in self.ends:
            end._end_of_stream()
        self.closed.set()

    def exception(self, end: LocalConnection) -> ConnectionClosed:
        """What ``end`` raises once closed, as websockets would after a closing handshake."""
        code = self.close_code
        if code is None or code == _ABNORMAL_CLOSURE:
            return ConnectionClosedError(None, None)
        frame = Close(code, self.close_reason or "")
        rcvd_then_sent = end is not self.closer
        if code in _NORMAL_CODES:
            return ConnectionClosedOK(frame, frame, rcvd_then_sent)
        return ConnectionClosedError(frame, frame, rcvd_then_sent)


class _Transport:
    __slots__ = ("_link",)

    def __init__(self, link: _Link) -> None:
        self._link = link

    def abort(self) -> None:
        self._link.close(_ABNORMAL_CLOSURE, None, None)


# Ends a reader's inbox once the messages before it are read.
_EOF: Final = None


class LocalConnection:
    """One end of an in-process connection (see the module docstring)."""

    def __init__(self, link: _Link, request: Request | None) -> None:
        self._link = link
        self._request = request
        self._inbox: collections.deque[bytes | None] = collections.deque()
        # Resolved when a message (or the end) lands in an empty inbox.
        self._reader: asyncio.Future[None] | None = None
        # Resolved when the reader takes the inbox below MAX_INBOX.
        self._writers: collections.deque[asyncio.Future[None]] = collections.deque()
        self._peer: LocalConnection = self
        self.transport: Final = _Transport(link)

    @property
    def request(self) -> Request | None:
        """The request the client end opened with (its ``path`` carries room and secret)."""
        return self._request

    @property
    def remote_address(self) -> Any:
        return LOCAL_ADDRESS

    @property
    def close_code(self) -> int | None:
        return self._link.close_code

    @property
    def close_reason(self) -> str | None:
        return self._link.close_reason

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        try:
            while True:
                yield await self.recv()
        except ConnectionClosedOK:
            return

    async def recv(self) -> bytes:
        """The next message; raises ConnectionClosed once the inbox ends."""
        inbox = self._inbox
        while not inbox:
            self._reader = asyncio.get_running_loop().create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        data = inbox.popleft()
        if data is _EOF:
            inbox.appendleft(_EOF)
            raise self._link.exception(self)
        if self._writers and len(inbox) < MAX_INBOX:
            _wake(self._writers.popleft())
        return data

    async def send(self, message: bytes) -> None:
        """Hand ``message`` (the object itself) to the other end's inbox, in order."""
        if self._link.close_code is not None:
            raise self._link.exception(self)
        peer = self._peer
        while len(peer._inbox) >= MAX_INBOX:
            waiter = asyncio.get_running_loop().create_future()
            peer._writers.append(waiter)
            await waiter
            if self._link.close_code is not None:
                raise self._link.exception(self)
        peer._deliver(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close both ends with ``code`` and ``reason``; at once, as nothing is in flight."""
        self._link.close(code, reason, self)

    async def wait_closed(self) -> None:
        await self._link.closed.wait()

    async def ping(self) -> Awaitable[float]:
        """A pong already received (latency 0), or ConnectionClosed if closed."""
        if self._link.close_code is not None:
            raise self._link.exception(self)
        pong: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        pong.set_result(0.0)
        return pong

    def _deliver(self, item: bytes | None) -> None:
        self._inbox.append(item)
        reader = self._reader
        if reader is not None:
            _wake(reader)

    def _end_of_stream(self) -> None:
        self._deliver(_EOF)
        # Senders waiting for room in this inbox: they find the link closed.
        while self._writers:
            _wake(self._writers.popleft())


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def local_pair(url: str) -> tuple[LocalConnection, LocalConnection]:
    """A connected pair: the client end (the link's) and the server end (the relay's).

    Args:
        url: The URL the client would connect to; its path and query become
            the server end's ``request.path``, as in a websocket handshake.
    """
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    link = _Link()
    client = LocalConnection(link, Request(path, Headers()))
    server = LocalConnection(link, Request(path, Headers()))
    client._peer, server._peer = server, client
    link.ends = (client, server)
    return client, server
