"""The collab-ls language server: the LSP shell around the session.

It bypasses pygls's own document store: pygls re-applies every change to a
copy of the document at a cost that grows with the document, and re-parses
``didChange`` through cattrs; collab-ls keeps its own line-indexed model of
each buffer (:mod:`collab_ls.linetext`) and reads ``didChange`` as plain JSON.
Edits are handled synchronously and in order, as they arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlparse

import pycrdt
from lsprotocol import types
from pygls.io_ import StdoutWriter, run_async
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol, lsp_method
from pygls.protocol.json_rpc import JsonRPCNotification

from collab_ls import __version__
from collab_ls.binding import DocBinding
from collab_ls.disk import DiskMirror, file_path, read_text
from collab_ls.language_shell import LanguageShell, RawMessage, workspace_root
from collab_ls.options import Options
from collab_ls.presence import Pos
from collab_ls.presence_shell import FollowError, Presence, _plain
from collab_ls.protocol import (
    CMD_CHAT,
    CMD_FOLLOW,
    CMD_OPEN_WITH_PEERS,
    CMD_PEERS,
    CMD_REDO,
    CMD_SHARE_URL,
    CMD_STATUS,
    CMD_UNDO,
    CMD_UNFOLLOW,
    NOTIFY_CURSOR,
    NOTIFY_REGISTER,
    NOTIFY_STATUS,
)
from collab_ls.reconcile import Change, FullChange, OutgoingEdit, RangeChange
from collab_ls.registers import SharedRegisters
from collab_ls.relay_link import LinkStatus, RelayLink, parse_relay_urls
from collab_ls.session import NotInWorkspace, Session, relative_path
from collab_ls.units import Encoding
from collab_ls.workspace_edit import SERVER_EDIT
from relay.links import SessionLinks, new_room_id, new_secret, session_links

log = logging.getLogger("collab_ls")

REMOTE = "collab-ls:relay"
"""Origin of the transactions that apply peers' updates from the relay."""
_REMOTE_HASH = hash(REMOTE)
_TO_DISK = frozenset({_REMOTE_HASH, hash(SERVER_EDIT)})
"""Origins of changes the host writes to disk when no host editor has the file open."""


HONEST_CLIENTS = frozenset({"Visual Studio Code", "Visual Studio Code - Insiders", "Emacs"})
"""Clients known to refuse a stale edit rather than skip it and say ``applied: true``."""


class InvalidChange(ValueError):
    """A ``didChange`` whose JSON does not have the LSP shape."""


def parse_changes(params: Any) -> tuple[str, int, list[Change]]:
    """Read ``DidChangeTextDocumentParams`` from plain JSON.

    Raises:
        InvalidChange: with a message naming what is wrong.
    """
    try:
        doc = params["textDocument"]
        uri = doc["uri"]
        version = doc["version"]
        raw = params["contentChanges"]
        if not isinstance(uri, str) or not isinstance(version, int) or not isinstance(raw, list):
            raise InvalidChange("textDocument.uri, textDocument.version or contentChanges")
        changes: list[Change] = []
        for c in raw:
            text = c["text"]
            if not isinstance(text, str):
                raise InvalidChange("contentChanges[].text must be a string")
            rng = c.get("range")
            if rng is None:
                changes.append(FullChange(text))
            else:
                s, e = rng["start"], rng["end"]
                nums = (s["line"], s["character"], e["line"], e["character"])
                if not all(isinstance(n, int) and not isinstance(n, bool) for n in nums):
                    raise InvalidChange("range positions must be integers")
                changes.append(RangeChange(*nums, text))
        return uri, version, changes
    except (KeyError, TypeError, AttributeError) as exc:
        raise InvalidChange(f"malformed didChange: missing or wrong field {exc}") from exc


class CollabProtocol(LanguageServerProtocol):
    """pygls protocol without pygls's own document store."""

    _server: CollabServer

    _raw_initialize: dict[str, Any] | None = None

    def handle_message(self, message: Any) -> None:
        if type(message) is RawMessage:
            self._server.language.handle(message)
            return
        # Keystrokes skip pygls's generic dispatch (runtime Protocol checks, a
        # context copy and a future per notification): they are most messages.
        if (
            type(message) is JsonRPCNotification
            and message.method == types.TEXT_DOCUMENT_DID_CHANGE
            and not self._shutdown
        ):
            try:
                self._server.did_change(message.params)
            except Exception:
                log.exception("failed to handle a didChange")
            return
        if type(message) is JsonRPCNotification and message.method == NOTIFY_REGISTER:
            registers = self._server.registers
            if registers is not None and not self._server.read_only:
                registers.yanked(_plain(message.params))
            return
        if type(message) is JsonRPCNotification and message.method == NOTIFY_CURSOR:
            presence = self._server.presence
            if presence is not None:
                presence.cursor_report(message.params)
            return
        super().handle_message(message)

    def get_message_type(self, method: str) -> Any:  # type: ignore[override]
        if method == types.TEXT_DOCUMENT_DID_CHANGE:
            return None  # keep params as plain JSON: see the module docstring
        return super().get_message_type(method)

    def structure_message(self, data: dict[str, Any]) -> Any:
        method = data.get("method")
        if method == types.TEXT_DOCUMENT_DID_CHANGE and "id" not in data:
            return JsonRPCNotification(
                method=data["method"], jsonrpc=data.get("jsonrpc", ""), params=data.get("params")
            )
        if method == types.INITIALIZE and isinstance(data.get("params"), dict):
            self._raw_initialize = data["params"]
        if self._server.language.wants(data):
            return RawMessage(data)
        return super().structure_message(data)

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams) -> Any:
        """pygls's initialize, after starting the host's real server; capabilities merged."""
        shell = self._server.language
        raw = self._raw_initialize or {}
        shell.note_client(raw)
        if self._server.is_host and self._server.options.server_command:
            encoding = yield shell.start_host_server, (raw,), None
            if encoding is not None:
                # The editor, collab-ls and the real server count positions alike.
                kinds = [types.PositionEncodingKind(encoding.value)]
                general = params.capabilities.general
                if general is None:
                    params.capabilities.general = types.GeneralClientCapabilities(
                        position_encodings=kinds
                    )
                else:
                    general.position_encodings = kinds
        result = yield from super().lsp_initialize(params)
        data: dict[str, Any] = self._converter.unstructure(result)
        data["capabilities"] = shell.merge_capabilities(dict(data.get("capabilities") or {}))
        return data

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: Any) -> None:
        self._server.did_change(params)

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams) -> None:
        self._server.did_open(params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams) -> None:
        self._server.did_close(params)


class CollabServer(LanguageServer):
    """One editor's collab-ls: its documents, the session and the relay link."""

    def __init__(self, options: Options) -> None:
        super().__init__(
            "collab-ls",
            __version__,
            protocol_cls=CollabProtocol,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
        )
        self.options = options
        self.root = Path.cwd()
        self.encoding = Encoding.UTF16
        self.honest_client = False
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc()
        self.session = Session(self.doc)
        self.url: str | None = None
        self.read_only_url: str | None = None
        self.read_only = False
        self.connected = False
        self.bindings: dict[str, DocBinding] = {}
        self.waiting: dict[str, list[DocBinding]] = {}
        self._stack = contextlib.AsyncExitStack()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._mirror: DiskMirror | None = None
        self._subs: list[pycrdt.Subscription] = []
        self._started = False
        self.presence: Presence | None = None
        self.registers: SharedRegisters | None = None
        self.inlay_refresh = False
        self.open_with_peers = False
        self.last_edited: str | None = None
        self.language = LanguageShell(self)

    @property
    def is_host(self) -> bool:
        return self.options.join_url is None

    # --------------------------------------------------------------- lifecycle

    @staticmethod
    def root_from(params: dict[str, Any]) -> Path:
        """The workspace root an editor's raw ``initialize`` params name (else the cwd)."""
        folders = params.get("workspaceFolders")
        root_uri = params.get("rootUri")
        if isinstance(folders, list) and folders and isinstance(folders[0], dict):
            root_uri = folders[0].get("uri") or root_uri
        if isinstance(root_uri, str) and root_uri:
            return Path(unquote(urlparse(root_uri).path))
        root_path = params.get("rootPath")
        return Path(root_path) if isinstance(root_path, str) and root_path else Path.cwd()

    def peer_hints(self, params: Any) -> list[dict[str, Any]]:
        """Peers' cursors as raw inlay hints for ``textDocument/inlayHint`` params."""
        if self.presence is None or not isinstance(params, dict):
            return []
        try:
            uri = params["textDocument"]["uri"]
            start, end = params["range"]["start"], params["range"]["end"]
            hints = self.presence.inlay_hints(
                uri, (start["line"], start["character"]), (end["line"], end["character"])
            )
        except (KeyError, TypeError):
            return []
        return [
            {
                "position": {"line": pos[0], "character": pos[1]},
                "label": name,
                "tooltip": f"{name}'s cursor (collab-ls)",
                "paddingLeft": True,
                "paddingRight": True,
            }
            for pos, name, _colour in hints
        ]

    def is_open(self, key: str) -> bool:
        """Whether this editor has the shared file ``key`` open."""
        return any(b.key == key for b in self.bindings.values())

    def on_initialize(self, params: types.InitializeParams) -> None:
        root_uri = params.root_uri
        if params.workspace_folders:
            root_uri = params.workspace_folders[0].uri
        if self.options.workspace is not None and not self.is_host:
            self.root = workspace_root(self.options.workspace)
        elif root_uri:
            self.root = Path(unquote(urlparse(root_uri).path))
        elif params.root_path:
            self.root = Path(params.root_path)
        init = params.initialization_options
        client = (params.client_info.name if params.client_info else "") or ""
        # Clients whose `applied: true` can be trusted: they refuse stale edits.
        self.honest_client = (
            isinstance(init, dict) and init.get("honestApplyEdit") is True
        ) or client in HONEST_CLIENTS
        workspace_caps = params.capabilities.workspace
        inlay_caps = workspace_caps.inlay_hint if workspace_caps else None
        self.inlay_refresh = bool(inlay_caps and inlay_caps.refresh_support)
        self.open_with_peers = isinstance(init, dict) and init.get("openWithPeers") is True
        encoding = self.workspace.position_encoding
        self.encoding = Encoding.parse(getattr(encoding, "value", encoding))
        log.info(
            "workspace root %s, position encoding %s, client %r (applyEdit answers %s)",
            self.root,
            self.encoding,
            client,
            "trusted" if self.honest_client else "checked against the echo",
        )

    async def start_session(self) -> None:
        """Start the relay (host, embedded) and the link; from ``initialized``."""
        if self._started:
            return
        self._started = True
        opts = self.options
        try:
            if self.is_host:
                room, secret, ro_secret = new_room_id(), new_secret(), new_secret()
                if opts.relay_url:
                    # Several relay nodes (a Redis-backed cluster): one link per node,
                    # joined with commas, so everyone fails over to the next node.
                    bases = [b.strip() for b in opts.relay_url.split(",") if b.strip()]
                    per_node = [session_links(b, room, secret, ro_secret) for b in bases]
                    links = SessionLinks(
                        read_write=",".join(n.read_write for n in per_node),
                        read_only=",".join(n.read_only or "" for n in per_node),
                        host=",".join(n.host for n in per_node),
                    )
                else:
                    from relay.server import Relay

                    relay = Relay(opts.host, opts.port)
                    await self._stack.enter_async_context(relay)
                    relay.create_room(room, secret, read_only_secret=ro_secret)
                    links = relay.links(room, secret, ro_secret)
                self.url, self.read_only_url = links.read_write, links.read_only
                link_url = links.host
                self._mirror = DiskMirror(self.root, self._session_text, log)
                # Raw deep observer: no event objects are built for local transactions.
                self._subs.append(self.session.files.integrated.observe_deep(self._on_files_deep))
                self._subs.append(self.session.requests.observe(self._on_requests))
            else:
                assert opts.join_url is not None
                parse_relay_urls(opts.join_url)
                self.url = link_url = opts.join_url
            self._subs.append(self.session.files.observe(self._on_files))
            link = RelayLink(
                self.doc,
                link_url,
                origin=REMOTE,
                on_status=self._on_link,
                logger=log,
                ca_file=opts.ca_file,
            )
            self.read_only = link.read_only
            await self._stack.enter_async_context(link)
            self._start_presence(link)
            await self.language.session_started(link)
        except Exception as exc:
            msg = f"collab-ls could not start the session: {exc}"
            log.exception("%s", msg)
            self.show(types.MessageType.Error, msg)
            return
        if self.is_host:
            log.info("session shared: %s (read-only: %s)", self.url, self.read_only_url)
            self.show(
                types.MessageType.Info,
                f"collab-ls: sharing this folder. Others join with: collab-ls --join {self.url} "
                f"(read-only: collab-ls --join {self.read_only_url})",
            )
            self._serve_requests()
        elif self.read_only:
            self.show(
                types.MessageType.Info,
                "collab-ls: joined read-only: you see every edit live; your own edits are undone",
            )

    def _start_presence(self, link: RelayLink) -> None:
        presence_client = _PresenceClient(self)
        presence = Presence(
            name=self.options.name,
            doc=self.doc,
            session=self.session,
            awareness=link.awareness,
            encoding=self.encoding,
            root=self.root,
            bindings=self.bindings,
            client=presence_client,
            logger=log,
        )
        presence.open_with_peers = self.open_with_peers
        presence.start()
        self._stack.callback(presence.stop)  # before the link stops
        registers = SharedRegisters(
            self.session, name=self.options.name, notify=presence_client.notify, logger=log
        )
        registers.start()
        self._stack.callback(registers.stop)
        self.registers = registers
        for binding in self.bindings.values():
            binding.on_remote = presence.text_moved
        self.presence = presence

    async def stop_session(self) -> None:
        """Flush files to disk and stop the link and the relay."""
        await self.language.stop()
        if self._mirror:
            self._mirror.flush()
        for b in self.bindings.values():
            b.unbind()
        await self._stack.aclose()

    def show(self, kind: types.MessageType, message: str) -> None:
        """``window/showMessage`` (never fails the caller)."""
        try:
            self.window_show_message(types.ShowMessageParams(type=kind, message=message))
        except Exception:  # the client may be gone already
            log.debug("could not show message %r", message, exc_info=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_link(self, status: LinkStatus, reason: str) -> None:
        was = self.connected
        self.connected = status is LinkStatus.CONNECTED
        if status is LinkStatus.CONNECTED:
            if self.presence is not None:
                self.presence.connected()
            message = "collab-ls: connected to the session"
            level = types.MessageType.Info
        elif status is LinkStatus.REFUSED:
            message = f"collab-ls: the relay refused this session: {reason}"
            level = types.MessageType.Error
        elif status is LinkStatus.DISCONNECTED:
            message = f"collab-ls: lost the link to the relay ({reason}); reconnecting"
            level = types.MessageType.Warning
        else:
            return
        log.info("%s", message)
        if self.connected != was or status is not LinkStatus.CONNECTED:
            if status is not LinkStatus.CONNECTED or was is False:
                self.show(level, message)
        with contextlib.suppress(Exception):
            self.protocol.notify(
                NOTIFY_STATUS, {"connected": self.connected, "message": message, "url": self.url}
            )

    # --------------------------------------------------------------- documents

    def did_open(self, params: types.DidOpenTextDocumentParams) -> None:
        item = params.text_document
        try:
            key = relative_path(item.uri, self.root)
        except NotInWorkspace as exc:
            log.info("not shared: %s", exc)
            return
        old = self.bindings.pop(item.uri, None)
        if old:
            old.unbind()
        binding = DocBinding(
            key,
            item.uri,
            item.text,
            item.version,
            self.encoding,
            honest=self.honest_client,
            send_edit=self._send_edit,
            logger=log,
        )
        self.bindings[item.uri] = binding
        if self.presence is not None:
            binding.on_remote = self.presence.text_moved
            self.presence.documents_changed()
        text = self.session.text(key)
        if text is None and self.is_host:
            text = self.session.seed(key, item.text)
        if text is not None:
            if binding.bind(self.doc, text):
                log.info("%s: buffer replaced by the session's text", key)
        else:
            log.info("%s: asking the host for the session's copy", key)
            self.waiting.setdefault(key, []).append(binding)
            self.session.request(key, item.text)

    def did_change(self, params: Any) -> None:
        try:
            uri, version, changes = parse_changes(params)
        except InvalidChange as exc:
            log.error("ignored a didChange: %s; params=%.300r", exc, params)
            self.show(types.MessageType.Error, f"collab-ls ignored a change: {exc}")
            self._resync_after_bad_change(params)
            return
        binding = self.bindings.get(uri)
        if binding is None:
            log.warning("didChange for %s, which is not open (or not shared); ignored", uri)
            return
        if self.read_only:
            # The relay refuses a read-only peer's changes: put the session's text back.
            log.info("%s: read-only session: change undone", binding.key)
            binding.invalid_input(version)
            return
        errors = binding.did_change(version, changes)
        self.last_edited = uri
        if self.presence is not None:
            self.presence.edited(binding, changes)
        for error in errors:
            log.error("%s: %s", binding.key, error)
            self.show(types.MessageType.Error, f"collab-ls: {binding.key}: {error}")

    def _resync_after_bad_change(self, params: Any) -> None:
        """After an unreadable change the buffer's text is unknown: replace it."""
        try:
            doc = params["textDocument"]
            binding = self.bindings.get(doc["uri"])
            version = doc.get("version")
        except (KeyError, TypeError, AttributeError):
            return
        if binding is not None:
            binding.invalid_input(version if isinstance(version, int) else None)

    def did_close(self, params: types.DidCloseTextDocumentParams) -> None:
        binding = self.bindings.pop(params.text_document.uri, None)
        if binding:
            binding.unbind()
            for waiting in self.waiting.values():
                if binding in waiting:
                    waiting.remove(binding)
            if self.presence is not None:
                self.presence.documents_changed()

    def _send_edit(self, binding: DocBinding, edit: OutgoingEdit) -> None:
        params = types.ApplyWorkspaceEditParams(
            label="collab-ls",
            edit=types.WorkspaceEdit(
                document_changes=[
                    types.TextDocumentEdit(
                        text_document=types.OptionalVersionedTextDocumentIdentifier(
                            uri=binding.uri, version=edit.version
                        ),
                        edits=[
                            types.TextEdit(
                                range=types.Range(
                                    start=types.Position(e.start_line, e.start_character),
                                    end=types.Position(e.end_line, e.end_character),
                                ),
                                new_text=e.new_text,
                            )
                            for e in edit.edits
                        ],
                    )
                ]
            ),
        )
        self._spawn(self._await_edit(binding, edit.edit_id, params))

    async def _await_edit(
        self, binding: DocBinding, edit_id: int, params: types.ApplyWorkspaceEditParams
    ) -> None:
        try:
            result = await self.workspace_apply_edit_async(params)
            applied = bool(result.applied)
            if not applied:
                log.info(
                    "%s: edit %d not applied (%s); will resend",
                    binding.key,
                    edit_id,
                    result.failure_reason,
                )
        except Exception as exc:
            log.warning("%s: applyEdit %d failed: %s", binding.key, edit_id, exc)
            applied = False
        if self.bindings.get(binding.uri) is binding:
            binding.apply_result(edit_id, applied)

    # ----------------------------------------------------------------- session

    def _session_text(self, key: str) -> str | None:
        text = self.session.text(key)
        return None if text is None else str(text)

    def _on_files(self, event: pycrdt.MapEvent) -> None:
        if not self.waiting:
            return
        for key in list(self.waiting):
            text = self.session.text(key)
            if text is None:
                continue
            for binding in self.waiting.pop(key):
                asyncio.get_running_loop().call_soon(self._bind_waiting, binding, key)

    def _bind_waiting(self, binding: DocBinding, key: str) -> None:
        text = self.session.text(key)
        if text is None or self.bindings.get(binding.uri) is not binding:
            return
        if binding.bind(self.doc, text):
            log.info("%s: buffer replaced by the session's text", key)

    def _on_requests(self, event: pycrdt.MapEvent) -> None:
        asyncio.get_running_loop().call_soon(self._serve_requests)

    def _serve_requests(self) -> None:
        """Host: seed the files guests asked for, from disk or their copy."""
        for key, proposal in self.session.open_requests():
            try:
                path = file_path(self.root, key)
            except ValueError as exc:
                log.error("refused a guest's request: %s", exc)
                continue
            on_disk = read_text(path)
            self.session.seed(key, on_disk if on_disk is not None else proposal)
            log.info("seeded %s for a guest from %s", key, "disk" if on_disk else "their copy")

    def _on_files_deep(self, events: list[Any]) -> None:
        """Host: peers' changes to files no host editor has open go to disk.

        ``events`` are pycrdt's raw events: ``transaction.origin()`` is a hash.
        """
        mirror = self._mirror
        if mirror is None or not events or events[0].transaction.origin() not in _TO_DISK:
            return
        open_keys = {b.key for b in self.bindings.values()}
        for event in events:
            path = event.path
            if path and isinstance(path[0], str) and path[0] not in open_keys:
                mirror.touch(path[0])

    def undo(self, uri: str | None, *, redo: bool) -> dict[str, Any]:
        """``collab.undo`` / ``collab.redo``: this peer's own edits in ``uri`` only.

        Without ``uri``: the document edited last.
        """
        if self.read_only:
            raise ValueError("read-only session: nothing of yours to undo")
        binding = self.bindings.get(uri or self.last_edited or "")
        if binding is None:
            if uri is not None:
                raise ValueError(f"{uri} is not a shared document open in this editor")
            return {"done": False, "document": None}
        done = binding.redo() if redo else binding.undo()
        return {"done": done, "document": binding.key}

    def status(self) -> dict[str, Any]:
        return {
            "role": "host" if self.is_host else "guest",
            "url": self.url,
            "readOnlyUrl": self.read_only_url,
            "readOnly": self.read_only,
            "connected": self.connected,
            "documents": sorted(b.key for b in self.bindings.values()),
        }


class _PresenceClient:
    """The editor as presence sees it (:class:`~collab_ls.presence_shell.PresenceClient`)."""

    def __init__(self, server: CollabServer) -> None:
        self._server = server

    def notify(self, method: str, params: Any) -> None:
        with contextlib.suppress(Exception):  # the client may be gone already
            self._server.protocol.notify(method, params)

    def show_document(self, uri: str, cursor: Pos | None, *, take_focus: bool = True) -> None:
        selection = None
        if cursor is not None:
            position = types.Position(line=cursor[0], character=cursor[1])
            selection = types.Range(start=position, end=position)
        params = types.ShowDocumentParams(uri=uri, take_focus=take_focus, selection=selection)
        self._server._spawn(self._show_document(params))

    async def _show_document(self, params: types.ShowDocumentParams) -> None:
        try:
            await self._server.window_show_document_async(params)
        except Exception as exc:
            log.info("window/showDocument %s failed: %s", params.uri, exc)

    def refresh_inlay_hints(self) -> None:
        if self._server.inlay_refresh:
            self._server._spawn(self._refresh())

    async def _refresh(self) -> None:
        try:
            await self._server.workspace_inlay_hint_refresh_async(None)
        except Exception as exc:
            log.debug("workspace/inlayHint/refresh failed: %s", exc)

    def show_message(self, message: str) -> None:
        self._server.show(types.MessageType.Info, message)


def _record_position(ls: CollabServer, uri: str, position: types.Position) -> None:
    if ls.presence is not None:
        ls.presence.position_seen(uri, position.line, position.character)


def _argument(args: tuple[Any, ...], what: str) -> str:
    # pygls passes `arguments` either spread or as one list, depending on the client.
    if len(args) == 1 and isinstance(args[0], list):
        args = tuple(args[0])
    if not args or not isinstance(args[0], str) or not args[0]:
        raise ValueError(f"{what} is required")
    return args[0]


def _optional_argument(args: tuple[Any, ...]) -> str | None:
    if len(args) == 1 and isinstance(args[0], list):
        args = tuple(args[0])
    return args[0] if args and isinstance(args[0], str) and args[0] else None


class _PipeReader:
    """pygls's async reader interface over an asyncio stream (no thread hop per read)."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self._stream = stream

    async def readline(self) -> bytes:
        return await self._stream.readline()

    async def readexactly(self, n: int) -> bytes:
        try:
            return await self._stream.readexactly(n)
        except asyncio.IncompleteReadError:
            return b""


async def _serve_stdio(server: CollabServer, stdin: BinaryIO, stop: threading.Event) -> None:
    loop = asyncio.get_running_loop()
    stream = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream), stdin)
    await run_async(
        stop_event=stop,
        reader=_PipeReader(stream),
        protocol=server.protocol,
        logger=log,
        error_handler=server.report_server_error,
    )


def serve_stdio(server: CollabServer) -> None:
    """Run the server on stdin/stdout until the client goes away.

    pygls's own ``start_io`` reads stdin through a thread pool, one hop per
    header line and body (about 0.2 ms a message); an asyncio pipe reader
    does not.
    """
    stop = server._stop_event = threading.Event()
    server.protocol.set_writer(StdoutWriter(sys.stdout.buffer))
    try:
        asyncio.run(_serve_stdio(server, sys.stdin.buffer, stop))
    except BrokenPipeError:
        log.error("the editor closed the connection; stopping")
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.shutdown()  # type: ignore[no-untyped-call]


def create_server(options: Options) -> CollabServer:
    """Build the server and register its LSP features."""
    server = CollabServer(options)

    @server.feature(types.INITIALIZE)
    def initialize(ls: CollabServer, params: types.InitializeParams) -> None:
        ls.on_initialize(params)

    @server.feature(types.INITIALIZED)
    async def initialized(ls: CollabServer, params: types.InitializedParams) -> None:
        await ls.start_session()

    @server.feature(types.SHUTDOWN)
    async def shutdown(ls: CollabServer, params: None) -> None:
        await ls.stop_session()

    @server.command(CMD_SHARE_URL)
    def share_url(ls: CollabServer, *args: Any) -> str | None:
        return ls.url

    @server.command(CMD_STATUS)
    def status(ls: CollabServer, *args: Any) -> dict[str, Any]:
        return ls.status()

    _register_presence(server)
    return server


def _register_presence(server: CollabServer) -> None:
    """Presence features: cursor sources, inlay hints and the presence commands."""

    # Stock clients never report their cursor, but these requests carry it.
    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(ls: CollabServer, params: types.HoverParams) -> None:
        _record_position(ls, params.text_document.uri, params.position)

    @server.feature(types.TEXT_DOCUMENT_DOCUMENT_HIGHLIGHT)
    def highlight(ls: CollabServer, params: types.DocumentHighlightParams) -> None:
        _record_position(ls, params.text_document.uri, params.position)

    @server.feature(types.TEXT_DOCUMENT_COMPLETION)
    def completion(ls: CollabServer, params: types.CompletionParams) -> None:
        _record_position(ls, params.text_document.uri, params.position)

    @server.feature(types.TEXT_DOCUMENT_INLAY_HINT)
    def inlay_hint(ls: CollabServer, params: types.InlayHintParams) -> list[types.InlayHint]:
        if ls.presence is None:
            return []
        r = params.range
        hints = ls.presence.inlay_hints(
            params.text_document.uri,
            (r.start.line, r.start.character),
            (r.end.line, r.end.character),
        )
        return [
            types.InlayHint(
                position=types.Position(line=pos[0], character=pos[1]),
                label=name,
                tooltip=f"{name}'s cursor (collab-ls)",
                padding_left=True,
                padding_right=True,
            )
            for pos, name, _colour in hints
        ]

    @server.command(CMD_PEERS)
    def peers(ls: CollabServer, *args: Any) -> list[dict[str, Any]]:
        return ls.presence.peers() if ls.presence else []

    @server.command(CMD_FOLLOW)
    def follow(ls: CollabServer, *args: Any) -> dict[str, Any]:
        name = _argument(args, "collab.follow: the name of the peer to follow")
        if ls.presence is None:
            raise FollowError("the session is not up")
        return ls.presence.follow(name)

    @server.command(CMD_UNFOLLOW)
    def unfollow(ls: CollabServer, *args: Any) -> dict[str, Any]:
        return ls.presence.unfollow() if ls.presence else {"following": None}

    @server.command(CMD_UNDO)
    def undo(ls: CollabServer, *args: Any) -> dict[str, Any]:
        return ls.undo(_optional_argument(args), redo=False)

    @server.command(CMD_REDO)
    def redo(ls: CollabServer, *args: Any) -> dict[str, Any]:
        return ls.undo(_optional_argument(args), redo=True)

    @server.command(CMD_OPEN_WITH_PEERS)
    def open_with_peers(ls: CollabServer, *args: Any) -> dict[str, Any]:
        if len(args) == 1 and isinstance(args[0], list):
            args = tuple(args[0])
        on = not ls.open_with_peers if not args else args[0] is True or args[0] == "true"
        ls.open_with_peers = on
        if ls.presence is not None:
            ls.presence.open_with_peers = on
        return {"openWithPeers": on}

    @server.command(CMD_CHAT)
    def chat(ls: CollabServer, *args: Any) -> dict[str, Any]:
        message = _argument(args, "collab.chat: the message")
        if ls.presence is None:
            raise ValueError("the session is not up")
        return ls.presence.chat(message)
