"""The host's files on disk: atomic writes of shared files no editor of the host has open."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

WRITE_DELAY = 0.2
"""Seconds a burst of edits is gathered before the file is rewritten."""


def file_path(root: Path, key: str) -> Path:
    """Path of session key ``key`` under ``root`` (keys never leave the root)."""
    parts = PurePosixPath(key).parts
    if not parts or any(p in ("..", "") for p in parts) or PurePosixPath(key).is_absolute():
        raise ValueError(f"refusing a path outside the workspace: {key!r}")
    return root.joinpath(*parts)


def read_text(path: Path) -> str | None:
    """A file's text exactly as stored (line breaks kept), or None if unreadable."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".collab-tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class DiskMirror:
    """Writes shared files to the host's disk, a short while after they change."""

    def __init__(self, root: Path, read: Callable[[str], str | None], logger: logging.Logger):
        self._root = root
        self._read = read
        self._log = logger
        self._dirty: set[str] = set()
        self._handle: asyncio.TimerHandle | None = None

    def touch(self, key: str) -> None:
        """``key`` changed in the session; write it soon."""
        self._dirty.add(key)
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(WRITE_DELAY, self.flush)

    def flush(self) -> None:
        """Write every changed file now."""
        self._handle = None
        dirty, self._dirty = self._dirty, set()
        for key in sorted(dirty):
            text = self._read(key)
            if text is None:
                continue
            try:
                path = file_path(self._root, key)
                write_atomic(path, text)
                self._log.info("wrote %s (%d bytes) from the session", path, len(text))
            except (OSError, ValueError) as exc:
                self._log.error("could not write %s: %s", key, exc)
