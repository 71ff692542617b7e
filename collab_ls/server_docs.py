"""The host's real language server sees every shared document, as the session has it.

The real server is never told what one editor typed: it is told what the
session's text became. Every file in the session (``files``), whichever peer
opened it, is open in the real server; each change to a shared text, local or
remote, becomes one incremental ``didChange`` in the server's position
encoding; a file leaving the session is closed. After a restart of the server,
:meth:`ServerDocs.reopen` opens everything again.

The pycrdt deltas count UTF-8 bytes; a :class:`~collab_ls.linetext.LineText`
per document turns them into LSP ranges before the change is applied to it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pycrdt

from collab_ls.linetext import LineText
from collab_ls.lsp_rebase import rebase_edits
from collab_ls.session import Session, path_uri
from collab_ls.units import Encoding

Notify = Callable[[str, Any], None]

HISTORY = 1024
"""Changes kept per document to rebase the server's edits (about a minute of typing)."""

#: languageId by file suffix; servers mostly ignore it, some need it.
LANGUAGE_IDS = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".ts": "typescript",
    ".tsx": "typescriptreact",
    ".jsx": "javascriptreact",
    ".rs": "rust",
    ".go": "go",
    ".c": "c",
    ".h": "c",
    ".cpp": "cpp",
    ".hpp": "cpp",
    ".java": "java",
    ".lua": "lua",
    ".md": "markdown",
    ".json": "json",
    ".toml": "toml",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".sh": "shellscript",
    ".rb": "ruby",
    ".el": "emacs-lisp",
    ".vim": "vim",
}


def language_id(key: str) -> str:
    """The LSP languageId of a shared path, from its suffix."""
    suffix = Path(key).suffix.lower()
    return LANGUAGE_IDS.get(suffix, suffix.lstrip(".") or "plaintext")


class ServerDocs:
    """Keeps a language server's open documents equal to the session's files."""

    def __init__(
        self,
        session: Session,
        root: Path,
        encoding: Encoding,
        notify: Notify,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self._session = session
        self._root = root
        self.encoding = encoding
        self._notify = notify
        self._log = logger
        self._lines: dict[str, LineText] = {}
        self._versions: dict[str, int] = {}
        # Per document, the changes sent since each version (for rebasing the
        # server's edits): (version reached, contentChanges), oldest first.
        self._history: dict[str, deque[tuple[int, list[dict[str, Any]]]]] = {}
        self._sub: pycrdt.Subscription | None = None

    def start(self) -> None:
        """Open every shared file and follow the session from now on."""
        if self._sub is None:
            self._sub = self._session.files.observe_deep(self._on_events)
        self.reopen()

    def stop(self) -> None:
        if self._sub is not None:
            self._session.files.unobserve(self._sub)
            self._sub = None

    def reopen(self) -> None:
        """(Re)open every shared file in the server: at start and after a restart."""
        self._lines.clear()
        for key in self._session.paths():
            self._open(key)

    def uri(self, key: str) -> str:
        return path_uri(self._root, key)

    def version(self, key: str) -> int | None:
        return self._versions.get(key)

    def versions(self) -> dict[str, int]:
        """Every open document's version in the server now (to rebase its edits later)."""
        return dict(self._versions)

    def changes_since(self, key: str, version: int) -> list[list[dict[str, Any]]] | None:
        """The ``contentChanges`` sent after ``version`` of ``key``, oldest first.

        ``None`` when they are not known: the document was (re)opened since, or
        more than :data:`HISTORY` changes ago.
        """
        if version == self._versions.get(key):
            return []
        history = self._history.get(key)
        if not history or history[0][0] > version + 1:
            return None
        return [changes for reached, changes in history if reached > version]

    def rebase(self, key: str, version: int, edits: list[Any]) -> list[Any]:
        """The server's ``TextEdit`` list for ``version`` of ``key``, moved to the text now.

        Edits that a change made since touches are dropped. If the changes since
        are not known (see :meth:`changes_since`), the edits are returned as they
        are: what collab-ls did before it could rebase, and all it can do.
        """
        changes = self.changes_since(key, version)
        if changes is None:
            self._log.warning(
                "%s: the changes since version %d are not known: the server's edits are "
                "applied as they are",
                key,
                version,
            )
            return edits
        if not changes:
            return edits
        # Never a full text among them: the history starts again after one.
        rebased, dropped = rebase_edits(edits, changes, self.encoding)
        if dropped:
            self._log.warning(
                "%s: %d of %d edits dropped: a peer edited there meanwhile",
                key,
                dropped,
                len(edits),
            )
        return rebased

    @property
    def keys(self) -> list[str]:
        return sorted(self._lines)

    def _open(self, key: str) -> None:
        text = self._session.text(key)
        if text is None:
            return
        content = str(text)
        self._lines[key] = LineText(content)
        version = self._versions.get(key, 0) + 1
        self._versions[key] = version
        self._history[key] = deque(maxlen=HISTORY)  # nothing before this text is known
        self._notify(
            "textDocument/didOpen",
            {
                "textDocument": {
                    "uri": self.uri(key),
                    "languageId": language_id(key),
                    "version": version,
                    "text": content,
                }
            },
        )

    def _close(self, key: str) -> None:
        self._history.pop(key, None)
        if self._lines.pop(key, None) is not None:
            self._notify("textDocument/didClose", {"textDocument": {"uri": self.uri(key)}})

    def _on_events(self, events: list[Any]) -> None:
        for event in events:
            path = list(event.path)
            if not path:
                if isinstance(event, pycrdt.MapEvent):
                    keys: dict[str, dict[str, Any]] = getattr(event, "keys", {})
                    for key, change in keys.items():
                        action = change.get("action")
                        if action in ("add", "update"):
                            self._close(key)
                            self._open(key)
                        elif action == "delete":
                            self._close(key)
            elif isinstance(event, pycrdt.TextEvent) and isinstance(path[0], str):
                self._changed(path[0], getattr(event, "delta", []))

    def _changed(self, key: str, delta: list[dict[str, Any]]) -> None:
        lines = self._lines.get(key)
        if lines is None:
            self._open(key)
            return
        changes: list[dict[str, Any]] = []
        offset = 0
        enc = self.encoding
        try:
            for op in delta:
                if "retain" in op:
                    offset += int(op["retain"])
                elif "insert" in op:
                    inserted = op["insert"]
                    if not isinstance(inserted, str):
                        continue
                    pos = lines.to_position(offset, enc)
                    changes.append({"range": _range(pos, pos), "text": inserted})
                    lines.replace(offset, offset, inserted)
                    offset += len(inserted.encode("utf-8", "surrogatepass"))
                elif "delete" in op:
                    end = offset + int(op["delete"])
                    start_pos = lines.to_position(offset, enc)
                    end_pos = lines.to_position(end, enc)
                    changes.append({"range": _range(start_pos, end_pos), "text": ""})
                    lines.replace(offset, end, "")
        except Exception:
            # Cannot follow this delta: send the whole text instead.
            self._log.exception("%s: could not turn a change into ranges; full sync", key)
            text = self._session.text(key)
            if text is None:
                return
            content = str(text)
            self._lines[key] = LineText(content)
            changes = [{"text": content}]
        if not changes:
            return
        version = self._versions.get(key, 0) + 1
        self._versions[key] = version
        history = self._history.setdefault(key, deque(maxlen=HISTORY))
        if "range" in changes[0]:
            history.append((version, changes))
        else:  # a full text: nothing before it can be carried over
            history.clear()
        self._notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": self.uri(key), "version": version},
                "contentChanges": changes,
            },
        )


def _range(start: tuple[int, int], end: tuple[int, int]) -> dict[str, Any]:
    return {
        "start": {"line": start[0], "character": start[1]},
        "end": {"line": end[0], "character": end[1]},
    }
