"""The stdio plumbing: the language server on stdin/stdout, read through asyncio.

:func:`serve_stdio` owns the event loop, as pygls's ``start_io`` would, but
reads stdin through an asyncio pipe rather than a thread pool, and parses a
``didChange`` (most messages: one a keystroke) as plain JSON straight into its
handler, without pygls's per-object hook; everything else goes through pygls.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import threading
from typing import TYPE_CHECKING, BinaryIO

from pygls.exceptions import JsonRpcException
from pygls.io_ import StdoutWriter

if TYPE_CHECKING:
    from collab_ls.server import CollabServer

__all__ = ["serve_stdio"]

log = logging.getLogger("collab_ls")


_CONTENT_LENGTH = re.compile(rb"^content-length:\s*(\d+)\s*$", re.IGNORECASE)
_DID_CHANGE = b'"textDocument/didChange"'


async def _read_messages(
    server: CollabServer, stream: asyncio.StreamReader, stop: threading.Event
) -> None:
    """LSP framing on ``stream``; ``didChange`` goes straight to its handler."""
    protocol = server.protocol
    length = 0
    while not stop.is_set():
        header = await stream.readline()
        if not header:
            break
        match = _CONTENT_LENGTH.match(header)
        if match:
            length = int(match.group(1))
            continue
        if header.strip() or not length:
            continue  # another header (Content-Type), or a blank line with no length yet
        try:
            body = await stream.readexactly(length)
        except asyncio.IncompleteReadError:
            break
        length = 0
        try:
            if _DID_CHANGE in body and not protocol._shutdown:
                data = json.loads(body)
                if (
                    isinstance(data, dict)
                    and data.get("method") == "textDocument/didChange"
                    and "id" not in data
                ):
                    try:
                        server.documents.did_change(data.get("params"))
                    except Exception:
                        log.exception("failed to handle a didChange")
                    continue
            protocol.handle_message(json.loads(body, object_hook=protocol.structure_message))
        except Exception as exc:
            log.exception("unable to handle a message of %d bytes", len(body))
            server.report_server_error(exc, JsonRpcException)


async def _serve_stdio(server: CollabServer, stdin: BinaryIO, stop: threading.Event) -> None:
    loop = asyncio.get_running_loop()
    stream = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream), stdin)
    await _read_messages(server, stream, stop)


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
