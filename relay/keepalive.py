"""Pings that tell a silent connection from a quiet one, for both ends of the relay wire.

A peer whose process is frozen or whose network is gone keeps its TCP
connection open: nothing is ever closed, and without pings the others would
see its presence until the 30 s awareness timeout of Yjs. Both the relay
(each peer connection) and :class:`collab_ls.relay_link.RelayLink` (its relay
connection) therefore ping every ``ping_interval`` seconds and give up on a
connection whose pong does not come within ``ping_timeout`` seconds.

This is websockets' own keepalive, run by the caller instead of by
websockets: websockets answers a late pong with a closing handshake that a
dead peer never completes, so the connection would only count as lost after
the close timeout as well. :func:`ping_until_silent` returns instead, and
the caller drops the connection at once (the relay removes the peer from its
room, and its awareness, before closing; the link aborts and reconnects).

As with websockets' keepalive, the timeout runs from when the ping is
written: a peer slowly downloading a large message is not cut off, since
its pong is behind that message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Protocol

__all__ = [
    "DEFAULT_PING_INTERVAL",
    "DEFAULT_PING_TIMEOUT",
    "check_ping_settings",
    "ping_until_silent",
]

#: Seconds between pings.
DEFAULT_PING_INTERVAL = 2.0
#: Seconds a pong may take before the connection counts as dead.
DEFAULT_PING_TIMEOUT = 4.0


def check_ping_settings(interval: float | None, timeout: float) -> None:
    """Check ping settings.

    Args:
        interval: Seconds between pings; ``None`` sends none.
        timeout: Seconds a pong may take.

    Raises:
        ValueError: If either is not positive.
    """
    if interval is not None and interval <= 0:
        raise ValueError(f"ping_interval must be positive (or None for no pings), not {interval}")
    if timeout <= 0:
        raise ValueError(f"ping_timeout must be positive, not {timeout}")


class Pingable(Protocol):
    """A connection that pings: websockets' own, or :class:`relay.local.LocalConnection`."""

    async def ping(self) -> Awaitable[float]: ...


async def ping_until_silent(ws: Pingable, interval: float, pong_within: float) -> None:
    """Ping a connection every ``interval`` seconds; return once a pong is late.

    Args:
        ws: The connection.
        interval: Seconds between pings.
        pong_within: Seconds a pong may take after its ping was written.

    Raises:
        ConnectionClosed: If the connection closes meanwhile.
    """
    while True:
        await asyncio.sleep(interval)
        pong = await ws.ping()
        try:
            async with asyncio.timeout(pong_within):
                await pong
        except TimeoutError:
            # After the event loop was blocked longer than the timeout, the
            # pong may have been read in the same round as the timer fired.
            if isinstance(pong, asyncio.Future) and pong.done() and not pong.cancelled():
                continue
            return
