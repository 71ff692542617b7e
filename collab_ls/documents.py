"""The editor's open documents: each shared buffer bound to its text in the session.

``didOpen`` binds a buffer under the workspace to the session's text of that
file (:class:`~collab_ls.binding.DocBinding`): the host seeds the session
from the buffer; a guest's buffer is replaced by the session's text, or,
when the session has no such file yet, waits until the host has seeded it.
``didChange`` goes to the binding, in order, as it arrives (a read-only
session undoes it instead); ``didClose`` unbinds. What peers change comes
back to the editor as ``workspace/applyEdit`` requests, resent by the
binding when the editor does not apply them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import pycrdt
from lsprotocol import types

from collab_ls.binding import LOCAL, DocBinding
from collab_ls.did_change import InvalidChange, parse_changes
from collab_ls.reconcile import OutgoingEdit
from collab_ls.session import NotInWorkspace, relative_path

if TYPE_CHECKING:
    from collab_ls.server import CollabServer

__all__ = ["EditorDocuments"]

log = logging.getLogger("collab_ls")


class EditorDocuments:
    """Binds the editor's shared buffers (``server.bindings``) to the session."""

    def __init__(self, server: CollabServer) -> None:
        self._server = server
        #: Guests' buffers waiting for the host to seed their file, by key.
        self.waiting: dict[str, list[DocBinding]] = {}

    def did_open(self, params: types.DidOpenTextDocumentParams) -> None:
        """Bind a buffer under the workspace root (``textDocument/didOpen``)."""
        server = self._server
        item = params.text_document
        try:
            key = relative_path(item.uri, server.root)
        except NotInWorkspace as exc:
            log.info("not shared: %s", exc)
            return
        old = server.bindings.pop(item.uri, None)
        if old:
            old.unbind()
        binding = DocBinding(
            key,
            item.uri,
            item.text,
            item.version,
            server.encoding,
            honest=server.honest_client,
            send_edit=self._send_edit,
            logger=log,
        )
        server.bindings[item.uri] = binding
        if server.presence is not None:
            binding.on_remote = server.presence.text_moved
            server.presence.documents_changed()
        text = server.session.text(key)
        if text is None and server.is_host:
            text = server.session.seed(key, item.text)
        if text is not None:
            if binding.bind(server.doc, text):
                log.info("%s: buffer replaced by the session's text", key)
        else:
            log.info("%s: asking the host for the session's copy", key)
            self.waiting.setdefault(key, []).append(binding)
            server.session.request(key, item.text)

    def did_changes(self, batch: list[Any]) -> None:
        """Apply ``didChange`` s read together, in order, in one session transaction.

        Peers then get one update for all of them instead of one each. Only
        for changes that arrived together: nothing is sent before they are
        all applied anyway, so none waits for the others.
        """
        try:
            with self._server.doc.transaction(origin=LOCAL):
                for params in batch:
                    try:
                        self.did_change(params)
                    except Exception:
                        log.exception("failed to handle a didChange")
        except Exception:
            # An observer of the doc failed as the transaction was committed.
            log.exception("failed to handle a didChange")

    def did_change(self, params: Any) -> None:
        """Apply an editor's change, as plain JSON params (``textDocument/didChange``)."""
        server = self._server
        try:
            uri, version, changes = parse_changes(params)
        except InvalidChange as exc:
            log.error("ignored a didChange: %s; params=%.300r", exc, params)
            server.show(types.MessageType.Error, f"collab-ls ignored a change: {exc}")
            self._resync_after_bad_change(params)
            return
        binding = server.bindings.get(uri)
        if binding is None:
            log.warning("didChange for %s, which is not open (or not shared); ignored", uri)
            return
        if server.read_only:
            # The relay refuses a read-only peer's changes: put the session's text back.
            log.info("%s: read-only session: change undone", binding.key)
            binding.invalid_input(version)
            return
        errors = binding.did_change(version, changes)
        server.last_edited = uri
        if server.presence is not None:
            server.presence.edited(binding, changes)
        for error in errors:
            log.error("%s: %s", binding.key, error)
            server.show(types.MessageType.Error, f"collab-ls: {binding.key}: {error}")

    def _resync_after_bad_change(self, params: Any) -> None:
        """After an unreadable change the buffer's text is unknown: replace it."""
        try:
            doc = params["textDocument"]
            binding = self._server.bindings.get(doc["uri"])
            version = doc.get("version")
        except (KeyError, TypeError, AttributeError):
            return
        if binding is not None:
            binding.invalid_input(version if isinstance(version, int) else None)

    def did_close(self, params: types.DidCloseTextDocumentParams) -> None:
        """Unbind a buffer (``textDocument/didClose``)."""
        server = self._server
        binding = server.bindings.pop(params.text_document.uri, None)
        if binding:
            binding.unbind()
            for waiting in self.waiting.values():
                if binding in waiting:
                    waiting.remove(binding)
            if server.presence is not None:
                server.presence.documents_changed()

    def on_files(self, event: pycrdt.MapEvent) -> None:
        """Observer of the session's files: bind the buffers waiting for one."""
        if not self.waiting:
            return
        for key in list(self.waiting):
            text = self._server.session.text(key)
            if text is None:
                continue
            for binding in self.waiting.pop(key):
                asyncio.get_running_loop().call_soon(self._bind_waiting, binding, key)

    def _bind_waiting(self, binding: DocBinding, key: str) -> None:
        server = self._server
        text = server.session.text(key)
        if text is None or server.bindings.get(binding.uri) is not binding:
            return
        if binding.bind(server.doc, text):
            log.info("%s: buffer replaced by the session's text", key)

    def _send_edit(self, binding: DocBinding, edit: OutgoingEdit) -> None:
        # Plain JSON, written and read without lsprotocol/cattrs: one of these
        # goes out for every peer's keystroke.
        params = {
            "label": "collab-ls",
            "edit": {
                "documentChanges": [
                    {
                        "textDocument": {"uri": binding.uri, "version": edit.version},
                        "edits": [
                            {
                                "range": {
                                    "start": {"line": e.start_line, "character": e.start_character},
                                    "end": {"line": e.end_line, "character": e.end_character},
                                },
                                "newText": e.new_text,
                            }
                            for e in edit.edits
                        ],
                    }
                ]
            },
        }
        # Sent now; only the wait for the answer is a task of its own.
        answer = self._server.language.send_request("workspace/applyEdit", params)
        self._server._spawn(self._await_edit(binding, edit.edit_id, answer))

    async def _await_edit(
        self, binding: DocBinding, edit_id: int, answer: asyncio.Future[Any]
    ) -> None:
        try:
            result = await answer
            applied = isinstance(result, dict) and result.get("applied") is True
            if not applied:
                log.info(
                    "%s: edit %d not applied (%s); will resend",
                    binding.key,
                    edit_id,
                    result.get("failureReason") if isinstance(result, dict) else result,
                )
        except Exception as exc:
            log.warning("%s: applyEdit %d failed: %s", binding.key, edit_id, exc)
            applied = False
        if self._server.bindings.get(binding.uri) is binding:
            binding.apply_result(edit_id, applied)
