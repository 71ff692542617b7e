"""Requests and answers between the peers of a session, over the relay.

The relay carries an opaque RPC frame beside the Yjs sync (``relay.protocol``,
message type 100): a peer sends it to one awareness client id (or to every
other peer with 0) and the relay stamps who sent it and whether that link is
read-only. This module is the JSON layer on top, JSON-RPC shaped::

    {"id": 7, "method": "lsp", "params": {...}}        a request
    {"id": 7, "result": ...} / {"id": 7, "error": {"code": -32803, "message": "..."}}
    {"method": "cancel", "params": {"id": 7}}          the sender gave up on request 7
    {"method": "diagnostics", "params": {...}}         a notification (no id)

Ids are per sender; a receiver keys what it serves by ``(sender, id)``.

:class:`PeerRpc` is the shell: outgoing requests wait for their answer with a
timeout that yields an :class:`RpcError` (never a hang), a cancelled waiter
sends ``cancel``, and a peer that leaves fails every request waiting on it.
Incoming requests run as tasks through one handler and are cancelled by the
sender's ``cancel``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: JSON-RPC / LSP error codes used between peers and towards editors.
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
REQUEST_FAILED = -32803
REQUEST_CANCELLED = -32800
SERVER_CANCELLED = -32802

CANCEL = "cancel"


class RpcError(Exception):
    """An error answer (or a local failure standing for one): LSP error fields."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            out["data"] = self.data
        return out


@dataclass(frozen=True)
class Caller:
    """Who sent an incoming request, as the relay stamped it."""

    peer: int
    read_only: bool


Handler = Callable[[Caller, str, Any], Awaitable[Any]]
NotificationHandler = Callable[[Caller, str, Any], None]
Sender = Callable[[int, bytes], bool]


class PeerRpc:
    """JSON requests and notifications to other peers through one send function."""

    def __init__(
        self,
        send: Sender,
        *,
        on_request: Handler | None = None,
        on_notification: NotificationHandler | None = None,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
    ) -> None:
        self._send = send
        self.on_request = on_request
        self.on_notification = on_notification
        self._log = logger
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[int, asyncio.Future[Any]]] = {}
        self._serving: dict[tuple[int, Any], asyncio.Task[None]] = {}

    # ------------------------------------------------------------- outgoing

    async def request(self, to: int, method: str, params: Any, *, timeout: float) -> Any:  # noqa: ASYNC109
        """Ask peer ``to``; the answer's result, or :class:`RpcError`."""
        msg_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = (to, future)
        try:
            if not self._write(to, {"id": msg_id, "method": method, "params": params}):
                raise RpcError(REQUEST_FAILED, "not connected to the session's relay")
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout)
            except TimeoutError:
                self._write(to, {"method": CANCEL, "params": {"id": msg_id}})
                raise RpcError(
                    REQUEST_FAILED, f"no answer from the host within {timeout:g} s"
                ) from None
            except asyncio.CancelledError:
                self._write(to, {"method": CANCEL, "params": {"id": msg_id}})
                raise
        finally:
            self._pending.pop(msg_id, None)
            if not future.done():
                future.cancel()

    def notify(self, to: int, method: str, params: Any) -> bool:
        """Send a notification to ``to`` (0: every other peer)."""
        return self._write(to, {"method": method, "params": params})

    def fail_pending(self, peer: int | None, error: RpcError) -> int:
        """Fail requests waiting on ``peer`` (every peer with None); how many."""
        failed = 0
        for to, future in list(self._pending.values()):
            if (peer is None or to == peer) and not future.done():
                future.set_exception(error)
                failed += 1
        return failed

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _write(self, to: int, message: dict[str, Any]) -> bool:
        try:
            payload = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            self._log.error("cannot encode a message for peer %d: %s", to, exc)
            return False
        return self._send(to, payload)

    # ------------------------------------------------------------- incoming

    def receive(self, sender: int, read_only: bool, payload: bytes) -> None:
        """One RPC frame from the relay (``RelayLink.on_rpc``)."""
        try:
            message = json.loads(payload)
        except ValueError as exc:
            self._log.warning("peer %d sent an RPC that is not JSON: %s", sender, exc)
            return
        if not isinstance(message, dict):
            self._log.warning("peer %d sent an RPC that is not an object", sender)
            return
        caller = Caller(sender, read_only)
        method = message.get("method")
        msg_id = message.get("id")
        if method is None:
            self._answer(sender, message)
        elif not isinstance(method, str):
            self._log.warning("peer %d sent an RPC with a non-string method", sender)
        elif msg_id is None:
            self._notification(caller, method, message.get("params"))
        elif not isinstance(msg_id, int | str):
            self._log.warning("peer %d sent an RPC with a bad id %r", sender, msg_id)
        else:
            self._serve(caller, msg_id, method, message.get("params"))

    def _answer(self, sender: int, message: dict[str, Any]) -> None:
        msg_id = message.get("id")
        entry = self._pending.get(msg_id) if isinstance(msg_id, int) else None
        if entry is None or entry[0] not in (sender, 0):
            return  # late (timed out, cancelled) or not ours
        future = entry[1]
        if future.done():
            return
        error = message.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            text = error.get("message")
            future.set_exception(
                RpcError(
                    code if isinstance(code, int) else INTERNAL_ERROR,
                    text if isinstance(text, str) else "error from the host",
                    error.get("data"),
                )
            )
        else:
            future.set_result(message.get("result"))

    def _notification(self, caller: Caller, method: str, params: Any) -> None:
        if method == CANCEL:
            key = (caller.peer, params.get("id") if isinstance(params, dict) else None)
            task = self._serving.get(key)
            if task is not None:
                task.cancel()
            return
        if self.on_notification is None:
            return
        try:
            self.on_notification(caller, method, params)
        except Exception:
            self._log.exception("handling %s from peer %d failed", method, caller.peer)

    def _serve(self, caller: Caller, msg_id: int | str, method: str, params: Any) -> None:
        key = (caller.peer, msg_id)
        if key in self._serving:
            self._log.warning("peer %d reused request id %r; ignored", caller.peer, msg_id)
            return
        task = asyncio.ensure_future(self._run(caller, msg_id, method, params))
        self._serving[key] = task
        task.add_done_callback(lambda _t: self._serving.pop(key, None))

    async def _run(self, caller: Caller, msg_id: int | str, method: str, params: Any) -> None:
        reply: dict[str, Any] = {"id": msg_id}
        try:
            if self.on_request is None:
                raise RpcError(METHOD_NOT_FOUND, f"this peer serves no requests ({method})")
            reply["result"] = await self.on_request(caller, method, params)
        except asyncio.CancelledError:
            reply["error"] = RpcError(REQUEST_CANCELLED, "cancelled by the requester").to_json()
        except RpcError as exc:
            reply["error"] = exc.to_json()
        except Exception as exc:
            self._log.exception("serving %s for peer %d failed", method, caller.peer)
            reply["error"] = RpcError(INTERNAL_ERROR, f"{method} failed: {exc}").to_json()
        self._write(caller.peer, reply)

    async def close(self) -> None:
        """Cancel what is being served and fail what is waiting."""
        self.fail_pending(None, RpcError(REQUEST_FAILED, "the session ended"))
        tasks = list(self._serving.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
