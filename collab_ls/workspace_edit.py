"""Edits from the real language server, applied to the shared documents.

Formatting, rename, code actions and the server's own ``workspace/applyEdit``
produce LSP edits (raw JSON, positions in the server's encoding). On the host
they are applied to the session's texts, in one transaction per document with
the origin :data:`SERVER_EDIT`, so they reach every peer's editor like any
peer's edit and every replica converges, whoever asked. Edits made for an
older version of a document (peers typed while the server worked) are first
moved past the changes made since (:mod:`collab_ls.lsp_rebase`). A file the session
does not hold is edited on the host's disk (atomically); resource operations
(create, rename, delete) act on the host's disk, inside the shared root only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collab_ls.disk import read_text, write_atomic
from collab_ls.linetext import LineText
from collab_ls.lsp_json import OutsideRoot, relative_path
from collab_ls.session import Session
from collab_ls.units import Encoding

SERVER_EDIT = "collab-ls:language-server"
"""Origin of transactions that carry the real language server's edits."""


Rebase = Callable[[str, int, list[Any]], list[Any]]
"""``rebase(key, version, edits)``: the server's edits for ``version``, on the text now."""


class EditError(ValueError):
    """An edit that cannot be applied: outside the root, malformed or stale."""


@dataclass
class EditReport:
    """What an applied workspace edit touched."""

    documents: list[str] = field(default_factory=list)
    on_disk: list[str] = field(default_factory=list)

    @property
    def touched(self) -> list[str]:
        return self.documents + self.on_disk


def _offsets(lines: LineText, edit: Any, enc: Encoding) -> tuple[int, int, str]:
    if not isinstance(edit, dict):
        raise EditError(f"not a TextEdit: {edit!r}")
    rng, new = edit.get("range"), edit.get("newText")
    if not isinstance(rng, dict) or not isinstance(new, str):
        raise EditError(f"not a TextEdit: {edit!r}")
    try:
        s, e = rng["start"], rng["end"]
        start = lines.to_offset(int(s["line"]), int(s["character"]), enc)
        end = lines.to_offset(int(e["line"]), int(e["character"]), enc)
    except (KeyError, TypeError, ValueError) as exc:
        raise EditError(f"bad range in {edit!r}: {exc}") from exc
    if end < start:
        start, end = end, start
    return start, end, new


def resolve_edits(text: str, edits: list[Any], enc: Encoding) -> list[tuple[int, int, str]]:
    """Byte ranges of ``edits`` on ``text``, last first (so each leaves the others' valid)."""
    lines = LineText(text)
    spans = [(*_offsets(lines, e, enc), i) for i, e in enumerate(edits)]
    # LSP: edits never overlap; inserts at one place apply in the order given.
    spans.sort(key=lambda s: (s[0], s[3]), reverse=True)
    return [(s, e, new) for s, e, new, _ in spans]


def apply_to_string(text: str, edits: list[Any], enc: Encoding) -> str:
    """``text`` with ``edits`` applied (for files no one has open)."""
    data = text.encode("utf-8", "surrogatepass")
    for start, end, new in resolve_edits(text, edits, enc):
        data = data[:start] + new.encode("utf-8", "surrogatepass") + data[end:]
    return data.decode("utf-8", "surrogatepass")


class WorkspaceEditor:
    """Applies raw LSP edits to the session (or the host's disk)."""

    def __init__(
        self,
        session: Session,
        root: Path,
        encoding: Encoding,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
        rebase: Rebase | None = None,
    ) -> None:
        self._session = session
        self._root = root
        self.encoding = encoding
        self._log = logger
        self._rebase = rebase

    def key(self, uri: str) -> str:
        try:
            return relative_path(self._root, uri)
        except OutsideRoot as exc:
            raise EditError(str(exc)) from exc

    def text_edits(
        self,
        uri: str,
        edits: Any,
        report: EditReport | None = None,
        since: int | None = None,
    ) -> EditReport:
        """Apply ``TextEdit[]`` to the document ``uri``.

        ``since``: the server's version of the document the edits were made for;
        they are first moved past the changes made since (see :mod:`lsp_rebase`).
        """
        report = report if report is not None else EditReport()
        if not isinstance(edits, list):
            raise EditError(f"edits for {uri} are not a list")
        if not edits:
            return report
        key = self.key(uri)
        text = self._session.text(key)
        if text is not None:
            if since is not None and self._rebase is not None:
                edits = self._rebase(key, since, edits)
            spans = resolve_edits(str(text), edits, self.encoding)
            with self._session.doc.transaction(origin=SERVER_EDIT):
                for start, end, new in spans:
                    if end > start:
                        del text[start:end]
                    if new:
                        text.insert(start, new)
            report.documents.append(key)
            return report
        path = self._root / key
        current = read_text(path)
        if current is None:
            raise EditError(f"{key} is neither shared nor a readable text file on the host")
        write_atomic(path, apply_to_string(current, edits, self.encoding))
        report.on_disk.append(key)
        return report

    def workspace_edit(self, edit: Any, since: Mapping[str, int] | None = None) -> EditReport:
        """Apply a ``WorkspaceEdit`` (``changes`` and/or ``documentChanges``).

        Each document's edits are moved past the changes made since the version
        the server made them for: a ``TextDocumentEdit``'s own version, else
        ``since`` (the server's versions when it was asked), else none.
        """
        since = since or {}
        if not isinstance(edit, dict):
            raise EditError("a WorkspaceEdit must be an object")
        report = EditReport()
        doc_changes = edit.get("documentChanges")
        if isinstance(doc_changes, list):
            for change in doc_changes:
                if not isinstance(change, dict):
                    raise EditError(f"bad documentChanges entry {change!r}")
                kind = change.get("kind")
                if kind is None:
                    td = change.get("textDocument")
                    uri = td.get("uri") if isinstance(td, dict) else None
                    if not isinstance(uri, str):
                        raise EditError("a TextDocumentEdit without a uri")
                    version = td.get("version") if isinstance(td, dict) else None
                    if not isinstance(version, int) or isinstance(version, bool):
                        version = since.get(self.key(uri))
                    self.text_edits(uri, change.get("edits"), report, version)
                else:
                    self._resource(kind, change, report)
        else:
            changes = edit.get("changes")
            if isinstance(changes, dict):
                for uri, edits in changes.items():
                    self.text_edits(str(uri), edits, report, since.get(self.key(str(uri))))
        return report

    def _resource(self, kind: Any, change: dict[str, Any], report: EditReport) -> None:
        options = change.get("options") if isinstance(change.get("options"), dict) else {}
        assert isinstance(options, dict)
        if kind == "create":
            key = self.key(str(change.get("uri")))
            path = self._root / key
            if path.exists() and not options.get("overwrite"):
                if options.get("ignoreIfExists"):
                    return
                raise EditError(f"{key} exists already")
            write_atomic(path, "")
            report.on_disk.append(key)
        elif kind == "rename":
            old = self.key(str(change.get("oldUri")))
            new = self.key(str(change.get("newUri")))
            src, dst = self._root / old, self._root / new
            if dst.exists() and not options.get("overwrite"):
                if options.get("ignoreIfExists"):
                    return
                raise EditError(f"{new} exists already")
            held = self._session.text(old)
            if held is not None:
                self._session.seed(new, str(held))
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
            report.on_disk.extend([old, new])
        elif kind == "delete":
            key = self.key(str(change.get("uri")))
            path = self._root / key
            if path.is_dir():
                if not options.get("recursive"):
                    raise EditError(f"{key} is a folder (recursive not set)")
                import shutil

                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            elif not options.get("ignoreIfNotExists"):
                raise EditError(f"{key} does not exist")
            report.on_disk.append(key)
        else:
            raise EditError(f"unknown resource operation {kind!r}")
