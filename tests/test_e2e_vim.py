"""End-to-end: a real Vim 9.0 with editor-configs/vim and a real Neovim, one session.

Vim (Debian's ``vim``) runs in a tmux server of its own and is driven with
``tmux send-keys``, as a user types. Its buffer is read back through a file:
the test's vimrc writes ``getline(1, '$')`` and the plugin's state as JSON
every 50 ms. The Neovim is driven with tests/nvim_driver.py and runs
editor-configs/neovim. A missing binary fails with the package to install.
The command line the plugin starts collab-ls with is read from /proc (the
editor's child process), as the kernel has it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.nvim_driver import COLLAB_LS, REPO, Fleet, fleet, make_project, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

VIM_CONFIG = REPO / "editor-configs" / "vim"
REL = "notes/today.txt"
INITIAL = "# shared notes\nthe line: |\nlast line 中文\n"
PYLSP = [sys.executable, "-m", "pylsp"]


def require_binary(name: str, package: str) -> str:
    """The binary's path; fails (does not skip) naming the Debian package."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} not found: install the Debian package {package} (apt-get install {package})"
        )
    return found


class Tmux:
    """A private tmux server (``-L``) running one program in a detached session."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.tmux = require_binary("tmux", "tmux")
        self.socket = f"collab-test-{os.getpid()}-{name}"
        self.session = name
        self.workdir = workdir

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.tmux, "-L", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )

    def start(self, command: list[str], cwd: Path) -> None:
        env = "env LANG=C.UTF-8 LC_ALL=C.UTF-8 TERM=xterm-256color"
        shell = f"cd {_sh(str(cwd))} && exec {env} " + " ".join(_sh(a) for a in command)
        result = self.run(
            "-u", "-f", "/dev/null", "new-session", "-d", "-s", self.session,
            "-x", "160", "-y", "40", shell,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr

    def keys(self, *keys: str) -> None:
        """tmux key names (``Escape``, ``Enter``) or literal strings without them."""
        self.run("send-keys", "-t", self.session, *keys)

    def literal(self, text: str) -> None:
        self.run("send-keys", "-t", self.session, "-l", text)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session).stdout

    def pid(self) -> int:
        """The pid of the program in the pane (it was exec'd by the pane's shell)."""
        out = self.run("display-message", "-p", "-t", self.session, "#{pane_pid}").stdout
        return int(out.strip())

    def close(self) -> None:
        # Kills the private tmux server, and with it what runs in it.
        self.run("kill-server")


def _sh(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def child_processes(pid: int) -> dict[int, list[str]]:
    """The live child processes of ``pid``: their pid and argv, from /proc."""
    found: dict[int, list[str]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            raw = (proc / "cmdline").read_bytes() if ppid == pid else b""
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if raw:
            found[int(proc.name)] = [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]
    return found


def collab_ls_process(editor_pid: int) -> tuple[int, list[str]] | None:
    """The collab-ls the editor started: its pid and its arguments (after the program)."""
    for pid, argv in child_processes(editor_pid).items():
        # A console script: [python, .../collab-ls, args...] (or the script itself first).
        for i, arg in enumerate(argv[:2]):
            if Path(arg).name == "collab-ls":
                return pid, argv[i + 1 :]
    return None


def assert_shares_language_server(editor_pid: int, server: list[str], what: str) -> None:
    """The editor's collab-ls runs ``--share ... -- SERVER`` and has started SERVER."""
    found = wait_until(lambda: collab_ls_process(editor_pid), 10, f"{what}: collab-ls running")
    pid, args = found
    assert args[-len(server) - 1 :] == ["--", *server], args
    assert "--share" in args[: -len(server) - 1] and args.count("--") == 1, args
    # collab-ls took the command as the server's: that server runs as its child.
    wait_until(
        lambda: server in child_processes(pid).values() or None,
        15,
        f"{what}: collab-ls started {' '.join(server)}",
    )


class Vim:
    """A real Vim with editor-configs/vim in tmux, its state dumped to a JSON file."""

    def __init__(self, name: str, root: Path, workdir: Path) -> None:
        self.binary = require_binary("vim", "vim")
        version = subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, check=False
        ).stdout
        if "Vi IMproved 9." not in version:
            pytest.fail(f"Vim 9 needed (the Debian package vim in bookworm): {version[:60]}")
        self.name = name
        self.root = root
        self.workdir = workdir
        self.dump_file = workdir / f"{name}-dump.json"
        self.log_file = workdir / f"{name}-collab-ls.log"
        self.tmux = Tmux(name, workdir)

    def start(self, rel: str, vimrc_extra: str = "") -> Vim:
        self.workdir.mkdir(parents=True, exist_ok=True)
        vimrc = self.workdir / f"{self.name}-vimrc"
        cmd = [str(COLLAB_LS), "--log-file", str(self.log_file)]
        vimrc.write_text(
            "set nocompatible noswapfile encoding=utf-8\n"
            f"let &runtimepath = {json.dumps(str(VIM_CONFIG))} . ',' . &runtimepath\n"
            f"let g:collab_cmd = {json.dumps(cmd)}\n"
            f"runtime plugin/collab.vim\n"
            # What the language features left: lists, signs, the last answers.
            "function! CollabTestItems(list) abort\n"
            "  return map(a:list, {_, e -> [fnamemodify(bufname(e.bufnr), ':p'), e.lnum, e.col,"
            " e.text]})\n"
            "endfunction\n"
            "function! CollabTestLanguage() abort\n"
            "  let signs = sign_getplaced(bufnr('%'), {'group': 'collab_diagnostics'})[0].signs\n"
            "  return {'file': expand('%:p'), 'cursor': [line('.'), col('.')],\n"
            "    \\ 'qf': CollabTestItems(getqflist()),\n"
            "    \\ 'loclist': CollabTestItems(getloclist(0)),\n"
            "    \\ 'signs': map(signs, {_, s -> [s.lnum, s.name]}),\n"
            "    \\ 'diagnostics': collab#language#diagnostics(), 'last': collab#language#last()}\n"
            "endfunction\n"
            "function! CollabTestDump(timer) abort\n"
            "  let buf = bufnr('%')\n"
            "  let state = {'lines': getline(1, '$'), 'eol': &eol, 'mode': mode(),\n"
            "    \\ 'info': collab#info(), 'messages': collab#messages(),\n"
            "    \\ 'props': len(prop_list(1, {'end_lnum': -1})), 'errmsg': v:errmsg}\n"
            "  call extend(state, CollabTestLanguage())\n"
            f"  call writefile([json_encode(state)], {json.dumps(str(self.dump_file))} . '.tmp')\n"
            f"  call rename({json.dumps(str(self.dump_file))} . '.tmp', "
            f"{json.dumps(str(self.dump_file))})\n"
            "endfunction\n"
            "call timer_start(50, 'CollabTestDump', {'repeat': -1})\n" + vimrc_extra
        )
        self.tmux.start([self.binary, "-N", "-u", str(vimrc), "-i", "NONE", rel], self.root)
        wait_until(self.state, 10, f"{self.name}: Vim started")
        return self

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.tmux.keys("Escape")
            self.tmux.keys(":qa!", "Enter")
            # Vim stops collab-ls (shutdown, exit) on the way out; then the server goes.
            wait_until(lambda: self.tmux.run("has-session").returncode != 0 or None, 3, "quit")
        self.tmux.close()

    def state(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.dump_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def text(self) -> str:
        state = self.state() or {"lines": [], "eol": 1}
        return "\n".join(state["lines"]) + ("\n" if state["eol"] else "")

    def command(self, cmd: str) -> None:
        self.tmux.keys("Escape")
        self.tmux.literal(":" + cmd)
        self.tmux.keys("Enter")

    def wait_ready(self) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            state = self.state()
            return (
                state if state and state["info"]["ready"] and state["info"]["documents"] else None
            )

        return wait_until(ready, 20, f"{self.name}: collab-ls initialized with the file open")

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


@pytest.fixture
def editors(tmp_path: Path) -> Iterator[tuple[Fleet, list[Vim]]]:
    vims: list[Vim] = []
    with fleet(tmp_path / "work") as f:
        try:
            yield f, vims
        finally:
            for v in vims:
                v.close()


def _expect_clean(vim: Vim) -> None:
    state = vim.state() or {}
    assert not state.get("errmsg"), state
    # collab-ls's own log; the shared language server's stderr is relayed into it
    # (pylsp logs a traceback when it has nothing to rename: not ours).
    log = "\n".join(line for line in vim.log().splitlines() if "] stderr: " not in line)
    assert "Traceback" not in log, log[-3000:]


def test_vim_joins_neovim_and_both_type_into_one_line(
    editors: tuple[Fleet, list[Vim]], tmp_path: Path
) -> None:
    nvims, vims = editors
    host = nvims.start("host", make_project(tmp_path / "host", {REL: INITIAL}))
    host.edit(REL)
    url = host.share()
    host.wait_connected(REL)

    vim = Vim("vim", make_project(tmp_path / "vim", {REL: "a stale copy\n"}), tmp_path / "work")
    vims.append(vim.start(REL))
    vim.command(f"CollabJoin {url}")
    vim.wait_ready()
    wait_until(lambda: vim.text() == INITIAL or None, 20, "Vim gets the host's text")
    state = vim.state()
    assert state is not None and state["info"]["encoding"] == "utf-32"  # Neovim's is utf-8

    typed_nvim = "n😀中" * 5
    typed_vim = "v文🎉" * 5
    # The same line, concurrently: Neovim at its start, Vim at its end.
    host.cursor_to(1, 0)
    host.input("i")
    vim.tmux.keys("Escape", "2", "G", "A")
    for i in range(len(typed_nvim)):
        host.type(typed_nvim[i])
        vim.tmux.literal(typed_vim[i])
        time.sleep(0.01)
    host.input("<Esc>")
    vim.tmux.keys("Escape")
    expected = Counter(INITIAL + typed_nvim + typed_vim)

    def converged() -> str | None:
        text = host.text(REL)
        return text if text == vim.text() and Counter(text) == expected else None

    try:
        final = wait_until(converged, 30, "Vim and Neovim converge with every keystroke")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nneovim: {host.text(REL)!r}\nvim:    {vim.text()!r}\n{vim.state()}"
        ) from None
    line = final.split("\n")[1]
    assert line == typed_nvim + "the line: |" + typed_vim
    # Back and forth once more, on separate lines, after the burst.
    vim.tmux.keys("G", "o")
    vim.tmux.literal("from vim")
    vim.tmux.keys("Escape")
    host.wait_contains("from vim\n", REL)
    host.insert_at(0, 0, "from nvim ")
    wait_until(lambda: vim.text().startswith("from nvim # shared") or None, 10, "nvim -> vim")
    assert host.text(REL) == vim.text()
    _expect_clean(vim)
    assert "newer than edits" not in host.messages()


def test_neovim_joins_vim_and_sees_peer_cursors(
    editors: tuple[Fleet, list[Vim]], tmp_path: Path
) -> None:
    nvims, vims = editors
    vim = Vim("vimhost", make_project(tmp_path / "vimhost", {REL: INITIAL}), tmp_path / "work")
    vims.append(vim.start(REL))
    vim.command("CollabShare")

    def url() -> str | None:
        state = vim.state()
        return state["info"]["url"] or None if state else None

    join = wait_until(url, 20, "Vim shows the join URL")
    guest = nvims.start("guest", make_project(tmp_path / "guest", {REL: INITIAL}))
    guest.edit(REL)
    guest.join(join)
    guest.wait_connected(REL)
    assert guest.text(REL) == INITIAL
    # Neovim types on line 3; Vim on line 1, at once.
    guest.insert_at(2, 0, "guest says hi ")
    vim.tmux.keys("Escape", "g", "g", "I")
    vim.tmux.literal("host says hi ")
    vim.tmux.keys("Escape")

    def converged() -> str | None:
        text = guest.text(REL)
        return (
            text
            if text == vim.text() and "guest says hi " in text and "host says" in text
            else None
        )

    final = wait_until(converged, 20, "Vim host and Neovim guest converge")
    assert final == "host says hi # shared notes\nthe line: |\nguest says hi last line 中文\n"
    # Peer cursors: the guest's cursor reaches Vim as text properties.
    guest.cursor_to(1, 4)
    guest.input("<Esc>")

    def cursors() -> dict[str, Any] | None:
        state = vim.state()
        return state if state and state["info"]["peers"] and state["props"] > 0 else None

    state = wait_until(cursors, 15, "Vim shows the guest's cursor")
    assert state["info"]["peers"][0]["uri"].endswith(REL)
    _expect_clean(vim)
    # :CollabFollow with a name nobody has: the server's error as a message, no crash.
    vim.command("CollabFollow nobody")
    message = wait_until(
        lambda: [m for m in (vim.state() or {}).get("messages", []) if "follow" in m],
        10,
        "a message about :CollabFollow",
    )
    assert "follow nobody failed" in message[0] and "nobody" in message[0]
    # :w writes the shared text.
    vim.command("w")
    wait_until(lambda: (vim.root / REL).read_text() == final or None, 10, "Vim wrote the file")
    assert not (vim.state() or {}).get("errmsg")


def test_vim_shares_its_language_server_and_joins_into_a_workspace(
    editors: tuple[Fleet, list[Vim]], tmp_path: Path
) -> None:
    """g:collab_language_server goes last, after `--`, on :CollabShare only;
    `:CollabJoin {url} {dir}` joins with `--workspace dir` and shares under dir."""
    _, vims = editors
    host = Vim("lshost", make_project(tmp_path / "lshost", {REL: INITIAL}), tmp_path / "work")
    vims.append(host.start(REL, f"let g:collab_language_server = {json.dumps(PYLSP)}\n"))
    host.command("CollabShare")
    url = wait_until(
        lambda: ((host.state() or {}).get("info") or {}).get("url") or None,
        20,
        "the Vim host shows the join URL",
    )
    assert_shares_language_server(host.tmux.pid(), PYLSP, "the Vim host")

    # A guest with no checkout: its Vim is elsewhere, the project goes into `mirror`.
    elsewhere = make_project(tmp_path / "elsewhere", {"scratch.txt": "not shared\n"})
    mirror = tmp_path / "mirror" / "project"  # created by the plugin
    guest = Vim("lsguest", elsewhere, tmp_path / "work")
    # Ignored when joining: a guest's requests go to the host's server.
    vims.append(guest.start("scratch.txt", "let g:collab_language_server = ['no-such-server']\n"))
    guest.command(f"CollabJoin {url} {mirror}")
    found = wait_until(lambda: collab_ls_process(guest.tmux.pid()), 10, "the guest's collab-ls")
    args = found[1]
    assert "--" not in args and "no-such-server" not in args, args
    join = args.index("--join")
    assert args[join : join + 4] == ["--join", url, "--workspace", str(mirror)], args
    state = wait_until(
        lambda: (s := guest.state()) and s["info"]["ready"] and s,
        20,
        "the guest's collab-ls initialized",
    )
    assert state["info"]["root"] == str(mirror) and state["info"]["documents"] == [], state
    # The host's tree is mirrored into the directory, and files there are shared.
    wait_until(
        lambda: ((mirror / REL).is_file() and (mirror / REL).read_text() == INITIAL) or None,
        20,
        "the host's file mirrored into the guest's workspace",
    )
    guest.command(f"edit {mirror / REL}")
    guest.wait_ready()
    wait_until(lambda: guest.text() == INITIAL or None, 10, "the guest Vim shows the session text")
    host.tmux.keys("Escape", "g", "g", "I")
    host.tmux.literal("host: ")
    host.tmux.keys("Escape")
    wait_until(lambda: guest.text() == "host: " + INITIAL or None, 15, "host -> mirrored guest")
    for vim in (host, guest):
        _expect_clean(vim)


LIB_PY = '''"""Helpers for the app."""
import os


def greet(name):
    """Say hello to NAME."""
    return "hello " + name
'''
APP_PY = 'from lib import greet\n\nprint(greet("vim"))\ngreet("again")\nx=1\n'
GREET_CALL = (3, 7)  # 1-based line and byte column of `greet` in `print(greet("vim"))`
GREET_DEF = [5, 5]  # of `greet` in `def greet(name):`


def _python_session(tmp_path: Path, vims: list[Vim]) -> tuple[Vim, Vim, Path]:
    """A Vim host sharing pylsp with app.py open; a Vim guest joined into an empty
    folder (``--workspace``) with the mirrored app.py open. Returns host, guest, mirror."""
    files = {"app.py": APP_PY, "lib.py": LIB_PY}
    host = Vim("pyhost", make_project(tmp_path / "pyhost", files), tmp_path / "work")
    vims.append(host.start("app.py", f"let g:collab_language_server = {json.dumps(PYLSP)}\n"))
    host.command("CollabShare")
    url = wait_until(
        lambda: ((host.state() or {}).get("info") or {}).get("url") or None,
        20,
        "the Vim host shows the join URL",
    )
    mirror = tmp_path / "mirror"
    guest = Vim(
        "pyguest", make_project(tmp_path / "elsewhere", {"x.txt": "x\n"}), tmp_path / "work"
    )
    vims.append(guest.start("x.txt"))
    guest.command(f"CollabJoin {url} {mirror}")

    def mirrored() -> bool:
        return all(
            (mirror / rel).is_file() and (mirror / rel).read_text() == text
            for rel, text in files.items()
        )

    wait_until(mirrored, 20, "the host's files mirrored into the guest's workspace")
    guest.command(f"edit {mirror / 'app.py'}")
    guest.wait_ready()
    wait_until(lambda: guest.text() == APP_PY or None, 10, "the guest Vim shows app.py")
    return host, guest, mirror


def _state_when(
    vim: Vim, check: Callable[[dict[str, Any]], bool], timeout: float, what: str
) -> dict[str, Any]:
    """The Vim's dumped state once ``check(state)`` holds (bounded)."""

    def ready() -> dict[str, Any] | None:
        state = vim.state()
        return state if state is not None and check(state) else None

    return wait_until(ready, timeout, f"{vim.name}: {what}")


def _last(vim: Vim, what: str) -> Any:
    return ((vim.state() or {}).get("last") or {}).get(what)


def _hover(vim: Vim, line: int, col: int) -> str:
    """``:CollabHover`` at a position on greet; the text, once the popup shows it."""
    vim.command(f"call cursor({line}, {col}) | CollabHover")
    text: str = wait_until(
        lambda: (text := _last(vim, "hover")) and "greet(name)" in text and text,
        20,
        f"{vim.name}: the hover text of greet",
    )
    # On the screen: the popup at the cursor, with the docstring.
    wait_until(
        lambda: "Say hello to NAME." in vim.tmux.screen() or None, 10, f"{vim.name}: the popup"
    )
    return text


def test_vim_guest_gets_hover_definition_references_diagnostics_and_formatting(
    editors: tuple[Fleet, list[Vim]], tmp_path: Path
) -> None:
    """A Vim guest with no checkout uses the Vim host's pylsp through collab-ls."""
    _, vims = editors
    host, guest, mirror = _python_session(tmp_path, vims)
    app, lib = str(mirror / "app.py"), str(mirror / "lib.py")

    # Hover: the signature and the docstring, in a popup (the text kept for scripts).
    assert "Say hello to NAME." in _hover(guest, *GREET_CALL)

    # Definition: into lib.py, which this Vim has not opened (the mirror has it on disk).
    guest.command("call cursor({}, {}) | CollabDefinition".format(*GREET_CALL))
    state = _state_when(
        guest,
        lambda s: s["file"] == lib and s["cursor"] == GREET_DEF,
        20,
        "the jump to the definition in lib.py",
    )
    assert state["lines"][GREET_DEF[0] - 1] == "def greet(name):"
    # lib.py is now shared, so pylsp lints it: its unused import is a sign on line 2.
    state = _state_when(
        guest,
        lambda s: [2, "CollabDiagnosticWarning"] in s["signs"],
        20,
        "lib.py's diagnostic as a sign",
    )
    assert any("'os' imported but unused" in d["text"] for d in state["diagnostics"]), state

    # References: every use of greet, in the quickfix list, in both files.
    guest.command(f"edit {app} | call cursor({GREET_CALL[0]}, {GREET_CALL[1]}) | CollabReferences")
    state = _state_when(
        guest, lambda s: len(s["qf"]) >= 4 and s["file"] == app, 20, "the references"
    )
    assert {(f, line) for f, line, _, _ in state["qf"]} >= {
        (lib, 5), (app, 1), (app, 3), (app, 4),
    }, state["qf"]  # fmt: skip
    assert [app, 3, 7, 'print(greet("vim"))'] in state["qf"], state["qf"]

    # Diagnostics: an error typed by the guest, as a sign and in :CollabDiagnostics,
    # at the guest and at the host.
    guest.tmux.keys("Escape", "G", "o")
    guest.tmux.literal("undefined_name_xyz()")
    guest.tmux.keys("Escape")
    message = "undefined name 'undefined_name_xyz'"
    for vim in (guest, host):
        _state_when(
            vim,
            lambda s: [6, "CollabDiagnosticError"] in s["signs"],
            20,
            "a sign for the undefined name",
        )
        vim.command("CollabDiagnostics")
        state = _state_when(
            vim,
            lambda s: any(message in e[3] for e in s["loclist"]),
            10,
            "the undefined name in the location list",
        )
        assert [e[1:3] for e in state["loclist"] if message in e[3]] == [[6, 1]], state

    # Formatting, asked by the guest: the host applies pylsp's edit to the session.
    guest.command("CollabFormat")

    def formatted() -> str | None:
        text = guest.text()
        return text if text == host.text() and "\nx = 1\n" in text else None

    final = wait_until(formatted, 20, "both Vims show the formatted app.py")
    assert final == APP_PY.replace("x=1", "x = 1") + "undefined_name_xyz()\n"

    # Completion ('omnifunc'): `gre` and CTRL-X CTRL-O give the one match, greet.
    guest.tmux.keys("Escape", "G", "o")
    guest.tmux.literal("print(gre")
    guest.tmux.keys("C-x", "C-o")
    wait_until(lambda: _last(guest, "completion") == ["greet"], 20, "the guest's completion")
    guest.tmux.literal(")")
    guest.tmux.keys("Escape")
    wait_until(
        lambda: host.text() == guest.text() == final + "print(greet)\n" or None,
        10,
        "the completed line at both ends",
    )
    for vim in (host, guest):
        _expect_clean(vim)


def test_vim_host_gets_hover_rename_and_diagnostics_of_files_it_opens_later(
    editors: tuple[Fleet, list[Vim]], tmp_path: Path
) -> None:
    """The Vim host's own requests go to its pylsp; its rename reaches the guest."""
    _, vims = editors
    host, guest, mirror = _python_session(tmp_path, vims)
    assert "Say hello to NAME." in _hover(host, 4, 1)
    # On an empty line pylsp has nothing to rename (null): said, nothing changes.
    host.command("call cursor(2, 1) | CollabRename foo")
    said = wait_until(
        lambda: [m for m in (host.state() or {}).get("messages", []) if "rename" in m],
        20,
        "the host's message about the rename",
    )
    assert said == ["collab: nothing to rename"] and host.text() == APP_PY, said

    # The guest opens lib.py: pylsp lints it and the host Vim, without lib.py open,
    # keeps the diagnostic until it opens the file.
    guest.command(f"edit {mirror / 'lib.py'}")
    _state_when(
        guest, lambda s: [2, "CollabDiagnosticWarning"] in s["signs"], 20, "lib.py's diagnostic"
    )
    host.command("edit lib.py")
    state = _state_when(
        host,
        lambda s: [2, "CollabDiagnosticWarning"] in s["signs"],
        10,
        "lib.py's stored diagnostic once it opens the file",
    )
    assert state["file"] == str(host.root / "lib.py")
    guest.command(f"edit {mirror / 'app.py'}")
    host.command("edit app.py")

    # Rename on the host: pylsp's WorkspaceEdit applied by the host Vim, to both files.
    host.command("call cursor(4, 1) | CollabRename salute")
    expected = APP_PY.replace("greet", "salute")

    def renamed() -> str | None:
        text = host.text()
        return text if text == guest.text() == expected else None

    wait_until(renamed, 20, "the rename converges in both Vims")
    assert _last(host, "rename") == "salute"
    # Formatting on the host: pylsp's text edits applied by the host Vim.
    host.command("CollabFormat")
    expected = expected.replace("x=1", "x = 1")
    wait_until(renamed, 20, "the host's formatting converges in both Vims")

    host.command("hide edit lib.py")  # app.py is modified
    _state_when(host, lambda s: "def salute(name):" in s["lines"], 10, "lib.py renamed too")
    # The unused import goes: pylsp publishes no diagnostics, and the sign goes.
    host.command("2delete")
    _state_when(
        host,
        lambda s: "import os" not in s["lines"] and s["signs"] == [] and s["diagnostics"] == [],
        20,
        "lib.py's sign cleared",
    )
    for vim in (host, guest):
        _expect_clean(vim)
