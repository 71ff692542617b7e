"""One connection of a relay link: opening it and carrying a sync session over it.

:func:`open_connection` opens a websocket to a relay URL (verifying TLS for
``wss://``) or, given a :data:`Connector`, an in-memory connection
(:mod:`relay.local`) to a relay in the same process. :func:`run_session`
carries one :class:`~collab_ls.relay_sync.DocSync` session over it until it
closes: one task sends the queued outgoing bytes, another pings the relay and
aborts the connection when a pong is late. Deciding when and where to
connect, and what a close means, is :class:`~collab_ls.relay_link.RelayLink`'s.

Nothing here writes to stdout: it runs inside a language server whose stdout
is the LSP channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from collab_ls.relay_sync import DocSync
from collab_ls.relay_urls import RelayUrl
from relay.keepalive import ping_until_silent
from relay.local import RelayConnection

__all__ = ["Connector", "LinkLogger", "open_connection", "run_session"]

_OPEN_TIMEOUT = 10.0

#: Opens a connection to the relay at a URL without a websocket (see ``connect``).
Connector = Callable[[str], Awaitable[RelayConnection]]

#: A relay link's logger (it names the relay in every line).
LinkLogger = logging.LoggerAdapter[logging.Logger]


@contextlib.asynccontextmanager
async def open_connection(
    url: RelayUrl,
    connector: Connector | None,
    ssl_context: ssl.SSLContext | None,
    log: LinkLogger,
) -> AsyncIterator[RelayConnection]:
    """Open a connection to a relay, closed on exit.

    Args:
        url: The relay URL.
        connector: Opens the connection instead of a websocket (a relay in
            this process), or ``None``.
        ssl_context: For a ``wss://`` URL.
        log: The link's logger; the websocket logs to its ``websockets`` child.

    Raises:
        OSError, InvalidHandshake, InvalidURI, TimeoutError, EOFError: If the
            relay cannot be reached.
    """
    if connector is not None:
        ws = await connector(url.url)
        try:
            yield ws
        finally:
            await ws.close()
        return
    async with connect(
        url.url,
        ssl=ssl_context if url.scheme == "wss" else None,
        max_size=None,
        open_timeout=_OPEN_TIMEOUT,
        # The link pings by itself (_watch_pings), to drop a
        # silent relay at once instead of after a closing handshake.
        ping_interval=None,
        logger=log.logger.getChild("websockets"),
    ) as ws:
        yield ws


async def run_session(
    ws: RelayConnection,
    sync: DocSync,
    *,
    ping_interval: float | None,
    ping_timeout: float,
    log: LinkLogger,
    attach: Callable[[RelayConnection | None], None],
) -> bool:
    """Carry one sync session over an open connection until it closes.

    Args:
        ws: The connection.
        sync: What to say and answer on it.
        ping_interval: Seconds between pings of the relay; ``None`` sends none.
        ping_timeout: Seconds the relay's pong may take before the connection
            is aborted.
        log: The link's logger.
        attach: Called with ``ws`` once the session is open and with ``None``
            as it ends, before its tasks are stopped.

    Returns:
        Whether the relay stopped answering pings (the connection was then
        aborted); otherwise ``ws``'s close code says why it ended.
    """
    out: asyncio.Queue[bytes] = asyncio.Queue()
    sync.open(out)
    attach(ws)
    sender = asyncio.create_task(_send_loop(ws, out), name="relay-link-sender")
    silent = asyncio.Event()
    pinger = asyncio.create_task(
        _watch_pings(ws, silent, ping_interval, ping_timeout, log), name="relay-link-pings"
    )
    try:
        async for data in ws:
            if not sync.receive(data, out):
                await ws.close()
                break
    except ConnectionClosed:
        pass
    finally:
        attach(None)
        sync.detach()
        sender.cancel()
        pinger.cancel()
        try:
            await sender
        except (asyncio.CancelledError, ConnectionClosed):
            pass
        except Exception:
            log.exception("sending to the relay failed")
        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
            await pinger
        sync.drop_remote_awareness()
    return silent.is_set()


async def _send_loop(ws: RelayConnection, out: asyncio.Queue[bytes]) -> None:
    while True:
        await ws.send(await out.get())


async def _watch_pings(
    ws: RelayConnection,
    silent: asyncio.Event,
    ping_interval: float | None,
    ping_timeout: float,
    log: LinkLogger,
) -> None:
    if ping_interval is None:
        return
    await ping_until_silent(ws, ping_interval, ping_timeout)
    silent.set()
    log.warning("no pong within %g s: dropping the connection", ping_timeout)
    # A closing handshake would wait for a relay that no longer answers.
    ws.transport.abort()
