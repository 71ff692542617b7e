"""An LSP client that acts as an editor, for tests against real collab-ls processes.

It starts ``collab-ls`` over stdio with pytest-lsp's client, keeps a buffer per
open document, types into it (sending incremental ``didChange``), and answers
``workspace/applyEdit`` like a real editor: version-gated, either the VS Code
way (``applied: false`` when stale) or the stock Neovim way (stale edits
skipped silently, ``applied: true``), sending the echo ``didChange`` before
the response (as Neovim does with ``debounce_text_changes = 0``).
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lsprotocol import types
from pytest_lsp import client_capabilities
from pytest_lsp.client import make_test_lsp_client

from collab_ls.units import Encoding
from tests.editor_model import index_of, position

Style = Literal["neovim", "visual-studio-code"]


@dataclass
class Buffer:
    uri: str
    text: str
    version: int = 1
    applied: int = 0
    skipped: int = 0


@dataclass
class LspEditor:
    """One editor process talking to one collab-ls."""

    name: str
    root: Path
    style: Style = "neovim"
    buffers: dict[str, Buffer] = field(default_factory=dict)
    encoding: Encoding = Encoding.UTF16
    stderr_path: Path | None = None
    registrations: dict[str, types.Registration] = field(default_factory=dict)
    """What collab-ls registered with this editor dynamically (``client/registerCapability``)."""

    async def start(self, *args: str) -> types.InitializeResult:
        self.client = make_test_lsp_client()

        def apply_edit(
            params: types.ApplyWorkspaceEditParams,
        ) -> types.ApplyWorkspaceEditResult:
            return self._apply_edit(params)

        self.client.feature(types.WORKSPACE_APPLY_EDIT)(apply_edit)

        def register(params: types.RegistrationParams) -> None:
            self.registrations.update({r.id: r for r in params.registrations})

        def unregister(params: types.UnregistrationParams) -> None:
            for r in params.unregisterations:
                self.registrations.pop(r.id, None)

        self.client.feature(types.CLIENT_REGISTER_CAPABILITY)(register)
        self.client.feature(types.CLIENT_UNREGISTER_CAPABILITY)(unregister)
        self.stderr_path = self.root.parent / f"{self.name}.log"
        # Before `--`: what follows it is the shared language server's command line.
        split = args.index("--") if "--" in args else len(args)
        ours = [*args[:split], "--log-file", str(self.stderr_path)]
        cmd = [sys.executable, "-m", "collab_ls", *ours, *args[split:]]
        await self.client.start_io(*cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        caps = client_capabilities(self.style)
        result = await self.client.initialize_session(
            types.InitializeParams(
                capabilities=caps,
                # The VS Code style refuses stale edits: it may say so, as VS Code does.
                initialization_options={"honestApplyEdit": self.style == "visual-studio-code"},
                root_uri=self.root.as_uri(),
                workspace_folders=[types.WorkspaceFolder(uri=self.root.as_uri(), name=self.name)],
            )
        )
        encoding = result.capabilities.position_encoding
        self.encoding = Encoding.parse(getattr(encoding, "value", encoding))
        return result

    async def stop(self) -> None:
        try:
            await asyncio.wait_for(self.client.shutdown_session(), 10)
        except Exception:
            await self.client.stop()

    def log(self) -> str:
        return (
            self.stderr_path.read_text() if self.stderr_path and self.stderr_path.exists() else ""
        )

    # ---------------------------------------------------------------- editing

    def open(self, rel: str, text: str | None = None) -> Buffer:
        path = self.root / rel
        if text is None:
            text = path.read_text() if path.exists() else ""
        uri = path.as_uri()
        buf = Buffer(uri, text)
        self.buffers[rel] = buf
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                types.TextDocumentItem(uri=uri, language_id="plaintext", version=1, text=text)
            )
        )
        return buf

    def replace(self, rel: str, start: int, end: int, new: str) -> None:
        """Replace code points [start, end) of the buffer, as a user would."""
        buf = self.buffers[rel]
        self._change(buf, start, end, new)

    def type(self, rel: str, index: int, new: str) -> None:
        self.replace(rel, index, index, new)

    def _change(self, buf: Buffer, start: int, end: int, new: str) -> None:
        sl, sc = position(buf.text, start, self.encoding)
        el, ec = position(buf.text, end, self.encoding)
        buf.text = buf.text[:start] + new + buf.text[end:]
        buf.version += 1
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(
                    uri=buf.uri, version=buf.version
                ),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(types.Position(sl, sc), types.Position(el, ec)),
                        text=new,
                    )
                ],
            )
        )

    def send_raw_change(self, rel: str, version: int, changes: list[Any]) -> None:
        """Send a didChange as given (bad-input tests): the buffer takes only the version."""
        self.buffers[rel].version = version
        self.client.protocol._send_data(
            {
                "jsonrpc": "2.0",
                "method": types.TEXT_DOCUMENT_DID_CHANGE,
                "params": {
                    "textDocument": {"uri": self.buffers[rel].uri, "version": version},
                    "contentChanges": changes,
                },
            }
        )

    def _apply_edit(self, params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        for change in params.edit.document_changes or []:
            assert isinstance(change, types.TextDocumentEdit)
            buf = next(b for b in self.buffers.values() if b.uri == change.text_document.uri)
            version = change.text_document.version
            if version is not None and version != buf.version:
                buf.skipped += 1
                if self.style == "neovim":
                    return types.ApplyWorkspaceEditResult(applied=True)  # Neovim lies
                return types.ApplyWorkspaceEditResult(applied=False, failure_reason="stale")
            original = buf.text
            spans = []
            for e in change.edits:
                assert isinstance(e, types.TextEdit)
                s = index_of(original, e.range.start.line, e.range.start.character, self.encoding)
                t = index_of(original, e.range.end.line, e.range.end.character, self.encoding)
                spans.append((s, t, e.new_text))
            for s, t, new in sorted(spans, reverse=True):
                self._change(buf, s, t, new)
            buf.applied += 1
        return types.ApplyWorkspaceEditResult(applied=True)

    async def command(self, name: str) -> Any:
        return await self.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=name, arguments=[])
        )

    @property
    def messages(self) -> list[str]:
        return [m.message for m in self.client.messages]


async def eventually(check: Any, timeout: float = 15.0, what: str = "condition") -> None:  # noqa: ASYNC109
    """Wait until ``check()`` is true (bounded); fail with ``what`` otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if check():
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
