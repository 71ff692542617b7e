"""The host's real language server as a child process, spoken to in raw JSON.

:class:`LspProcess` runs a language server (``pylsp``, ``clangd``, ...) over its
stdin and stdout and passes every message through as plain JSON (dicts and
lists): nothing is re-serialised through typed classes, so fields we do not
know and servers' quirks survive the proxy untouched.

Design:

* Framing is ``Content-Length: N`` headers, a blank line and N bytes of UTF-8
  JSON. Other headers are ignored. A malformed header or body is logged and
  skipped; after garbage the reader resynchronises on the next
  ``Content-Length:`` it sees, even in the middle of a line. A length too large
  to be real makes the stream unrecoverable: the server is treated as gone.
* One reader task dispatches in arrival order: responses resolve the pending
  :meth:`LspProcess.request`, notifications go to ``on_notification``
  synchronously, and server-to-client requests run ``on_request`` in a task of
  their own, whose result (or error) is written back with the same id. A
  ``$/cancelRequest`` from the server cancels that task, which then answers
  ``RequestCancelled`` (-32800); it is not passed to ``on_notification``.
* Every outgoing message goes on one queue drained by one writer task, so
  writes never interleave and notifications keep their order with requests.
* A request whose caller is cancelled or times out sends ``$/cancelRequest``
  and forgets its id; a late response to it is ignored.
* When the process exits or closes its stdout, every pending request fails
  with :class:`LspProcessGone` at once, and ``on_exit`` is called once with
  the exit code. A server that closes its stdout but lingers is killed.
* The server's stderr is logged line by line; nothing here writes to stdout,
  which may be our own LSP channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from relay.service import Service

__all__ = [
    "INTERNAL_ERROR",
    "REQUEST_CANCELLED",
    "REQUEST_FAILED",
    "LspError",
    "LspProcess",
    "LspProcessGone",
]

INTERNAL_ERROR = -32603
REQUEST_CANCELLED = -32800
REQUEST_FAILED = -32803
_MAX_BODY = 256 * 1024 * 1024  # a larger Content-Length is garbage we cannot skip
_LINE_LIMIT = 1024 * 1024  # longest header or stderr line read; longer ones are skipped
_REAP_GRACE = 2.0  # seconds a server that closed its stdout has to exit before it is killed


class LspError(Exception):
    """An error response: its ``code``, ``message`` and optional ``data``."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.data = data


class LspProcessGone(LspError):
    """The language server is not running (exited, killed or stopped).

    Its code is ``RequestFailed`` (-32803), the error to answer an editor with.
    """

    def __init__(self, message: str) -> None:
        super().__init__(REQUEST_FAILED, message)


class _Prefixed(logging.LoggerAdapter[Any]):
    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        assert self.extra is not None
        return f"[{self.extra['server']}] {msg}", kwargs


class LspProcess(Service):
    """A language server child process, as an async context manager.

    Example::

        async with LspProcess(["pylsp"], on_notification=..., on_request=...) as lsp:
            result = await lsp.request("initialize", params, timeout=10)
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        on_notification: Callable[[str, Any], None],
        on_request: Callable[[str, Any], Awaitable[Any]],
        on_exit: Callable[[int | None], None] | None = None,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        """Configure the process; nothing runs until :meth:`start`.

        Args:
            argv: The command line of the language server.
            cwd: Its working directory (default: ours).
            env: Its environment (default: ours).
            on_notification: Called with the method and raw params of each
                notification, in arrival order. Must not block; exceptions are
                logged.
            on_request: Awaited, in a task of its own, with the method and raw
                params of each server-to-client request; its return value is the
                response's ``result``. Raise :class:`LspError` to answer an error.
            on_exit: Called once with the exit code when the process has exited.
            logger: Where to log (default ``collab_ls.lsp_process``).
        """
        if not argv:
            raise ValueError("empty command line for the language server")
        self._argv = list(argv)
        self._cwd = cwd
        self._env = dict(env) if env is not None else None
        self._on_notification = on_notification
        self._on_request = on_request
        self._on_exit = on_exit
        self._base_log = logger or logging.getLogger(__name__)
        self._name = os.path.basename(self._argv[0])
        self._log = _Prefixed(self._base_log, {"server": self._name})
        self._proc: asyncio.subprocess.Process | None = None
        self._was_started = self._stopping = self._gone = self._exit_reported = False
        self._out: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._served: dict[Any, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def started(self) -> bool:
        """Whether the process was started and :meth:`stop` was not called."""
        return self._proc is not None and not self._stopping

    @property
    def running(self) -> bool:
        """Whether the server runs and is talking: requests can be sent."""
        return self._proc is not None and not self._gone

    @property
    def pid(self) -> int | None:
        """The process id, once started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """The exit code, once the process has exited (negative: killed by a signal)."""
        return self._proc.returncode if self._proc is not None else None

    async def start(self) -> None:
        """Spawn the server and start reading and writing.

        Raises:
            RuntimeError: If started before (an ``LspProcess`` runs once).
            OSError: If the command cannot be run.
        """
        if self._was_started:
            raise RuntimeError("language server process already started (it runs once)")
        self._was_started = True
        proc = await asyncio.create_subprocess_exec(
            *self._argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self._cwd,
            env=self._env,
            limit=_LINE_LIMIT,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self._proc = proc
        self._log = _Prefixed(self._base_log, {"server": f"{self._name} pid {proc.pid}"})
        self._log.info("started: %s", " ".join(self._argv))
        self._tasks = [
            asyncio.create_task(self._read_loop(proc.stdout), name="lsp-read"),
            asyncio.create_task(self._write_loop(proc.stdin), name="lsp-write"),
            asyncio.create_task(self._stderr_loop(proc.stderr), name="lsp-stderr"),
            asyncio.create_task(self._watch(proc), name="lsp-watch"),
        ]

    async def stop(self, timeout: float = 3.0) -> None:  # noqa: ASYNC109 (each step bounded)
        """Shut the server down: ``shutdown`` and ``exit``, then SIGTERM, then SIGKILL.

        Each step waits at most ``timeout`` seconds. Idempotent.
        """
        proc = self._proc
        if proc is None or self._stopping:
            return
        self._stopping = True
        try:
            if self.running:
                try:
                    await self.request("shutdown", None, timeout=timeout)
                except (LspError, TimeoutError) as exc:
                    self._log.warning("no clean shutdown: %r", exc)
                else:
                    self.notify("exit", None)
            self._out.put_nowait(None)  # close its stdin once what is queued is written
            for signal in (proc.terminate, proc.kill, None):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await proc.wait()
                    break
                if signal is not None:
                    self._log.warning("did not exit in %g s, sending %s", timeout, signal.__name__)
                    with contextlib.suppress(ProcessLookupError):
                        signal()
        finally:  # even if cancelled: no orphan process, no task left running
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            self._mark_gone("was stopped")
            tasks = [*self._tasks, *self._served.values()]
            for task in tasks:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._report_exit(proc.returncode)

    async def request(self, method: str, params: Any, *, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """Send a request and return the raw ``result`` of its response.

        ``params=None`` sends no ``params`` member. If the caller is cancelled
        or the timeout expires, ``$/cancelRequest`` is sent to the server.

        Raises:
            LspError: On an error response.
            LspProcessGone: If the server is not running or goes before answering.
            TimeoutError: If no response came within ``timeout`` seconds.
        """
        if not self.running:
            raise LspProcessGone(f"{self._name} is not running ({method} not sent)")
        request_id = next(self._ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        data = _frame(message)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._out.put_nowait(data)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except (asyncio.CancelledError, TimeoutError):
            if self._pending.pop(request_id, None) is not None and self.running:
                self._send(
                    {"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": request_id}}
                )
            raise
        finally:
            self._pending.pop(request_id, None)

    def notify(self, method: str, params: Any) -> None:
        """Queue a notification, in order with requests; dropped if the server is not running."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self._send(message)

    # Internals

    def _send(self, message: dict[str, Any]) -> None:
        if self.running:
            self._out.put_nowait(_frame(message))
        else:
            self._log.debug("not running, dropped %s", message.get("method", "a response"))

    def _mark_gone(self, reason: str) -> None:
        if self._gone:
            return
        self._gone = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(LspProcessGone(f"{self._name} {reason}"))
        self._pending.clear()
        for task in self._served.values():
            task.cancel()

    def _report_exit(self, returncode: int | None) -> None:
        if self._exit_reported or returncode is None:
            return
        self._exit_reported = True
        log = self._log.info if self._stopping else self._log.warning
        log("exited with code %s", returncode)
        if self._on_exit is not None:
            try:
                self._on_exit(returncode)
            except Exception:
                self._log.exception("on_exit failed")

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        returncode = await proc.wait()
        self._mark_gone(f"exited with code {returncode}")
        self._report_exit(returncode)

    async def _write_loop(self, stdin: asyncio.StreamWriter) -> None:
        try:
            while True:
                chunks = [await self._out.get()]
                while chunks[-1] is not None and not self._out.empty():
                    chunks.append(self._out.get_nowait())
                stdin.writelines(chunk for chunk in chunks if chunk is not None)
                await stdin.drain()
                if chunks[-1] is None:  # stop(): end its input
                    stdin.close()
                    return
        except (ConnectionError, OSError) as exc:
            self._log.warning("cannot write to the server: %r", exc)
            self._mark_gone(f"stopped reading its input ({exc!r})")

    async def _stderr_loop(self, stderr: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await stderr.readline()
            except ValueError:
                self._log.warning("stderr: skipped a line over %d bytes", _LINE_LIMIT)
                continue
            if not line:
                return
            self._log.info("stderr: %s", line.decode("utf-8", "replace").rstrip())

    async def _read_loop(self, stdout: asyncio.StreamReader) -> None:
        reason = "closed its output"
        try:
            while (body := await self._read_frame(stdout)) is not None:
                self._dispatch(body)
        except _Unrecoverable as exc:
            self._log.error("unrecoverable output, giving up on the server: %s", exc)
            reason = f"sent unrecoverable output ({exc})"
        except Exception as exc:  # a bug here must not leave requests pending forever
            self._log.exception("reader failed")
            reason = f"could not be read ({exc!r})"
        self._mark_gone(reason)
        if self._stopping or self._proc is None:
            return
        try:
            async with asyncio.timeout(_REAP_GRACE):
                await self._proc.wait()
        except TimeoutError:
            self._log.warning("still running after it %s, killing it", reason)
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()

    async def _read_frame(self, stdout: asyncio.StreamReader) -> bytes | None:
        """Read one message body; None at end of stream. Skips malformed frames."""
        length: int | None = None
        seen_header = False
        while True:
            try:
                raw = await stdout.readline()
            except ValueError:
                self._log.warning("skipped a header line over %d bytes", _LINE_LIMIT)
                length, seen_header = None, False
                continue
            if not raw:
                return None
            line = raw.rstrip(b"\r\n")
            if not line:
                if length is not None:
                    break
                if seen_header:
                    self._log.warning("skipped a header without a valid Content-Length")
                seen_header = False
                continue
            # A body shorter than its Content-Length said leaves its tail before the next header.
            at = line.lower().rfind(b"content-length:")
            if at > 0:
                self._log.warning("skipped %d bytes of garbage: %r", at, line[:at][:200])
                line, length = line[at:], None
            seen_header = True
            name, colon, value = line.partition(b":")
            if not colon:
                self._log.warning("skipped a malformed header line: %r", line[:200])
            elif name.strip().lower() == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    length = None
                if length is None or length < 0:
                    self._log.warning("bad Content-Length: %r", value[:100])
                    length = None
                elif length > _MAX_BODY:
                    raise _Unrecoverable(f"Content-Length {length} is over {_MAX_BODY}")
        try:
            return await stdout.readexactly(length)
        except asyncio.IncompleteReadError as exc:
            self._log.warning("output ended %d bytes into a %d-byte body", len(exc.partial), length)
            return None

    def _dispatch(self, body: bytes) -> None:
        try:
            message = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            self._log.warning("skipped a body that is not JSON (%s): %r", exc, body[:200])
            return
        if not isinstance(message, dict):
            self._log.warning("skipped a message that is not an object: %r", body[:200])
            return
        method = message.get("method")
        params = message.get("params")
        if isinstance(method, str) and "id" in message:
            self._serve(message["id"], method, params)
        elif method == "$/cancelRequest":
            served_id = params.get("id") if isinstance(params, dict) else None
            served = self._served.get(served_id) if isinstance(served_id, int | str) else None
            if served is not None:
                served.cancel()
        elif isinstance(method, str):
            try:
                self._on_notification(method, params)
            except Exception:
                self._log.exception("on_notification failed for %s", method)
        elif "id" in message:
            self._resolve(message)
        else:
            self._log.warning("skipped a message that is no request, response or notification")

    def _resolve(self, message: dict[str, Any]) -> None:
        request_id, error = message["id"], message.get("error")
        future = self._pending.pop(request_id, None) if type(request_id) is int else None
        if future is None or future.done():  # cancelled by us, or an error about no request
            log = self._log.warning if request_id is None else self._log.debug
            log("response to no pending request (id %r, error %r)", request_id, error)
        elif error is None:
            future.set_result(message.get("result"))
        else:
            error = error if isinstance(error, dict) else {"message": repr(error)}
            code = error.get("code")
            code = code if isinstance(code, int) else INTERNAL_ERROR
            future.set_exception(LspError(code, str(error.get("message")), error.get("data")))

    def _serve(self, request_id: Any, method: str, params: Any) -> None:
        if not isinstance(request_id, int | str):
            self._log.warning("skipped request %s with a bad id %r", method, request_id)
            return
        task = asyncio.create_task(self._answer(request_id, method, params), name=f"lsp-{method}")
        self._served[request_id] = task
        task.add_done_callback(functools.partial(self._served_done, request_id, method))

    def _served_done(self, request_id: int | str, method: str, task: asyncio.Task[None]) -> None:
        if self._served.get(request_id) is task:
            del self._served[request_id]
        # Cancelled by the server's $/cancelRequest, maybe before it ran: it still gets an answer.
        if task.cancelled():
            error = {"code": REQUEST_CANCELLED, "message": f"{method} cancelled"}
            self._send({"jsonrpc": "2.0", "id": request_id, "error": error})

    async def _answer(self, request_id: int | str, method: str, params: Any) -> None:
        error: dict[str, Any]
        try:
            result = await self._on_request(method, params)
            data = _frame({"jsonrpc": "2.0", "id": request_id, "result": result})
        except LspError as exc:
            error = {"code": exc.code, "message": exc.message}
            if exc.data is not None:
                error["data"] = exc.data
        except Exception as exc:
            self._log.exception("on_request failed for %s", method)
            error = {"code": INTERNAL_ERROR, "message": f"{type(exc).__name__}: {exc}"}
        else:
            if self.running:
                self._out.put_nowait(data)
            return
        try:
            self._send({"jsonrpc": "2.0", "id": request_id, "error": error})
        except (TypeError, ValueError) as exc:  # error data that is not JSON
            self._log.error("cannot answer %s with %r: %s", method, error, exc)


class _Unrecoverable(Exception):
    pass


def _frame(message: dict[str, Any]) -> bytes:
    """Serialise a message with its header; raises ValueError/TypeError if not JSON-able."""
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: escaped, they are valid JSON
        body = json.dumps(message, separators=(",", ":"), allow_nan=False).encode("ascii")
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
