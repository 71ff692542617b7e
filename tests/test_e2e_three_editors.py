"""End-to-end: Neovim, Vim and Emacs in one session, typing into the same line at once.

The Neovim (tests/nvim_driver.py, editor-configs/neovim) hosts and negotiates
utf-8; the Vim (editor-configs/vim, driven in tmux) negotiates utf-32; the
Emacs (eglot 1.9 with editor-configs/emacs, driven in tmux) offers no
``general.positionEncodings`` at all, so collab-ls falls back to LSP's
default utf-16. Three encodings, one line, emoji (two utf-16 units, four
utf-8 bytes, one utf-32 unit) in every editor's keystrokes: the buffers must
end identical, with every keystroke exactly once and each editor's run of
keystrokes contiguous at the place it typed.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.nvim_driver import Fleet, fleet, make_project, wait_until
from tests.test_e2e_emacs import Emacs
from tests.test_e2e_vim import Vim

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

REL = "notes/today.txt"
INITIAL = "# shared notes\nthe line: |\nlast line 中文\n"


@pytest.fixture
def editors(tmp_path: Path) -> Iterator[tuple[Fleet, list[Vim | Emacs]]]:
    others: list[Vim | Emacs] = []
    with fleet(tmp_path / "work") as f:
        try:
            yield f, others
        finally:
            for e in others:
                e.close()


def _negotiated(log: str) -> str | None:
    """The position encoding collab-ls logged at ``initialize``."""
    found = re.search(r"position encoding (utf-\d+)", log)
    return found.group(1) if found else None


def _join_from_emacs(emacs: Emacs, url: str) -> None:
    """``M-x collab-ls-join``, waiting for each prompt on the screen.

    ``Emacs.mx`` starts with ``C-g``, whose quit can discard the keys right
    behind it while Emacs is still busy starting; here nothing is typed
    before its prompt shows.
    """
    emacs.tmux.keys("M-x")
    wait_until(lambda: "M-x" in emacs.tmux.screen() or None, 10, "Emacs: the M-x prompt")
    emacs.tmux.literal("collab-ls-join")
    emacs.tmux.keys("Enter")
    wait_until(lambda: "Join URL:" in emacs.tmux.screen() or None, 10, "Emacs: the URL prompt")
    emacs.tmux.literal(url)
    emacs.tmux.keys("Enter")


def test_neovim_vim_and_emacs_type_into_one_line_and_converge(
    editors: tuple[Fleet, list[Vim | Emacs]], tmp_path: Path
) -> None:
    nvims, others = editors
    work = tmp_path / "work"
    host = nvims.start("host", make_project(tmp_path / "host", {REL: INITIAL}))
    host.edit(REL)
    url = host.share()
    host.wait_connected(REL)

    vim = Vim("vim", make_project(tmp_path / "vim", {REL: "a stale copy\n"}), work)
    others.append(vim.start(REL))
    vim.command(f"CollabJoin {url}")

    emacs_root = make_project(tmp_path / "emacs", {REL: "another stale copy\n"})
    (emacs_root / ".git").mkdir()  # collab-ls.el shares the git root
    emacs = Emacs("emacs", emacs_root, work)
    others.append(emacs.start(REL))
    _join_from_emacs(emacs, url)

    vim.wait_ready()
    wait_until(lambda: vim.text() == INITIAL or None, 20, "Vim gets the host's text")

    def emacs_joined() -> dict[str, Any] | None:
        state = emacs.state()
        return state if state and state["managed"] and state["text"] == INITIAL else None

    try:
        wait_until(emacs_joined, 25, "Emacs joins and gets the host's text")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{emacs.state()}\n{emacs.tmux.screen()}") from None

    # Three clients, three encodings.
    assert _negotiated(host.log()) == "utf-8", host.log()[-2000:]
    assert (vim.state() or {})["info"]["encoding"] == "utf-32"
    assert _negotiated(vim.log()) == "utf-32"
    assert _negotiated(emacs.log()) == "utf-16", emacs.log()[-2000:]

    # Line 2 is "the line: |". Neovim types at its start, Emacs after
    # "the line:" (column 9), Vim at its end: three anchors in one line.
    typed_nvim = "n😀中" * 4
    typed_emacs = "e🎉文" * 4
    typed_vim = "v🚀字" * 4
    host.cursor_to(1, 0)
    host.input("i")
    vim.tmux.keys("Escape", "2", "G", "A")
    # (No C-g here: a quit in Emacs discards the typeahead that follows it.)
    emacs.tmux.keys("M-<", "C-n", "C-a", "C-u", "9", "C-f")
    time.sleep(0.3)  # the cursor moves land before the first keystroke
    for i in range(len(typed_nvim)):
        host.type(typed_nvim[i])
        vim.tmux.literal(typed_vim[i])
        emacs.tmux.literal(typed_emacs[i])
        time.sleep(0.02)
    host.input("<Esc>")
    vim.tmux.keys("Escape")
    expected = Counter(INITIAL + typed_nvim + typed_emacs + typed_vim)

    def converged() -> str | None:
        text = host.text(REL)
        if text != vim.text() or text != emacs.text():
            return None
        return text if Counter(text) == expected else None

    try:
        final = wait_until(converged, 25, "Neovim, Vim and Emacs converge")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nneovim: {host.text(REL)!r}\nvim:    {vim.text()!r}\n"
            f"emacs:  {emacs.text()!r}\n{vim.state()}\n{emacs.state()}\n"
            f"{emacs.tmux.screen()}\n--- emacs's collab-ls ---\n{emacs.log()[-3000:]}"
        ) from None
    lines = final.split("\n")
    assert lines[0] == "# shared notes"
    assert lines[1] == typed_nvim + "the line:" + typed_emacs + " |" + typed_vim
    assert lines[2] == "last line 中文"

    # Nothing prompted in Emacs, nothing went wrong anywhere.
    state = emacs.state()
    assert state is not None and state["prompts"] == [], state
    assert not (vim.state() or {}).get("errmsg"), vim.state()
    for log in (host.log(), vim.log(), emacs.log()):
        assert "Traceback" not in log, log[-3000:]
    assert "newer than edits" not in host.messages()
