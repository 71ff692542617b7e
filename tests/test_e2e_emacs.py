"""End-to-end: a real Emacs 28 with eglot and editor-configs/emacs joins a Neovim's session.

Emacs (Debian's ``emacs-nox`` with ``elpa-eglot``) runs ``-nw`` in a private
tmux server and is driven with ``tmux send-keys`` (``M-x collab-ls-join``,
typing). A timer in the test's init file writes the buffer's text, the
prompts Emacs asked (``y-or-n-p``/``yes-or-no-p`` are recorded, and answered
"no", so a prompt would block nothing silently but fail the test) and the
echo area's recent messages as JSON every 50 ms. The command line
collab-ls.el starts collab-ls with is read from /proc (Emacs's child process).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.nvim_driver import (
    COLLAB_LS,
    REPO,
    DriverError,
    Fleet,
    fleet,
    make_project,
    wait_until,
)
from tests.test_e2e_vim import (
    PYLSP,
    Tmux,
    assert_shares_language_server,
    collab_ls_process,
    require_binary,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

EMACS_CONFIG = REPO / "editor-configs" / "emacs" / "collab-ls.el"
REL = "notes/today.txt"
INITIAL = "# shared notes\nthe line: |\nlast line 中文\n"


def _elisp_string(s: str) -> str:
    return json.dumps(s)  # a JSON string literal is an Elisp string literal for these


class Emacs:
    """A real ``emacs -nw`` with collab-ls.el in tmux, its state dumped to a JSON file."""

    def __init__(self, name: str, root: Path, workdir: Path) -> None:
        self.binary = require_binary("emacs", "emacs-nox")
        version = subprocess.run(
            [self.binary, "--batch", "-q", "--eval", "(princ (require 'eglot))"],
            capture_output=True,
            text=True,
            check=False,
        )
        if version.returncode != 0 or "eglot" not in version.stdout:
            pytest.fail("eglot not found: install the Debian package elpa-eglot")
        self.name = name
        self.root = root
        self.workdir = workdir
        self.dump_file = workdir / f"{name}-dump.json"
        self.log_file = workdir / f"{name}-collab-ls.log"
        self.tmux = Tmux(name, workdir)

    def start(self, rel: str, init_extra: str = "") -> Emacs:
        self.workdir.mkdir(parents=True, exist_ok=True)
        init = self.workdir / f"{self.name}-init.el"
        dump = _elisp_string(str(self.dump_file))
        init.write_text(
            f"(load {_elisp_string(str(EMACS_CONFIG))})\n"
            f"(setq collab-ls-program {_elisp_string(str(COLLAB_LS))})\n"
            f'(setq collab-ls-extra-args (list "--log-file" {_elisp_string(str(self.log_file))}))\n'
            "(setq native-comp-async-report-warnings-errors 'silent)\n"
            "(setq make-backup-files nil auto-save-default nil create-lockfiles nil)\n"
            "(defvar collab-test-prompts nil)\n"
            "(defun collab-test-record-prompt (prompt &rest _)\n"
            "  (push prompt collab-test-prompts) nil)\n"
            "(advice-add 'y-or-n-p :override #'collab-test-record-prompt)\n"
            "(advice-add 'yes-or-no-p :override #'collab-test-record-prompt)\n"
            # "File changed on disk; really edit the buffer?" blocks without a y-or-n-p.
            "(advice-add 'ask-user-about-supersession-threat :override\n"
            "            (lambda (file)\n"
            '              (collab-test-record-prompt (format "supersession: %s" file))))\n'
            f"(defvar collab-test-file (expand-file-name {_elisp_string(rel)}))\n"
            "(defun collab-test-dump ()\n"
            "  (let* ((buf (find-buffer-visiting collab-test-file))\n"
            "         (state (list :text (if buf (with-current-buffer buf\n"
            "                                   (buffer-substring-no-properties\n"
            "                                    (point-min) (point-max))) :null)\n"
            "                      :url (or collab-ls-url :null)\n"
            # Set once eglot has connected (its initialize answered): until then a key
            # interrupts eglot's synchronous wait, and eglot kills the server.
            "                      :server (if (and collab-ls--server\n"
            "                                       (jsonrpc-running-p collab-ls--server))\n"
            "                                  t :false)\n"
            "                      :managed (if (and buf (buffer-local-value\n"
            "                                              'eglot--managed-mode buf)) t :false)\n"
            "                      :prompts (vconcat collab-test-prompts)\n"
            "                      :overlays (length collab-ls--overlays)\n"
            "                      :messages (with-current-buffer (messages-buffer)\n"
            "                                  (buffer-substring-no-properties\n"
            "                                   (max (point-min) (- (point-max) 3000))\n"
            "                                   (point-max)))))\n"
            "         (coding-system-for-write 'utf-8-unix))\n"
            f'    (with-temp-file (concat {dump} ".tmp") (insert (json-serialize state)))\n'
            f'    (rename-file (concat {dump} ".tmp") {dump} t)))\n'
            "(run-with-timer 0.05 0.05 #'collab-test-dump)\n" + init_extra
        )
        self.tmux.start([self.binary, "-nw", "-q", "-l", str(init), rel], self.root)
        wait_until(self.state, 15, f"{self.name}: Emacs started")
        return self

    def close(self) -> None:
        self.tmux.close()

    def state(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.dump_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def text(self) -> str | None:
        state = self.state()
        return state["text"] if state else None

    def mx(self, command: str, argument: str | None = None) -> None:
        """``M-x command`` (and its argument), each typed once its prompt is on screen.

        Keys sent before Emacs shows the prompt land in the buffer instead
        (seen on a loaded machine), so every step waits for its prompt.
        """

        def prompt(text: str) -> bool | None:
            # The screen's last row is the echo area / minibuffer (the mode line is above).
            rows = self.tmux.screen().rstrip("\n").split("\n")
            return True if rows and text in rows[-1] else None

        self.open_prompt("M-x", prompt)
        self.tmux.literal(command)
        self.tmux.keys("Enter")
        if argument is not None:
            wait_until(lambda: prompt(":"), 15, f"{self.name}: the {command} prompt")
            self.tmux.literal(argument)
            self.tmux.keys("Enter")

    def open_prompt(
        self, text: str, prompt: Callable[[str], bool | None], *keys: str, within: float = 45.0
    ) -> None:
        """Press ``C-g``, ``keys`` and ``M-x`` until the M-x prompt shows (bounded).

        A message shown in the echo area (a peer joining, the session's status)
        can hide a prompt that is there, or Emacs can still be busy: ask again.
        """
        deadline = time.monotonic() + within
        while True:
            self.tmux.keys("C-g")
            # A quit throws away the keys typed ahead of it: let it finish first
            # (a C-u lost that way once made `C-u M-x' a plain `M-x').
            time.sleep(0.3)
            for key in keys:
                self.tmux.keys(key)
            self.tmux.keys("M-x")
            try:
                wait_until(lambda: prompt(text), 5, f"{self.name}: the {text} prompt")
                return
            except DriverError:
                if time.monotonic() > deadline:
                    raise

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def wait_for_text(self, expected: str, what: str, timeout: float = 15.0) -> None:
        """Wait until the test file's buffer holds ``expected``; say what Emacs showed if not."""
        try:
            wait_until(lambda: self.text() == expected or None, timeout, what)
        except DriverError as exc:
            state = self.state() or {}
            raise DriverError(
                f"{exc}\n{self.name}'s text: {state.get('text')!r}\n"
                f"prompts: {state.get('prompts')}\nmessages:\n{state.get('messages')}\n"
                f"screen:\n{self.tmux.screen()}\ncollab-ls log tail:\n{self.log()[-3000:]}"
            ) from exc


@pytest.fixture
def editors(tmp_path: Path) -> Iterator[tuple[Fleet, list[Emacs]]]:
    emacsen: list[Emacs] = []
    with fleet(tmp_path / "work") as f:
        try:
            yield f, emacsen
        finally:
            for e in emacsen:
                e.close()


def test_emacs_joins_a_neovim_session_and_both_type(
    editors: tuple[Fleet, list[Emacs]], tmp_path: Path
) -> None:
    nvims, emacsen = editors
    host = nvims.start("host", make_project(tmp_path / "host", {REL: INITIAL}))
    host.edit(REL)
    url = host.share()
    host.wait_connected(REL)

    # A git checkout: collab-ls.el shares the git root, as the Neovim config does.
    root = make_project(tmp_path / "emacs", {REL: "stale copy\n"})
    (root / ".git").mkdir()
    emacs = Emacs("emacs", root, tmp_path / "work")
    emacsen.append(emacs.start(REL))
    emacs.mx("collab-ls-join", url)

    def joined() -> dict[str, Any] | None:
        state = emacs.state()
        return state if state and state["managed"] and state["text"] == INITIAL else None

    try:
        wait_until(joined, 30, "Emacs joins and gets the host's text")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{emacs.state()}\n{emacs.tmux.screen()}") from None

    # Emacs types on line 2 (its end), Neovim on line 1 (its start), at the same time.
    emacs.tmux.keys("M-<", "C-n", "C-e")
    typed_emacs = "e😀中" * 4
    typed_nvim = "n🎉文" * 4
    host.cursor_to(0, 0)
    host.input("i")
    for i in range(len(typed_emacs)):
        emacs.tmux.literal(typed_emacs[i])
        host.type(typed_nvim[i])
        time.sleep(0.02)
    host.input("<Esc>")
    expected = Counter(INITIAL + typed_emacs + typed_nvim)

    def converged() -> str | None:
        text = host.text(REL)
        return text if text == emacs.text() and Counter(text) == expected else None

    try:
        final = wait_until(converged, 30, "Emacs and Neovim converge")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nneovim: {host.text(REL)!r}\nemacs:  {emacs.text()!r}\n{emacs.state()}"
        ) from None
    lines = final.split("\n")
    assert lines[0] == typed_nvim + "# shared notes"
    assert lines[1] == "the line: |" + typed_emacs
    # Peers' edits went in without a prompt.
    state = emacs.state()
    assert state is not None and state["prompts"] == [], state
    assert "Proceed?" not in state["messages"]
    # The guest's cursor reaches Emacs as overlays from $/collab/peers.
    host.cursor_to(2, 3)
    wait_until(lambda: (emacs.state() or {}).get("overlays", 0) > 0 or None, 15, "peer overlays")
    assert "Traceback" not in emacs.log(), emacs.log()[-3000:]
    assert "newer than edits" not in host.messages()


def _elisp_list(items: list[str]) -> str:
    return "(list " + " ".join(_elisp_string(i) for i in items) + ")"


def test_emacs_shares_its_language_server_and_joins_into_a_workspace(
    editors: tuple[Fleet, list[Emacs]], tmp_path: Path
) -> None:
    """`collab-ls-language-server' goes last, after `--', on share only;
    C-u M-x collab-ls-join joins with `--workspace DIR' and shares under DIR."""
    _, emacsen = editors
    root = make_project(tmp_path / "lshost", {REL: INITIAL})
    (root / ".git").mkdir()  # the shared root (else: the file's folder)
    host = Emacs("lshost", root, tmp_path / "work")
    emacsen.append(host.start(REL, f"(setq collab-ls-language-server {_elisp_list(PYLSP)})\n"))
    host.mx("collab-ls-share")

    def shared_url() -> str | None:
        url = (host.state() or {}).get("url")
        return url if isinstance(url, str) and url else None

    url = wait_until(shared_url, 20, "the Emacs host has the join URL")
    assert_shares_language_server(host.tmux.pid(), PYLSP, "the Emacs host")

    # A guest with no checkout: its Emacs is elsewhere, the project goes into `mirror`.
    elsewhere = make_project(tmp_path / "elsewhere", {"scratch.txt": "not shared\n"})
    mirror = tmp_path / "mirror" / "project"  # created by collab-ls.el
    guest = Emacs("lsguest", elsewhere, tmp_path / "work")
    # Ignored when joining: a guest's requests go to the host's server.
    emacsen.append(
        guest.start("scratch.txt", '(setq collab-ls-language-server (list "no-such-server"))\n')
    )

    def prompt(text: str) -> bool | None:
        rows = guest.tmux.screen().rstrip("\n").split("\n")
        return True if rows and text in rows[-1] else None

    # C-u M-x collab-ls-join: the URL, then the directory (its default input cleared).
    guest.open_prompt("C-u M-x", prompt, "C-u")
    guest.tmux.literal("collab-ls-join")
    guest.tmux.keys("Enter")
    wait_until(lambda: prompt("Join URL:"), 15, "the join URL prompt")
    guest.tmux.literal(url)
    guest.tmux.keys("Enter")
    wait_until(lambda: prompt("Mirror the host"), 15, "the directory prompt")
    guest.tmux.keys("C-a", "C-k")
    guest.tmux.literal(str(mirror))
    guest.tmux.keys("Enter")

    found = wait_until(lambda: collab_ls_process(guest.tmux.pid()), 10, "the guest's collab-ls")
    args = found[1]
    assert "--" not in args and "no-such-server" not in args, args
    join = args.index("--join")
    assert args[join : join + 4] == ["--join", url, "--workspace", str(mirror)], args
    wait_until(lambda: (guest.state() or {}).get("server"), 20, "the guest's eglot connected")
    # The host's tree is mirrored into the directory, and files there are shared.
    wait_until(
        lambda: ((mirror / REL).is_file() and (mirror / REL).read_text() == INITIAL) or None,
        20,
        "the host's file mirrored into the guest's workspace",
    )
    target = _elisp_string(str(mirror / REL))
    guest.mx("eval-expression", f"(progn (setq collab-test-file {target}) (find-file {target}))")
    wait_until(
        lambda: ((s := guest.state()) and s["managed"] and s["text"] == INITIAL) or None,
        20,
        "the guest's mirrored file is managed by collab-ls",
    )
    host.tmux.keys("M-<")
    host.tmux.literal("host: ")
    host.wait_for_text("host: " + INITIAL, "the host's typing in its own buffer")
    guest.wait_for_text("host: " + INITIAL, "host -> mirrored guest")
    for emacs in (host, guest):
        state = emacs.state()
        assert state is not None and state["prompts"] == [], state
        assert "Traceback" not in emacs.log(), emacs.log()[-3000:]
