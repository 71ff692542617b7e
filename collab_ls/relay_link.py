"""The language server's connection to a relay: keeps a pycrdt Doc in sync.

:class:`RelayLink` speaks the y-websocket protocol (:mod:`relay.protocol`)
with a relay at ``ws[s]://host:port/<room>?secret=<secret>`` (parsed by
:mod:`collab_ls.relay_urls`). What it says and answers on each connection
(the sync handshake, updates both ways, read-only links, awareness and RPC
messages) is :class:`~collab_ls.relay_sync.DocSync`'s, documented there, and
opening each connection and carrying a session over it is
:mod:`collab_ls.relay_connection`'s; the link owns the connection:

* The link is CONNECTED once the relay's SyncStep2 has been applied.
* A dropped connection is retried with exponential backoff and jitter. A
  relay closing with 4403 (wrong or revoked secret, removed by the host) or
  4405 (a change sent on a read-only link) is final: status REFUSED, until
  :meth:`RelayLink.set_url` gives a new URL.
* Several relay nodes (a relay scaled out on Redis, ``collab-relay --redis``):
  ``url`` may be a comma-separated list of URLs, and/or ``fallback_urls``
  gives more, all for the same room. The link connects to the first; when a
  connection attempt fails or an established connection is lost, it moves to
  the next URL in the list (round robin), immediately while some URL has not
  been tried since the last successful sync, then with backoff after each full
  round. :meth:`RelayLink.set_url` with one URL (a rotated secret) carries
  its room and query over to every fallback node.
* ``wss://`` URLs verify the relay's certificate and host name, against the
  system's CAs or ``ca_file``.
* In-process: a host whose relay is embedded in its own process gives
  ``connect`` (:meth:`relay.server.Relay.connect_local`), and every
  connection is then an in-memory one (:mod:`relay.local`) instead of a
  loopback websocket; everything above stays the same.
* Pings: every ``ping_interval`` seconds; a relay that does not answer within
  ``ping_timeout`` seconds (its machine or the network gone) is dropped at
  once and the link reconnects, instead of waiting for TCP to give up.

Nothing here writes to stdout: it runs inside a language server whose stdout
is the LSP channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import ssl
from collections.abc import Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import pycrdt
from websockets.exceptions import InvalidHandshake, InvalidURI

from collab_ls.relay_connection import Connector, open_connection, run_session
from collab_ls.relay_sync import DocSync
from collab_ls.relay_urls import (
    RelayLinkError,
    RelayUrl,
    RelayUrlError,
    _on_node,
    parse_relay_url,
    parse_relay_urls,
)
from relay.keepalive import DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT, check_ping_settings
from relay.local import RelayConnection
from relay.protocol import CloseCode, RpcDelivery
from relay.service import Service
from relay.tls import client_ssl_context

__all__ = [
    "Connector",
    "LinkClosedError",
    "LinkStatus",
    "RelayLink",
    "RelayLinkError",
    "RelayRefusedError",
    "RelayUrl",
    "RelayUrlError",
    "RpcHandler",
    "SyncTimeoutError",
    "client_ssl_context",
    "parse_relay_url",
    "parse_relay_urls",
]

#: Called as ``on_rpc(from_id, read_only, payload)`` for each RPC message received.
RpcHandler = Callable[[int, bool, bytes], None]


class LinkStatus(enum.Enum):
    """Where a :class:`RelayLink` stands."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    REFUSED = "refused"
    CLOSED = "closed"


class RelayRefusedError(RelayLinkError):
    """The relay refused the connection (wrong or missing secret)."""


class SyncTimeoutError(RelayLinkError, TimeoutError):
    """The link did not sync with the relay in time."""


class LinkClosedError(RelayLinkError):
    """The link was stopped (or never started)."""


class _ContextLogger(logging.LoggerAdapter[logging.Logger]):
    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        assert self.extra is not None
        return f"[relay {self.extra['relay']}] {msg}", kwargs


class RelayLink(Service):
    """Keeps a pycrdt document in sync with a relay room, as an async context manager.

    Example::

        async with RelayLink(doc, url, origin=REMOTE) as link:
            await link.wait_synced(timeout=5)
    """

    def __init__(
        self,
        doc: pycrdt.Doc[Any],
        url: str,
        *,
        origin: object,
        fallback_urls: Sequence[str] = (),
        on_status: Callable[[LinkStatus, str], None] | None = None,
        logger: logging.Logger | None = None,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        read_only: bool | None = None,
        ca_file: Path | None = None,
        on_rpc: RpcHandler | None = None,
        ping_interval: float | None = DEFAULT_PING_INTERVAL,
        ping_timeout: float = DEFAULT_PING_TIMEOUT,
        connect: Connector | None = None,
    ) -> None:
        """Configure a link; nothing connects until :meth:`start`.

        Args:
            doc: The document to keep in sync.
            url: ``ws[s]://host:port/<room>?secret=<secret>``, or several
                such URLs of the same room (relay nodes sharing rooms through
                Redis) separated by commas.
            origin: The transaction origin of remote updates (must be hashable);
                transactions with this origin are not sent back.
            on_status: Called with every status change and a human-readable
                reason. Must not block; exceptions are logged and ignored.
            logger: Where to log (default ``collab_ls.relay_link``).
            backoff_initial: First reconnection delay, in seconds.
            backoff_max: Longest reconnection delay, in seconds.
            read_only: Never send local changes (default: what the URL's
                ``access=read-only`` hint says).
            fallback_urls: More URLs of the same room on other relay nodes,
                tried in turn after ``url`` when a connection fails or drops.
            ca_file: For ``wss://``: a PEM file of CA certificates to trust
                instead of the system's (certificates are always verified).
            on_rpc: Called as ``on_rpc(from_id, read_only, payload)`` with each
                RPC message received: the sender's awareness client id (0 if
                it announced none) and whether it is on a read-only link, both
                stamped by the relay, and the payload. Runs in the event loop
                and must not block; exceptions are logged and ignored. Also
                settable later as the ``on_rpc`` attribute.
            ping_interval: Seconds between pings of the relay; ``None`` sends none.
            ping_timeout: Seconds the relay's pong may take before the
                connection is dropped and the link reconnects.
            connect: Opens each connection instead of a websocket, given the
                URL: :meth:`relay.server.Relay.connect_local` for a relay in
                this process and event loop (the relay as seen by a peer, and
                the close codes, are the same). ``ca_file`` is then unused.

        Raises:
            RelayUrlError: If a URL is malformed or they name different rooms.
            ValueError: If a ping setting is not positive.
            OSError, ssl.SSLError: If ``ca_file`` cannot be read.
        """
        check_ping_settings(ping_interval, ping_timeout)
        self._urls = parse_relay_urls(url, fallback_urls)
        self._index = 0
        self._url = self._urls[0]
        self._read_only = self._url.read_only if read_only is None else read_only
        self._ssl: ssl.SSLContext | None = None
        if any(u.scheme == "wss" for u in self._urls) or ca_file is not None:
            self._ssl = client_ssl_context(ca_file)
        self._on_status = on_status
        self._log = _ContextLogger(
            logger or logging.getLogger(__name__), {"relay": self._url.redacted}
        )
        self._backoff_initial = backoff_initial
        self._backoff_max = max(backoff_max, backoff_initial)
        self.awareness = pycrdt.Awareness(doc)
        #: Called with each RPC message received (see the constructor).
        self.on_rpc: RpcHandler | None = on_rpc
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._status = LinkStatus.CLOSED
        self._reason = "not started"
        self._changed = asyncio.Event()
        self._synced = False
        self._refused: str | None = None
        self._was_started = False
        self._stopped = False
        self._connect = connect
        self._ws: RelayConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sync = DocSync(
            doc,
            self.awareness,
            origin=origin,
            read_only=self._read_only,
            log=self._log,
            awareness_origin=self,
            on_step2=self._on_step2,
            on_denied=self._on_denied,
            on_rpc=self._on_rpc_message,
        )

    @property
    def url(self) -> RelayUrl:
        """The relay URL in use (the one connected to, or tried next)."""
        return self._url

    @property
    def urls(self) -> tuple[RelayUrl, ...]:
        """Every relay URL, in the order they are tried."""
        return tuple(self._urls)

    @property
    def read_only(self) -> bool:
        """Whether local changes are kept local (a read-only link)."""
        return self._read_only

    @property
    def client_id(self) -> int:
        """The awareness client id this link announces (the doc's client id).

        The relay stamps it as ``from`` on this link's RPC messages, and
        other peers address RPC messages to this link with it.
        """
        return self.awareness.client_id

    def send_rpc(self, to: int, payload: bytes) -> bool:
        """Queue an RPC message on the open connection to the relay; never raises.

        Args:
            to: The recipient's awareness client id, or 0 for every other peer
                in the room.
            payload: Opaque bytes.

        Returns:
            Whether it was queued: False when no connection is open (nothing
            is kept for later) or ``to`` is not an unsigned 64-bit integer.
        """
        return self._sync.send_rpc(to, payload)

    def set_url(self, url: str) -> None:
        """Use another URL from the next connection on (after a secret was rotated).

        The current connection is kept until it drops; a link the relay
        refused (REFUSED) starts connecting again with the new URL.

        Args:
            url: The new URL, with the same rules as the constructor's. A
                single URL replaces the first one and, on every other node
                of the list, the room and query (the secret); a
                comma-separated list replaces the whole list.

        Raises:
            RelayUrlError: If the URL is malformed.
        """
        urls = parse_relay_urls(url)
        if len(urls) == 1 and len(self._urls) > 1:
            urls += [_on_node(urls[0], node) for node in self._urls[1:]]
        if any(u.scheme == "wss" for u in urls) and self._ssl is None:
            self._ssl = client_ssl_context()
        self._urls, self._index = urls, 0
        self._use(0)
        if self._refused is not None and self.started:
            self._refused = None
            self._tasks.append(asyncio.create_task(self._run(), name="relay-link"))

    @property
    def started(self) -> bool:
        """Whether the link runs (started and not stopped)."""
        return self._was_started and not self._stopped

    @property
    def connected(self) -> bool:
        """Whether the link is connected and synced with the relay."""
        return self._status is LinkStatus.CONNECTED

    @property
    def status(self) -> LinkStatus:
        """The current status."""
        return self._status

    @property
    def reason(self) -> str:
        """The reason given with the current status."""
        return self._reason

    async def start(self) -> None:
        """Start connecting in the background.

        Raises:
            RelayLinkError: If the link was started before.
        """
        if self._was_started:
            raise RelayLinkError("relay link already started (a RelayLink runs once)")
        self._was_started = True
        self._sync.observe()
        self._tasks.append(asyncio.create_task(self._run(), name="relay-link"))
        self._tasks.append(asyncio.create_task(self._renew_awareness(), name="relay-awareness"))

    async def stop(self) -> None:
        """Close the connection and stop reconnecting. Idempotent."""
        if not self._was_started or self._stopped:
            return
        self._stopped = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await ws.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._sync.unobserve()
        self._set_status(LinkStatus.CLOSED, "stopped")

    async def wait_synced(self, timeout: float) -> None:  # noqa: ASYNC109 (API: bounded by design)
        """Wait until the link is connected and synced with the relay.

        Args:
            timeout: Seconds to wait.

        Raises:
            SyncTimeoutError: If not synced in time.
            RelayRefusedError: If the relay refused the link.
            LinkClosedError: If the link is not running.
        """
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if self._refused is not None:
                        raise RelayRefusedError(self._refused)
                    if not self.started:
                        raise LinkClosedError(f"relay link to {self._url.redacted} is not running")
                    if self.connected:
                        return
                    await self._changed.wait()
        except TimeoutError:
            raise SyncTimeoutError(
                f"not synced with {self._url.redacted} after {timeout:g} s "
                f"({self._status.value}: {self._reason})"
            ) from None

    # Connection loop

    def _use(self, index: int) -> None:
        self._index = index % len(self._urls)
        self._url = self._urls[self._index]
        self._log.extra = {"relay": self._url.redacted}

    async def _run(self) -> None:
        delay = self._backoff_initial
        # URLs tried since the last sync: the next node is tried at once
        # until every node failed, then with backoff.
        tried = 0
        while True:
            self._set_status(LinkStatus.CONNECTING, f"connecting to {self._url.redacted}")
            try:
                async with open_connection(self._url, self._connect, self._ssl, self._log) as ws:
                    reason = await self._session(ws)
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError, EOFError) as exc:
                reason = f"cannot reach relay at {self._url.redacted}: {exc or type(exc).__name__}"
            if self._stopped:
                return
            if self._refused is not None:
                self._synced = False
                self._log.error("relay refused the link: %s", self._refused)
                self._set_status(LinkStatus.REFUSED, self._refused)
                return
            if self._synced:
                delay = self._backoff_initial
                tried = 0
            self._synced = False
            self._log.info("disconnected: %s", reason)
            self._set_status(LinkStatus.DISCONNECTED, reason)
            tried += 1
            if len(self._urls) > 1:
                self._use(self._index + 1)
                self._log.info("trying the next relay node")
            if tried % len(self._urls) == 0:
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self._backoff_max)

    async def _session(self, ws: RelayConnection) -> str:
        silent = await run_session(
            ws,
            self._sync,
            ping_interval=self._ping_interval,
            ping_timeout=self._ping_timeout,
            log=self._log,
            attach=self._attach,
        )
        if silent:
            return f"the relay did not answer a ping within {self._ping_timeout:g} s"
        code, why = ws.close_code, ws.close_reason
        if code in (CloseCode.FORBIDDEN, CloseCode.READ_ONLY) and self._refused is None:
            self._refused = why or f"relay refused the connection ({code})"
        if code is None:
            return "connection lost"
        return f"relay closed the connection ({code}{': ' + why if why else ''})"

    def _attach(self, ws: RelayConnection | None) -> None:
        self._ws = ws

    # From the sync

    def _on_step2(self) -> None:
        if not self._synced:
            self._synced = True
            self._log.info("synced with the relay")
            self._set_status(LinkStatus.CONNECTED, f"synced with {self._url.redacted}")

    def _on_denied(self, reason: str) -> None:
        self._refused = reason

    def _on_rpc_message(self, message: RpcDelivery) -> None:
        handler = self.on_rpc
        if handler is None:
            return
        try:
            handler(message.sender, message.read_only, message.payload)
        except Exception:
            self._log.exception("on_rpc callback failed (RPC message from %d)", message.sender)

    async def _renew_awareness(self) -> None:
        # Yjs peers forget a state not renewed for 30 s; pycrdt's Awareness
        # renews ours and expires stale remote ones when started.
        await self.awareness.start()

    def _set_status(self, status: LinkStatus, reason: str) -> None:
        self._status, self._reason = status, reason
        self._changed.set()
        self._changed = asyncio.Event()
        if self._on_status is not None:
            try:
                self._on_status(status, reason)
            except Exception:
                self._log.exception("on_status callback failed")
