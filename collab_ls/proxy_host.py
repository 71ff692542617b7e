"""The host's real language server, for the host's editor and for every guest.

``collab-ls --share -- pylsp`` runs ``pylsp`` as a child process
(:class:`~collab_ls.lsp_process.LspProcess`, raw JSON both ways) and:

- starts it from the host editor's own ``initialize`` (raw params, so no
  field is lost), and publishes its capabilities, position encoding and root
  in the session document (``host``) for the guests;
- keeps it in sync with the session's text of every shared document
  (:class:`~collab_ls.server_docs.ServerDocs`), whoever opened it;
- passes the host editor's requests and notifications through untouched, and
  the server's requests back to the host editor, except ``workspace/applyEdit``,
  which is applied to the shared documents (:mod:`collab_ls.workspace_edit`);
- serves guests' requests arriving over the relay (:class:`PeerRpc`): checks
  every path stays inside the shared root, refuses commands unless allowed and
  edits from read-only guests, forwards them, and applies edit results
  (formatting, rename) to the shared documents instead of returning them;
- sends diagnostics to every peer;
- restarts the server when it dies, re-opening every document; meanwhile
  requests get an error, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from collab_ls.lsp_json import OutsideRoot, relative_path, uris_in
from collab_ls.lsp_process import LspError, LspProcess, LspProcessGone
from collab_ls.peer_rpc import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    REQUEST_FAILED,
    Caller,
    PeerRpc,
    RpcError,
)
from collab_ls.server_docs import ServerDocs
from collab_ls.session import Session
from collab_ls.units import Encoding
from collab_ls.workspace_edit import EditError, WorkspaceEditor

log = logging.getLogger(__name__)

#: Requests a guest may send to the host's language server.
GUEST_METHODS = frozenset(
    {
        "textDocument/hover",
        "textDocument/completion",
        "completionItem/resolve",
        "textDocument/signatureHelp",
        "textDocument/definition",
        "textDocument/declaration",
        "textDocument/typeDefinition",
        "textDocument/implementation",
        "textDocument/references",
        "textDocument/documentSymbol",
        "textDocument/documentHighlight",
        "textDocument/codeAction",
        "codeAction/resolve",
        "textDocument/codeLens",
        "textDocument/formatting",
        "textDocument/rangeFormatting",
        "textDocument/onTypeFormatting",
        "textDocument/rename",
        "textDocument/prepareRename",
        "textDocument/semanticTokens/full",
        "textDocument/semanticTokens/range",
        "textDocument/foldingRange",
        "textDocument/selectionRange",
        "textDocument/documentLink",
        "textDocument/inlayHint",
        "textDocument/prepareCallHierarchy",
        "callHierarchy/incomingCalls",
        "callHierarchy/outgoingCalls",
        "textDocument/prepareTypeHierarchy",
        "typeHierarchy/supertypes",
        "typeHierarchy/subtypes",
        "workspace/symbol",
        "textDocument/diagnostic",
        "workspace/executeCommand",
    }
)

#: Requests whose result is an edit: applied to the session, not returned.
EDIT_RESULTS = frozenset(
    {
        "textDocument/formatting",
        "textDocument/rangeFormatting",
        "textDocument/onTypeFormatting",
        "textDocument/rename",
    }
)

#: Notifications of the host editor passed to the server as they are.
PASSED_NOTIFICATIONS = frozenset(
    {
        "textDocument/didSave",
        "textDocument/willSave",
        "workspace/didChangeConfiguration",
        "workspace/didChangeWatchedFiles",
        "workspace/didChangeWorkspaceFolders",
        "workspace/didCreateFiles",
        "workspace/didRenameFiles",
        "workspace/didDeleteFiles",
        "$/setTrace",
        "window/workDoneProgress/cancel",
    }
)

RESTARTS = 5
"""At most this many restarts within :data:`RESTART_WINDOW` seconds."""
RESTART_WINDOW = 60.0
REQUEST_TIMEOUT = 30.0


class Editor(Protocol):
    """What the proxy needs of the host editor's connection."""

    def notify(self, method: str, params: Any) -> None: ...
    def request(self, method: str, params: Any) -> Awaitable[Any]: ...
    def show(self, message: str, *, error: bool = False) -> None: ...


class HostProxy:
    """The host's real language server, shared."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        root: Path,
        session: Session,
        editor: Editor,
        allow_guest_commands: bool = False,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
    ) -> None:
        self.argv = list(argv)
        self.root = root
        self._session = session
        self._editor = editor
        self.allow_guest_commands = allow_guest_commands
        self._log = logger
        self._process: LspProcess | None = None
        self._init_params: dict[str, Any] = {}
        self.init_result: dict[str, Any] = {}
        self.encoding = Encoding.UTF16
        self.docs: ServerDocs | None = None
        self.edits: WorkspaceEditor | None = None
        self.rpc: PeerRpc | None = None
        self.client_id = 0
        self.diagnostics: dict[str, Any] = {}
        self._state = "starting"
        self._stopping = False
        self._restarts: list[float] = []
        self._restart_task: asyncio.Task[None] | None = None
        self._on_state: list[Callable[[str], None]] = []
        self._registered: dict[str, str] = {}

    # ------------------------------------------------------------ lifecycle

    @property
    def capabilities(self) -> dict[str, Any]:
        caps = self.init_result.get("capabilities")
        return caps if isinstance(caps, dict) else {}

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running and self._state == "running"

    @property
    def state(self) -> str:
        return self._state

    async def start(self, init_params: dict[str, Any]) -> dict[str, Any]:
        """Start the server with the host editor's ``initialize`` params; its result."""
        self._init_params = dict(init_params)
        self._init_params["processId"] = None  # it is our child, not the editor's
        await self._spawn()
        return self.init_result

    async def _spawn(self) -> None:
        process = LspProcess(
            self.argv,
            cwd=self.root,
            on_notification=self._server_notification,
            on_request=self._server_request,
            on_exit=self._exited,
            logger=self._log,
        )
        await process.start()
        self._process = process
        result = await process.request("initialize", self._init_params, timeout=REQUEST_TIMEOUT)
        self.init_result = result if isinstance(result, dict) else {}
        enc = self.capabilities.get("positionEncoding")
        self.encoding = Encoding.parse(enc if isinstance(enc, str) else None)
        self._log.info(
            "language server %s started (pid %s, position encoding %s)",
            " ".join(self.argv),
            process.pid,
            self.encoding,
        )

    def initialized(self, client_id: int, rpc: PeerRpc | None) -> None:
        """The host editor said ``initialized`` and the session is up."""
        assert self._process is not None
        self.client_id = client_id
        self.rpc = rpc
        self._process.notify("initialized", {})
        self.docs = ServerDocs(self._session, self.root, self.encoding, self._notify, self._log)
        self.edits = WorkspaceEditor(
            self._session, self.root, self.encoding, self._log, rebase=self.docs.rebase
        )
        self.docs.start()
        self._set_state("running")

    def _set_state(self, state: str) -> None:
        self._state = state
        with self._session.doc.transaction():
            self._session.host.update(
                {
                    "client": self.client_id,
                    "root": self.root.absolute().as_uri(),
                    "encoding": self.encoding.value,
                    # As a JSON string: a Y.Map would turn its integers into floats.
                    "capabilities": json.dumps(self.capabilities),
                    "server": " ".join(self.argv),
                    "state": state,
                    # What guests may offer their editors (see guest_features.guest_capabilities).
                    "guest_commands": self.allow_guest_commands,
                }
            )
        for callback in self._on_state:
            callback(state)

    async def stop(self) -> None:
        self._stopping = True
        if self._restart_task is not None:
            self._restart_task.cancel()
            with contextlib.suppress(BaseException):
                await self._restart_task
        if self.docs is not None:
            self.docs.stop()
        if self._process is not None:
            await self._process.stop()

    def _notify(self, method: str, params: Any) -> None:
        if self._process is not None and self._process.running:
            self._process.notify(method, params)

    def _exited(self, returncode: int | None) -> None:
        if self._stopping:
            return
        self._log.error("the language server %s exited (%s)", self.argv[0], returncode)
        self._editor.show(
            f"collab-ls: the language server {self.argv[0]} stopped (exit {returncode}); "
            "restarting it",
            error=True,
        )
        if self.docs is not None:
            self._set_state("restarting")
        self._restart_task = asyncio.ensure_future(self._restart())

    async def _restart(self) -> None:
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW] + [now]
        if len(self._restarts) > RESTARTS:
            self._log.error("the language server keeps dying; not restarting it again")
            self._editor.show(
                f"collab-ls: {self.argv[0]} died {RESTARTS} times in a minute; "
                "language features are off",
                error=True,
            )
            self._set_state("failed")
            return
        await asyncio.sleep(0.2 * len(self._restarts))
        try:
            await self._spawn()
        except Exception as exc:
            self._log.exception("restarting the language server failed")
            self._editor.show(f"collab-ls: could not restart {self.argv[0]}: {exc}", error=True)
            self._set_state("failed")
            return
        assert self._process is not None
        self._registered.clear()
        self._session.host["registrations"] = "[]"
        self._process.notify("initialized", {})
        if self.docs is not None:
            self.docs.reopen()
        self._set_state("running")
        self._editor.show(f"collab-ls: {self.argv[0]} restarted")

    def _require(self) -> LspProcess:
        process = self._process
        if process is None or not process.running or self._state != "running":
            raise RpcError(
                REQUEST_FAILED,
                f"the host's language server is {self._state}; try again in a moment",
            )
        return process

    # ------------------------------------------------------- host editor side

    async def editor_request(self, method: str, params: Any) -> Any:
        """A request of the host's own editor, passed through untouched."""
        # The versions in the server's edits are the server's own, not the editor's.
        return _unversioned(await self._ask(method, params, None))

    async def _ask(self, method: str, params: Any, timeout: float | None) -> Any:  # noqa: ASYNC109
        """A request to the running server; its failures as LSP errors (RpcError)."""
        process = self._require()
        try:
            return await process.request(method, params, timeout=timeout)
        except TimeoutError as exc:
            raise RpcError(REQUEST_FAILED, f"{method}: the language server did not answer") from exc
        except LspProcessGone as exc:
            raise RpcError(REQUEST_FAILED, f"the host's language server stopped: {exc}") from exc
        except LspError as exc:
            raise RpcError(exc.code, exc.message, exc.data) from exc

    def editor_notification(self, method: str, params: Any) -> None:
        if method in PASSED_NOTIFICATIONS:
            self._notify(method, params)

    # ------------------------------------------------------------ server side

    def _server_notification(self, method: str, params: Any) -> None:
        if method == "textDocument/publishDiagnostics" and isinstance(params, dict):
            uri = params.get("uri")
            if isinstance(uri, str):
                self.diagnostics[uri] = params
            if self.rpc is not None:
                self.rpc.notify(0, "diagnostics", params)
        self._editor.notify(method, params)

    async def _server_request(self, method: str, params: Any) -> Any:
        if method in ("client/registerCapability", "client/unregisterCapability"):
            self._track_registrations(method, params)
        if method == "workspace/applyEdit":
            edit = params.get("edit") if isinstance(params, dict) else None
            try:
                self._apply(edit)
            except EditError as exc:
                self._log.error("the language server's edit failed: %s", exc)
                return {"applied": False, "failureReason": str(exc)}
            return {"applied": True}
        return await self._editor.request(method, params)

    def _track_registrations(self, method: str, params: Any) -> None:
        """Dynamic registrations, published so guests know what the server serves."""
        key = "registrations" if method == "client/registerCapability" else "unregisterations"
        entries = params.get(key) if isinstance(params, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                continue
            if method == "client/registerCapability" and isinstance(entry.get("method"), str):
                self._registered[entry["id"]] = entry["method"]
            else:
                self._registered.pop(entry["id"], None)
        if self.docs is not None:
            self._session.host["registrations"] = json.dumps(sorted(set(self._registered.values())))

    def _apply(self, edit: Any, since: dict[str, int] | None = None) -> None:
        if self.edits is None:
            raise EditError("the session is not up")
        report = self.edits.workspace_edit(edit, since)
        self._log.info("applied a server edit to %s", ", ".join(report.touched) or "nothing")

    # ------------------------------------------------------------ guest side

    async def guest_request(self, caller: Caller, method: str, params: Any) -> Any:
        """A guest's request over the relay (:class:`PeerRpc` handler)."""
        if method == "lsp":
            if not isinstance(params, dict) or not isinstance(params.get("method"), str):
                raise RpcError(INVALID_PARAMS, "lsp: expected {method, params}")
            return await self._guest_lsp(caller, params["method"], params.get("params"))
        if method == "diagnostics":
            return list(self.diagnostics.values())
        if method == "applyEdit":
            if caller.read_only:
                raise RpcError(REQUEST_FAILED, "a read-only guest cannot edit")
            edit = params.get("edit") if isinstance(params, dict) else None
            try:
                self._apply(edit)
            except EditError as exc:
                raise RpcError(INVALID_PARAMS, f"edit refused: {exc}") from exc
            return {"applied": True}
        raise RpcError(METHOD_NOT_FOUND, f"the host serves no {method!r}")

    async def _guest_lsp(self, caller: Caller, method: str, params: Any) -> Any:
        if method not in GUEST_METHODS:
            raise RpcError(METHOD_NOT_FOUND, f"{method} is not proxied to guests")
        if method == "workspace/executeCommand" and not self.allow_guest_commands:
            raise RpcError(
                REQUEST_FAILED,
                "the host does not let guests run the language server's commands "
                "(the host can start collab-ls with --allow-guest-commands)",
            )
        if caller.read_only and (method in EDIT_RESULTS or method == "workspace/executeCommand"):
            raise RpcError(REQUEST_FAILED, f"a read-only guest cannot use {method}")
        for uri in uris_in(params):
            try:
                relative_path(self.root, uri)
            except OutsideRoot as exc:
                self._log.warning("refused %s from peer %d: %s", method, caller.peer, exc)
                raise RpcError(INVALID_PARAMS, f"refused: {exc}") from exc
        # The server's versions now: its edits are moved past what peers type meanwhile.
        since = self.docs.versions() if self.docs is not None else {}
        result = await self._ask(method, params, REQUEST_TIMEOUT)
        if method in EDIT_RESULTS and result:
            try:
                if method == "textDocument/rename":
                    self._apply(result, since)
                    return {"changes": {}}
                uri = params["textDocument"]["uri"]
                if self.edits is None:
                    raise EditError("the session is not up")
                self.edits.text_edits(uri, result, since=since.get(self.edits.key(uri)))
                return []
            except (EditError, KeyError, TypeError) as exc:
                raise RpcError(REQUEST_FAILED, f"{method}: could not apply: {exc}") from exc
        return result


def _unversioned(value: Any) -> Any:
    """``value`` with each ``TextDocumentEdit``'s version cleared (null: any version)."""
    if isinstance(value, list):
        return [_unversioned(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _unversioned(v) for k, v in value.items()}
    td = out.get("textDocument")
    if isinstance(td, dict) and "version" in td and "edits" in out:
        out["textDocument"] = {**td, "version": None}
    return out
