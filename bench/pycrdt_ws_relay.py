"""Launch pycrdt-websocket's ``WebsocketServer`` on a port, for side-by-side benchmarks.

Usage: ``python -m bench.pycrdt_ws_relay --port N`` (loopback). The room is the
URL path without its query string, as in y-websocket's reference server.
Runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from pycrdt.websocket import WebsocketServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


class _Channel:
    """Adapts a ``websockets`` server connection to pycrdt's ``Channel``."""

    def __init__(self, ws: ServerConnection, path: str) -> None:
        self._ws = ws
        self._path = path

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> _Channel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        try:
            await self._ws.send(message)
        except ConnectionClosed:
            pass

    async def recv(self) -> bytes:
        data = await self._ws.recv()
        return data if isinstance(data, bytes) else data.encode()


async def _main(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with WebsocketServer(auto_clean_rooms=False) as server:

        async def handle(ws: ServerConnection) -> None:
            path = (ws.request.path if ws.request else "/").split("?", 1)[0]
            await server.serve(_Channel(ws, path))

        async with serve(handle, "127.0.0.1", port, compression=None, max_size=None):
            await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(_main(args.port))


if __name__ == "__main__":
    main()
