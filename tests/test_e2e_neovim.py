"""End-to-end: real Neovims with editor-configs/neovim, collab-ls and its embedded relay.

Each Neovim is a headless child driven with pynvim (tests/nvim_driver.py);
keystrokes go through ``nvim_input``. Peers work on their own copies of the
project (different absolute roots); documents meet by relative path.
Run with ``pytest -s -m e2e tests/test_e2e_neovim.py`` to see the latency figures.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nvim_driver import (
    Fleet,
    JoinUrl,
    Neovim,
    fleet,
    make_project,
    wait_converged,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

REL = "notes/today.txt"
INITIAL = "# shared notes\nthe line: |\nlast line 中文\n"
INTEROP = Path(__file__).parent / "interop"


@pytest.fixture
def nvims(tmp_path: Path) -> Iterator[Fleet]:
    with fleet(tmp_path / "work") as f:
        yield f


def _host(f: Fleet, tmp: Path, content: str = INITIAL) -> tuple[Neovim, str]:
    host = f.start("host", make_project(tmp / "host", {REL: content}))
    host.edit(REL)
    url = host.share()
    host.wait_connected(REL)
    return host, url


def _guest(f: Fleet, tmp: Path, name: str, url: str, content: str = INITIAL) -> Neovim:
    guest = f.start(name, make_project(tmp / name, {REL: content}))
    guest.edit(REL)
    guest.join(url)
    return guest


def _no_errors(eds: list[Neovim]) -> None:
    for ed in eds:
        messages = ed.messages()
        assert "newer than edits" not in messages, f"{ed.name}: {messages}"
        assert "Error" not in messages and "error" not in messages, f"{ed.name}: {messages}"
        assert "Traceback" not in ed.log(), ed.log()


def _converge(eds: list[Neovim], timeout: float = 30.0, what: str = "convergence") -> str:
    return wait_converged(eds, REL, timeout, what)


def test_apply_edit_handler_is_honest(nvims: Fleet, tmp_path: Path) -> None:
    """Stale versions are refused; `:w` does not make later edits stale; unloaded files load."""
    root = make_project(tmp_path / "host", {REL: INITIAL, "other.txt": "other\n"})
    host = nvims.start("host", root, debounce=150)
    host.edit(REL)
    host.share()
    host.wait_connected(REL)
    apply = """
        local rel, version, text, line = ...
        local client = require('collab').client()
        local uri = vim.uri_from_fname(vim.fn.getcwd() .. '/' .. rel)
        if version == -1 then version = vim.lsp.util.buf_versions[vim.uri_to_bufnr(uri)] end
        local edit = { documentChanges = { { textDocument = { uri = uri, version = version },
          edits = { { range = { start = { line = line, character = 0 },
                                ['end'] = { line = line, character = 0 } }, newText = text } } } } }
        return require('collab').apply_edit(nil, { edit = edit }, { client_id = client.id })
    """
    buf = host.bufnr(REL)

    def version() -> int:
        return int(host.lua("return vim.lsp.util.buf_versions[...]", buf))

    v0 = version()
    # The current version: applied.
    assert host.lua(apply, REL, v0, "A", 0) == {"applied": True}
    assert host.lines(REL)[0] == "A# shared notes"
    # An older version: refused honestly, buffer untouched.
    result = host.lua(apply, REL, v0, "B", 0)
    assert result["applied"] is False and "stale" in result["failureReason"]
    assert host.lines(REL)[0] == "A# shared notes"
    # Typed but not yet sent (debounced): the edit at the last reported version is stale.
    v1 = version()
    host.insert_at(2, 0, "t")
    wait_until(lambda: host.lines(REL)[2].startswith("t"), 10, "typed text")
    assert host.lua(apply, REL, v1, "C", 1)["applied"] is False
    # `:w` bumps changedtick but is no text change: edits at the reported version still apply.
    host.save()
    tick = int(host.nvim.api.buf_get_var(buf, "changedtick"))
    assert tick != version()
    assert host.lua(apply, REL, version(), "D", 1) == {"applied": True}
    assert host.lines(REL)[1] == "Dthe line: |"
    # A file with no buffer yet: loaded for the edit (version null), and shared from then on.
    assert host.lua(apply, "other.txt", None, "loaded ", 0) == {"applied": True}
    assert host.lines("other.txt") == ["loaded other"]
    wait_until(lambda: host.attached("other.txt"), 10, "collab-ls attached to other.txt")
    _no_errors([host])


def test_three_neovims_type_into_one_line(nvims: Fleet, tmp_path: Path) -> None:
    host, url = _host(nvims, tmp_path)
    g1 = _guest(nvims, tmp_path, "guest1", url)
    g2 = _guest(nvims, tmp_path, "guest2", url, content="a stale copy\nof the file\n")
    eds = [host, g1, g2]
    for g in (g1, g2):
        g.wait_connected(REL)
    assert _converge(eds, what="guests get the host's text") == INITIAL

    alphabets = {"host": "a😀b中", "guest1": "c文d😀", "guest2": "e中f🎉"}
    n = 24
    typed = {ed.name: "".join(alphabets[ed.name][i % 4] for i in range(n)) for ed in eds}
    # Three different places on the same line: its start, inside it, its end.
    host.cursor_to(1, 0)
    host.input("i")
    g1.cursor_to(1, 4)
    g1.input("i")
    g2.input("2GA")
    rnd = random.Random(1)
    for i in range(n):
        for ed in eds:
            ed.type(typed[ed.name][i])
        time.sleep(rnd.uniform(0.0, 0.008))
    for ed in eds:
        ed.input("<Esc>")
    expected = Counter(INITIAL + "".join(typed.values()))
    final = wait_converged(
        eds,
        REL,
        40,
        "three Neovims converge with every keystroke",
        lambda t: Counter(t) == expected,
    )
    lines = final.split("\n")
    assert lines[0] == "# shared notes" and lines[2] == "last line 中文" and lines[3] == ""
    line = lines[1]
    # Every typed character exactly once, each typist's text in one piece where they typed it.
    assert line.startswith(typed["host"] + "the ")
    assert ("the " + typed["guest1"] + "line: |") in line
    assert line.endswith("|" + typed["guest2"])
    _no_errors(eds)


def test_write_does_not_stall_later_edits(nvims: Fleet, tmp_path: Path) -> None:
    host, url = _host(nvims, tmp_path)
    guest = _guest(nvims, tmp_path, "guest", url)
    guest.wait_connected(REL)
    _converge([host, guest])
    for round_ in range(3):
        guest.insert_at(0, 0, f"g{round_} ")
        host.wait_contains(f"g{round_} ", REL)
        guest.save()
        host.insert_at(2, 0, f"h{round_} ")
        guest.wait_contains(f"h{round_} ", REL)  # host -> guest after :w
        guest.insert_at(1, 0, f"w{round_} ")
        host.wait_contains(f"w{round_} ", REL)  # guest -> host after :w
    # Writes while the host keeps typing: everything still arrives.
    host.cursor_to(2, 0)
    host.input("i")
    for i in range(20):
        host.type(str(i % 10))
        if i % 5 == 0:
            guest.nvim.request("nvim_command", "write", async_=True)
        time.sleep(0.01)
    host.input("<Esc>")
    final = _converge([host, guest])
    assert "0123456789" * 2 in final
    guest.save()
    assert (guest.root / REL).read_text() == final
    _no_errors([host, guest])


def test_lines_added_at_the_end_of_the_file(nvims: Fleet, tmp_path: Path) -> None:
    """`Go` on the last line: peers get one new line, not one more each round trip."""
    host, url = _host(nvims, tmp_path)
    guest = _guest(nvims, tmp_path, "guest", url)
    guest.wait_connected(REL)
    _converge([host, guest])
    host.input("Gohost end<Esc>")
    text = _converge([host, guest])
    wait_until(lambda: host.text(REL).endswith("\nhost end\n"), 10, "host's new last line")
    guest.input("Go<Esc>")
    guest.input("Goguest 中文 end<Esc>")
    final = wait_converged(
        [host, guest], REL, 10, "guest's new last lines", lambda t: t.endswith("guest 中文 end\n")
    )
    assert final == INITIAL + "host end\n\nguest 中文 end\n", (text, final)
    time.sleep(0.5)  # an edit loop would keep adding lines: nothing may change now
    assert host.text(REL) == guest.text(REL) == final
    _no_errors([host, guest])


def test_latency_between_two_neovims(nvims: Fleet, tmp_path: Path) -> None:
    """Keystroke in one Neovim -> text in the other's buffer (printed, not asserted)."""
    host, url = _host(nvims, tmp_path)
    guest = _guest(nvims, tmp_path, "guest", url)
    guest.wait_connected(REL)
    _converge([host, guest])
    host.record_changes(REL)
    guest.record_changes(REL)
    host.input("1GA")
    guest.input("3GA")
    samples: dict[str, list[float]] = {"host->guest": [], "guest->host": []}
    for i in range(50):
        src, dst, key = (host, guest, "host->guest") if i % 2 == 0 else (guest, host, "guest->host")
        line = 0 if src is host else 2
        before = src.lines(REL)[line]
        dst.take_change_times()
        src.take_change_times()
        t0 = time.monotonic_ns()
        src.type("x")
        wait_until(
            lambda: dst.lines(REL)[line] == before + "x",  # noqa: B023 (called at once)
            10,
            f"{key} keystroke {i}",
            interval=0.002,
        )
        times = [t for t in dst.take_change_times() if t >= t0]
        assert times, "the receiving buffer recorded no change"
        samples[key].append((times[0] - t0) / 1e6)
    for ed in (host, guest):
        ed.input("<Esc>")
    _converge([host, guest])
    every = samples["host->guest"] + samples["guest->host"]

    def q(values: list[float], p: float) -> float:
        return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]

    print()
    for key, values in [*samples.items(), ("all", every)]:
        print(
            f"neovim latency {key:12} n={len(values):2}  p50 {statistics.median(values):6.1f} ms"
            f"  p99 {q(values, 99):6.1f} ms  max {max(values):6.1f} ms"
        )
    _no_errors([host, guest])


def _node() -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the interop test needs Node 18+ on PATH")
    if not (INTEROP / "node_modules" / "y-websocket").is_dir():
        pytest.fail("tests/interop/node_modules is missing: run `npm ci --prefix tests/interop`")
    return [node, str(INTEROP / "yclient.mjs")]


def test_node_yjs_client_joins_neovims(nvims: Fleet, tmp_path: Path) -> None:
    node = _node()
    host, url = _host(nvims, tmp_path)
    guest = _guest(nvims, tmp_path, "guest", url)
    guest.wait_connected(REL)
    _converge([host, guest])
    host.insert_at(0, 0, "host 中文 ")
    guest.insert_at(2, 0, "guest 😀 ")
    text = _converge([host, guest], what="Neovims converge")
    assert "host 中文 " in text and "guest 😀 " in text
    join = JoinUrl.parse(url)
    proc = subprocess.run(
        [
            *node,
            # --opt=value: a secret may start with "-".
            f"--server={join.server}",
            f"--room={join.room}",
            f"--secret={join.secret}",
            f"--path={REL}",
            "--wait-contains=guest 😀 ",
            # A whole line: see the report on documents without a final newline.
            "--insert=node 🟢 was here\n",
            "--timeout-ms=15000",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, f"yclient failed: {proc.stderr}"
    seen = json.loads(proc.stdout.strip().splitlines()[-1])["text"]
    assert seen.startswith(text), seen
    final = wait_converged(
        [host, guest], REL, 15, "the Node client's insert in both Neovims", lambda t: "node 🟢" in t
    )
    assert final == text + "node 🟢 was here\n"
    _no_errors([host, guest])
