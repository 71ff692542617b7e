"""Simulated editors and peers for the reconciliation property tests.

Each simulated editor behaves as the real clients recorded in the project's
notes do:

* ``nvim``: Neovim with the default debounce: changes are batched into one
  ``didChange`` when the debounce timer fires; an edit with a stale version is
  skipped silently and still answered ``applied: true``; the response goes out
  before the (debounced) echo; versions are ``changedtick``: increasing, not
  contiguous; reported changes are re-diffed (an insert inside a run of equal
  characters is reported at the run's end).
* ``nvim0``: the same with ``debounce_text_changes = 0``: every change is sent
  at once, so the echo goes out before the response.
* ``vscode``: a stale version is rejected with ``applied: false``; changes sent
  at once, positions in UTF-16.
* ``full``: a client that sends whole-document changes.

A peer couples one editor with one collab-ls core (:class:`EditorSync` over a
real pycrdt ``Text``); peers exchange pycrdt updates through a simulated relay
that delays and reorders them.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import pycrdt

from collab_ls.editor_changes import Change, FullChange, OutgoingEdit, RangeChange, TextEdit
from collab_ls.ops import Del, Ins, Op, from_delta
from collab_ls.reconcile import EditorSync
from collab_ls.units import Encoding

Kind = Literal["nvim", "nvim0", "vscode", "full"]
LOCAL = "local"
REMOTE = "remote"
_BREAK = re.compile(r"\r\n|\r|\n")


def _units(s: str, enc: Encoding) -> int:
    if enc is Encoding.UTF8:
        return len(s.encode())
    if enc is Encoding.UTF16:
        return len(s.encode("utf-16-le")) // 2
    return len(s)


def position(text: str, index: int, enc: Encoding) -> tuple[int, int]:
    """Naive code-point index -> LSP position (independent of LineText)."""
    line = 0
    line_start = 0
    for m in _BREAK.finditer(text):
        if m.end() > index:
            break
        line += 1
        line_start = m.end()
    return line, _units(text[line_start:index], enc)


def index_of(text: str, line: int, units: int, enc: Encoding) -> int:
    """Naive LSP position -> code-point index, clamping like editors do."""
    starts = [0] + [m.end() for m in _BREAK.finditer(text)]
    if line >= len(starts):
        return len(text)
    start = starts[line]
    m = _BREAK.search(text, start)
    end = m.start() if m else len(text)
    i = start
    count = 0
    while i < end and count < units:
        count += _units(text[i], enc)
        i += 1
    return i


@dataclass
class Editor:
    """A simulated LSP client buffer."""

    name: str
    kind: Kind
    encoding: Encoding
    text: str
    version: int = 1
    unsent: list[Change] = field(default_factory=list)
    to_server: deque[tuple[str, object]] = field(default_factory=deque)
    from_server: deque[OutgoingEdit] = field(default_factory=deque)
    typed_deleted: list[str] = field(default_factory=list)

    @property
    def immediate(self) -> bool:
        return self.kind != "nvim"

    def _bump(self, tick: int) -> None:
        self.version += tick if self.kind.startswith("nvim") else 1

    def _record(self, start: int, end: int, new: str) -> None:
        if self.kind == "full":
            self.unsent.append(FullChange(self.text))
            return
        sl, sc = position(self._before, start, self.encoding)
        el, ec = position(self._before, end, self.encoding)
        self.unsent.append(RangeChange(sl, sc, el, ec, new))

    def replace(self, start: int, end: int, new: str, tick: int = 1) -> None:
        """The user (or an applied edit) replaces code points [start, end)."""
        self._before = self.text
        self.text = self.text[:start] + new + self.text[end:]
        self._bump(tick)
        self._record(start, end, new)

    def type(self, start: int, end: int, new: str, tick: int = 1) -> None:
        """A user's keystroke: recorded for the invariants."""
        self.typed_deleted.append(self.text[start:end])
        self.replace(start, end, new, tick)
        if self.immediate:
            self.flush()

    def flush(self) -> None:
        """Send the batched changes as one didChange (the debounce timer fired)."""
        if self.unsent:
            self.to_server.append(("change", (self.version, list(self.unsent))))
            self.unsent.clear()

    def receive_edit(self, honest: bool) -> None:
        """Handle the next workspace/applyEdit from the server."""
        edit = self.from_server.popleft()
        stale = edit.version is not None and self.version > edit.version
        if stale:
            applied = self.kind.startswith("nvim") and not honest
            self.to_server.append(("result", (edit.edit_id, applied)))
            return
        self._apply_edits(edit.edits)
        if self.immediate:
            self.flush()
        self.to_server.append(("result", (edit.edit_id, True)))

    def _apply_edits(self, edits: tuple[TextEdit, ...]) -> None:
        original = self.text
        spans = []
        for e in edits:
            s = index_of(original, e.start_line, e.start_character, self.encoding)
            t = index_of(original, e.end_line, e.end_character, self.encoding)
            spans.append((s, t, e.new_text))
        for s, t, new in sorted(spans, key=lambda x: (x[0], x[1]), reverse=True):
            old = self.text
            candidate = old[:s] + new + old[t:]
            # Report the editor's own minimal diff, as Neovim does (prefix first).
            p = 0
            while p < min(len(old), len(candidate)) and old[p] == candidate[p]:
                p += 1
            q = 0
            while (
                q < min(len(old), len(candidate)) - p
                and old[len(old) - 1 - q] == candidate[len(candidate) - 1 - q]
            ):
                q += 1
            # Never report a position between \r and \n.
            while p > 0 and old[p - 1 : p] == "\r" and old[p : p + 1] == "\n":
                p -= 1
            while (
                q > 0
                and len(old) - q > 0
                and old[len(old) - q - 1] == "\r"
                and old[len(old) - q] == "\n"
            ):
                q -= 1
            self.replace(p, len(old) - q, candidate[p : len(candidate) - q])


class Peer:
    """One editor, its collab-ls core and its replica of the session."""

    def __init__(self, editor: Editor, doc: pycrdt.Doc, honest: bool) -> None:
        self.editor = editor
        self.doc = doc
        self.honest = honest
        self.text = doc.get("t", type=pycrdt.Text)
        # Only stock Neovim answers `applied: true` for an edit it skipped.
        truthful = honest or not editor.kind.startswith("nvim")
        self.sync = EditorSync(editor.text, editor.version, editor.encoding, honest=truthful)
        self.outbox: list[bytes] = []
        self.text.observe(self._on_text)
        doc.observe(self._on_update)
        self.errors: list[str] = []

    def _on_text(self, event: pycrdt.TextEvent) -> None:
        if event.transaction.origin != LOCAL:
            self.sync.remote(from_delta(event.delta))

    def _on_update(self, event: pycrdt.TransactionEvent) -> None:
        if self._origin != REMOTE:
            self.outbox.append(event.update)

    _origin: str | None = None

    def _apply_local(self, ops: list[Op]) -> None:
        if not ops:
            return
        self._origin = LOCAL
        with self.doc.transaction(origin=LOCAL):
            for op in ops:
                if isinstance(op, Ins):
                    self.text.insert(op.pos, op.text)
                else:
                    assert isinstance(op, Del)
                    del self.text[op.pos : op.pos + op.size]
        self._origin = None

    def receive_update(self, update: bytes) -> None:
        self._origin = REMOTE
        with self.doc.transaction(origin=REMOTE):
            self.doc.apply_update(update)
        self._origin = None
        self.pump()

    def server_step(self) -> None:
        """The server reads the next message from its editor."""
        kind, payload = self.editor.to_server.popleft()
        if kind == "change":
            version, changes = payload  # type: ignore[misc]
            result = self.sync.editor_changes(version, changes)
            self.errors.extend(result.errors)
            self._apply_local(result.ops)
        else:
            edit_id, applied = payload  # type: ignore[misc]
            self._apply_local(self.sync.apply_result(edit_id, applied))
        self.pump()

    def timeout(self) -> None:
        edit_id = self.sync.inflight_id
        if edit_id is not None:
            self._apply_local(self.sync.echo_timeout(edit_id))
            self.pump()

    def pump(self) -> None:
        edit = self.sync.next_edit(lambda: str(self.text))
        if edit is not None:
            self.editor.from_server.append(edit)

    def quiet(self) -> bool:
        e = self.editor
        return not e.unsent and not e.to_server and not e.from_server
