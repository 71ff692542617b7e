"""The collab-ls language server: the LSP shell around the session.

:class:`CollabServer` is one editor's collab-ls: it learns the workspace and
client from ``initialize``, starts the session from ``initialized`` (the host
embeds a relay or uses ``--relay``; a guest joins a link) with its relay
link, presence and shared registers, and stops it on ``shutdown``. The host
seeds the files guests ask for and writes to disk what peers change in files
no host editor has open. :func:`create_server` registers the LSP features.
The rest of the server:

* :mod:`collab_ls.dispatch`: how the editor's messages reach it;
* :mod:`collab_ls.documents`: the editor's buffers bound to the session;
* :mod:`collab_ls.presence_features`: cursors, inlay hints, ``collab.*`` commands;
* :mod:`collab_ls.stdio`: running it on stdin/stdout (:func:`serve_stdio`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pycrdt
from lsprotocol import types
from pygls.lsp.server import LanguageServer

from collab_ls import __version__
from collab_ls.binding import DocBinding
from collab_ls.did_change import InvalidChange, parse_changes
from collab_ls.disk import DiskMirror, file_path, read_text
from collab_ls.dispatch import CollabProtocol
from collab_ls.documents import EditorDocuments
from collab_ls.language_shell import LanguageShell, workspace_root
from collab_ls.options import Options
from collab_ls.presence import Pos
from collab_ls.presence_shell import Presence
from collab_ls.protocol import CMD_SHARE_URL, CMD_STATUS, NOTIFY_STATUS
from collab_ls.registers import SharedRegisters
from collab_ls.relay_link import Connector, LinkStatus, RelayLink, parse_relay_urls
from collab_ls.session import Session
from collab_ls.stdio import serve_stdio
from collab_ls.units import Encoding
from collab_ls.workspace_edit import SERVER_EDIT
from relay.links import SessionLinks, new_room_id, new_secret, session_links

__all__ = [
    "HONEST_CLIENTS",
    "REMOTE",
    "CollabProtocol",
    "CollabServer",
    "InvalidChange",
    "create_server",
    "parse_changes",
    "serve_stdio",
]

log = logging.getLogger("collab_ls")

REMOTE = "collab-ls:relay"
"""Origin of the transactions that apply peers' updates from the relay."""
_REMOTE_HASH = hash(REMOTE)
_TO_DISK = frozenset({_REMOTE_HASH, hash(SERVER_EDIT)})
"""Origins of changes the host writes to disk when no host editor has the file open."""


HONEST_CLIENTS = frozenset({"Visual Studio Code", "Visual Studio Code - Insiders", "Emacs"})
"""Clients known to refuse a stale edit rather than skip it and say ``applied: true``."""


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
        self.documents = EditorDocuments(self)
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
        # The embedded relay: the host's own link reaches it in memory.
        connect_local: Connector | None = None
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
                    connect_local = relay.connect_local
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
            self._subs.append(self.session.files.observe(self.documents.on_files))
            link = RelayLink(
                self.doc,
                link_url,
                origin=REMOTE,
                on_status=self._on_link,
                logger=log,
                ca_file=opts.ca_file,
                connect=connect_local,
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

    # ----------------------------------------------------------------- session

    def _session_text(self, key: str) -> str | None:
        text = self.session.text(key)
        return None if text is None else str(text)

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

    # Imported here, not above: that module imports this one (see there).
    from collab_ls.presence_features import register_presence

    register_presence(server)
    return server
