"""The host's project tree, offered to guests with no checkout (``--workspace``).

The host lists its project (:func:`scan_tree`, honouring ``.gitignore``) into the session's
``tree`` map as :class:`FileMeta` entries and serves file texts on request
(:func:`read_shared_file`). No networking here: every path that arrives from the other end is
untrusted and checked before it touches a disk.

The entries and the path check are :mod:`collab_ls.tree_entries`'s, the guest's side
(:class:`Mirror`) :mod:`collab_ls.workspace_mirror`'s; both are re-exported here.
"""

from __future__ import annotations

import codecs
import logging
import os
import stat
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pathspec

from collab_ls.tree_entries import FileMeta as FileMeta
from collab_ls.tree_entries import TreeError as TreeError
from collab_ls.tree_entries import check_rel_path as check_rel_path
from collab_ls.workspace_mirror import MANIFEST_FILE as MANIFEST_FILE
from collab_ls.workspace_mirror import SKIPPED_FILE as SKIPPED_FILE
from collab_ls.workspace_mirror import Mirror as Mirror
from collab_ls.workspace_mirror import MirrorUpdate as MirrorUpdate

log = logging.getLogger(__name__)

SNIFF_BYTES = 8192
"""How much of a file is read to tell text from binary."""
_GIT_TIMEOUT = 60.0


@dataclass(frozen=True, kw_only=True)
class TreeLimits:
    """How much of a project is offered to guests."""

    max_file_bytes: int = 2 * 1024 * 1024
    max_files: int = 20_000
    max_total_bytes: int = 200 * 1024 * 1024
    """Total size of the servable (text, not too big) files listed."""


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
