"""The host's project tree and its mirror on a guest with no checkout (``--workspace``).

The host lists its project (:func:`scan_tree`, honouring ``.gitignore``) into the session's
``tree`` map as :class:`FileMeta` entries and serves file texts on request
(:func:`read_shared_file`). A guest's :class:`Mirror` makes a local directory reflect that
listing: empty placeholders first, the real text once fetched. No networking here: every path
that arrives from the other end is untrusted and checked before it touches a disk.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import re
import stat
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from collab_ls.disk import write_atomic

log = logging.getLogger(__name__)

SNIFF_BYTES = 8192
"""How much of a file is read to tell text from binary."""
SKIPPED_FILE = ".collab-ls-skipped"
"""In a mirror: the files not mirrored, one ``path<TAB>reason`` a line."""
MANIFEST_FILE = ".collab-ls-mirror.json"
"""In a mirror: the files and directories the mirror made, so a later session may replace them."""
_GIT_TIMEOUT = 60.0
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class TreeError(ValueError):
    """A path, a tree entry or a file request that is refused."""


@dataclass(frozen=True, kw_only=True)
class TreeLimits:
    """How much of a project is offered to guests."""

    max_file_bytes: int = 2 * 1024 * 1024
    max_files: int = 20_000
    max_total_bytes: int = 200 * 1024 * 1024
    """Total size of the servable (text, not too big) files listed."""


@dataclass(frozen=True)
class FileMeta:
    """One file of the shared tree, as the host last saw it."""

    size: int
    binary: bool
    too_big: bool
    mtime_ns: int

    @property
    def servable(self) -> bool:
        """Whether the host serves this file's text."""
        return not (self.binary or self.too_big)

    def to_json(self) -> dict[str, int | bool]:
        """The entry as stored in the session's ``tree`` map."""
        return {"s": self.size, "b": self.binary, "t": self.too_big, "m": self.mtime_ns}

    @classmethod
    def from_json(cls, untrusted: object) -> FileMeta:
        """Parse a ``tree`` map entry, raising :class:`TreeError` on anything malformed."""
        if not isinstance(untrusted, Mapping):
            raise TreeError(f"tree entry must be a map, got {type(untrusted).__name__}")
        return cls(
            size=_integer(untrusted, "s", "size", minimum=0),
            binary=_flag(untrusted, "b", "binary"),
            too_big=_flag(untrusted, "t", "too_big"),
            mtime_ns=_integer(untrusted, "m", "mtime_ns", minimum=None),
        )


def _integer(entry: Mapping[object, object], key: str, name: str, *, minimum: int | None) -> int:
    value = entry.get(key)
    # Yjs numbers may come back as floats (12.0); only whole ones are accepted.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise TreeError(f"tree entry {key!r} ({name}) must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise TreeError(f"tree entry {key!r} ({name}) must be >= {minimum}, got {value}")
    return value


def _flag(entry: Mapping[object, object], key: str, name: str) -> bool:
    value = entry.get(key)
    if not isinstance(value, bool):
        raise TreeError(f"tree entry {key!r} ({name}) must be true or false, got {value!r}")
    return value


@dataclass(frozen=True)
class Tree:
    """A scanned project: its files and whether a limit cut the listing short."""

    files: dict[str, FileMeta]
    truncated: bool = False


@dataclass(frozen=True)
class TreeDiff:
    """Paths added, removed and changed (any metadata differs) between two trees."""

    added: list[str]
    removed: list[str]
    changed: list[str]


def diff_trees(old: Mapping[str, FileMeta], new: Mapping[str, FileMeta]) -> TreeDiff:
    """What changed from ``old`` to ``new``, each list sorted."""
    return TreeDiff(
        added=sorted(new.keys() - old.keys()),
        removed=sorted(old.keys() - new.keys()),
        changed=sorted(k for k in old.keys() & new.keys() if old[k] != new[k]),
    )


def check_rel_path(rel: str) -> tuple[str, ...]:
    """The segments of a relative posix path from the other end, or :class:`TreeError`.

    Refused: empty, absolute, drive letters, ``.``/``..``/empty segments, backslashes, control
    characters (NUL included), names that are not UTF-8 and anything inside a ``.git``
    directory.
    """
    if not isinstance(rel, str) or not rel:
        raise TreeError(f"refusing an empty or non-string path: {rel!r}")
    if _CONTROL.search(rel) or "\\" in rel:
        raise TreeError(f"refusing a path with control characters or backslashes: {rel!r}")
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        # A file name that is not UTF-8 on disk (os.fsdecode's surrogates) cannot be shared.
        raise TreeError(f"refusing a path that is not valid UTF-8: {rel!r}") from None
    if rel.startswith("/") or _DRIVE.match(rel):
        raise TreeError(f"refusing an absolute path: {rel!r}")
    parts = tuple(rel.split("/"))
    if any(p in ("", ".", "..") for p in parts):
        raise TreeError(f"refusing a path with empty, '.' or '..' segments: {rel!r}")
    if any(p.lower() == ".git" for p in parts):
        raise TreeError(f"refusing a path inside .git: {rel!r}")
    return parts


def looks_binary(head: bytes, *, complete: bool) -> bool:
    """Whether a file starting with ``head`` is binary: a NUL byte, or not UTF-8.

    ``complete`` says ``head`` is the whole file; otherwise a multi-byte character cut at the
    end of ``head`` is not held against it.
    """
    if b"\0" in head:
        return True
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=complete)
    except UnicodeDecodeError:
        return True
    return False


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` resolves (symlinks followed) to somewhere under the resolved ``root``."""
    try:
        return path.resolve(strict=True).is_relative_to(root)
    except (OSError, RuntimeError):
        return False


def scan_tree(
    root: Path, limits: TreeLimits, *, previous: Mapping[str, FileMeta] | None = None
) -> Tree:
    """Every regular file under ``root`` not ignored by ``.gitignore``, keyed by posix path.

    Inside a git work tree git itself lists the files (nested ``.gitignore``, ``.git/info/exclude``
    and global excludes all apply); elsewhere the tree is walked with ``pathspec``. ``.git`` is
    always skipped, as are symlinks leading outside ``root`` and symlinked directories. Files
    unchanged (size and mtime) since ``previous`` keep their binary flag without being re-read.
    """
    previous = previous or {}
    real_root = root.resolve()
    listed = _git_files(real_root)
    candidates = _walk(real_root) if listed is None else iter(listed)
    files: dict[str, FileMeta] = {}
    total = 0
    for rel in candidates:
        meta = _file_meta(real_root, rel, limits, previous.get(rel))
        if meta is None:
            continue
        if len(files) >= limits.max_files or (
            meta.servable and total + meta.size > limits.max_total_bytes
        ):
            log.warning(
                "workspace %s: listing only %d files (%d bytes of text): limit reached",
                root,
                len(files),
                total,
            )
            return Tree(files, truncated=True)
        files[rel] = meta
        total += meta.size if meta.servable else 0
    return Tree(files)


def _git_files(root: Path) -> list[str] | None:
    """The paths git would show under ``root``, or None when ``root`` is not in a work tree."""
    try:
        inside = subprocess.run(
            ["git", "rev-parse", "--is-inside-work-tree"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT,
        )
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return None
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
            timeout=_GIT_TIMEOUT,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("workspace %s: git could not list files (%s); walking the tree", root, exc)
        return None
    # Several entries per path during a merge conflict (one per stage).
    names = {os.fsdecode(raw) for raw in listed.stdout.split(b"\0") if raw}
    return sorted(names)


def _walk(root: Path) -> Iterator[str]:
    """Paths under ``root`` not ignored by any ``.gitignore`` on their way, in sorted order."""
    specs: list[tuple[str, pathspec.GitIgnoreSpec]] = []

    def ignored(rel: str) -> bool:
        # The deepest .gitignore with a matching pattern decides; its last match wins.
        # Every spec on the stack belongs to an ancestor directory of ``rel``.
        for base, spec in reversed(specs):
            verdict = spec.check_file(rel[len(base) :]).include
            if verdict is not None:
                return verdict
        return False

    def visit(directory: Path, prefix: str) -> Iterator[str]:
        gitignore = directory / ".gitignore"
        pushed = False
        if gitignore.is_file() and not gitignore.is_symlink():
            try:
                lines = gitignore.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError as exc:
                log.warning("cannot read %s: %s", gitignore, exc)
            else:
                specs.append((prefix, pathspec.GitIgnoreSpec.from_lines(lines)))
                pushed = True
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list %s: %s", directory, exc)
            entries = []
        for entry in entries:
            rel = prefix + entry.name
            if entry.name.lower() == ".git":
                continue
            if entry.is_dir(follow_symlinks=False):
                if not ignored(rel + "/"):
                    yield from visit(Path(entry.path), rel + "/")
            elif not ignored(rel):
                yield rel
        if pushed:
            specs.pop()

    yield from visit(root, "")


def _file_meta(
    root: Path, rel: str, limits: TreeLimits, previous: FileMeta | None
) -> FileMeta | None:
    """The metadata of ``root/rel``, or None when it is not a file a guest may see."""
    try:
        parts = check_rel_path(rel)
    except TreeError as exc:
        log.debug("not listing %s", exc)
        return None
    path = root.joinpath(*parts)
    try:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            if not _inside(path, root):
                log.debug("not listing %s: a symlink leading outside the workspace", rel)
                return None
            st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            return None
        too_big = st.st_size > limits.max_file_bytes
        if previous is not None and (previous.size, previous.mtime_ns) == (
            st.st_size,
            st.st_mtime_ns,
        ):
            binary = previous.binary
        else:
            with path.open("rb") as f:
                head = f.read(SNIFF_BYTES)
            binary = looks_binary(head, complete=st.st_size <= SNIFF_BYTES)
    except OSError as exc:
        log.debug("not listing %s: %s", rel, exc)
        return None
    return FileMeta(size=st.st_size, binary=binary, too_big=too_big, mtime_ns=st.st_mtime_ns)


def read_shared_file(root: Path, rel: str, limits: TreeLimits) -> str:
    """The text of ``root/rel`` for a guest, or :class:`TreeError` saying why not.

    Refuses paths leaving ``root`` (also through symlinks), ``.git``, binary, too big and
    missing files. Callers serve only paths listed in their current tree, so ignored files
    stay private.
    """
    parts = check_rel_path(rel)
    real_root = root.resolve()
    try:
        real = real_root.joinpath(*parts).resolve(strict=True)
    except FileNotFoundError:
        raise TreeError(f"no such file in the workspace: {rel!r}") from None
    except (OSError, RuntimeError) as exc:
        raise TreeError(f"cannot open {rel!r}: {exc}") from None
    if not real.is_relative_to(real_root):
        raise TreeError(f"refusing {rel!r}: it leads outside the workspace")
    if any(p.lower() == ".git" for p in real.relative_to(real_root).parts):
        raise TreeError(f"refusing {rel!r}: it leads inside .git")
    try:
        # Checked before opening: opening a FIFO would block.
        st = real.stat()
        if not stat.S_ISREG(st.st_mode):
            raise TreeError(f"refusing {rel!r}: not a regular file")
        if st.st_size > limits.max_file_bytes:
            raise TreeError(
                f"refusing {rel!r}: {st.st_size} bytes, over the limit of {limits.max_file_bytes}"
            )
        with real.open("rb") as f:
            data = f.read(limits.max_file_bytes + 1)
    except OSError as exc:
        raise TreeError(f"cannot read {rel!r}: {exc}") from None
    if len(data) > limits.max_file_bytes:
        raise TreeError(f"refusing {rel!r}: it grew over the limit of {limits.max_file_bytes}")
    if looks_binary(data[:SNIFF_BYTES], complete=len(data) <= SNIFF_BYTES):
        raise TreeError(f"refusing {rel!r}: a binary file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TreeError(f"refusing {rel!r}: not UTF-8 text ({exc})") from None


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
