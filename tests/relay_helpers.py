"""Helpers shared by the relay and relay-link tests: rooms, the files map, bounded waits."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

import pycrdt

from collab_ls.relay_link import RelayLink

REMOTE = "remote"
"""The origin the test links give the updates they receive."""


def link(doc: pycrdt.Doc[Any], url: str, **kwargs: Any) -> RelayLink:
    """A relay link with quick reconnects, for tests."""
    kwargs.setdefault("backoff_initial", 0.05)
    kwargs.setdefault("backoff_max", 0.2)
    return RelayLink(doc, url, origin=REMOTE, **kwargs)


def new_room() -> tuple[str, str]:
    return secrets.token_hex(16), secrets.token_urlsafe(16)


def files(doc: pycrdt.Doc[Any]) -> pycrdt.Map[Any]:
    return doc.get("files", type=pycrdt.Map)


def text(doc: pycrdt.Doc[Any], path: str) -> str | None:
    value = files(doc).get(path)
    return None if value is None else str(value)


def append(doc: pycrdt.Doc[Any], path: str, s: str) -> None:
    value = files(doc)[path]
    assert isinstance(value, pycrdt.Text)
    value += s


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)
