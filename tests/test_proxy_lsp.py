"""The host's real language server (python-lsp-server) for the host and its guests.

Real processes only: ``collab-ls --share -- pylsp`` as the host's server, a
guest ``collab-ls --join``, both driven over stdio by pytest-lsp clients, and
the embedded relay on a loopback port.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from tests.fixtures.edit_server import SLOW_TAB_SIZE, tokens
from tests.lsp_editor import LspEditor, eventually

pytestmark = pytest.mark.timeout(180)

PYLSP = [sys.executable, "-m", "pylsp"]

LIB = '''"""Helpers."""


def greet(name):
    """Say hello to someone."""
    return "hello " + name


class Counter:
    """Counts things."""

    def bump(self):
        return 1
'''

MAIN = """from lib import greet, Counter

message = greet("é中😀 world")
counter = Counter()
print(message, counter.bump())
"""


def _project(tmp: Path, name: str) -> Path:
    root = tmp / name
    root.mkdir()
    (root / "lib.py").write_text(LIB)
    (root / "main.py").write_text(MAIN)
    return root


@pytest.fixture
async def editors() -> AsyncIterator[list[LspEditor]]:
    started: list[LspEditor] = []
    yield started
    await asyncio.gather(*(e.stop() for e in started), return_exceptions=True)


def _diagnostics(ed: LspEditor) -> dict[str, list[types.Diagnostic]]:
    return {
        uri: list(diags)
        for uri, diags in ed.client.diagnostics.items()  # pytest-lsp keeps the latest per uri
    }


async def _share(
    tmp: Path, editors: list[LspEditor], *host_args: str, guest_args: tuple[str, ...] = ()
) -> tuple[LspEditor, LspEditor]:
    host = LspEditor("host", _project(tmp, "host"), "neovim")
    editors.append(host)
    result = await host.start("--share", *host_args, "--", *PYLSP)
    host.capabilities = result.capabilities  # type: ignore[attr-defined]
    await eventually(lambda: any("--join" in m for m in host.messages), what="the join URL")
    host.open("main.py")
    url = await host.command("collab.shareUrl")
    guest = LspEditor("guest", _project(tmp, "guest"), "visual-studio-code")
    editors.append(guest)
    guest.capabilities = (await guest.start("--join", url, *guest_args)).capabilities  # type: ignore[attr-defined]
    guest.open("main.py")
    await eventually(
        lambda: guest.buffers["main.py"].text == host.buffers["main.py"].text, what="sync"
    )
    return host, guest


def _server_pids(host: LspEditor) -> list[int]:
    """The pids of the host's pylsp children (the host collab-ls is the client's child)."""
    collab_pid = host.client._server.pid  # type: ignore[attr-defined]
    children = Path(f"/proc/{collab_pid}/task/{collab_pid}/children").read_text().split()
    return [
        int(pid)
        for pid in children
        if "pylsp" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    ]


def _pos(line: int, character: int) -> types.Position:
    return types.Position(line=line, character=character)


async def _hover(ed: LspEditor, rel: str, line: int, character: int) -> types.Hover | None:
    return await ed.client.text_document_hover_async(
        types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=ed.buffers[rel].uri),
            position=_pos(line, character),
        )
    )


def _hover_text(hover: types.Hover | None) -> str:
    assert hover is not None
    contents: Any = hover.contents
    if isinstance(contents, types.MarkupContent):
        return contents.value
    if isinstance(contents, list):
        return "\n".join(c if isinstance(c, str) else c.value for c in contents)
    return contents if isinstance(contents, str) else contents.value


async def test_guest_gets_the_hosts_answers(tmp_path: Path, editors: list[LspEditor]) -> None:
    host, guest = await _share(tmp_path, editors)
    caps = host.capabilities  # type: ignore[attr-defined]
    assert caps.hover_provider and caps.rename_provider and caps.definition_provider
    # The guest offers exactly pylsp's features, learnt from the session at `initialize`:
    # its trigger characters, and nothing pylsp lacks.
    theirs = guest.capabilities  # type: ignore[attr-defined]
    assert theirs.completion_provider.trigger_characters == (
        caps.completion_provider.trigger_characters
    )
    assert theirs.signature_help_provider.trigger_characters == (
        caps.signature_help_provider.trigger_characters
    )
    for feature in ("rename_provider", "definition_provider", "document_symbol_provider"):
        assert bool(getattr(theirs, feature)) == bool(getattr(caps, feature)), feature
    for feature in (
        "call_hierarchy_provider",
        "type_hierarchy_provider",
        "semantic_tokens_provider",
    ):
        assert getattr(caps, feature) is None and getattr(theirs, feature) is None, feature

    # Hover on `greet` in line 2 ("message = greet(...)"): same docstring for both.
    host_hover = _hover_text(await _hover(host, "main.py", 2, 12))
    guest_hover = _hover_text(await _hover(guest, "main.py", 2, 12))
    assert "Say hello to someone" in host_hover
    assert guest_hover == host_hover

    # Definition into lib.py, which the guest has not opened: a URI under the guest's root.
    params = types.DefinitionParams(
        text_document=types.TextDocumentIdentifier(uri=guest.buffers["main.py"].uri),
        position=_pos(2, 12),
    )
    found = await guest.client.text_document_definition_async(params)
    assert isinstance(found, list) and found
    first = found[0]
    assert isinstance(first, types.Location)
    assert first.uri == (guest.root / "lib.py").as_uri()
    assert first.range.start.line == 3

    # Completion after "counter." in a line the guest types.
    buf = guest.buffers["main.py"]
    guest.type("main.py", len(buf.text), "counter.")
    await eventually(lambda: host.buffers["main.py"].text == buf.text, what="typing synced")
    last_line = buf.text.count("\n")
    completion = await guest.client.text_document_completion_async(
        types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=buf.uri),
            position=_pos(last_line, len("counter.")),
        )
    )
    items = completion.items if isinstance(completion, types.CompletionList) else completion
    assert items is not None and any(i.label.startswith("bump") for i in items)

    # References to greet: the same set at both, each in its own root.
    def refs(ed: LspEditor) -> Any:
        return ed.client.text_document_references_async(
            types.ReferenceParams(
                text_document=types.TextDocumentIdentifier(uri=ed.buffers["main.py"].uri),
                position=_pos(2, 12),
                context=types.ReferenceContext(include_declaration=True),
            )
        )

    host_refs = await refs(host)
    guest_refs = await refs(guest)
    assert host_refs and guest_refs

    def shape(locs: Any, root: Path) -> list[tuple[str, int, int]]:
        return sorted(
            (
                Path(loc.uri.removeprefix("file://")).relative_to(root).as_posix(),
                loc.range.start.line,
                loc.range.start.character,
            )
            for loc in locs
        )

    assert shape(guest_refs, guest.root) == shape(host_refs, host.root)
    assert {"lib.py", "main.py"} <= {s[0] for s in shape(guest_refs, guest.root)}


async def test_diagnostics_of_a_guests_error_reach_both(
    tmp_path: Path, editors: list[LspEditor]
) -> None:
    host, guest = await _share(tmp_path, editors)
    buf = guest.buffers["main.py"]
    guest.type("main.py", len(buf.text), "undefined_thing_xyz\n")

    def flagged(ed: LspEditor) -> bool:
        diags = _diagnostics(ed).get(ed.buffers["main.py"].uri, [])
        return any("undefined_thing_xyz" in d.message for d in diags)

    await eventually(lambda: flagged(host), timeout=30, what="the host's diagnostic")
    await eventually(lambda: flagged(guest), timeout=30, what="the guest's diagnostic")

    # A file only the guest has open is in the host's server too.
    guest.open("lib.py")
    await eventually(lambda: guest.buffers["lib.py"].text == LIB, what="lib.py from the session")
    guest.type("lib.py", len(LIB), "missing_in_lib_abc\n")
    lib_uri = guest.buffers["lib.py"].uri
    await eventually(
        lambda: any(
            "missing_in_lib_abc" in d.message for d in _diagnostics(guest).get(lib_uri, [])
        ),
        timeout=30,
        what="the diagnostic of a file only the guest has open",
    )
    assert "lib.py" not in host.buffers

    # A late joiner gets the diagnostics published before it came.
    url = await host.command("collab.shareUrl")
    late = LspEditor("late", _project(tmp_path, "late"), "neovim")
    editors.append(late)
    await late.start("--join", url)
    await eventually(
        lambda: any(
            "undefined_thing_xyz" in d.message
            for d in _diagnostics(late).get((late.root / "main.py").as_uri(), [])
        ),
        timeout=30,
        what="the late joiner's diagnostics",
    )


async def test_rename_and_formatting_by_the_guest_converge(
    tmp_path: Path, editors: list[LspEditor]
) -> None:
    host, guest = await _share(tmp_path, editors)
    # Rename `message` (line 2, col 0) to `greeting`: applied on the host to the session.
    result = await guest.client.text_document_rename_async(
        types.RenameParams(
            text_document=types.TextDocumentIdentifier(uri=guest.buffers["main.py"].uri),
            position=_pos(2, 1),
            new_name="greeting",
        )
    )
    assert result is not None
    await eventually(
        lambda: (
            "greeting = greet" in guest.buffers["main.py"].text
            and "print(greeting" in host.buffers["main.py"].text
        ),
        what="the rename at both",
    )
    assert "message" not in host.buffers["main.py"].text

    # Badly formatted code typed by the guest, formatted at its request (autopep8).
    buf = guest.buffers["main.py"]
    guest.type("main.py", len(buf.text), "x=[1,2 ,3]\n")
    await eventually(lambda: host.buffers["main.py"].text == buf.text, what="typing synced")
    edits = await guest.client.text_document_formatting_async(
        types.DocumentFormattingParams(
            text_document=types.TextDocumentIdentifier(uri=buf.uri),
            options=types.FormattingOptions(tab_size=4, insert_spaces=True),
        )
    )
    assert edits == []  # applied on the host, to the shared text, not by this editor
    await eventually(
        lambda: (
            "x = [1, 2, 3]" in guest.buffers["main.py"].text
            and guest.buffers["main.py"].text == host.buffers["main.py"].text
        ),
        what="the formatting at both",
    )


async def test_refusals_outside_root_and_commands(tmp_path: Path, editors: list[LspEditor]) -> None:
    host, guest = await _share(tmp_path, editors)
    secret = tmp_path / "secret.py"
    secret.write_text("password = 1\n")
    (host.root / "escape.py").symlink_to(secret)
    (guest.root / "escape.py").symlink_to(secret)

    async def hover_uri(uri: str) -> Exception | None:
        try:
            await guest.client.text_document_hover_async(
                types.HoverParams(
                    text_document=types.TextDocumentIdentifier(uri=uri), position=_pos(0, 1)
                )
            )
        except Exception as exc:
            return exc
        return None

    # A path through `..` out of the guest's root maps to one out of the host's root.
    traversal = guest.root.as_uri() + "/../secret.py"
    err = await hover_uri(traversal)
    assert err is not None and "outside" in str(err)
    err = await hover_uri((guest.root / "escape.py").as_uri())
    assert err is not None and "outside" in str(err)

    try:
        await guest.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="pylsp.some_command", arguments=[])
        )
    except Exception as exc:
        assert "allow-guest-commands" in str(exc)
    else:
        raise AssertionError("a guest ran a command on the host without permission")
    # The session survived the refusals.
    assert "Say hello" in _hover_text(await _hover(guest, "main.py", 2, 12))


async def test_server_killed_is_restarted(tmp_path: Path, editors: list[LspEditor]) -> None:
    host, guest = await _share(tmp_path, editors)
    assert "Say hello" in _hover_text(await _hover(guest, "main.py", 2, 12))
    pids = _server_pids(host)
    assert pids, "the host runs no pylsp child"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    await eventually(
        lambda: any("restarted" in m for m in host.messages), timeout=30, what="the restart"
    )
    assert "Say hello" in _hover_text(await _hover(host, "main.py", 2, 12))
    # The guest learns that the server runs again through the relay, a moment later:
    # until then it is told the server is restarting (an error, never a hang).
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        try:
            hover = await _hover(guest, "main.py", 2, 12)
            break
        except JsonRpcException as exc:
            assert "restarting" in str(exc), exc
            assert loop.time() < deadline, "the guest still hears the server is restarting"
            await asyncio.sleep(0.05)
    assert "Say hello" in _hover_text(hover)


async def test_cancel_and_timeout(tmp_path: Path, editors: list[LspEditor]) -> None:
    host, guest = await _share(tmp_path, editors, guest_args=("--request-timeout", "2"))
    # Stop the host's server (SIGSTOP): requests then hang on the host side.
    pids = _server_pids(host)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        # Cancel as an editor does: $/cancelRequest, then the answer is an error -32800.
        protocol = guest.client.protocol
        params = types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=guest.buffers["main.py"].uri),
            position=_pos(2, 12),
        )
        pending = asyncio.ensure_future(
            protocol.send_request_async("textDocument/hover", params, msg_id="cancel-me")
        )
        await asyncio.sleep(0.5)
        protocol.notify("$/cancelRequest", types.CancelParams(id="cancel-me"))
        with pytest.raises(Exception) as cancelled:
            await pending
        assert getattr(cancelled.value, "code", None) == -32800
        started = asyncio.get_running_loop().time()
        with pytest.raises(Exception, match="within"):
            await _hover(guest, "main.py", 2, 12)
        assert asyncio.get_running_loop().time() - started < 30
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert "Say hello" in _hover_text(await _hover(guest, "main.py", 2, 12))


async def test_code_action_edit_is_applied_on_the_host(
    tmp_path: Path, editors: list[LspEditor]
) -> None:
    """A guest's chosen code action comes back as collab.applyHostAction: applied on the host."""
    host, guest = await _share(tmp_path, editors)
    uri = guest.buffers["main.py"].uri
    edit = {
        "changes": {
            uri: [
                {
                    "range": {
                        "start": {"line": 0, "character": 0},
                        "end": {"line": 0, "character": 0},
                    },
                    "newText": "# fixed by a code action\n",
                }
            ]
        }
    }
    await guest.client.workspace_execute_command_async(
        types.ExecuteCommandParams(
            command="collab.applyHostAction", arguments=[{"edit": edit, "command": None}]
        )
    )
    await eventually(
        lambda: (
            host.buffers["main.py"].text.startswith("# fixed by a code action\n")
            and guest.buffers["main.py"].text == host.buffers["main.py"].text
        ),
        what="the action's edit at both",
    )


EDIT_SERVER = [sys.executable, str(Path(__file__).parent / "fixtures" / "edit_server.py")]


async def test_server_requests_reach_the_host_editor_and_its_edits_the_crdt(
    tmp_path: Path, editors: list[LspEditor]
) -> None:
    """The server's own requests: configuration from the host editor, applyEdit via the CRDT."""
    host = LspEditor("host", _project(tmp_path, "host"), "neovim")
    editors.append(host)
    await host.start("--share", "--allow-guest-commands", "--", *EDIT_SERVER)
    await eventually(lambda: any("--join" in m for m in host.messages), what="the join URL")
    await eventually(
        lambda: any("configuration:" in m.message for m in host.client.log_messages),
        what="the server's workspace/configuration answered by the host editor",
    )
    host.open("main.py")
    url = await host.command("collab.shareUrl")
    guest = LspEditor("guest", _project(tmp_path, "guest"), "visual-studio-code")
    editors.append(guest)
    caps = (await guest.start("--join", url)).capabilities
    # The host lets guests run its server's commands: the guest offers them.
    assert caps.execute_command_provider is not None
    assert "demo.insertHeader" in caps.execute_command_provider.commands
    guest.open("main.py")
    await eventually(lambda: guest.buffers["main.py"].text == MAIN, what="sync")
    # A guest runs the server's command (allowed here): the edit it causes converges.
    result = await guest.client.workspace_execute_command_async(
        types.ExecuteCommandParams(
            command="demo.insertHeader", arguments=[guest.buffers["main.py"].uri]
        )
    )
    assert result == {"applied": True}
    header = "# header from the server\n"
    await eventually(
        lambda: (
            host.buffers["main.py"].text == header + MAIN
            and guest.buffers["main.py"].text == header + MAIN
        ),
        what="the server's edit at both",
    )
    # The host editor's own command goes the same way.
    await host.client.workspace_execute_command_async(
        types.ExecuteCommandParams(
            command="demo.insertHeader", arguments=[host.buffers["main.py"].uri]
        )
    )
    await eventually(
        lambda: (
            guest.buffers["main.py"].text == 2 * header + MAIN
            and host.buffers["main.py"].text == 2 * header + MAIN
        ),
        what="the second edit at both",
    )
    # Pulled diagnostics (LSP 3.17), per document, on the guest's own paths.
    assert caps.diagnostic_provider is not None
    assert caps.diagnostic_provider.workspace_diagnostics is False  # not proxied
    pulled = await guest.client.text_document_diagnostic_async(
        types.DocumentDiagnosticParams(
            text_document=types.TextDocumentIdentifier(uri=guest.buffers["main.py"].uri)
        )
    )
    assert isinstance(pulled, types.RelatedFullDocumentDiagnosticReport), pulled
    (item,) = pulled.items
    assert item.message == "pulled" and item.related_information is not None
    assert item.related_information[0].location.uri == guest.buffers["main.py"].uri
    # Semantic tokens: the guest answers deltas itself, from the host's full tokens.
    assert caps.semantic_tokens_provider is not None
    doc = types.TextDocumentIdentifier(uri=guest.buffers["main.py"].uri)
    first = await guest.client.text_document_semantic_tokens_full_async(
        types.SemanticTokensParams(text_document=doc)
    )
    assert first is not None and first.result_id and first.data == tokens(1)
    delta = await guest.client.text_document_semantic_tokens_full_delta_async(
        types.SemanticTokensDeltaParams(text_document=doc, previous_result_id=first.result_id)
    )
    assert isinstance(delta, types.SemanticTokensDelta), delta
    assert [(e.start, e.delete_count, e.data) for e in delta.edits] == [(5, 5, tokens(2)[5:10])]
    # A result id the guest no longer knows: the full tokens.
    again = await guest.client.text_document_semantic_tokens_full_delta_async(
        types.SemanticTokensDeltaParams(text_document=doc, previous_result_id="unknown")
    )
    assert isinstance(again, types.SemanticTokens) and again.data == tokens(3)
    # A feature the server gains after the guest joined is registered with the guest's
    # editor (on the guest's terms: no host paths), and served.
    assert caps.document_range_formatting_provider is None
    await host.client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="demo.registerRangeFormatting", arguments=[])
    )
    key = "collab-host:documentRangeFormattingProvider"
    await eventually(
        lambda: key in guest.registrations, what="range formatting registered with the guest"
    )
    registration = guest.registrations[key]
    assert registration.method == "textDocument/rangeFormatting"
    assert registration.register_options == {"documentSelector": None}
    # Formatting, which the server registered dynamically (not in its initialize
    # result), is served to the guest too, and its edit converges.
    edits = await guest.client.text_document_formatting_async(
        types.DocumentFormattingParams(
            text_document=types.TextDocumentIdentifier(uri=guest.buffers["main.py"].uri),
            options=types.FormattingOptions(tab_size=4, insert_spaces=True),
        )
    )
    assert edits == []
    formatted = "F" + (2 * header + MAIN)[1:]
    await eventually(
        lambda: (
            guest.buffers["main.py"].text == formatted and host.buffers["main.py"].text == formatted
        ),
        what="the dynamically registered formatting at both",
    )


async def test_a_slow_servers_edits_are_moved_past_what_peers_typed_meanwhile(
    tmp_path: Path, editors: list[LspEditor]
) -> None:
    """Formatting that takes the server a second: the host types meanwhile. The server's
    edits land where it meant them (moved past the new line); the one a peer's typing
    touched is dropped, so the peer's text wins."""
    host = LspEditor("host", _project(tmp_path, "host"), "neovim")
    editors.append(host)
    await host.start("--share", "--", *EDIT_SERVER)
    await eventually(lambda: any("--join" in m for m in host.messages), what="the join URL")
    host.open("main.py")
    url = await host.command("collab.shareUrl")
    guest = LspEditor("guest", _project(tmp_path, "guest"), "visual-studio-code")
    editors.append(guest)
    await guest.start("--join", url)
    guest.open("main.py")
    await eventually(lambda: guest.buffers["main.py"].text == MAIN, what="sync")
    formatting = asyncio.ensure_future(
        guest.client.text_document_formatting_async(
            types.DocumentFormattingParams(
                text_document=types.TextDocumentIdentifier(uri=guest.buffers["main.py"].uri),
                options=types.FormattingOptions(tab_size=SLOW_TAB_SIZE, insert_spaces=True),
            )
        )
    )
    await asyncio.sleep(0.3)  # the server is busy formatting
    host.type("main.py", 0, "# new\n")  # before both edits: they move down a line
    word = MAIN.index("message")
    host.type("main.py", len("# new\n") + word + 3, "X")  # inside "message": the second edit
    assert await formatting == []  # the edit reaches every editor through the session
    expected = "# new\nF" + MAIN[1:word] + "mesXsage" + MAIN[word + len("message") :]
    await eventually(
        lambda: host.buffers["main.py"].text == expected == guest.buffers["main.py"].text,
        what="the formatting where the server meant it, the host's typing kept",
    )
    assert "1 of 2 edits dropped" in host.log()
