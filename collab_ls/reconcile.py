"""Reconciling one editor buffer with one shared (CRDT) text: the heart of collab-ls.

The editor and the CRDT are two replicas of a document that change
concurrently: the user types while peers' edits are on their way to the
editor as ``workspace/applyEdit``. This module keeps them in step with a
two-party (Jupiter style) operational transformation, using the document
``version`` as the editor's revision. It is pure: no I/O, no pygls, no
pycrdt; the language server shell feeds it events and carries out what it
returns. The changes and edits it exchanges with the editor, and their
conversion between LSP positions and the shadow's byte offsets, are
:mod:`collab_ls.editor_changes`'.

State of one :class:`EditorSync`:

``shadow``
    The editor's text as the editor last reported it (``didOpen`` plus every
    ``didChange`` since), at ``version``.
``pending``
    Operations taking ``shadow`` to the CRDT's current text: peers' edits the
    editor has not applied yet.
``inflight``
    At most one ``workspace/applyEdit`` sent and not yet resolved. It carries
    the first ``count`` operations of ``pending`` as an :class:`EditSet` over
    the shadow at ``base_version``, and is version-gated with that version.
``held``
    Changes the editor reported while an edit was in flight that may be (the
    start of) its echo. They are applied to ``shadow`` at once but reach the
    CRDT only once they are known to be the user's own typing.

Invariants (checked by ``tests/test_reconcile_model.py`` under random
interleavings of simulated Neovim-like and VS Code-like editors):

I1. ``apply(shadow, pending)`` equals the CRDT text, except while ``held`` is
    non-empty: then ``apply(shadow_before_held, pending)`` does.
I2. Every change the editor reports is either the echo of an in-flight edit
    or reaches the CRDT exactly once, transformed over ``pending``.
I3. An edit is only ever sent for the shadow at the current version, and at
    most one is in flight, so a version-gated editor applies it at exactly the
    text it was computed for, or not at all.

Echo recognition. A version-gated editor applies an edit only at the version
it names, so if the echo comes at all it is a prefix of the changes that
follow that version. Editors re-chunk and re-diff the changes they report, so
the echo is recognised by its result: once the changes held since
``base_version`` give the text the edit was meant to produce, they are the
echo. They are *not* the echo when:

* the editor answers ``applied: false`` (VS Code, eglot, our Neovim config);
* the editor answered ``applied: true`` (stock Neovim also says so when it
  silently skipped a stale edit) and then a whole ``didChange`` notification
  went by without completing the echo: an applied edit's echo is complete in
  the first notification after the response, or before the response;
* no echo came within the shell's timeout after ``applied: true`` (e.g.
  Neovim bumped ``changedtick`` on ``:w`` and skipped the edit silently).

Then the held changes are the user's typing: they go to the CRDT, and the
edit is recomputed and sent again at the new version.

The one ambiguity, documented and tested: if the editor skipped the edit and
the user typed exactly the text the edit would have produced, the typing is
taken for the echo. Both replicas still converge; one of the two identical
inserts survives.

Cost per keystroke: :class:`~collab_ls.linetext.LineText` operations plus a
transformation over ``pending`` (normally empty or a few operations); nothing
here walks the whole document except a resynchronisation after invalid input.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from collab_ls.editor_changes import (
    Change,
    FullChange,
    OutgoingEdit,
    RangeChange,
    TextEdit,
    common_affixes,
    locate_change,
    text_edit,
)
from collab_ls.editset import EditSet, same_result
from collab_ls.linetext import LineText
from collab_ls.ops import Del, Ins, Op, replacement, transform
from collab_ls.units import Encoding, PositionError

# A range far past any real document: editors clamp it to the end of the buffer.
_FAR_LINE = 2_000_000_000


class InflightState(enum.Enum):
    SENT = "sent"
    ACKED = "acked"  # the editor answered applied: true; the echo may still come


@dataclass(slots=True)
class _Inflight:
    edit_id: int
    base_version: int
    count: int  # how many operations of `pending` the edit carries
    sent: EditSet
    resync: bool = False
    state: InflightState = InflightState.SENT


@dataclass(slots=True)
class ChangeResult:
    """What one ``didChange`` notification produced."""

    ops: list[Op] = field(default_factory=list)
    """Operations to apply to the CRDT, in order, in CRDT coordinates."""
    errors: list[str] = field(default_factory=list)
    """Problems with the editor's input, for the log and the user."""


class EditorSync:
    """Keeps one editor buffer and one CRDT text in step; see the module docstring."""

    def __init__(
        self, text: str, version: int, encoding: Encoding, *, honest: bool = False
    ) -> None:
        self.shadow = LineText(text)
        self.honest = honest
        """The client's ``applied: true`` means applied (VS Code, our Neovim config)."""
        self.version = version
        self.encoding = encoding
        self.pending: list[Op] = []
        self._inflight: _Inflight | None = None
        self._held: list[tuple[int, int, str]] = []  # (pos, size, text) in held order
        self._held_set = EditSet()
        self._next_id = 1
        self.desynced = False
        self._resync_sent: str | None = None

    # ----------------------------------------------------------------- queries

    @property
    def inflight_id(self) -> int | None:
        """Id of the edit in flight, if any."""
        return self._inflight.edit_id if self._inflight else None

    @property
    def awaiting_echo(self) -> bool:
        """An edit was acknowledged and its echo has not been seen."""
        return self._inflight is not None and self._inflight.state is InflightState.ACKED

    def idle(self) -> bool:
        """Nothing pending, nothing in flight, nothing held."""
        return not self.pending and self._inflight is None and not self._held

    # ------------------------------------------------------------------ inputs

    def remote(self, ops: Sequence[Op]) -> None:
        """The CRDT text changed by ``ops`` (CRDT coordinates) made by others."""
        self.pending.extend(ops)

    def editor_changes(self, version: int, changes: Sequence[Change]) -> ChangeResult:
        """Apply one ``didChange`` notification.

        Returns:
            The operations to apply to the CRDT and any input errors. On an
            invalid change the rest of the notification is dropped and the
            buffer is resynchronised from the CRDT (``desynced`` is set; the
            next :meth:`next_edit` sends the whole text).
        """
        result = ChangeResult()
        completed_echo = False
        for change in changes:
            if self.desynced:
                if self._resync_echo(change):
                    completed_echo = True
                    continue
                break
            try:
                start, end, text = locate_change(self.shadow, change, self.encoding)
            except PositionError as exc:
                result.errors.append(f"invalid change at version {version}: {exc}")
                self._desync(result)
                break
            removed = self.shadow.replace(start, end, text)
            inflight = self._inflight
            if inflight is None or inflight.resync:
                result.ops.extend(self._local(start, end - start, text))
                continue
            self._held.append((start, end - start, text))
            self._held_set.add(start, end - start, text.encode(), removed=removed.encode())
            if same_result(inflight.sent, self._held_set, self._current_bytes):
                self._echo_complete()
                completed_echo = True
        self.version = version
        inflight = self._inflight
        if (
            not completed_echo
            and inflight is not None
            and not inflight.resync
            and inflight.state is InflightState.ACKED
            and self._held
        ):
            # The first notification after `applied: true` did not complete the echo.
            if self.honest or self._near_echo():
                # It was applied and adjusted by the editor, maybe typed after.
                result.ops.extend(self._echo_with_correction())
            else:
                # The editor skipped the edit: what it reported is the user's typing.
                result.ops.extend(self._release_held())
        elif (
            self.desynced
            and inflight is not None
            and inflight.resync
            and inflight.state is InflightState.ACKED
            and not completed_echo
        ):
            self._inflight = None  # the resync was skipped: send it again
        return result

    def invalid_input(self, version: int | None) -> None:
        """The editor sent a change that could not be read: its text is unknown now."""
        if version is not None:
            self.version = version
        self._desync(ChangeResult())

    def apply_result(self, edit_id: int, applied: bool) -> list[Op]:
        """The editor answered the ``workspace/applyEdit`` ``edit_id``.

        Returns:
            Operations for the CRDT: held changes turned out to be typing.
        """
        inflight = self._inflight
        if inflight is None or inflight.edit_id != edit_id:
            return []
        if not applied:
            self._inflight = None
            return self._release_held()
        if self._held:
            if self.honest or self._near_echo():
                # Applied, and the editor adjusted it (e.g. Neovim's final newline).
                return self._echo_with_correction()
            # With the echo sent before the response (no debounce) it would be
            # complete by now; so these changes came first and made the edit stale.
            return self._release_held()
        inflight.state = InflightState.ACKED
        return []

    def echo_timeout(self, edit_id: int) -> list[Op]:
        """No echo arrived long after ``applied: true``: the edit was skipped."""
        inflight = self._inflight
        if inflight is None or inflight.edit_id != edit_id:
            return []
        return self._release_held()

    def next_edit(self, crdt_text: Callable[[], str]) -> OutgoingEdit | None:
        """The next ``workspace/applyEdit`` to send, if one is due.

        Args:
            crdt_text: Reads the CRDT's whole text; called only to resynchronise
                a buffer after invalid input.
        """
        if self._inflight is not None:
            return None
        if self.desynced:
            return self._resync_edit(crdt_text())
        if not self.pending:
            return None
        sent = EditSet()
        base = self._shadow_bytes
        for op in self.pending:
            if isinstance(op, Ins):
                sent.add(op.pos, 0, op.text.encode(), removed=b"")
            else:
                sent.add(op.pos, op.size, b"", base=base)
        count = len(self.pending)
        shadow, enc = self.shadow, self.encoding
        edits = tuple(
            e
            for seg in sent.segments
            if (e := text_edit(shadow, seg.start, seg.end, seg.old, seg.new, enc)) is not None
        )
        if not edits:
            del self.pending[:count]
            return None
        edit_id = self._next_id
        self._next_id += 1
        self._inflight = _Inflight(edit_id, self.version, count, sent)
        return OutgoingEdit(edit_id, self.version, edits)

    # --------------------------------------------------------------- internals

    def _current_bytes(self, start: int, end: int) -> bytes:
        return self.shadow.slice(start, end).encode()

    def _shadow_bytes(self, start: int, end: int) -> bytes:
        return self.shadow.slice(start, end).encode()

    def _local(self, pos: int, size: int, text: str) -> list[Op]:
        """A change the user made (shadow coordinates) becomes CRDT operations."""
        ops = replacement(pos, pos + size, text)
        if not self.pending:
            return ops
        crdt_ops, self.pending = transform(ops, self.pending)
        return crdt_ops

    def _echo_complete(self) -> None:
        inflight = self._inflight
        assert inflight is not None
        del self.pending[: inflight.count]
        self._inflight = None
        self._held.clear()
        self._held_set = EditSet()

    def _regions(self) -> tuple[int, bytes, bytes]:
        """Start, expected bytes and actual bytes of the region the edit and the echo touch."""
        inflight = self._inflight
        assert inflight is not None
        sent, seen = inflight.sent, self._held_set
        spans = [es.span() for es in (sent, seen) if es]
        lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
        base = seen.base_bytes(lo, hi, self._current_bytes)
        expected = sent.render(lo, hi, base)
        actual = self._current_bytes(lo, hi + seen.delta)
        return lo, expected, actual

    def _near_echo(self) -> bool:
        """The held changes are the edit, with only line breaks added or removed.

        Neovim adjusts edits near the end of a buffer (the final newline it
        always keeps, an empty line after an append); a user's own typing does
        not contain the whole edit.
        """
        if self._inflight is None or not self._held_set or not self._inflight.sent:
            return False
        _, expected, actual = self._regions()
        p, q = common_affixes(expected, actual)
        return not expected[p : len(expected) - q].strip(b"\r\n") and not actual[
            p : len(actual) - q
        ].strip(b"\r\n")

    def _echo_with_correction(self) -> list[Op]:
        """The edit was applied but the editor's text differs a little: keep the editor's.

        The difference between what the edit should have produced and what the
        editor holds becomes a local change, so every replica converges on the
        editor's text.
        """
        lo, expected, actual = self._regions()
        p, q = common_affixes(expected, actual)
        inflight = self._inflight
        assert inflight is not None
        del self.pending[: inflight.count]
        self._inflight = None
        self._held.clear()
        self._held_set = EditSet()
        start = lo + p
        end = lo + len(expected) - q
        return self._local(start, end - start, actual[p : len(actual) - q].decode())

    def _release_held(self) -> list[Op]:
        """The in-flight edit was not applied: held changes are the user's typing."""
        self._inflight = None
        held, self._held = self._held, []
        self._held_set = EditSet()
        out: list[Op] = []
        for pos, size, text in held:
            out.extend(self._local(pos, size, text))
        return out

    # ----------------------------------------------------------- resync paths

    def _desync(self, result: ChangeResult) -> None:
        """The editor's text is no longer known: resynchronise it from the CRDT."""
        self.desynced = True
        self._inflight = None
        self._held.clear()
        self._held_set = EditSet()
        result.errors.append("the buffer will be replaced by the session's text")

    def _resync_edit(self, text: str) -> OutgoingEdit:
        self.pending.clear()
        edit_id = self._next_id
        self._next_id += 1
        self._inflight = _Inflight(edit_id, self.version, 0, EditSet(), resync=True)
        self._resync_sent = text
        return OutgoingEdit(edit_id, self.version, (TextEdit(0, 0, _FAR_LINE, 0, text),))

    def _resync_echo(self, change: Change) -> bool:
        """Whether ``change`` is the echo of the resynchronising edit."""
        inflight = self._inflight
        sent = self._resync_sent
        if inflight is None or not inflight.resync or sent is None:
            return False
        if isinstance(change, RangeChange) and (change.start_line, change.start_character) != (
            0,
            0,
        ):
            return False
        if change.text != sent:
            return False
        self.shadow = LineText(sent)
        self.desynced = False
        self._inflight = None
        self._resync_sent = None
        # Operations from peers that arrived after the resync text was taken stay pending.
        return True


__all__ = [
    "Change",
    "ChangeResult",
    "Del",
    "EditorSync",
    "FullChange",
    "Ins",
    "OutgoingEdit",
    "RangeChange",
]
