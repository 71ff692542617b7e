"""The editor-facing shell of the shared language server (host and guests).

collab-ls handles the editing itself (``didOpen``/``didChange``, the
``collab.*`` commands); every other language request of the editor is a raw
JSON message that this module routes without typed re-serialisation:

- on the host started with a server command (``--share -- pylsp``), to the
  real server through :class:`~collab_ls.proxy_host.HostProxy`;
- on a guest, to the host through :class:`~collab_ls.proxy_guest.GuestProxy`.

It also merges ``initialize`` capabilities, answers the real server's
requests to the host editor (raw requests with our own ids), merges the real
server's inlay hints with the peers' cursors, and wires the request channel
between peers (:class:`~collab_ls.peer_rpc.PeerRpc`) and the workspace tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collab_ls.guest_features import GuestFeatures, guest_capabilities, knows_server
from collab_ls.peer_rpc import (
    INVALID_PARAMS,
    REQUEST_CANCELLED,
    REQUEST_FAILED,
    Caller,
    PeerRpc,
    RpcError,
)
from collab_ls.proxy_guest import CMD_APPLY_HOST_ACTION, TOKENS_DELTA, GuestProxy, HostInfo
from collab_ls.proxy_host import GUEST_METHODS, PASSED_NOTIFICATIONS, HostProxy
from collab_ls.tree_share import GuestTree, HostTree
from collab_ls.units import Encoding
from collab_ls.workspace_tree import TreeError, TreeLimits, read_shared_file

if TYPE_CHECKING:
    from collab_ls.relay_link import RelayLink
    from collab_ls.server import CollabServer

log = logging.getLogger("collab_ls.language")

#: Editor requests collab-ls answers itself (pygls handlers), never proxied.
LOCAL_REQUESTS = frozenset({"initialize", "shutdown"})
#: Requests whose position tells where the user's cursor is.
CURSOR_REQUESTS = frozenset(
    {"textDocument/hover", "textDocument/documentHighlight", "textDocument/completion"}
)
INLAY_HINT = "textDocument/inlayHint"
HOST_WAIT = 3.0
"""Seconds a guest's ``initialize`` waits to learn the host's server's capabilities."""
EDITOR_ID_PREFIX = "collab-proxy:"


class RawMessage:
    """A message kept as plain JSON for the proxy (see ``CollabProtocol``)."""

    __slots__ = ("data",)
    jsonrpc = "2.0"

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data


class LanguageShell:
    """Routes the editor's language requests to the real server or the host."""

    def __init__(self, server: CollabServer) -> None:
        self._server = server
        self.options = server.options
        self.host_proxy: HostProxy | None = None
        self.guest_proxy: GuestProxy | None = None
        self.rpc: PeerRpc | None = None
        self._host_tree: HostTree | None = None
        self._guest_tree: GuestTree | None = None
        self._tasks: dict[Any, asyncio.Task[None]] = {}
        self._editor_ids = itertools.count(1)
        self._editor_pending: dict[str, asyncio.Future[Any]] = {}
        self._progress_token = "collab-ls/workspace"
        self.initial_host: HostInfo | None = None
        """A guest: the host's server as the session showed it at ``initialize``."""
        self._client_capabilities: dict[str, Any] = {}
        self.features: GuestFeatures | None = None

    # ------------------------------------------------------------- routing

    @property
    def active(self) -> bool:
        return self.host_proxy is not None or not self._server.is_host

    def wants(self, data: dict[str, Any]) -> bool:
        """Whether a raw incoming message is ours rather than pygls's."""
        method = data.get("method")
        if method is None:
            msg_id = data.get("id")
            return isinstance(msg_id, str) and msg_id.startswith(EDITOR_ID_PREFIX)
        if not isinstance(method, str) or not self.active:
            return False
        if method == "$/cancelRequest":
            params = data.get("params")
            return isinstance(params, dict) and params.get("id") in self._tasks
        if "id" not in data:
            return self.host_proxy is not None and method in PASSED_NOTIFICATIONS
        if method in LOCAL_REQUESTS:
            return False
        if method == "workspace/executeCommand":
            params = data.get("params")
            command = params.get("command") if isinstance(params, dict) else None
            if command == CMD_APPLY_HOST_ACTION:
                return not self._server.is_host
            if isinstance(command, str) and command.startswith("collab."):
                return False
        if self.host_proxy is not None:
            return True
        return method in GUEST_METHODS or method == TOKENS_DELTA

    def handle(self, message: RawMessage) -> None:
        data = message.data
        method = data.get("method")
        if method is None:
            future = self._editor_pending.pop(str(data.get("id")), None)
            if future is not None and not future.done():
                error = data.get("error")
                if isinstance(error, dict):
                    future.set_exception(
                        RpcError(int(error.get("code", REQUEST_FAILED)), str(error.get("message")))
                    )
                else:
                    future.set_result(data.get("result"))
            return
        params = data.get("params")
        if method == "$/cancelRequest":
            task = self._tasks.get(params.get("id") if isinstance(params, dict) else None)
            if task is not None:
                task.cancel()
            return
        if "id" not in data:
            if self.host_proxy is not None:
                self.host_proxy.editor_notification(str(method), params)
            return
        msg_id = data["id"]
        task = asyncio.ensure_future(self._serve(msg_id, str(method), params))
        self._tasks[msg_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(msg_id, None))

    async def _serve(self, msg_id: Any, method: str, params: Any) -> None:
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id}
        try:
            reply["result"] = await self._request(method, params)
        except asyncio.CancelledError:
            reply["error"] = {"code": REQUEST_CANCELLED, "message": "cancelled"}
        except RpcError as exc:
            reply["error"] = exc.to_json()
        except Exception as exc:
            log.exception("%s failed", method)
            reply["error"] = {"code": REQUEST_FAILED, "message": f"{method} failed: {exc}"}
        self._send(reply)

    async def _request(self, method: str, params: Any) -> Any:
        presence = self._server.presence
        if method in CURSOR_REQUESTS and presence is not None and isinstance(params, dict):
            try:
                uri = params["textDocument"]["uri"]
                pos = params["position"]
                presence.position_seen(uri, int(pos["line"]), int(pos["character"]))
            except (KeyError, TypeError, ValueError):
                pass
        if method == "workspace/executeCommand" and self.guest_proxy is not None:
            command = params.get("command") if isinstance(params, dict) else None
            if command == CMD_APPLY_HOST_ACTION:
                args = params.get("arguments") or [None]
                return await self.guest_proxy.apply_host_action(args[0])
        if method == INLAY_HINT:
            return await self._inlay_hints(params)
        return await self._forward(method, params)

    async def _forward(self, method: str, params: Any) -> Any:
        if self.host_proxy is not None:
            return await self.host_proxy.editor_request(method, params)
        if self.guest_proxy is not None:
            return await self.guest_proxy.request(method, params)
        return None  # a guest before its session is up

    async def _inlay_hints(self, params: Any) -> list[Any]:
        hints: list[Any] = []
        host = self.host_proxy
        try:
            if host is not None and host.capabilities.get("inlayHintProvider"):
                got = await self._forward(INLAY_HINT, params)
                hints.extend(got if isinstance(got, list) else [])
            elif self.guest_proxy is not None:
                got = await self._forward(INLAY_HINT, params)
                hints.extend(got if isinstance(got, list) else [])
        except RpcError as exc:
            log.info("inlay hints from the language server failed: %s", exc.message)
        return hints + self._server.peer_hints(params)

    # ------------------------------------------------------ editor channel

    def _send(self, data: dict[str, Any]) -> None:
        try:
            self._server.protocol._send_data(data)
        except Exception:
            log.debug("could not write to the editor", exc_info=True)

    def notify(self, method: str, params: Any) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def send_request(self, method: str, params: Any) -> asyncio.Future[Any]:
        """Send a request to the editor now, as plain JSON; the future of its raw result.

        The future fails with :class:`RpcError` on an error answer.
        """
        msg_id = f"{EDITOR_ID_PREFIX}{next(self._editor_ids)}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._editor_pending[msg_id] = future
        future.add_done_callback(lambda _f: self._editor_pending.pop(msg_id, None))
        self._send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return future

    async def request(self, method: str, params: Any) -> Any:
        """A request to the editor, as plain JSON; its raw result (RpcError on an error)."""
        return await self.send_request(method, params)

    def show(self, message: str, *, error: bool = False) -> None:
        self.notify("window/showMessage", {"type": 1 if error else 3, "message": message})

    # ----------------------------------------------------------- initialize

    async def start_host_server(self, raw_params: dict[str, Any]) -> Encoding | None:
        """Host with a server command: start it from the editor's initialize."""
        argv = self.options.server_command
        if not argv or not self._server.is_host:
            return None
        proxy = HostProxy(
            argv,
            root=self._server.root_from(raw_params),
            session=self._server.session,
            editor=self,
            allow_guest_commands=self.options.allow_guest_commands,
            logger=log,
        )
        try:
            await proxy.start(raw_params)
        except Exception as exc:
            log.exception("could not start the language server %s", " ".join(argv))
            self.show(f"collab-ls: could not start {' '.join(argv)}: {exc}", error=True)
            return None
        self.host_proxy = proxy
        return proxy.encoding

    def note_client(self, raw_params: dict[str, Any]) -> None:
        """What the editor's raw ``initialize`` says about it (before the server starts)."""
        caps = raw_params.get("capabilities")
        self._client_capabilities = caps if isinstance(caps, dict) else {}

    def _work_done_progress(self) -> bool:
        """Whether the editor's ``initialize`` says it shows work-done progress."""
        window = self._client_capabilities.get("window")
        return isinstance(window, dict) and bool(window.get("workDoneProgress"))

    async def learn_host(self) -> None:
        """A guest, during ``initialize``: join now and learn the host's server (bounded).

        The editor then gets exactly the features the host's server has, with its
        trigger characters, rather than a guess. If the host does not show up
        within :data:`HOST_WAIT` seconds, the guest offers a broad set instead.
        """
        server = self._server
        session = server.session
        changed = asyncio.Event()
        sub = session.host.observe(lambda _event: changed.set())
        server._spawn(server.start_session())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HOST_WAIT
        try:
            while not knows_server(raw := session.host_info()):
                left = deadline - loop.time()
                if left <= 0:
                    log.warning("the host's server is not known yet: offering every feature")
                    return
                changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), left)
            self.initial_host = HostInfo(raw)
            log.info("the host's language server: %s", raw.get("server") or "none")
        finally:
            session.host.unobserve(sub)

    def merge_capabilities(self, ours: dict[str, Any]) -> dict[str, Any]:
        """Our ``initialize`` capabilities merged with the real server's (or a guest's)."""
        if self.host_proxy is not None:
            merged = dict(self.host_proxy.capabilities)
        elif not self._server.is_host:
            merged = guest_capabilities(self.initial_host)
        else:
            return ours
        theirs_sync = merged.get("textDocumentSync")
        for key in ("textDocumentSync", "positionEncoding", "inlayHintProvider"):
            if key in ours:
                merged[key] = ours[key]
        sync = merged.get("textDocumentSync")
        if isinstance(sync, dict) and isinstance(theirs_sync, dict) and theirs_sync.get("save"):
            merged["textDocumentSync"] = {**sync, "save": theirs_sync["save"]}
        for key in ("hoverProvider", "documentHighlightProvider", "completionProvider"):
            merged.setdefault(key, ours.get(key))
        commands = list(ours.get("executeCommandProvider", {}).get("commands", []))
        theirs = merged.get("executeCommandProvider")
        if isinstance(theirs, dict):
            commands += [c for c in theirs.get("commands", []) if c not in commands]
        if not self._server.is_host:
            commands.append(CMD_APPLY_HOST_ACTION)
        merged["executeCommandProvider"] = {"commands": commands}
        workspace = dict(merged.get("workspace") or {})
        workspace.update(ours.get("workspace") or {})
        if workspace:
            merged["workspace"] = workspace
        offered = {k: v for k, v in merged.items() if v is not None}
        if not self._server.is_host and self.features is None:
            # What the host's server gains from now on is registered with the editor.
            self.features = GuestFeatures(
                self._server.session.host,
                static=offered,
                client_capabilities=self._client_capabilities,
                request=self.request,
                logger=log,
            )
            self.features.start()
        return offered

    # -------------------------------------------------------------- session

    async def session_started(self, link: RelayLink) -> None:
        """The relay link is up: wire the request channel, the proxies and the tree."""
        server = self._server
        rpc = PeerRpc(link.send_rpc, logger=log)
        link.on_rpc = rpc.receive
        self.rpc = rpc
        if server.is_host:
            rpc.on_request = self._host_rpc
            if self.host_proxy is not None:
                self.host_proxy.initialized(link.client_id, rpc)
            else:
                server.session.host.update(
                    {
                        "client": link.client_id,
                        "root": server.root.absolute().as_uri(),
                        "state": "none",
                    }
                )
            tree = HostTree(server.session, server.root, logger=log)
            try:
                await tree.start()
                self._host_tree = tree
            except (OSError, TreeError) as exc:
                log.error("could not list the shared folder: %s", exc)
            return
        awareness = link.awareness
        guest = GuestProxy(
            rpc=rpc,
            session=server.session,
            root=server.root,
            encoding=server.encoding,
            present=lambda client: client in awareness.states,
            publish=self.notify,
            timeout=self.options.request_timeout,
            logger=log,
        )
        rpc.on_notification = guest.notification
        self.guest_proxy = guest
        awareness.observe(self._on_awareness)
        if self.options.workspace is not None:
            tree_mirror = GuestTree(
                server.session,
                server.root,
                rpc,
                host=self._host_id,
                is_open=server.is_open,
                progress=self._progress if self._work_done_progress() else None,
                logger=log,
            )
            guest._ensure_file = tree_mirror.ensure
            await tree_mirror.start()
            self._guest_tree = tree_mirror
        server._spawn(self._late_join(link))

    async def _late_join(self, link: RelayLink) -> None:
        try:
            await link.wait_synced(30.0)
        except Exception as exc:
            log.info("no diagnostics from the host yet: %s", exc)
            return
        if self.guest_proxy is not None:
            await self.guest_proxy.fetch_diagnostics()

    def _host_id(self) -> int | None:
        info = self.guest_proxy.host() if self.guest_proxy else None
        if info is not None:
            return info.client
        raw = self._server.session.host_info().get("client")
        return int(raw) if isinstance(raw, int | float) else None

    def _on_awareness(self, topic: str, change: Any) -> None:
        if topic != "change" or self.guest_proxy is None or self.rpc is None:
            return
        info = self.guest_proxy.host()
        changes = change[0] if isinstance(change, tuple) else change
        removed = changes.get("removed", []) if isinstance(changes, dict) else []
        if info is None or info.client not in removed:
            return
        failed = self.rpc.fail_pending(
            info.client,
            RpcError(REQUEST_FAILED, "the host left the session: language features are gone"),
        )
        log.warning("the host left the session (%d requests failed)", failed)
        self.show(
            "collab-ls: the host left the session; you keep the shared text, but hover, "
            "completion and the other language features are gone until the host returns",
            error=True,
        )

    async def _host_rpc(self, caller: Caller, method: str, params: Any) -> Any:
        if method == "readFile":
            path = params.get("path") if isinstance(params, dict) else None
            if not isinstance(path, str):
                raise RpcError(INVALID_PARAMS, "readFile: expected {path}")
            live = self._server.session.text(path)
            if live is not None:
                return {"path": path, "text": str(live)}
            try:
                text = await asyncio.to_thread(
                    read_shared_file, self._server.root, path, TreeLimits()
                )
            except TreeError as exc:
                raise RpcError(INVALID_PARAMS, str(exc)) from exc
            return {"path": path, "text": text}
        if self.host_proxy is None:
            raise RpcError(
                REQUEST_FAILED,
                "the host runs no language server (it can share one: collab-ls --share -- CMD)",
            )
        return await self.host_proxy.guest_request(caller, method, params)

    async def _progress(self, kind: str, message: str, percentage: int | None) -> None:
        if kind == "begin":
            self._progress_token = f"collab-ls/workspace/{next(self._editor_ids)}"
            await self.request("window/workDoneProgress/create", {"token": self._progress_token})
            value: dict[str, Any] = {"kind": "begin", "title": "collab-ls", "message": message}
        elif kind == "report":
            value = {"kind": "report", "message": message}
        else:
            value = {"kind": "end", "message": message}
        if percentage is not None and kind != "end":
            value["percentage"] = percentage
        self.notify("$/progress", {"token": self._progress_token, "value": value})

    async def stop(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        if self.features is not None:
            await self.features.stop()
        if self._guest_tree is not None:
            await self._guest_tree.stop()
        if self._host_tree is not None:
            await self._host_tree.stop()
        if self.rpc is not None:
            await self.rpc.close()
        if self.host_proxy is not None:
            await self.host_proxy.stop()


def workspace_root(path: Path) -> Path:
    """``--workspace DIR``: created if missing."""
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()
