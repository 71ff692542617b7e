"""Shared Vim registers: yanks carried in the session's ``registers`` map.

The Neovim config reports each yank with ``$/collab/register``; collab-ls
writes it into the map (see :mod:`collab_ls.session`), and every other peer's
collab-ls passes a peer's entry on to its editor with the same notification.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

import pycrdt

from collab_ls.protocol import NOTIFY_REGISTER
from collab_ls.session import Session

SHARED = frozenset('"0123456789-abcdefghijklmnopqrstuvwxyz')
"""Registers worth sharing (not the clipboard, the black hole or read-only ones)."""


def parse_register(params: Any) -> tuple[str, list[str], str]:
    """``(register, contents, regtype)`` of a ``$/collab/register`` from the editor.

    Raises:
        ValueError: the params do not have that shape, or the register is not shared.
    """
    try:
        register, contents, regtype = params["register"], params["contents"], params["regtype"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"missing field {exc}") from exc
    if isinstance(contents, str):
        contents = [contents]
    if not isinstance(register, str) or register.lower() not in SHARED:
        raise ValueError(f"register {register!r} is not shared")
    if not isinstance(contents, list | tuple) or not all(isinstance(c, str) for c in contents):
        raise ValueError("contents must be a list of strings")
    if not isinstance(regtype, str):
        raise ValueError("regtype must be a string")
    return register.lower(), list(contents), regtype


class SharedRegisters:
    """This editor's side of the session's shared registers."""

    def __init__(
        self,
        session: Session,
        *,
        name: str,
        notify: Callable[[str, Any], None],
        logger: logging.Logger,
    ) -> None:
        self._session = session
        self._client = session.doc.client_id
        self._name = name
        self._notify = notify
        self._log = logger
        self._sub: pycrdt.Subscription | None = None

    def start(self) -> None:
        """Pass peers' yanks on to the editor (those already in the session too)."""
        self._sub = self._session.registers.observe(self._on_change)

    def stop(self) -> None:
        if self._sub is not None:
            self._session.registers.unobserve(self._sub)
            self._sub = None

    def yanked(self, params: Any) -> None:
        """``$/collab/register`` from the editor: share the yank."""
        try:
            register, contents, regtype = parse_register(params)
        except ValueError as exc:
            self._log.debug("register not shared: %s", exc)
            return
        self._session.registers[register] = {
            "contents": contents,
            "regtype": regtype,
            "client": self._client,
            "name": self._name,
        }

    def _on_change(self, event: pycrdt.MapEvent) -> None:
        loop = asyncio.get_running_loop()
        for key in cast(Any, event).keys:  # missing from pycrdt's stubs
            value = self._session.registers.get(key)
            if not isinstance(value, dict) or value.get("client") == self._client:
                continue
            contents = value.get("contents")
            if not isinstance(contents, list):
                continue
            params = {
                "register": key,
                "contents": [str(c) for c in contents],
                "regtype": str(value.get("regtype", "v")),
                "name": str(value.get("name", "someone")),
            }
            # Not from inside the transaction that is applying the update.
            loop.call_soon(self._notify, NOTIFY_REGISTER, params)
