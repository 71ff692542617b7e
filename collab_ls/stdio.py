"""The stdio plumbing: the language server on stdin/stdout, read through asyncio.

:func:`serve_stdio` owns the event loop, as pygls's ``start_io`` would, but
reads stdin through an asyncio pipe (:class:`_PipeReader`) rather than a
thread pool.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from typing import TYPE_CHECKING, BinaryIO

from pygls.io_ import StdoutWriter, run_async

if TYPE_CHECKING:
    from collab_ls.server import CollabServer

__all__ = ["serve_stdio"]

log = logging.getLogger("collab_ls")


class _PipeReader:
    """pygls's async reader interface over an asyncio stream (no thread hop per read)."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self._stream = stream

    async def readline(self) -> bytes:
        return await self._stream.readline()

    async def readexactly(self, n: int) -> bytes:
        try:
            return await self._stream.readexactly(n)
        except asyncio.IncompleteReadError:
            return b""


async def _serve_stdio(server: CollabServer, stdin: BinaryIO, stop: threading.Event) -> None:
    loop = asyncio.get_running_loop()
    stream = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream), stdin)
    await run_async(
        stop_event=stop,
        reader=_PipeReader(stream),
        protocol=server.protocol,
        logger=log,
        error_handler=server.report_server_error,
    )


def serve_stdio(server: CollabServer) -> None:
    """Run the server on stdin/stdout until the client goes away.

    pygls's own ``start_io`` reads stdin through a thread pool, one hop per
    header line and body (about 0.2 ms a message); an asyncio pipe reader
    does not.
    """
    stop = server._stop_event = threading.Event()
    server.protocol.set_writer(StdoutWriter(sys.stdout.buffer))
    try:
        asyncio.run(_serve_stdio(server, sys.stdin.buffer, stop))
    except BrokenPipeError:
        log.error("the editor closed the connection; stopping")
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.shutdown()  # type: ignore[no-untyped-call]
