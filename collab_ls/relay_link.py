"""The language server's connection to a relay: keeps a pycrdt Doc in sync.

:class:`RelayLink` speaks the y-websocket protocol (:mod:`relay.protocol`)
with a relay at ``ws[s]://host:port/<room>?secret=<secret>``:

* On every (re)connection it sends SyncStep1 (its state vector) and answers
  the relay's SyncStep1 with SyncStep2, so edits made while offline reach the
  relay and edits made elsewhere reach the doc. The link is CONNECTED once the
  relay's SyncStep2 has been applied.
* Remote updates are applied inside ``doc.transaction(origin=origin)``, so
  observers of the doc can tell remote changes by their origin.
* Every local transaction (origin other than ``origin``) is sent as a sync
  Update through a queue drained by one sender task. While disconnected, and
  until the relay's SyncStep1 is answered, nothing is queued: the updates
  stay in the doc and the handshake's SyncStep2 carries them.
* A dropped connection is retried with exponential backoff and jitter. A
  relay closing with 4403 (wrong or revoked secret, removed by the host) or
  4405 (a change sent on a read-only link) is final: status REFUSED, until
  :meth:`RelayLink.set_url` gives a new URL.
* Read-only links (``read_only=True``, by default when the URL carries the
  ``access=read-only`` hint): remote updates are applied, local changes stay
  local and are never sent; the relay's SyncStep1 is answered with an empty
  update. The relay enforces read-only by itself whatever a client sends.
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
* Awareness (presence) is a ``pycrdt.Awareness`` for the doc: local changes
  are sent, remote ones applied, remote states dropped on disconnect. The
  local state is queued right after SyncStep1 on every connection, before
  anything else the link sends, so the relay knows the link's client id
  (:attr:`RelayLink.client_id`) before its first RPC message. On a
  reconnection it goes with a newer clock: the relay, which may not have
  noticed yet that the old connection is dead, then owns the state by the new
  one and removes nothing when it drops the old one.
* RPC messages (:mod:`relay.protocol`, type 100): :meth:`RelayLink.send_rpc`
  sends opaque bytes to one peer (by its awareness client id) or to every
  other peer; each one received is handed to ``on_rpc(from_id, read_only,
  payload)``, where the relay stamped ``from_id`` and ``read_only``.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import pycrdt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from relay import protocol
from relay.keepalive import (
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    check_ping_settings,
    ping_until_silent,
)
from relay.links import ACCESS_HINT_PARAM, SECRET_PARAM
from relay.protocol import (
    AuthDenied,
    AwarenessMessage,
    CloseCode,
    ProtocolError,
    QueryAwareness,
    RpcDelivery,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
)
from relay.service import Service
from relay.tls import client_ssl_context

__all__ = [
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

_OPEN_TIMEOUT = 10.0

#: Called as ``on_rpc(from_id, read_only, payload)`` for each RPC message received.
RpcHandler = Callable[[int, bool, bytes], None]


class LinkStatus(enum.Enum):
    """Where a :class:`RelayLink` stands."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    REFUSED = "refused"
    CLOSED = "closed"


class RelayLinkError(Exception):
    """Base class of the relay link's errors."""


class RelayUrlError(RelayLinkError, ValueError):
    """The relay URL is malformed."""


class RelayRefusedError(RelayLinkError):
    """The relay refused the connection (wrong or missing secret)."""


class SyncTimeoutError(RelayLinkError, TimeoutError):
    """The link did not sync with the relay in time."""


class LinkClosedError(RelayLinkError):
    """The link was stopped (or never started)."""


@dataclass(frozen=True, slots=True)
class RelayUrl:
    """A parsed relay URL.

    Attributes:
        url: The URL as given.
        scheme: ``ws`` or ``wss``.
        host: The host name or address.
        port: The port (the scheme's default when absent).
        room: The room id (the unquoted path without its leading ``/``).
        secret: The room secret.
        read_only: Whether the URL carries the ``access=read-only`` hint.
    """

    url: str
    scheme: str
    host: str
    port: int
    room: str
    secret: str
    read_only: bool = False

    @property
    def redacted(self) -> str:
        """The URL without its secret, for logs and status messages."""
        return f"{self.scheme}://{self.host}:{self.port}/{self.room}"


def parse_relay_url(url: str) -> RelayUrl:
    """Parse and check a relay URL.

    Args:
        url: ``ws://host[:port]/<room>?secret=<secret>`` (or ``wss://``).

    Returns:
        The parsed URL.

    Raises:
        RelayUrlError: If the scheme is not ws/wss, or the host, the room or
            the ``secret`` query parameter is missing.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RelayUrlError(f"bad relay URL {url!r}: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        raise RelayUrlError(
            f"bad relay URL {url!r}: the scheme must be ws:// or wss://, not {parts.scheme!r}"
        )
    if not parts.hostname:
        raise RelayUrlError(f"bad relay URL {url!r}: no host")
    room = unquote(parts.path.lstrip("/"))
    if not room:
        raise RelayUrlError(f"bad relay URL {url!r}: no room (expected ws://host:port/<room>)")
    query = parse_qs(parts.query)
    secrets = query.get(SECRET_PARAM)
    if not secrets or not secrets[0]:
        raise RelayUrlError(f"bad relay URL {url!r}: no secret (expected ?secret=...)")
    if port is None:
        port = 443 if parts.scheme == "wss" else 80
    read_only = query.get(ACCESS_HINT_PARAM, [""])[0] == "read-only"
    return RelayUrl(url, parts.scheme, parts.hostname, port, room, secrets[0], read_only)


def parse_relay_urls(urls: str, fallback_urls: Sequence[str] = ()) -> list[RelayUrl]:
    """Parse a comma-separated list of relay URLs and more fallbacks, all of one room.

    Args:
        urls: One URL, or several separated by commas.
        fallback_urls: More URLs.

    Returns:
        The parsed URLs, in order, without duplicates.

    Raises:
        RelayUrlError: If a URL is malformed, there is none, or they name
            different rooms.
    """
    texts = [u.strip() for u in urls.split(",") if u.strip()]
    texts += [u.strip() for u in fallback_urls if u.strip()]
    if not texts:
        raise RelayUrlError("no relay URL")
    parsed: list[RelayUrl] = []
    for text in dict.fromkeys(texts):
        url = parse_relay_url(text)
        if parsed and url.room != parsed[0].room:
            raise RelayUrlError(
                f"relay URLs name different rooms ({parsed[0].room!r} and {url.room!r}): "
                "fallback URLs are other nodes of the same relay"
            )
        parsed.append(url)
    return parsed


def _on_node(url: RelayUrl, node: RelayUrl) -> RelayUrl:
    """``url``'s room and query (secret) on ``node``'s scheme, host and port."""
    parts = urlsplit(url.url)
    host = f"[{node.host}]" if ":" in node.host else node.host
    query = f"?{parts.query}" if parts.query else ""
    return parse_relay_url(f"{node.scheme}://{host}:{node.port}{parts.path}{query}")


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
        self._doc = doc
        self._origin = origin
        self._origin_hash = hash(origin)
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
        self._out: asyncio.Queue[bytes] | None = None
        self._answered = False
        # Connections opened so far.
        self._sessions = 0
        self._ws: ClientConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._doc_sub: pycrdt.Subscription | None = None
        self._awareness_sub: str | None = None

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
        out = self._out
        if out is None:
            return False
        try:
            message = protocol.encode_rpc(to, payload)
        except (TypeError, ValueError) as exc:
            self._log.warning("not sending an RPC message: %s", exc)
            return False
        out.put_nowait(message)
        return True

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
        self._doc_sub = self._doc.observe(self._on_transaction)
        self._awareness_sub = self.awareness.observe(self._on_awareness)
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
        if self._doc_sub is not None:
            self._doc.unobserve(self._doc_sub)
            self._doc_sub = None
        if self._awareness_sub is not None:
            self.awareness.unobserve(self._awareness_sub)
            self._awareness_sub = None
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
                async with connect(
                    self._url.url,
                    ssl=self._ssl if self._url.scheme == "wss" else None,
                    max_size=None,
                    open_timeout=_OPEN_TIMEOUT,
                    # The link pings by itself (_watch_pings), to drop a
                    # silent relay at once instead of after a closing handshake.
                    ping_interval=None,
                    logger=self._log.logger.getChild("websockets"),
                ) as ws:
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

    async def _session(self, ws: ClientConnection) -> str:
        out: asyncio.Queue[bytes] = asyncio.Queue()
        out.put_nowait(protocol.encode_sync_step1(self._doc.get_state()))
        local = self.awareness.get_local_state()
        if local is not None:
            if self._sessions and self.awareness.meta[self.client_id]["clock"] > 0:
                # Reconnected: announce a newer clock than the old connection
                # did. The relay may not have noticed yet that the old one is
                # dead; it then makes this connection the state's owner, and
                # dropping the old one later removes nothing for the others.
                self.awareness.set_local_state(local)
            out.put_nowait(self._local_awareness_message())
        self._sessions += 1
        self._ws, self._out = ws, out
        self._answered = False
        sender = asyncio.create_task(self._send_loop(ws, out), name="relay-link-sender")
        silent = asyncio.Event()
        pinger = asyncio.create_task(self._watch_pings(ws, silent), name="relay-link-pings")
        try:
            async for data in ws:
                if not self._on_message(data, out):
                    await ws.close()
                    break
        except ConnectionClosed:
            pass
        finally:
            self._ws = self._out = None
            sender.cancel()
            pinger.cancel()
            try:
                await sender
            except (asyncio.CancelledError, ConnectionClosed):
                pass
            except Exception:
                self._log.exception("sending to the relay failed")
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await pinger
            self._drop_remote_awareness()
        if silent.is_set():
            return f"the relay did not answer a ping within {self._ping_timeout:g} s"
        code, why = ws.close_code, ws.close_reason
        if code in (CloseCode.FORBIDDEN, CloseCode.READ_ONLY) and self._refused is None:
            self._refused = why or f"relay refused the connection ({code})"
        if code is None:
            return "connection lost"
        return f"relay closed the connection ({code}{': ' + why if why else ''})"

    async def _send_loop(self, ws: ClientConnection, out: asyncio.Queue[bytes]) -> None:
        while True:
            await ws.send(await out.get())

    async def _watch_pings(self, ws: ClientConnection, silent: asyncio.Event) -> None:
        if self._ping_interval is None:
            return
        await ping_until_silent(ws, self._ping_interval, self._ping_timeout)
        silent.set()
        self._log.warning("no pong within %g s: dropping the connection", self._ping_timeout)
        # A closing handshake would wait for a relay that no longer answers.
        ws.transport.abort()

    # Incoming

    def _on_message(self, data: str | bytes, out: asyncio.Queue[bytes]) -> bool:
        """Handle one message; returns False when the connection must end."""
        if isinstance(data, str):
            self._log.warning("skipping a text message from the relay (%d chars)", len(data))
            return True
        try:
            message = protocol.parse_message(data, from_relay=True)
        except ProtocolError as exc:
            self._log.warning("skipping a malformed message from the relay: %s", exc)
            return True
        if isinstance(message, SyncStep1):
            if self._read_only:
                out.put_nowait(protocol.encode_sync_step2(protocol.EMPTY_UPDATE))
            else:
                update = self._doc.get_update(message.state_vector)
                out.put_nowait(protocol.encode_sync_step2(update))
            self._answered = True
        elif isinstance(message, SyncStep2 | SyncUpdate):
            self._apply_remote(message.update)
            if isinstance(message, SyncStep2) and not self._synced:
                self._synced = True
                self._log.info("synced with the relay")
                self._set_status(LinkStatus.CONNECTED, f"synced with {self._url.redacted}")
        elif isinstance(message, AwarenessMessage):
            try:
                self.awareness.apply_awareness_update(message.update, origin=self)
            except Exception:
                self._log.exception("awareness update from the relay failed")
        elif isinstance(message, QueryAwareness):
            ids = list(self.awareness.states)
            payload = self.awareness.encode_awareness_update(ids)
            out.put_nowait(protocol.encode_awareness(payload))
        elif isinstance(message, RpcDelivery):
            self._on_rpc_message(message)
        elif isinstance(message, AuthDenied):
            self._refused = message.reason or "permission denied"
            return False
        return True

    def _on_rpc_message(self, message: RpcDelivery) -> None:
        handler = self.on_rpc
        if handler is None:
            return
        try:
            handler(message.sender, message.read_only, message.payload)
        except Exception:
            self._log.exception("on_rpc callback failed (RPC message from %d)", message.sender)

    def _apply_remote(self, update: bytes) -> None:
        if update == protocol.EMPTY_UPDATE:
            return
        try:
            with self._doc.transaction(origin=self._origin):
                self._doc.apply_update(update)
        except Exception:
            # Either pycrdt refused the update (possibly after applying part
            # of it; the relay trial-applies updates so this should not
            # happen) or an observer of the doc failed after it was applied.
            # The next handshake re-syncs by state vector.
            self._log.exception("applying an update from the relay failed")

    # Outgoing

    def _on_transaction(self, event: pycrdt.TransactionEvent) -> None:
        # Runs inside the transaction's commit: must not raise (pycrdt would
        # re-raise it in whoever committed) and must not touch the doc.
        out = self._out
        if (
            out is None
            or self._read_only
            or not self._answered
            or _origin_hash(event) == self._origin_hash
        ):
            # Before the relay's SyncStep1 is answered, the answer (SyncStep2)
            # will carry this update. Sending it earlier would reach the relay
            # before the edits it depends on, where pycrdt keeps it pending
            # and leaves it out of what late joiners receive.
            return
        update = event.update
        if update != protocol.EMPTY_UPDATE:
            out.put_nowait(protocol.encode_sync_update(update))

    def _on_awareness(self, topic: str, change: tuple[dict[str, Any], Any]) -> None:
        out = self._out
        if out is None or topic != "update" or change[1] != "local":
            return
        out.put_nowait(self._local_awareness_message())

    def _local_awareness_message(self) -> bytes:
        payload = self.awareness.encode_awareness_update([self.awareness.client_id])
        return protocol.encode_awareness(payload)

    def _drop_remote_awareness(self) -> None:
        others = [cid for cid in self.awareness.states if cid != self.awareness.client_id]
        if others:
            self.awareness.remove_awareness_states(others, origin=self)

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


def _origin_hash(event: pycrdt.TransactionEvent) -> int | None:
    # pycrdt 0.14 gives observers the raw transaction as ``event.transaction``
    # (missing from its type stubs); ``origin()`` returns the hash of the
    # Python origin the transaction was created with, or None.
    origin = cast(Any, event).transaction.origin()
    return None if origin is None else int(origin)
