"""The stdio plumbing: the language server on stdin/stdout, read through asyncio.

:func:`serve_stdio` owns the event loop, as pygls's ``start_io`` would, but
reads stdin through an asyncio pipe rather than a thread pool, and parses a
``didChange`` (most messages: one a keystroke) as plain JSON straight into its
handler, without pygls's per-object hook; everything else goes through pygls.

Stdin is read a chunk at a time and cut into messages by :class:`Framer`.
The ``didChange`` s that one chunk completes in a row go into the session
document in one transaction (:meth:`EditorDocuments.did_changes
<collab_ls.documents.EditorDocuments.did_changes>`): when the editor sends
faster than collab-ls keeps up, peers get one update for the run instead of
one per change. It delays none of them: they were read together, and
nothing is sent before the whole chunk is handled either way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import threading
from typing import TYPE_CHECKING, Any, BinaryIO

from pygls.exceptions import JsonRpcException
from pygls.io_ import StdoutWriter

if TYPE_CHECKING:
    from collab_ls.server import CollabServer

__all__ = ["Framer", "serve_stdio"]

log = logging.getLogger("collab_ls")


_CONTENT_LENGTH = re.compile(rb"^content-length:\s*(\d+)\s*$", re.IGNORECASE)
_DID_CHANGE = b'"textDocument/didChange"'
#: Bytes read from stdin at a time.
_CHUNK = 1 << 16
#: Longest header line buffered, as the stream reader this replaced allowed.
_MAX_LINE = 1 << 26
#: The didChanges of one run that share a transaction, in bytes of JSON (a
#: longer run is split; one message alone is never split), so that a run's
#: update stays far below the relay's message limit.
_MAX_RUN_BYTES = 1 << 20


class Framer:
    """LSP base-protocol framing over a byte stream, without I/O.

    Header lines end with ``\\n`` (``\\r\\n`` too); a ``Content-Length``
    header sets the length of the body after the next blank line; other
    headers, and a blank line before any length, are skipped.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._length = 0  # from the last Content-Length header
        self._body: int | None = None  # the body's length while reading one

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes read; returns the bodies they complete, in order.

        Raises:
            ValueError: If a header line grows past 64 MiB.
        """
        buf = self._buf
        buf += data
        bodies: list[bytes] = []
        pos = 0
        while True:
            if self._body is not None:
                end = pos + self._body
                if end > len(buf):
                    break
                bodies.append(bytes(buf[pos:end]))
                pos, self._body = end, None
                continue
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if len(buf) - pos > _MAX_LINE:
                    raise ValueError("an LSP header line longer than 64 MiB")
                break
            line = bytes(buf[pos : nl + 1])
            pos = nl + 1
            match = _CONTENT_LENGTH.match(line)
            if match:
                self._length = int(match.group(1))
            elif not line.strip() and self._length:
                self._body, self._length = self._length, 0
        del buf[:pos]
        return bodies


def _did_change_params(body: bytes) -> tuple[bool, Any]:
    """``(True, params)`` for a ``didChange`` notification, else ``(False, None)``.

    Unreadable JSON is not a ``didChange`` here: pygls reads it again and
    reports it as for any other message.
    """
    if _DID_CHANGE not in body:
        return False, None
    try:
        data = json.loads(body)
    except Exception:
        return False, None
    if (
        isinstance(data, dict)
        and data.get("method") == "textDocument/didChange"
        and "id" not in data
    ):
        return True, data.get("params")
    return False, None


def _handle_bodies(server: CollabServer, bodies: list[bytes], stop: threading.Event) -> None:
    """Handle messages in order, each run of ``didChange`` s in one transaction."""
    protocol = server.protocol
    documents = server.documents
    run: list[Any] = []  # params of the didChanges not handled yet
    run_bytes = 0
    for body in bodies:
        if stop.is_set():
            break
        if not protocol._shutdown:
            is_change, params = _did_change_params(body)
            if is_change:
                if run and run_bytes + len(body) > _MAX_RUN_BYTES:
                    documents.did_changes(run)
                    run, run_bytes = [], 0
                run.append(params)
                run_bytes += len(body)
                continue
        if run:
            documents.did_changes(run)
            run, run_bytes = [], 0
        try:
            protocol.handle_message(json.loads(body, object_hook=protocol.structure_message))
        except Exception as exc:
            log.exception("unable to handle a message of %d bytes", len(body))
            server.report_server_error(exc, JsonRpcException)
    if run:
        documents.did_changes(run)


async def _read_messages(
    server: CollabServer, stream: asyncio.StreamReader, stop: threading.Event
) -> None:
    """LSP framing on ``stream``; runs of ``didChange`` go straight to their handler."""
    framer = Framer()
    while not stop.is_set():
        chunk = await stream.read(_CHUNK)
        if not chunk:
            break
        _handle_bodies(server, framer.feed(chunk), stop)


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
