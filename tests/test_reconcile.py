"""Unit tests of the reconciliation core: each rule of the module docstring, one by one."""

from __future__ import annotations

from collab_ls.editor_changes import FullChange, RangeChange, TextEdit
from collab_ls.ops import Del, Ins, apply_to_bytes
from collab_ls.reconcile import EditorSync
from collab_ls.units import Encoding


def crdt_of(sync: EditorSync) -> str:
    """The CRDT text implied by the core's state (invariant I1)."""
    return apply_to_bytes(sync.shadow.text().encode(), sync.pending).decode()


def never(*_: object) -> str:
    raise AssertionError("no resync expected")


def test_local_change_becomes_ops_in_utf8_bytes() -> None:
    sync = EditorSync("é😀\nab\n", 1, Encoding.UTF16)
    # UTF-16: "é" is 1 unit, "😀" is 2 units; insert after the emoji.
    result = sync.editor_changes(2, [RangeChange(0, 3, 0, 3, "X")])
    assert result.ops == [Ins(len("é😀".encode()), "X")]
    assert sync.shadow.text() == "é😀X\nab\n"


def test_remote_op_goes_out_as_minimal_version_gated_edit() -> None:
    sync = EditorSync("héllo\r\nwörld\r\n", 7, Encoding.UTF16)
    pos = len("héllo\r\nw".encode())
    sync.remote([Ins(pos, "😀")])
    edit = sync.next_edit(never)
    assert edit is not None and edit.version == 7
    assert edit.edits == (TextEdit(1, 1, 1, 1, "😀"),)
    assert sync.next_edit(never) is None  # one in flight at a time


def test_echo_is_recognised_by_its_result_even_when_reported_differently() -> None:
    sync = EditorSync("aa\n", 1, Encoding.UTF8)
    sync.remote([Ins(0, "a")])  # peer inserted "a" before "aa"
    edit = sync.next_edit(never)
    assert edit is not None
    # The editor reports its own minimal diff: the insert at the end of the run.
    result = sync.editor_changes(2, [RangeChange(0, 2, 0, 2, "a")])
    assert result.ops == []
    assert sync.idle() and sync.shadow.text() == "aaa\n"


def test_rejected_edit_releases_typing_and_resends_transformed() -> None:
    sync = EditorSync("abc\n", 1, Encoding.UTF16)
    sync.remote([Ins(3, "Z")])  # peer typed Z after "abc"
    first = sync.next_edit(never)
    assert first is not None and first.edits == (TextEdit(0, 3, 0, 3, "Z"),)
    # Meanwhile the user typed "X" at the start; the editor rejects the stale edit.
    held = sync.editor_changes(2, [RangeChange(0, 0, 0, 0, "X")])
    assert held.ops == []  # might still be the echo's start: held
    ops = sync.apply_result(first.edit_id, applied=False)
    assert ops == [Ins(0, "X")]
    again = sync.next_edit(never)
    assert again is not None and again.version == 2
    assert again.edits == (TextEdit(0, 4, 0, 4, "Z"),)
    assert crdt_of(sync) == "XabcZ\n"


def test_neovim_silent_skip_is_detected_by_the_next_notification() -> None:
    sync = EditorSync("abc\n", 1, Encoding.UTF8)
    sync.remote([Del(0, 1)])
    edit = sync.next_edit(never)
    assert edit is not None
    assert sync.apply_result(edit.edit_id, applied=True) == []  # Neovim says yes...
    assert sync.awaiting_echo
    # ...but skipped it: the next (debounced) notification is the user's typing.
    result = sync.editor_changes(5, [RangeChange(0, 3, 0, 3, "!")])
    assert result.ops == [Ins(2, "!")]  # transformed over the peer's delete
    again = sync.next_edit(never)
    assert again is not None and again.version == 5
    assert again.edits == (TextEdit(0, 0, 0, 1, ""),)


def test_echo_timeout_resends() -> None:
    sync = EditorSync("abc\n", 1, Encoding.UTF8)
    sync.remote([Ins(0, "x")])
    edit = sync.next_edit(never)
    assert edit is not None
    sync.apply_result(edit.edit_id, applied=True)
    assert sync.echo_timeout(edit.edit_id) == []
    again = sync.next_edit(never)
    assert again is not None and again.edits == edit.edits and again.edit_id != edit.edit_id


def test_identical_typing_is_taken_for_the_echo_documented_ambiguity() -> None:
    """The editor skipped the edit and the user typed exactly its text at its place.

    The change is indistinguishable from the echo, so it is taken for it: both
    replicas converge and one of the two identical inserts survives.
    """
    sync = EditorSync("ab\n", 1, Encoding.UTF8)
    sync.remote([Ins(1, "Q")])
    edit = sync.next_edit(never)
    assert edit is not None
    result = sync.editor_changes(3, [RangeChange(0, 1, 0, 1, "Q")])
    assert result.ops == []
    assert sync.idle() and crdt_of(sync) == sync.shadow.text() == "aQb\n"


def test_multi_change_echo_and_typing_after_it_in_one_notification() -> None:
    sync = EditorSync("one\ntwo\n", 1, Encoding.UTF8)
    sync.remote([Ins(0, "A"), Ins(len("Aone\ntwo"), "B")])
    edit = sync.next_edit(never)
    assert edit is not None and len(edit.edits) == 2
    # The echo, edit by edit (last first, as editors apply them), then a keystroke.
    result = sync.editor_changes(
        4,
        [
            RangeChange(1, 3, 1, 3, "B"),
            RangeChange(0, 0, 0, 0, "A"),
            RangeChange(0, 1, 0, 1, "k"),
        ],
    )
    assert result.ops == [Ins(1, "k")]
    assert sync.idle() and sync.shadow.text() == "Akone\ntwoB\n"


def test_invalid_position_resyncs_the_buffer_from_the_crdt() -> None:
    sync = EditorSync("abc\n", 1, Encoding.UTF16)
    result = sync.editor_changes(2, [RangeChange(9, 0, 9, 0, "x")])
    assert result.ops == [] and result.errors and sync.desynced
    edit = sync.next_edit(lambda: "abc\n")
    assert edit is not None and edit.edits[0].new_text == "abc\n"
    assert (edit.edits[0].start_line, edit.edits[0].start_character) == (0, 0)
    # The editor applies it and reports a whole-range replacement of its unknown text.
    echo = sync.editor_changes(3, [RangeChange(0, 0, 4, 0, "abc\n")])
    assert echo.ops == [] and not sync.desynced
    assert sync.editor_changes(4, [RangeChange(0, 0, 0, 0, "z")]).ops == [Ins(0, "z")]


def test_whole_document_change_is_narrowed_to_the_difference() -> None:
    sync = EditorSync("keep this\r\nline\r\n", 1, Encoding.UTF16)
    sync.remote([Ins(0, ">")])  # a peer's insert the editor has not seen yet
    result = sync.editor_changes(2, [FullChange("keep that\r\nline\r\n")])
    # Only "is" -> "at" is replaced, so the peer's concurrent insert survives.
    assert result.ops == [Del(8, 2), Ins(8, "at")]
    assert crdt_of(sync) == ">keep that\r\nline\r\n"


def test_crlf_is_never_split() -> None:
    sync = EditorSync("a\r\nb", 1, Encoding.UTF8)
    sync.remote([Del(1, 1), Ins(1, "\n")])  # "\r\n" -> "\n\n"? no: "\r" replaced by "\n"
    edit = sync.next_edit(never)
    assert edit is not None
    for e in edit.edits:
        assert (e.start_line, e.start_character) in {(0, 0), (0, 1)}
    assert crdt_of(sync) == "a\n\nb"
