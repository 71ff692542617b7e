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
from collections.abc import Iterator
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
            "function! CollabTestDump(timer) abort\n"
            "  let buf = bufnr('%')\n"
            "  let state = {'lines': getline(1, '$'), 'eol': &eol, 'mode': mode(),\n"
            "    \\ 'info': collab#info(), 'messages': collab#messages(),\n"
            "    \\ 'props': len(prop_list(1, {'end_lnum': -1})), 'errmsg': v:errmsg}\n"
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
    assert "Traceback" not in vim.log(), vim.log()[-3000:]


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
