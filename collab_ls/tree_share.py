"""The host's file tree for guests who have no checkout (``--join URL --workspace DIR``).

The host scans its shared folder (``.gitignore`` respected, see
:mod:`collab_ls.workspace_tree`) when the session starts and every
:data:`SCAN_INTERVAL` seconds after, and writes the listing into the session's
``tree`` map: files it creates, deletes or renames appear at every guest.

A guest with ``--workspace DIR`` mirrors that listing into DIR: placeholders at
once, then every text file's content fetched from the host in the background
(with ``$/progress`` in the editor) so that opening, jumping and searching
work; a file a language result points into is fetched first (:meth:`ensure`).
The session's live text of a file wins over the copy on disk: files open in an
editor are never overwritten here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pycrdt

from collab_ls.peer_rpc import PeerRpc, RpcError
from collab_ls.session import Session
from collab_ls.workspace_tree import (
    FileMeta,
    Mirror,
    TreeError,
    TreeLimits,
    diff_trees,
    scan_tree,
)

log = logging.getLogger(__name__)

SCAN_INTERVAL = 2.0
"""Seconds between two scans of the host's folder."""
FETCH_TIMEOUT = 30.0
FETCHERS = 8
"""Files fetched from the host at once."""


class HostTree:
    """Publishes the host's folder listing in the session and keeps it current."""

    def __init__(
        self,
        session: Session,
        root: Path,
        *,
        limits: TreeLimits | None = None,
        interval: float = SCAN_INTERVAL,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
    ) -> None:
        self._session = session
        self._root = root
        self._limits = limits or TreeLimits()
        self._interval = interval
        self._log = logger
        self._files: dict[str, FileMeta] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.scan()
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        delay = self._interval
        while True:
            await asyncio.sleep(delay)
            started = time.perf_counter()
            try:
                await self.scan()
            except Exception:
                self._log.exception("scanning %s failed", self._root)
            # A big tree is scanned less often: scanning takes at most ~5% of the time.
            delay = max(self._interval, 20 * (time.perf_counter() - started))

    async def scan(self) -> None:
        """Scan once and publish what changed."""
        # Files unchanged since the last scan are not read again (binary sniffing).
        tree = await asyncio.to_thread(
            partial(scan_tree, self._root, self._limits, previous=self._files)
        )
        files = dict(tree.files)
        diff = diff_trees(self._files, files)
        if not (diff.added or diff.removed or diff.changed):
            return
        with self._session.doc.transaction():
            for key in diff.removed:
                if key in self._session.tree:
                    del self._session.tree[key]
            for key in [*diff.added, *diff.changed]:
                # A JSON string: a Y.Map value would turn integers into floats.
                self._session.tree[key] = json.dumps(files[key].to_json())
        self._files = files
        self._log.info(
            "workspace tree: %d files (+%d -%d ~%d)%s",
            len(files),
            len(diff.added),
            len(diff.removed),
            len(diff.changed),
            " (truncated)" if tree.truncated else "",
        )


Progress = Callable[[str, str, int | None], Awaitable[None]]
"""``progress(kind, message, percentage)``: kind is begin, report or end."""


class GuestTree:
    """Mirrors the host's tree into a folder, fetching contents from the host."""

    def __init__(
        self,
        session: Session,
        directory: Path,
        rpc: PeerRpc,
        *,
        host: Callable[[], int | None],
        is_open: Callable[[str], bool],
        progress: Progress | None = None,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
    ) -> None:
        self._session = session
        self.mirror = Mirror(directory)
        self._rpc = rpc
        self._host = host
        self._is_open = is_open
        self._progress = progress
        self._log = logger
        self._sub: pycrdt.Subscription | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._fetching: dict[str, asyncio.Future[None]] = {}

    async def start(self) -> None:
        self._sub = self._session.tree.observe(self._on_tree)
        self._apply()
        self._task = asyncio.ensure_future(self._fetch_loop())

    async def stop(self) -> None:
        if self._sub is not None:
            self._session.tree.unobserve(self._sub)
            self._sub = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    def _on_tree(self, _event: Any) -> None:
        asyncio.get_running_loop().call_soon(self._apply)

    def _apply(self) -> None:
        tree: dict[str, FileMeta] = {}
        for key, raw in self._session.tree.items():
            try:
                tree[key] = FileMeta.from_json(json.loads(raw) if isinstance(raw, str) else raw)
            except (TreeError, ValueError) as exc:
                self._log.warning("skipping %r from the host's tree: %s", key, exc)
        try:
            self.mirror.apply(tree)
        except (TreeError, OSError) as exc:
            self._log.error("mirroring the host's tree failed: %s", exc)
        self._wake.set()

    async def ensure(self, key: str) -> None:
        """Make sure ``key`` has its content on disk (a result points into it)."""
        if not self.mirror.is_placeholder(key) or self._is_open(key):
            return
        await self._fetch(key)

    async def _fetch(self, key: str) -> None:
        running = self._fetching.get(key)
        if running is not None:
            await asyncio.shield(running)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._fetching[key] = future
        try:
            host = self._host()
            if host is None:
                raise RpcError(0, "no host in the session")
            asked = self.mirror.meta(key)  # if the host's file changes meanwhile: fetch again
            answer = await self._rpc.request(host, "readFile", {"path": key}, timeout=FETCH_TIMEOUT)
            text = answer.get("text") if isinstance(answer, dict) else None
            if not isinstance(text, str):
                raise RpcError(0, f"no text for {key}")
            if not self._is_open(key):  # the session's live text wins
                self.mirror.write(key, text, expected=asked)
            future.set_result(None)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved
            raise
        finally:
            self._fetching.pop(key, None)

    async def _fetch_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            todo = [k for k in self.mirror.needs_fetch() if not self._is_open(k)]
            if todo:
                await self._fetch_all(todo)

    async def _fetch_all(self, todo: list[str]) -> None:
        """Fetch ``todo`` with a few requests in flight (they hide the relay's round trips)."""
        await self._report("begin", f"fetching {len(todo)} files from the host", 0)
        pending = iter(todo)
        done = 0

        async def worker() -> None:
            nonlocal done
            for key in pending:  # one shared iterator: each key is taken by one worker
                try:
                    if self.mirror.is_placeholder(key) and not self._is_open(key):
                        await self._fetch(key)
                except (RpcError, TreeError, OSError) as exc:
                    self._log.warning("could not fetch %s: %s", key, exc)
                done += 1
                if done % 20 == 0 or done == len(todo):
                    percentage = 100 * done // len(todo)
                    await self._report("report", f"{done}/{len(todo)} files", percentage)

        await asyncio.gather(*(worker() for _ in range(min(FETCHERS, len(todo)))))
        await self._report("end", f"{done} files from the host", None)

    async def _report(self, kind: str, message: str, percentage: int | None) -> None:
        if self._progress is None:
            return
        try:
            await self._progress(kind, message, percentage)
        except Exception:
            self._log.debug("progress report failed", exc_info=True)
