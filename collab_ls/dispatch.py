"""How the editor's messages reach :class:`~collab_ls.server.CollabServer`.

collab-ls bypasses pygls's own document store: pygls re-applies every change
to a copy of the document at a cost that grows with the document, and
re-parses ``didChange`` through cattrs; collab-ls keeps its own line-indexed
model of each buffer (:mod:`collab_ls.linetext`) and reads ``didChange`` as
plain JSON (:mod:`collab_ls.did_change`). Edits are handled synchronously and
in order, as they arrive.

Keystrokes and collab-ls' own notifications (registers, cursor reports) skip
pygls's generic dispatch; language requests that go to a real server are kept
as raw JSON for :class:`~collab_ls.language_shell.LanguageShell`; ``initialize``
starts the host's real server first and merges its capabilities.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.protocol import LanguageServerProtocol, lsp_method
from pygls.protocol.json_rpc import JsonRPCNotification

from collab_ls.language_shell import RawMessage
from collab_ls.presence_shell import _plain
from collab_ls.protocol import NOTIFY_CURSOR, NOTIFY_REGISTER

if TYPE_CHECKING:
    from collab_ls.server import CollabServer

__all__ = ["CollabProtocol"]

log = logging.getLogger("collab_ls")

#: What a server may send before its ``initialize`` result (LSP 3.17, ``initialize``).
ALLOWED_BEFORE_INITIALIZE = frozenset(
    {"window/showMessage", "window/logMessage", "telemetry/event", "window/showMessageRequest"}
)


class CollabProtocol(LanguageServerProtocol):
    """pygls protocol without pygls's own document store."""

    _server: CollabServer

    _raw_initialize: dict[str, Any] | None = None
    _initialize_id: Any = None
    _held: list[Any] | None = None
    """Messages to the editor held until the ``initialize`` result is sent (LSP's rule)."""

    def _send_data(self, data: Any) -> None:
        """Send, but hold what LSP forbids before the ``initialize`` result.

        A guest joins while answering ``initialize`` (to learn the host's server),
        so its session can speak before the editor has the result.
        """
        held = self._held
        if held is None:
            super()._send_data(data)
            return
        if isinstance(data, dict):
            method, msg_id = data.get("method"), data.get("id")
        else:  # pygls's message classes (attrs, slotted)
            method, msg_id = getattr(data, "method", None), getattr(data, "id", None)
        if method is None and msg_id == self._initialize_id:
            super()._send_data(data)
            self._held = None
            for message in held:
                super()._send_data(message)
        elif method is None or method in ALLOWED_BEFORE_INITIALIZE:
            super()._send_data(data)
        else:
            held.append(data)

    def handle_message(self, message: Any) -> None:
        if type(message) is RawMessage:
            self._server.language.handle(message)
            return
        # Keystrokes skip pygls's generic dispatch (runtime Protocol checks, a
        # context copy and a future per notification): they are most messages.
        if (
            type(message) is JsonRPCNotification
            and message.method == types.TEXT_DOCUMENT_DID_CHANGE
            and not self._shutdown
        ):
            try:
                self._server.documents.did_change(message.params)
            except Exception:
                log.exception("failed to handle a didChange")
            return
        if type(message) is JsonRPCNotification and message.method == NOTIFY_REGISTER:
            registers = self._server.registers
            if registers is not None and not self._server.read_only:
                registers.yanked(_plain(message.params))
            return
        if type(message) is JsonRPCNotification and message.method == NOTIFY_CURSOR:
            presence = self._server.presence
            if presence is not None:
                presence.cursor_report(message.params)
            return
        super().handle_message(message)

    def get_message_type(self, method: str) -> Any:  # type: ignore[override]
        if method == types.TEXT_DOCUMENT_DID_CHANGE:
            return None  # keep params as plain JSON: see the module docstring
        return super().get_message_type(method)

    def structure_message(self, data: dict[str, Any]) -> Any:
        method = data.get("method")
        if method == types.TEXT_DOCUMENT_DID_CHANGE and "id" not in data:
            return JsonRPCNotification(
                method=data["method"], jsonrpc=data.get("jsonrpc", ""), params=data.get("params")
            )
        if method == types.INITIALIZE and isinstance(data.get("params"), dict):
            self._raw_initialize = data["params"]
            if self._held is None and "id" in data:
                self._initialize_id = data["id"]
                self._held = []
        if self._server.language.wants(data):
            return RawMessage(data)
        return super().structure_message(data)

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams) -> Any:
        """pygls's initialize, after starting the host's real server; capabilities merged."""
        shell = self._server.language
        raw = self._raw_initialize or {}
        shell.note_client(raw)
        if self._server.is_host and self._server.options.server_command:
            encoding = yield shell.start_host_server, (raw,), None
            if encoding is not None:
                # The editor, collab-ls and the real server count positions alike.
                kinds = [types.PositionEncodingKind(encoding.value)]
                general = params.capabilities.general
                if general is None:
                    params.capabilities.general = types.GeneralClientCapabilities(
                        position_encodings=kinds
                    )
                else:
                    general.position_encodings = kinds
        result = yield from super().lsp_initialize(params)
        if not self._server.is_host:
            yield shell.learn_host, (), None
        data: dict[str, Any] = self._converter.unstructure(result)
        data["capabilities"] = shell.merge_capabilities(dict(data.get("capabilities") or {}))
        return data

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: Any) -> None:
        self._server.documents.did_change(params)

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams) -> None:
        self._server.documents.did_open(params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams) -> None:
        self._server.documents.did_close(params)
