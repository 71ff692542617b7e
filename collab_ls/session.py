"""The session document: which Yjs types hold what, and who seeds a file.

One session is one pycrdt (Yjs) document, synced through the relay with the
standard y-websocket protocol. Its layout, so any Yjs client can take part:

``files``: ``Y.Map``
    Key: the file's path relative to the workspace root, with ``/``
    separators (``src/app.py``), so peers whose checkouts live at different
    absolute paths meet on the same file. Value: a ``Y.Text`` with the file's
    content, line breaks as they are in the file.
``requests``: ``Y.Map``
    Key: a relative path a guest opened that the session does not hold yet.
    Value: the guest's own copy of the file (a string), used only when the host
    has no such file. The host removes the key once it has seeded the file.
``chat``: ``Y.Array``
    The session's chat, oldest first: ``{"client": awareness client id,
    "name": str, "colour": "#rrggbb", "text": str, "time": ms since the
    epoch}`` per message. Chat lives in the document rather than in
    awareness because awareness carries only each peer's latest state: two
    messages sent in a row, or sent while a peer was reconnecting, would be
    lost, and a late joiner could not read what was said. It grows with the
    session (a few hundred bytes a message).
``registers``: ``Y.Map``
    Shared Vim registers. Key: the register name (``"``, ``0``, ``a``...).
    Value: ``{"contents": [lines], "regtype": "v"|"V"|"<C-V>N",
    "client": doc client id, "name": str}``, the last yank into that
    register by any peer (written by collab-ls from the Neovim config's
    ``$/collab/register``). Last writer wins; other editors may ignore it.

``host``: ``Y.Map``
    Written by the host only, when it runs a language server for everyone
    (``collab-ls --share -- pylsp``): ``client`` (the host's awareness client
    id, where guests send requests), ``root`` (the host's root URI),
    ``encoding`` (the server's position encoding), ``capabilities`` (the
    server's, raw), ``server`` (its command line) and ``state``
    (``running``, ``restarting`` or ``failed``).
``tree``: ``Y.Map``
    Written by the host only: the shared folder's file tree for guests who
    have no checkout (``--workspace DIR``). Key: relative path; value: the
    file's metadata (:class:`collab_ls.workspace_tree.FileMeta` as JSON).
    Contents are fetched from the host on demand, never stored here.

Presence (who is here, their cursors) is *not* in the document: it is the
standard Yjs awareness state of each peer, see :mod:`collab_ls.presence`.

Who seeds: **only the host** ever creates an entry of ``files``, so two peers
opening the same file at the same moment can never both insert its content
(two replicas seeding the same text concurrently would hold it twice). The
host seeds a file from its editor's buffer when it opens it, or, when a guest
asks through ``requests``, from the host's file on disk, falling back to the
guest's copy when the host has none. A peer that opens a file the session
already holds gets the session's text in its buffer, never its own copy
merged in.
"""

from __future__ import annotations

import posixpath
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

import pycrdt

FILES = "files"
REQUESTS = "requests"
CHAT = "chat"
REGISTERS = "registers"
HOST = "host"
TREE = "tree"


class NotInWorkspace(ValueError):
    """A document outside the shared workspace root."""


class Session:
    """Typed access to the session document's layout."""

    def __init__(self, doc: pycrdt.Doc[Any]) -> None:
        self.doc = doc
        self.files: pycrdt.Map[pycrdt.Text] = doc.get(FILES, type=pycrdt.Map)
        self.requests: pycrdt.Map[str] = doc.get(REQUESTS, type=pycrdt.Map)
        self.chat: pycrdt.Array[Any] = doc.get(CHAT, type=pycrdt.Array)
        self.registers: pycrdt.Map[Any] = doc.get(REGISTERS, type=pycrdt.Map)
        self.host: pycrdt.Map[Any] = doc.get(HOST, type=pycrdt.Map)
        self.tree: pycrdt.Map[Any] = doc.get(TREE, type=pycrdt.Map)

    def host_info(self) -> dict[str, Any]:
        """The host's language server, as the host published it (empty: none).

        Its values are strings and numbers (capabilities as a JSON string).
        """
        return dict(self.host.items())

    def text(self, path: str) -> pycrdt.Text | None:
        """The shared text of ``path``, if the session holds it."""
        value = self.files.get(path)
        return value if isinstance(value, pycrdt.Text) else None

    def seed(self, path: str, content: str) -> pycrdt.Text:
        """Host only: create ``path`` with ``content`` unless it exists already."""
        with self.doc.transaction():
            existing = self.text(path)
            if existing is not None:
                return existing
            self.files[path] = pycrdt.Text(content)
            if path in self.requests:
                del self.requests[path]
        text = self.text(path)
        assert text is not None
        return text

    def request(self, path: str, content: str) -> None:
        """Guest: ask the host to seed ``path`` (``content`` is the guest's copy)."""
        if self.text(path) is None and path not in self.requests:
            self.requests[path] = content

    def open_requests(self) -> list[tuple[str, str]]:
        """Requests the host has not served yet."""
        return [(k, str(v)) for k, v in self.requests.items() if self.text(k) is None]

    def paths(self) -> list[str]:
        """Every shared path."""
        return sorted(self.files.keys())


def relative_path(uri: str, root: Path) -> str:
    """The session key of a ``file://`` URI under ``root``.

    Raises:
        NotInWorkspace: the URI is not a file under the root.
    """
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise NotInWorkspace(f"{uri} is not a file:// URI")
    path = Path(unquote(parsed.path))
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        try:
            rel = path.relative_to(root)
        except ValueError as exc:
            raise NotInWorkspace(f"{path} is outside the shared folder {root}") from exc
    key = PurePosixPath(*rel.parts).as_posix()
    if key in ("", ".") or key.startswith("../"):
        raise NotInWorkspace(f"{path} is outside the shared folder {root}")
    return posixpath.normpath(key)


def path_uri(root: Path, key: str) -> str:
    """The ``file://`` URI of session key ``key`` under ``root``."""
    return (root / Path(*PurePosixPath(key).parts)).absolute().as_uri()
