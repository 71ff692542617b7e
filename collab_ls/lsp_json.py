"""Rewriting raw LSP JSON between a guest's editor and the host's language server.

A guest talks to the host's real language server through the relay, so every
message crosses from one machine's view of the project to another's. The
messages stay raw JSON (dicts, lists, str, int, float, bool, None): decoding
them into ``lsprotocol`` classes would drop fields a newer editor or server
sends. Three things differ between the two ends and are rewritten here:

* **Workspace roots.** The guest's files live under its own root URI, the
  host's under another. :class:`RootMap` moves every ``file://`` URI under one
  root to the other: string values, dict keys (``WorkspaceEdit.changes`` is
  keyed by URI) and links inside longer strings (hover markdown).
* **Trust.** A guest's request must not make the host's server touch files
  outside the host's workspace. :func:`uris_in` finds every URI in a request
  and :func:`relative_path` maps one into the root or raises
  :class:`OutsideRoot` (``..``, other schemes, symbolic links leading out).
* **Position encodings.** The guest's editor and the host's server may count
  a position's ``character`` in different units (UTF-8, UTF-16, UTF-32).
  :func:`convert_positions` converts every position using the text of the
  document it belongs to; :func:`convert_semantic_tokens` does the same for
  semantic tokens, and :func:`remap_token_legend` renumbers their types and
  modifiers when the two ends use different legends. Those two, and
  :func:`convert_signature_offsets` for signature help, are
  :mod:`collab_ls.lsp_tokens`'s, re-exported here.

Every function is pure: it returns new structures and never mutates its input
(:func:`relative_path` only reads the filesystem to resolve symbolic links).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from collab_ls.linetext import LineText
from collab_ls.lsp_tokens import (
    STANDARD_LEGEND,
    _line_map,
    _LineMap,
    convert_semantic_tokens,
    remap_token_legend,
)
from collab_ls.lsp_tokens import convert_signature_offsets as convert_signature_offsets
from collab_ls.units import Encoding

__all__ = [
    "STANDARD_LEGEND", "OutsideRoot", "RootMap", "convert_positions", "convert_semantic_tokens",
    "path_to_uri", "relative_path", "remap_token_legend", "uri_to_path", "uris_in",
]  # fmt: skip

# -- URIs and roots -------------------------------------------------------------------


class OutsideRoot(ValueError):
    """A URI that does not name a file inside the workspace root."""


def _is_file_uri(s: str) -> bool:
    return s[:5].lower() == "file:"


def _file_uri_path(uri: str) -> str:
    """Return the percent-decoded path of a ``file://`` URI.

    Raises:
        ValueError: ``uri`` is not a local ``file`` URI.
    """
    parts = urlsplit(uri)
    if parts.scheme.lower() != "file":
        raise ValueError(f"{uri!r} is not a file:// URI")
    if parts.netloc.lower() not in ("", "localhost"):
        raise ValueError(f"{uri!r} names a file on host {parts.netloc!r}, not a local file")
    return unquote(parts.path)


def path_to_uri(path: Path) -> str:
    """Return the ``file://`` URI of ``path`` (made absolute), as :meth:`Path.as_uri` spells it."""
    return path.absolute().as_uri()


def uri_to_path(uri: str) -> Path:
    """Return the local path a ``file://`` URI names; the inverse of :func:`path_to_uri`.

    Raises:
        ValueError: ``uri`` is not a local ``file`` URI.
    """
    return Path(_file_uri_path(uri))


def _char_pattern(c: str, fold: bool) -> str:
    """A regex matching ``c`` written literally or percent-encoded (any hex case)."""
    if c == "/":
        return "/"  # %2F is part of a segment, never a separator
    lit = f"[{c.lower()}{c.upper()}]" if fold else re.escape(c)
    pct = "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
    return f"(?:{lit}|(?i:{pct}))"


class RootMap:
    """Moves ``file://`` URIs from under one workspace root to under another.

    A URI is under the root when its percent-decoded path is the root's path
    or starts with it followed by ``/``: ``a%20b`` matches ``a b``, a trailing
    slash on either root does not matter, and root ``/srv/proj`` does not
    match ``/srv/project2``. The part after the root is kept as written.
    """

    __slots__ = ("_pattern", "_to_raw", "from_root", "to_root")

    def __init__(self, from_root_uri: str, to_root_uri: str) -> None:
        """Build the map.

        Args:
            from_root_uri: The root URIs are moved from, e.g. the guest's.
            to_root_uri: The root they are moved to, e.g. the host's.

        Raises:
            ValueError: A root is not a local ``file://`` URI.
        """
        from_path = _file_uri_path(from_root_uri).rstrip("/")
        _file_uri_path(to_root_uri)
        self.from_root = from_root_uri
        self.to_root = to_root_uri
        self._to_raw = to_root_uri.rstrip("/")
        # A Windows drive letter ("/c:/...") is case-insensitive; VS Code lowercases it.
        fold = len(from_path) >= 3 and from_path[0] == "/" and from_path[2] == ":"
        body = "".join(_char_pattern(c, fold and i == 1) for i, c in enumerate(from_path))
        # The lookahead lets the regex backtrack, e.g. from "%" to "%25" for a root's "%".
        self._pattern = re.compile(rf"(?<![\w+.-])(?i:file)://(?i:localhost)?{body}(?=[/?#]|$)")

    def __repr__(self) -> str:
        return f"RootMap({self.from_root!r}, {self.to_root!r})"

    def reverse(self) -> RootMap:
        """Return the map from ``to_root`` back to ``from_root``."""
        return RootMap(self.to_root, self.from_root)

    def rewrite(self, obj: Any) -> Any:
        """Return ``obj`` with every URI under ``from_root`` moved under ``to_root``.

        Rewrites string values and dict keys that are such URIs, and URIs
        inside longer strings (markdown links) that start with the root
        followed by ``/``.
        """
        if isinstance(obj, str):
            return self._rewrite_str(obj)
        if isinstance(obj, dict):
            return {
                self._rewrite_str(k) if isinstance(k, str) else k: self.rewrite(v)
                for k, v in obj.items()
            }
        if isinstance(obj, list):
            return [self.rewrite(v) for v in obj]
        return obj

    def _rewrite_str(self, s: str) -> str:
        if "://" not in s:
            return s

        def repl(m: re.Match[str]) -> str:
            # Embedded in text, only "root/..." is unambiguous; a whole string may be the root.
            if m.start() == 0 or s.startswith("/", m.end()):
                return self._to_raw
            return m.group(0)

        return self._pattern.sub(repl, s)


def uris_in(obj: Any) -> Iterator[str]:
    """Yield every ``file:`` URI in a JSON value: each string value or dict key that is one.

    URIs inside longer strings (markdown) are not yielded: a server reads
    files only from URI-valued fields.
    """
    if isinstance(obj, str):
        if _is_file_uri(obj):
            yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, str) and _is_file_uri(k):
                yield k
            yield from uris_in(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from uris_in(v)


def relative_path(root: Path, uri: str) -> str:
    """Return the POSIX path, relative to ``root``, of the file a URI names.

    ``.`` and ``..`` segments are removed lexically, as RFC 3986 has it for
    URIs; the result must then stay inside ``root`` on the real filesystem:
    no symbolic link on the way may lead out. Paths that do not exist yet are
    fine when their existing ancestors stay inside.

    Args:
        root: The workspace root (either its own path or the one it resolves to
            may prefix the URI's path).
        uri: A ``file://`` URI, e.g. from a guest's request.

    Returns:
        The relative path, ``"."`` for the root itself.

    Raises:
        OutsideRoot: ``uri`` is not a local ``file`` URI, or names a path
            outside ``root``.
    """
    try:
        path = _file_uri_path(uri)
    except ValueError as e:
        raise OutsideRoot(f"{e}; only files inside {root} are served") from None
    if "\x00" in path:
        raise OutsideRoot(f"{uri!r} contains a NUL character")
    if not path.startswith("/"):
        raise OutsideRoot(f"{uri!r} does not name an absolute path")
    norm = PurePosixPath(posixpath.normpath(path))
    real_root = root.resolve()
    for base in (PurePosixPath(posixpath.normpath(root.absolute())), PurePosixPath(real_root)):
        if norm.is_relative_to(base):
            rel = norm.relative_to(base)
            break
    else:
        why = " ('..' leads out of it)" if ".." in path.split("/") else ""
        raise OutsideRoot(f"{uri!r} is outside the workspace root {root}{why}")
    try:
        real = (real_root / rel).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise OutsideRoot(f"{uri!r} cannot be resolved inside {root}: {e}") from None
    if not real.is_relative_to(real_root):
        raise OutsideRoot(
            f"{uri!r} leads through a symbolic link to {real}, outside the workspace root {root}"
        )
    return rel.as_posix()


# -- positions ------------------------------------------------------------------------


def _uri_of(v: Any) -> str | None:
    """``v`` if it is a URI string, else its ``"uri"`` if a dict has one."""
    if isinstance(v, dict):
        v = v.get("uri")
    return v if isinstance(v, str) else None


# Keys whose positions belong to the document a sibling names, not the enclosing one.
_SIBLING_DOC = {
    "targetRange": "targetUri",  # LocationLink
    "targetSelectionRange": "targetUri",
    "fromRanges": "from",  # CallHierarchyIncomingCall (not ...OutgoingCall: it has "to")
}


class _PositionConverter:
    """Converts positions of many documents, looking up each text and line once."""

    def __init__(
        self, lines_for: Callable[[str], LineText | None], src: Encoding, dst: Encoding
    ) -> None:
        self._lines_for = lines_for
        self._src, self._dst = src, dst
        self._texts: dict[str, LineText | None] = {}
        self._maps: dict[tuple[str, int], _LineMap] = {}

    def _map(self, doc: str | None, line: int) -> tuple[int, _LineMap] | None:
        """The line a (possibly out-of-range) ``line`` lands on, and its map."""
        if doc is None:
            return None
        if doc not in self._texts:
            self._texts[doc] = self._lines_for(doc)
        lines = self._texts[doc]
        if lines is None:
            return None
        line = max(0, min(line, lines.line_count - 1))
        key = (doc, line)
        if key not in self._maps:
            self._maps[key] = _line_map(lines, line, self._src, self._dst)
        return line, self._maps[key]

    def position(self, doc: str | None, pos: dict[str, Any]) -> dict[str, Any]:
        line, character = pos["line"], pos["character"]
        found = self._map(doc, line)
        if found is None:
            return dict(pos)
        new_line, m = found
        if line > new_line:  # past the last line: the end of the text
            return {"line": new_line, "character": m.dst_len}
        return {"line": new_line, "character": m.clamp(character if line >= 0 else 0)}

    def walk(self, obj: Any, doc: str | None) -> Any:
        if isinstance(obj, list):
            return [self.walk(v, doc) for v in obj]
        if not isinstance(obj, dict):
            return obj
        if len(obj) == 2 and type(obj.get("line")) is int and type(obj.get("character")) is int:
            return self.position(doc, obj)
        # Location, PublishDiagnosticsParams, CallHierarchyItem; request params, TextDocumentEdit.
        own = _uri_of(obj) or _uri_of(obj.get("textDocument")) or doc
        out: dict[Any, Any] = {}
        for k, v in obj.items():
            d = own
            if k in _SIBLING_DOC and (sib := _uri_of(obj.get(_SIBLING_DOC[k]))) is not None:
                d = sib
            elif k == "originSelectionRange":
                d = doc  # a LocationLink's origin is in the request's document
            elif isinstance(k, str) and ":" in k:
                d = k  # keyed by URI: WorkspaceEdit.changes, relatedDocuments
            out[k] = self.walk(v, d)
        for ln, ch in (("startLine", "startCharacter"), ("endLine", "endCharacter")):
            # FoldingRange counts characters without Position objects.
            line, character = obj.get(ln), obj.get(ch)
            if type(line) is int and type(character) is int and (m := self._map(own, line)):
                out[ch] = m[1].clamp(character)
        return out


def convert_positions(
    obj: Any,
    *,
    uri: str | None,
    lines_for: Callable[[str], LineText | None],
    src: Encoding,
    dst: Encoding,
) -> Any:
    """Convert every position in a JSON value from ``src`` to ``dst`` code units.

    A position (``{"line": int, "character": int}``) belongs to the document
    named by the nearest enclosing ``"uri"`` or ``"textDocument": {"uri"}``, a
    LocationLink's ``"targetUri"`` (for ``targetRange`` and
    ``targetSelectionRange``; its ``originSelectionRange`` stays with the
    enclosing document), a CallHierarchyIncomingCall's ``from`` (for
    ``fromRanges``), or a URI dict key (``WorkspaceEdit.changes``); else to
    ``uri``, the request's document. FoldingRange characters are converted
    too. Each document's text is used as it is: convert a ``didChange`` one
    content change at a time, against the text before that change.

    Never raises on bad positions: a negative value counts as 0, a line past
    the end as the end of the text, a character past the end of its line as
    the line's end, and one inside a character as that character's start.

    Args:
        obj: The JSON value (not mutated).
        uri: The document positions belong to by default, or ``None``.
        lines_for: The text of a document, or ``None`` when unknown: its
            positions are then left unchanged.
        src: The encoding ``obj`` counts in.
        dst: The encoding to count in.

    Returns:
        A new value; ``obj`` itself when ``src == dst``.
    """
    if src == dst:
        return obj
    return _PositionConverter(lines_for, src, dst).walk(obj, uri)
