"""The thin shell between one open editor document and its shared pycrdt text.

A :class:`DocBinding` owns the :class:`~collab_ls.reconcile.EditorSync` of one
document, carries the operations it returns into the CRDT (one transaction
per editor change), feeds it the peers' changes observed on the CRDT text,
and hands the ``workspace/applyEdit`` s it asks for to the language server
through a callback. It also runs the echo timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import pycrdt

from collab_ls.ops import Del, Ins, Op, from_delta
from collab_ls.reconcile import Change, EditorSync, OutgoingEdit
from collab_ls.units import Encoding

LOCAL = "collab-ls:local"
"""Origin of the transactions that carry the local editor's changes."""

_LOCAL_HASH = hash(LOCAL)  # pycrdt keeps transaction origins as their hashes

UNDO_CAPTURE_MS = 500
"""Local edits closer together than this are undone and redone as one step."""

ECHO_TIMEOUT = 1.0
"""Seconds to wait for the echo of an edit answered ``applied: true``."""

SendEdit = Callable[["DocBinding", OutgoingEdit], None]


class DocBinding:
    """One editor document bound (or waiting to be bound) to a shared text."""

    def __init__(
        self,
        key: str,
        uri: str,
        text: str,
        version: int,
        encoding: Encoding,
        *,
        honest: bool = False,
        send_edit: SendEdit,
        logger: logging.Logger,
    ) -> None:
        self.key = key
        self.uri = uri
        self.sync = EditorSync(text, version, encoding, honest=honest)
        self._opened_text = text
        self._send_edit = send_edit
        self._log = logger
        self._doc: pycrdt.Doc[Any] | None = None
        self._text: pycrdt.Text | None = None
        self._sub: pycrdt.Subscription | None = None
        self._undo: pycrdt.UndoManager | None = None
        self._unbound_ops: list[Op] = []
        self._pump_scheduled = False
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self.on_remote: Callable[[DocBinding], None] | None = None
        """Called after a peer's change reached this document (presence uses it)."""

    @property
    def bound(self) -> bool:
        """Whether the document is attached to a shared text."""
        return self._text is not None

    def bind(self, doc: pycrdt.Doc[Any], text: pycrdt.Text) -> bool:
        """Attach to the session's text of this document.

        Returns:
            True if the buffer had to be replaced by the session's text.
        """
        self._doc, self._text = doc, text
        session_text = str(text)
        replaced = False
        if self._unbound_ops and session_text == self._opened_text:
            # Typed while waiting for the host to seed the file: nobody else has
            # edited it yet, so the typing applies to the session text as it is.
            self._apply(self._unbound_ops)
        elif session_text != self.sync.shadow.text():
            if self._unbound_ops:
                self._log.warning(
                    "%s: the session's copy differs from yours; %d change(s) typed before "
                    "it arrived were replaced by it",
                    self.key,
                    len(self._unbound_ops),
                )
            size = self.sync.shadow.byte_len
            self.sync.remote(
                [Del(0, size), Ins(0, session_text)] if size else [Ins(0, session_text)]
            )
            replaced = True
        self._unbound_ops = []
        # Undo tracks only this editor's own transactions: a peer's edits are
        # never undone here. Undo and redo run with the manager's own origin, so
        # _on_text carries them to the editor like a peer's edit, and the
        # manager does not record them as new local edits.
        self._undo = pycrdt.UndoManager(scopes=[text], capture_timeout_millis=UNDO_CAPTURE_MS)
        self._undo.include_origin(LOCAL)
        # The raw observer: pycrdt's wrapped one builds a TextEvent for every
        # transaction, the local ones included; this one reads the origin first.
        self._sub = text.integrated.observe(self._on_text)
        self.schedule_pump()
        return replaced

    def unbind(self) -> None:
        """Detach (the editor closed the document)."""
        if self._sub is not None:
            self._sub.drop()
        self._text = self._doc = None
        self._sub = None
        self._undo = None
        if self._timer:
            self._timer.cancel()

    # ----------------------------------------------------------- editor side

    def did_change(self, version: int, changes: Sequence[Change]) -> list[str]:
        """Apply one ``didChange``; returns input errors for the user and the log."""
        result = self.sync.editor_changes(version, changes)
        if self._text is None:
            self._unbound_ops.extend(result.ops)
        else:
            self._apply(result.ops)
        self.schedule_pump()
        return result.errors

    def invalid_input(self, version: int | None) -> None:
        """A change for this document could not be read: resynchronise the buffer."""
        self.sync.invalid_input(version)
        self.schedule_pump()

    def apply_result(self, edit_id: int, applied: bool) -> None:
        """The editor answered an applyEdit."""
        self._apply(self.sync.apply_result(edit_id, applied))
        if self.sync.awaiting_echo and self.sync.inflight_id == edit_id:
            if self._timer:
                self._timer.cancel()
            self._timer = self._loop.call_later(ECHO_TIMEOUT, self._echo_timeout, edit_id)
        self.schedule_pump()

    def _echo_timeout(self, edit_id: int) -> None:
        if self.sync.inflight_id == edit_id and self.sync.awaiting_echo:
            self._log.info("%s: no echo for edit %d; resending", self.key, edit_id)
            self._apply(self.sync.echo_timeout(edit_id))
            self.schedule_pump()

    # ------------------------------------------------------------------ undo

    def undo(self) -> bool:
        """Undo this editor's last own edit (never a peer's); False if there is none."""
        return self._undo is not None and self._undo.undo()

    def redo(self) -> bool:
        """Redo what :meth:`undo` undid last; False if there is nothing to redo."""
        return self._undo is not None and self._undo.redo()

    # ------------------------------------------------------------- CRDT side

    def _on_text(self, event: Any) -> None:
        """A raw pycrdt text event: ``transaction.origin()`` is the origin's hash."""
        if event.transaction.origin() == _LOCAL_HASH:
            return
        self.sync.remote(from_delta(event.delta))
        self.schedule_pump()
        if self.on_remote is not None:
            self.on_remote(self)

    def _apply(self, ops: Sequence[Op]) -> None:
        if not ops:
            return
        text, doc = self._text, self._doc
        if text is None or doc is None:
            self._unbound_ops.extend(ops)
            return
        with doc.transaction(origin=LOCAL):
            for op in ops:
                if isinstance(op, Ins):
                    text.insert(op.pos, op.text)
                else:
                    del text[op.pos : op.pos + op.size]

    def schedule_pump(self) -> None:
        """Send the next applyEdit soon (outside any running transaction)."""
        if not self._pump_scheduled and self._text is not None:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        text = self._text
        if text is None:
            return
        edit = self.sync.next_edit(lambda: str(text))
        if edit is not None:
            self._send_edit(self, edit)
