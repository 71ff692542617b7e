"""Guests without a checkout (``--workspace DIR``), read-only guests, and a host that leaves.

Real processes: ``collab-ls --share -- pylsp`` on the host, guests over the
embedded relay, driven by pytest-lsp clients.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types

from collab_ls.lsp_process import LspProcess
from tests.lsp_editor import LspEditor, eventually
from tests.test_proxy_lsp import LIB, MAIN, PYLSP, _hover, _hover_text, _pos, _project

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def editors() -> AsyncIterator[list[LspEditor]]:
    started: list[LspEditor] = []
    yield started
    await asyncio.gather(*(e.stop() for e in started), return_exceptions=True)


def _host_project(tmp: Path) -> Path:
    root = tmp / "host"
    (root / "pkg").mkdir(parents=True)
    (root / "lib.py").write_text(LIB)
    (root / "main.py").write_text(MAIN)
    (root / "pkg" / "util.py").write_text("VALUE = 1\n")
    (root / ".gitignore").write_text("build/\n*.log\n")
    (root / "build").mkdir()
    (root / "build" / "out.py").write_text("ignored = True\n")
    (root / "debug.log").write_text("noise\n")
    (root / "logo.bin").write_bytes(b"\x89PNG\x00\x01\x02")
    return root


async def _host(tmp: Path, editors: list[LspEditor], *extra: str) -> tuple[LspEditor, str, str]:
    host = LspEditor("host", _host_project(tmp), "neovim")
    editors.append(host)
    await host.start("--share", *extra, "--", *PYLSP)
    await eventually(lambda: any("--join" in m for m in host.messages), what="the join URL")
    host.open("main.py")
    status = await host.command("collab.status")
    return host, status["url"], status["readOnlyUrl"]


async def test_guest_without_checkout_gets_the_tree_and_jumps(
    tmp_path: Path, editors: list[LspEditor]
) -> None:
    host, url, _ = await _host(tmp_path, editors)
    mirror = tmp_path / "mirror"
    guest = LspEditor("guest", mirror, "visual-studio-code")
    editors.append(guest)
    mirror.mkdir()
    await guest.start("--join", url, "--workspace", str(mirror))

    # The tree arrives and the contents follow in the background.
    await eventually(
        lambda: (mirror / "lib.py").exists() and (mirror / "lib.py").read_text() == LIB,
        timeout=30,
        what="lib.py mirrored with its content",
    )
    await eventually(
        lambda: (
            (mirror / "pkg" / "util.py").exists()
            and (mirror / "pkg" / "util.py").read_text() == "VALUE = 1\n"
        ),
        what="a file in a folder mirrored",
    )
    assert not (mirror / "build").exists(), "a .gitignored folder was mirrored"
    assert not (mirror / "debug.log").exists(), "a .gitignored file was mirrored"
    assert not (mirror / "logo.bin").exists(), "a binary file was mirrored"
    assert "logo.bin" in (mirror / ".collab-ls-skipped").read_text()

    # The editor was shown the progress of the tree arriving, begin to end.
    await eventually(
        lambda: any(
            r and getattr(r[0], "kind", None) == "begin" and getattr(r[-1], "kind", None) == "end"
            for r in guest.client.progress_reports.values()
        ),
        what="work-done progress",
    )

    # Open a file by path and jump to a definition in another file.
    guest.open("main.py")
    await eventually(lambda: guest.buffers["main.py"].text == MAIN, what="main.py in the editor")
    found = await guest.client.text_document_definition_async(
        types.DefinitionParams(
            text_document=types.TextDocumentIdentifier(uri=guest.buffers["main.py"].uri),
            position=_pos(2, 12),
        )
    )
    assert isinstance(found, list) and found
    target = found[0]
    assert isinstance(target, types.Location)
    assert target.uri == (mirror / "lib.py").as_uri()
    assert (
        (mirror / "lib.py")
        .read_text()
        .splitlines()[target.range.start.line]
        .startswith("def greet")
    )
    assert "Say hello" in _hover_text(await _hover(guest, "main.py", 2, 12))

    # A file the host creates after the guest joined appears at the guest.
    (host.root / "pkg" / "fresh.py").write_text("FRESH = 2\n")
    await eventually(
        lambda: (
            (mirror / "pkg" / "fresh.py").exists()
            and (mirror / "pkg" / "fresh.py").read_text() == "FRESH = 2\n"
        ),
        timeout=30,
        what="the host's new file at the guest",
    )
    # One it renames (into a new folder) moves, contents and all.
    (host.root / "moved").mkdir()
    (host.root / "pkg" / "fresh.py").rename(host.root / "moved" / "renamed.py")
    await eventually(
        lambda: (
            not (mirror / "pkg" / "fresh.py").exists()
            and (mirror / "moved" / "renamed.py").exists()
            and (mirror / "moved" / "renamed.py").read_text() == "FRESH = 2\n"
        ),
        timeout=30,
        what="the host's rename at the guest",
    )
    # And one it deletes disappears.
    (host.root / "pkg" / "util.py").unlink()
    await eventually(
        lambda: not (mirror / "pkg" / "util.py").exists(), timeout=30, what="the deletion"
    )


async def test_read_only_guest_gets_answers_but_no_edits(
    tmp_path: Path, editors: list[LspEditor]
) -> None:
    host, _, ro_url = await _host(tmp_path, editors)
    guest = LspEditor("guest", _project(tmp_path, "guest"), "visual-studio-code")
    editors.append(guest)
    await guest.start("--join", ro_url)
    guest.open("main.py")
    assert "Say hello" in _hover_text(await _hover(guest, "main.py", 2, 12))
    with pytest.raises(Exception, match="read-only"):
        await guest.client.text_document_rename_async(
            types.RenameParams(
                text_document=types.TextDocumentIdentifier(uri=guest.buffers["main.py"].uri),
                position=_pos(2, 1),
                new_name="renamed",
            )
        )
    await asyncio.sleep(0.5)
    assert "renamed" not in host.buffers["main.py"].text
    assert (host.root / "main.py").read_text() == MAIN


async def test_host_leaving_gives_errors_not_hangs(
    tmp_path: Path, editors: list[LspEditor]
) -> None:
    host, url, _ = await _host(tmp_path, editors)
    guest = LspEditor("guest", _project(tmp_path, "guest"), "visual-studio-code")
    editors.append(guest)
    await guest.start("--join", url, "--request-timeout", "20")
    guest.open("main.py")
    await eventually(lambda: guest.buffers["main.py"].text == MAIN, what="sync")
    assert "Say hello" in _hover_text(await _hover(guest, "main.py", 2, 12))

    editors.remove(host)
    await host.stop()
    await eventually(
        lambda: any("host left" in m for m in guest.messages), timeout=30, what="the message"
    )
    # The error says the host left (a hang would end in the 20 s timeout's error instead).
    with pytest.raises(Exception, match="host has left"):
        await _hover(guest, "main.py", 2, 12)
    # The guest keeps the shared text and can still type.
    guest.type("main.py", 0, "# still here\n")
    assert guest.buffers["main.py"].text.startswith("# still here\n")


async def test_malformed_requests_from_a_peer_get_errors_and_the_session_survives(
    tmp_path: Path, editors: list[LspEditor]
) -> None:
    """A hostile or broken peer speaking the RPC channel directly: clear errors, nothing lost."""
    import json

    import pycrdt

    from collab_ls.relay_link import RelayLink
    from collab_ls.session import Session

    host, url, _ = await _host(tmp_path, editors)
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    answers: dict[int, Any] = {}

    def on_rpc(sender: int, read_only: bool, payload: bytes) -> None:
        message = json.loads(payload)
        if "id" in message and "method" not in message:
            answers[message["id"]] = message

    async with RelayLink(doc, url, origin="raw", on_rpc=on_rpc) as link:
        await link.wait_synced(20)
        link.awareness.set_local_state({"user": {"name": "raw"}})
        await eventually(lambda: Session(doc).host_info().get("state") == "running", what="host")
        host_id = int(Session(doc).host_info()["client"])
        hover = {
            "textDocument": {"uri": "file:///etc/passwd"},
            "position": {"line": 0, "character": 0},
        }
        frames: list[bytes] = [
            b"\xff\xfe not json",
            b"[1, 2, 3]",
            b'{"id": {"nested": 1}, "method": "lsp"}',
            json.dumps({"id": 1, "method": "lsp", "params": "junk"}).encode(),
            json.dumps({"id": 2, "method": "lsp", "params": {"method": "shutdown"}}).encode(),
            json.dumps(
                {
                    "id": 3,
                    "method": "lsp",
                    "params": {"method": "textDocument/hover", "params": hover},
                }
            ).encode(),
            json.dumps(
                {"id": 4, "method": "readFile", "params": {"path": "../../etc/passwd"}}
            ).encode(),
            json.dumps({"id": 5, "method": "readFile", "params": {"path": ".git/config"}}).encode(),
            json.dumps({"id": 6, "method": "applyEdit", "params": {"edit": "junk"}}).encode(),
            json.dumps({"id": 7, "method": "no/such/method", "params": None}).encode(),
            json.dumps({"id": 8, "method": "readFile", "params": {"path": "lib.py"}}).encode(),
        ]
        for frame in frames:
            assert link.send_rpc(host_id, frame)
        await eventually(lambda: set(answers) >= set(range(1, 9)), what="an answer to each request")
    for msg_id in range(1, 8):
        error = answers[msg_id].get("error")
        assert error and error["message"], (msg_id, answers[msg_id])
    assert "outside" in answers[3]["error"]["message"]
    assert answers[8]["result"]["text"] == LIB
    # The host and its language server carry on: a real guest still gets answers.
    guest = LspEditor("guest", _project(tmp_path, "guest"), "visual-studio-code")
    editors.append(guest)
    await guest.start("--join", url)
    guest.open("main.py")
    assert "Say hello" in _hover_text(await _hover(guest, "main.py", 2, 12))
    assert host.buffers["main.py"].text == MAIN


async def test_a_server_that_cannot_start_leaves_editing_intact(
    tmp_path: Path, editors: list[LspEditor]
) -> None:
    """A wrong server command: a clear error on the host, editing works, guests get no answers."""
    host = LspEditor("host", _host_project(tmp_path), "neovim")
    editors.append(host)
    await host.start("--share", "--", "no-such-language-server-xyz")
    await eventually(lambda: any("--join" in m for m in host.messages), what="the join URL")
    assert any("could not start no-such-language-server-xyz" in m for m in host.messages)
    host.open("main.py")
    url = await host.command("collab.shareUrl")
    guest_root = tmp_path / "guest"
    guest_root.mkdir()
    (guest_root / "main.py").write_text("stale\n")
    guest = LspEditor("guest", guest_root, "visual-studio-code")
    editors.append(guest)
    caps = (await guest.start("--join", url)).capabilities
    # The guest learnt at `initialize` that the host has no server: it offers none of
    # its features (hover stays: collab-ls reads cursors from it).
    assert caps.definition_provider is None and caps.rename_provider is None
    assert caps.semantic_tokens_provider is None and caps.references_provider is None
    guest.open("main.py")
    await eventually(lambda: guest.buffers["main.py"].text == MAIN, what="sync")
    assert await _hover(guest, "main.py", 2, 12) is None  # no server: the LSP "nothing"
    guest.type("main.py", 0, "# typed\n")
    await eventually(
        lambda: host.buffers["main.py"].text == "# typed\n" + MAIN, what="editing still works"
    )


async def test_a_guest_says_nothing_before_its_initialize_result(
    tmp_path: Path, editors: list[LspEditor]
) -> None:
    """A guest joins while it answers ``initialize`` (to learn the host's server), yet its
    editor gets nothing LSP forbids before the result: status, peers and requests wait."""
    host = LspEditor("host", _host_project(tmp_path), "neovim")
    editors.append(host)
    await host.start("--share")
    await eventually(lambda: any("--join" in m for m in host.messages), what="the join URL")
    host.open("main.py")
    url = await host.command("collab.shareUrl")
    guest_root = tmp_path / "guest"
    guest_root.mkdir()
    answered: asyncio.Future[Any] | None = None
    before: list[str] = []
    seen: list[str] = []

    def record(method: str) -> None:
        seen.append(method)
        if answered is None or not answered.done():
            before.append(method)

    async def on_request(method: str, _params: Any) -> Any:
        record(method)
        return None

    argv = [sys.executable, "-m", "collab_ls", "--join", url, "--log-file", str(tmp_path / "g.log")]
    guest = LspProcess(
        argv, on_notification=lambda method, _params: record(method), on_request=on_request
    )
    async with guest:
        capabilities = {
            "window": {"workDoneProgress": True, "showDocument": {"support": True}},
            "workspace": {"applyEdit": True, "inlayHint": {"refreshSupport": True}},
        }
        params = {"processId": None, "rootUri": guest_root.as_uri(), "capabilities": capabilities}
        answered = asyncio.ensure_future(guest.request("initialize", params, timeout=30))
        result = await answered
        assert "hoverProvider" in result["capabilities"]
        guest.notify("initialized", {})
        await eventually(lambda: "$/collab/peers" in seen, what="the host in the guest's peers")
        await eventually(lambda: "$/collab/status" in seen, what="the guest's status")
    allowed = {"window/showMessage", "window/logMessage"}
    assert not [m for m in before if m not in allowed], before
