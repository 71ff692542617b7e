"""The ``collab-relay`` console script: run a relay until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from collab_ls import __version__
from relay.server import DEFAULT_MAX_MESSAGE_BYTES, Relay

__all__ = ["main"]

DEFAULT_PORT = 1234
_LOG_LEVELS = ("debug", "info", "warning", "error")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collab-relay",
        description=(
            "Relay for collab-ls sessions: a y-websocket server. Clients join "
            "ws://HOST:PORT/<room>?secret=<secret>; a new room takes the secret "
            "of its first connection."
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
    parser.add_argument("--version", action="version", version=f"collab-relay {__version__}")
    return parser


def _configure_logging(log_file: str | None, level: str) -> None:
    handler: logging.Handler
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
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
        print(f"collab-relay listening on ws://{relay.host}:{relay.port}", file=sys.stderr)
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
    if args.max_queue < 1 or args.max_message_bytes < 1:
        parser.error("--max-queue and --max-message-bytes must be positive")
    _configure_logging(args.log_file, args.log_level)
    relay = Relay(
        args.host,
        args.port,
        max_queue=args.max_queue,
        max_message_bytes=args.max_message_bytes,
    )
    try:
        asyncio.run(_run(relay))
    except OSError as exc:
        print(f"collab-relay: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
