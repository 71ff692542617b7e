"""The guest's mirror of the host's project tree, for a guest with no checkout (``--workspace``).

A guest's :class:`Mirror` makes a local directory reflect the host's listing
(:class:`~collab_ls.tree_entries.FileMeta` entries): empty placeholders first,
the real text once fetched. It deletes only what it made itself, remembered in
a manifest (:data:`MANIFEST_FILE`), and lists the files it did not mirror in
:data:`SKIPPED_FILE`. No networking here: every path that arrives from the
host is untrusted and checked before it touches a disk.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from collab_ls.disk import write_atomic
from collab_ls.tree_entries import FileMeta, TreeError, check_rel_path

__all__ = ["MANIFEST_FILE", "SKIPPED_FILE", "Mirror", "MirrorUpdate"]

# The logger the mirror has always used (log filters and readers know it by that name).
log = logging.getLogger("collab_ls.workspace_tree")

SKIPPED_FILE = ".collab-ls-skipped"
"""In a mirror: the files not mirrored, one ``path<TAB>reason`` a line."""
MANIFEST_FILE = ".collab-ls-mirror.json"
"""In a mirror: the files and directories the mirror made, so a later session may replace them."""


@dataclass(frozen=True)
class MirrorUpdate:
    """What one :meth:`Mirror.apply` did."""

    created: list[str] = field(default_factory=list)
    """Placeholders made for new files."""
    removed: list[str] = field(default_factory=list)
    """Mirrored files deleted because they left the tree."""
    changed: list[str] = field(default_factory=list)
    """Mirrored files the host changed: they need a fetch."""
    foreign: list[str] = field(default_factory=list)
    """Files of the tree already in the directory, not made by the mirror: left alone."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Binary and too-big files, not mirrored, with the reason."""
    rejected: dict[str, str] = field(default_factory=dict)
    """Unsafe paths, or paths that could not be created, with the reason."""


@dataclass
class _Entry:
    meta: FileMeta | None
    fetched: bool


class Mirror:
    """A guest's copy of the host's tree in ``directory``: placeholders, then fetched texts.

    Only files and directories the mirror made itself are ever deleted; it remembers them in
    ``directory/.collab-ls-mirror.json`` so a later session on the same directory takes over.
    """

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self._dir = directory.resolve()
        self._files: dict[str, _Entry] = {}
        self._dirs: set[str] = set()
        self._skipped: dict[str, str] = {}
        self._load()

    def path(self, rel: str) -> Path:
        """Where ``rel`` lives in the mirror; :class:`TreeError` for unsafe paths."""
        parts = check_rel_path(rel)
        if parts[0] in (SKIPPED_FILE, MANIFEST_FILE):
            raise TreeError(f"refusing a path reserved by the mirror: {rel!r}")
        path = self._dir
        for part in parts:
            path = path / part
            if path.is_symlink():
                raise TreeError(f"refusing {rel!r}: it goes through a symlink")
        return path

    def is_placeholder(self, rel: str) -> bool:
        """Whether ``rel`` is mirrored but its text not (or no longer) fetched."""
        entry = self._files.get(rel)
        return entry is not None and not entry.fetched

    def needs_fetch(self) -> list[str]:
        """Placeholders to fetch, smallest first."""
        stale = [(e.meta.size if e.meta else 0, rel) for rel, e in self._files.items()]
        return [rel for _, rel in sorted(stale) if not self._files[rel].fetched]

    def meta(self, rel: str) -> FileMeta | None:
        """The tree's metadata of a mirrored file, to pass back to :meth:`write`."""
        entry = self._files.get(rel)
        return entry.meta if entry else None

    def skipped(self) -> dict[str, str]:
        """Files of the tree not mirrored (binary, too big), with the reason."""
        return dict(self._skipped)

    def apply(self, tree: Mapping[str, FileMeta]) -> MirrorUpdate:
        """Make the directory reflect ``tree``; never touches anything outside it."""
        update = MirrorUpdate()
        text: dict[str, FileMeta] = {}
        for rel, meta in tree.items():
            try:
                self.path(rel)
            except TreeError as exc:
                log.warning("mirror: %s", exc)
                update.rejected[rel] = str(exc)
                continue
            if meta.servable:
                text[rel] = meta
            else:
                reason = f"too big ({meta.size} bytes)" if meta.too_big else "binary"
                update.skipped[rel] = reason
        for rel in sorted(self._files.keys() - text.keys()):
            self._remove(rel)
            update.removed.append(rel)
        self._prune_dirs()
        for rel in sorted(text):
            meta = text[rel]
            entry = self._files.get(rel)
            if entry is not None:
                if entry.meta != meta:
                    entry.meta, entry.fetched = meta, False
                    update.changed.append(rel)
                continue
            try:
                self._create_placeholder(rel)
            except FileExistsError:
                update.foreign.append(rel)
                continue
            except (OSError, TreeError) as exc:
                log.warning("mirror: cannot create %s: %s", rel, exc)
                update.rejected[rel] = str(exc)
                continue
            self._files[rel] = _Entry(meta, fetched=False)
            update.created.append(rel)
        self._skipped = dict(update.skipped)
        self._write_skipped()
        self._save()
        return update

    def write(self, rel: str, text: str, *, expected: FileMeta | None = None) -> Path:
        """Store the fetched text of ``rel`` atomically and mark it fetched.

        ``expected`` is :meth:`meta` as it was when the fetch was asked for: if the tree has
        changed since, the text is written but the file still needs a fetch.
        """
        path = self.path(rel)
        self._make_parents(rel)
        write_atomic(path, text)
        entry = self._files.get(rel)
        if entry is None:
            self._files[rel] = _Entry(expected, fetched=True)
            self._save()
        else:
            entry.fetched = expected is None or expected == entry.meta
        return path

    def _create_placeholder(self, rel: str) -> None:
        path = self.path(rel)
        self._make_parents(rel)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        os.close(os.open(path, flags, 0o666))

    def _make_parents(self, rel: str) -> None:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            try:
                (self._dir / sub).mkdir()
            except FileExistsError:
                continue
            self._dirs.add(sub)

    def _remove(self, rel: str) -> None:
        del self._files[rel]
        try:
            self.path(rel).unlink(missing_ok=True)
        except (OSError, TreeError) as exc:
            log.warning("mirror: cannot remove %s: %s", rel, exc)

    def _prune_dirs(self) -> None:
        """Remove the empty directories the mirror made, deepest first."""
        for sub in sorted(self._dirs, key=lambda d: d.count("/"), reverse=True):
            path = self._dir / sub
            if path.is_symlink() or not path.is_dir():
                self._dirs.discard(sub)
                continue
            try:
                path.rmdir()
            except OSError:
                continue  # not empty
            self._dirs.discard(sub)

    def _write_skipped(self) -> None:
        path = self._dir / SKIPPED_FILE
        if not self._skipped:
            path.unlink(missing_ok=True)
            return
        lines = [f"{rel}\t{reason}\n" for rel, reason in sorted(self._skipped.items())]
        write_atomic(path, "# not mirrored from the host: path<TAB>reason\n" + "".join(lines))

    def _save(self) -> None:
        state = {
            "version": 1,
            "files": {rel: e.meta.to_json() if e.meta else None for rel, e in self._files.items()},
            "dirs": sorted(self._dirs),
        }
        write_atomic(self._dir / MANIFEST_FILE, json.dumps(state, sort_keys=True))

    def _load(self) -> None:
        """Take over what an earlier mirror of this directory made, checking every entry."""
        try:
            state = json.loads((self._dir / MANIFEST_FILE).read_text(encoding="utf-8"))
            files, dirs = state["files"], state["dirs"]
            if not isinstance(files, dict) or not isinstance(dirs, list):
                raise TypeError("malformed manifest")
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("mirror: ignoring %s: %s", self._dir / MANIFEST_FILE, exc)
            return
        for rel, raw in files.items():
            try:
                meta = None if raw is None else FileMeta.from_json(raw)
                st = self.path(rel).lstat()
            except (TreeError, OSError):
                continue
            if stat.S_ISREG(st.st_mode):
                # A placeholder is empty; a fetched file has the host's size.
                fetched = meta is not None and st.st_size == meta.size
                self._files[rel] = _Entry(meta, fetched)
        for sub in dirs:
            try:
                if isinstance(sub, str) and self.path(sub).is_dir():
                    self._dirs.add(sub)
            except TreeError:
                continue
