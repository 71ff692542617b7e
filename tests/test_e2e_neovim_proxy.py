"""End-to-end: a guest Neovim uses the host's real language server (pylsp).

The host Neovim runs editor-configs/neovim with ``language_server`` set, so
``:CollabShare`` starts ``collab-ls --share ... -- python -m pylsp``; the guest
Neovim ``:CollabJoin``s from its own copy of the project (a different root).
In the guest, hover and definition go through the guest's collab-ls, the
relay and the host's collab-ls to pylsp and back, with URIs rewritten to the
guest's root and positions converted where the guest's encoding differs from
pylsp's (Neovim negotiates utf-8 with collab-ls; pylsp counts in utf-16).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.nvim_driver import Fleet, Neovim, fleet, make_project, wait_converged, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

PYLSP = [sys.executable, "-m", "pylsp"]

LIB = '''"""Helpers."""


def greet(name):
    """Say hello to someone."""
    return "hello " + name
'''

# Line 3 calls greet after non-ASCII text: its column differs in utf-8, utf-16 and utf-32.
MAIN = """from lib import greet

message = greet("world")
pair = ("é中😀", greet("x"))
"""
GREET_CALL = (3, len('pair = ("é中😀", '))  # (line, code point) of the `g` of that call
GREET_DEF_LINE = 3  # 0-based line of `def greet` in lib.py
FILES = {"lib.py": LIB, "main.py": MAIN}

# The answer of the buffer's collab-ls client to a request at the cursor, through
# vim.lsp.buf_request_sync with params made the way Neovim's own handlers make them.
REQUEST_AT_CURSOR = """
local method, timeout = ...
local client = require('collab').client()
if not client then return { err = 'collab-ls is not running' } end
local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
local results, err = vim.lsp.buf_request_sync(0, method, params, timeout)
if not results then return { err = tostring(err) } end
local answer = results[client.id]
if not answer then return { err = 'no answer from collab-ls' } end
return { result = answer.result, err = answer.err and vim.inspect(answer.err) or nil,
         encoding = client.offset_encoding, others = vim.tbl_count(results) - 1 }
"""


@pytest.fixture
def nvims(tmp_path: Path) -> Iterator[Fleet]:
    with fleet(tmp_path / "work") as f:
        yield f


def _command_line(ed: Neovim) -> list[str]:
    return list(ed.lua("return require('collab').client().config.cmd"))


def _request(ed: Neovim, method: str, line: int, char: int) -> dict[str, Any]:
    """``method`` at (0-based line, code point) of main.py in ``ed``; fails on an LSP error."""
    _at(ed, line, char)
    answer: dict[str, Any] = ed.lua(REQUEST_AT_CURSOR, method, 15000)
    assert answer.get("err") is None, f"{ed.name}: {method} failed: {answer['err']}"
    assert answer["others"] == 0, f"{ed.name}: another language client answered too"
    return answer


def _hover_text(answer: dict[str, Any]) -> str:
    result = answer.get("result")
    if not isinstance(result, dict):
        return ""
    contents = result["contents"]
    if isinstance(contents, dict):
        return str(contents["value"])
    if isinstance(contents, list):
        return "\n".join(c if isinstance(c, str) else c["value"] for c in contents)
    return str(contents)


def _hover_until(ed: Neovim, line: int, char: int, needle: str, timeout: float) -> str:
    """The hover text at a position once it contains ``needle`` (pylsp may be warming up)."""
    last: list[dict[str, Any]] = []

    def hover() -> str | None:
        _at(ed, line, char)
        answer: dict[str, Any] = ed.lua(REQUEST_AT_CURSOR, "textDocument/hover", 15000)
        last[:] = [answer]
        text = _hover_text(answer) if answer.get("err") is None else ""
        return text if needle in text else None

    try:
        return wait_until(hover, timeout, f"{ed.name}: hover with {needle!r}", interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last answer: {last}") from None


def _at(ed: Neovim, line: int, char: int) -> None:
    """The cursor of ``ed`` at (0-based line, code point) of main.py."""
    _show_main(ed)
    ed.cursor_to(line, char)


def _show_main(ed: Neovim) -> None:
    # `:buffer`, not `:edit`: main.py holds unsaved session text (`:edit` would refuse).
    ed.nvim.command(f"buffer {ed.bufnr('main.py')}")


def _share_with_pylsp(f: Fleet, tmp: Path) -> tuple[Neovim, Neovim]:
    host = f.start("host", make_project(tmp / "host", FILES))
    host.lua("require('collab').setup({ language_server = ... })", PYLSP)
    host.edit("main.py")
    url = host.share()
    host.wait_connected("main.py")
    guest = f.start("guest", make_project(tmp / "guest", FILES))
    # Ignored when joining: a guest's requests go to the host's server.
    guest.lua("require('collab').setup({ language_server = { 'no-such-server' } })")
    guest.edit("main.py")
    guest.join(url)
    guest.wait_connected("main.py")
    wait_converged([host, guest], "main.py", 30, "the guest gets the host's main.py")
    return host, guest


def test_guest_hovers_and_jumps_with_the_hosts_pylsp(nvims: Fleet, tmp_path: Path) -> None:
    host, guest = _share_with_pylsp(nvims, tmp_path)
    host_cmd = _command_line(host)
    assert host_cmd[-len(PYLSP) - 1 :] == ["--", *PYLSP], host_cmd
    assert "--share" in host_cmd[: -len(PYLSP) - 1]
    guest_cmd = _command_line(guest)
    assert "--" not in guest_cmd and "no-such-server" not in guest_cmd, guest_cmd

    # The guest's Neovim was offered pylsp's own features, as the host's was: its
    # completion trigger characters, and nothing pylsp lacks.
    caps_of = (
        "local c = require('collab').client().server_capabilities"
        " return { triggers = c.completionProvider.triggerCharacters,"
        " rename = c.renameProvider ~= nil, calls = c.callHierarchyProvider ~= nil,"
        " tokens = c.semanticTokensProvider ~= nil }"
    )
    host_caps, guest_caps = host.lua(caps_of), guest.lua(caps_of)
    assert guest_caps["triggers"] == host_caps["triggers"], (guest_caps, host_caps)
    assert guest_caps["rename"] and host_caps["rename"]
    assert not guest_caps["calls"] and not host_caps["calls"]  # pylsp has none
    assert not guest_caps["tokens"] and not host_caps["tokens"]

    # Hover on the call of greet: the docstring from the host's pylsp, at both.
    # The first request may wait for pylsp to start answering (jedi's first import).
    host_hover = _hover_until(host, *GREET_CALL, "Say hello to someone", 30)
    guest_answer = _request(guest, "textDocument/hover", *GREET_CALL)
    guest_hover = _hover_text(guest_answer)
    assert "Say hello to someone" in guest_hover, guest_answer
    assert guest_hover == host_hover

    # Definition: a location in lib.py under the guest's own root (not the host's).
    found = _request(guest, "textDocument/definition", *GREET_CALL)["result"]
    locations = found if isinstance(found, list) else [found]
    assert locations and isinstance(locations[0], dict), found
    first = locations[0]
    uri = first.get("uri") or first.get("targetUri")
    target_range = first.get("range") or first.get("targetSelectionRange")
    expected_uri = guest.lua("return vim.uri_from_fname(...)", str(guest.root / "lib.py"))
    assert uri == expected_uri, (uri, expected_uri)
    assert target_range["start"]["line"] == GREET_DEF_LINE

    # Jump as a user does: the guest's lib.py opens with the cursor on `def greet`.
    _at(guest, *GREET_CALL)
    guest.lua("vim.lsp.buf.definition()")
    lib = str(guest.root / "lib.py")
    wait_until(
        lambda: guest.nvim.current.buffer.name == lib,
        15,
        "the guest's jump to lib.py",
    )
    row, col = guest.nvim.current.window.cursor
    assert row == GREET_DEF_LINE + 1, (row, col)
    assert guest.nvim.current.line[col:].startswith("greet"), (guest.nvim.current.line, col)
    assert guest.lines("lib.py") == LIB.splitlines()
    wait_until(lambda: guest.attached("lib.py"), 10, "collab-ls attached to the guest's lib.py")

    # A line the guest types is in the text the host's pylsp answers on.
    _show_main(guest)
    guest.input("Goagain = greet('y')<Esc>")
    text = wait_converged(
        [host, guest], "main.py", 15, "the guest's new line at the host", lambda t: "again" in t
    )
    new_line = text.splitlines().index("again = greet('y')")
    _hover_until(guest, new_line, len("again = g"), "Say hello to someone", 15)

    for ed in (host, guest):
        assert "Traceback" not in ed.log(), ed.log()[-4000:]


def test_guest_without_a_checkout_joins_into_a_folder(nvims: Fleet, tmp_path: Path) -> None:
    """``:CollabJoin {url} {dir}``: the host's project is mirrored into ``dir``, whose
    files are shared, and the host's pylsp answers there."""
    host = nvims.start("host", make_project(tmp_path / "host", FILES))
    host.lua("require('collab').setup({ language_server = ... })", PYLSP)
    host.edit("main.py")
    url = host.share()
    host.wait_connected("main.py")
    guest = nvims.start("guest", make_project(tmp_path / "elsewhere", {"notes.txt": "mine\n"}))
    mirror = tmp_path / "mirror" / "project"  # made by the config
    guest.nvim.command(f"CollabJoin {url} {guest.fnameescape(mirror)}")
    cmd = _command_line(guest)
    join = cmd.index("--join")
    assert cmd[join : join + 4] == ["--join", url, "--workspace", str(mirror)], cmd
    wait_until(
        lambda: (mirror / "lib.py").is_file() and (mirror / "lib.py").read_text() == LIB,
        20,
        "the host's lib.py mirrored into the guest's folder",
    )
    guest.root = mirror  # from here on, the guest's files are the mirror's
    guest.edit("main.py")
    guest.wait_connected("main.py")
    wait_converged([host, guest], "main.py", 20, "the mirrored main.py is shared")
    assert "Say hello to someone" in _hover_until(guest, *GREET_CALL, "Say hello", 30)
    _show_main(guest)
    guest.input("Go# from the mirror<Esc>")
    wait_converged(
        [host, guest], "main.py", 15, "the guest's line at the host", lambda t: "mirror" in t
    )
    assert not (tmp_path / "elsewhere" / "main.py").exists()  # nothing written elsewhere
    assert "Traceback" not in guest.log(), guest.log()[-4000:]
