"""The shared project tree's vocabulary, for the host and the guest alike.

A tree entry (:class:`FileMeta`, stored as JSON in the session's ``tree``
map), the error for anything refused (:class:`TreeError`) and the check every
relative path from the other end goes through before it touches a disk
(:func:`check_rel_path`). The host side is :mod:`collab_ls.workspace_tree`,
the guest side :mod:`collab_ls.workspace_mirror`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["FileMeta", "TreeError", "check_rel_path"]

_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class TreeError(ValueError):
    """A path, a tree entry or a file request that is refused."""


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
