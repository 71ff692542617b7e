"""The ``collab-relay`` console script: run a relay until SIGINT or SIGTERM.

Rooms are stored in SQLite by default (``--store``, default
``$XDG_DATA_HOME/collab-relay/relay.sqlite3``, i.e.
``~/.local/share/collab-relay/relay.sqlite3``); ``--no-store`` keeps them in
memory only. ``--redis redis://HOST:PORT/DB`` keeps them in Redis instead,
shared with every other ``collab-relay`` on the same Redis (scale-out, see
:mod:`relay.redis_store`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

from collab_ls import __version__
from relay.keepalive import DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT
from relay.redis_store import DEFAULT_PREFIX, RedisStore
from relay.server import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_PEERS_PER_ROOM,
    DEFAULT_MAX_ROOMS,
    DEFAULT_RATE_BURST,
    DEFAULT_RATE_LIMIT,
    Relay,
)
from relay.store import DEFAULT_COMPACT_EVERY, SqliteStore, StoreError
from relay.tls import server_ssl_context

__all__ = ["main"]

DEFAULT_PORT = 1234
_LOG_LEVELS = ("debug", "info", "warning", "error")
_RECORD_FIELDS = ("room", "peer", "event")


def default_store_path() -> Path:
    """``$XDG_DATA_HOME/collab-relay/relay.sqlite3`` (``~/.local/share`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "collab-relay" / "relay.sqlite3"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and room/peer/event when known."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _RECORD_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collab-relay",
        description=(
            "Relay for collab-ls sessions: a y-websocket server. Clients join "
            "ws://HOST:PORT/<room>?secret=<secret>; a new room takes the secret "
            "of its first connection (and its read-only secret from &ro=). "
            "GET /healthz and /metrics on the same port."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (%(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port to listen on, 0 for any (%(default)s)"
    )
    parser.add_argument("--log-file", help="write logs to this file instead of stderr")
    parser.add_argument(
        "--log-level", default="info", choices=_LOG_LEVELS, help="log level (%(default)s)"
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=1024,
        help="messages queued per peer before it is dropped as a slow consumer (%(default)s)",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        default=DEFAULT_MAX_MESSAGE_BYTES,
        help="largest message accepted (%(default)s)",
    )
    parser.add_argument(
        "--max-peers-per-room",
        type=int,
        default=DEFAULT_MAX_PEERS_PER_ROOM,
        help="connections a room admits at once (%(default)s)",
    )
    parser.add_argument(
        "--max-rooms",
        type=int,
        default=DEFAULT_MAX_ROOMS,
        help="rooms held in memory at once (%(default)s)",
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=DEFAULT_RATE_LIMIT,
        help="messages per second a connection may send, sustained; 0 for no limit (%(default)s)",
    )
    parser.add_argument(
        "--rate-burst",
        type=int,
        default=DEFAULT_RATE_BURST,
        help="messages a connection may send at once (%(default)s)",
    )
    store = parser.add_mutually_exclusive_group()
    store.add_argument(
        "--store",
        type=Path,
        default=None,
        help=f"SQLite file of the rooms (default {default_store_path()})",
    )
    store.add_argument(
        "--no-store", action="store_true", help="keep rooms in memory only (lost on exit)"
    )
    store.add_argument(
        "--redis",
        metavar="URL",
        help=(
            "keep rooms in Redis (redis://HOST:PORT/DB), shared with every relay "
            "on the same Redis: run several behind a load balancer"
        ),
    )
    parser.add_argument(
        "--redis-prefix",
        default=DEFAULT_PREFIX,
        help="prefix of the relay's Redis keys and channels (%(default)s)",
    )
    parser.add_argument(
        "--store-sync",
        choices=("full", "normal"),
        default="full",
        help="full: survive power loss; normal: survive a crash of the relay only (%(default)s)",
    )
    parser.add_argument(
        "--compact-every",
        type=int,
        default=DEFAULT_COMPACT_EVERY,
        help="stored updates (SQLite rows, Redis log entries) per room that trigger a "
        "compaction (%(default)s)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        help="seconds before a room without peers is evicted from memory (%(default)s)",
    )
    parser.add_argument(
        "--ping-interval",
        type=float,
        default=DEFAULT_PING_INTERVAL,
        help="seconds between pings of each connection, 0 for none (%(default)s)",
    )
    parser.add_argument(
        "--ping-timeout",
        type=float,
        default=DEFAULT_PING_TIMEOUT,
        help="seconds a pong may take before its connection is dropped as dead and its "
        "peer's presence removed (%(default)s)",
    )
    parser.add_argument("--cert", type=Path, help="TLS certificate chain (PEM): serve wss://")
    parser.add_argument("--key", type=Path, help="TLS private key (PEM), with --cert")
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="log format (%(default)s)"
    )
    parser.add_argument("--version", action="version", version=f"collab-relay {__version__}")
    return parser


def _configure_logging(log_file: str | None, level: str, fmt: str = "text") -> None:
    handler: logging.Handler
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())


async def _run(relay: Relay) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with relay:
        print(f"collab-relay listening on {relay.base_url}", file=sys.stderr)
        await stop.wait()
        logging.getLogger(__name__).info("signal received, stopping")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the relay.

    Args:
        argv: Command-line arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 after a clean stop, 1 if the relay could not start.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    positive = ("max_queue", "max_message_bytes", "max_peers_per_room", "max_rooms", "rate_burst")
    for name in positive:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.rate_limit < 0 or args.compact_every < 2 or args.idle_timeout <= 0:
        parser.error("--rate-limit must be >= 0, --compact-every >= 2, --idle-timeout > 0")
    if args.ping_interval < 0 or args.ping_timeout <= 0:
        parser.error("--ping-interval must be >= 0 and --ping-timeout > 0")
    if args.key and not args.cert:
        parser.error("--key needs --cert")
    _configure_logging(args.log_file, args.log_level, args.log_format)
    context: ssl.SSLContext | None = None
    if args.cert:
        try:
            context = server_ssl_context(args.cert, args.key)
        except (OSError, ssl.SSLError) as exc:
            print(f"collab-relay: cannot load the TLS certificate: {exc}", file=sys.stderr)
            return 1
    store: SqliteStore | RedisStore | None = None
    if args.redis:
        store = RedisStore(args.redis, prefix=args.redis_prefix, compact_every=args.compact_every)
    elif not args.no_store:
        store = SqliteStore(
            args.store or default_store_path(),
            synchronous="FULL" if args.store_sync == "full" else "NORMAL",
            compact_every=args.compact_every,
        )
    relay = Relay(
        args.host,
        args.port,
        max_queue=args.max_queue,
        max_message_bytes=args.max_message_bytes,
        max_peers_per_room=args.max_peers_per_room,
        max_rooms=args.max_rooms,
        rate_limit=args.rate_limit or None,
        rate_burst=args.rate_burst,
        store=store,
        idle_timeout=args.idle_timeout,
        ssl=context,
        ping_interval=args.ping_interval or None,
        ping_timeout=args.ping_timeout,
    )
    try:
        asyncio.run(_run(relay))
    except StoreError as exc:
        print(f"collab-relay: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"collab-relay: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
