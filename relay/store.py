"""Durable rooms: a SQLite store of each room's secrets and updates.

Layout (one file, WAL mode)::

    rooms(room TEXT PRIMARY KEY, rw_digest BLOB, ro_digest BLOB)
    updates(id INTEGER PRIMARY KEY, room TEXT, data BLOB)   -- in arrival order

Every accepted update is appended before the relay forwards it or applies
it to the room document, so whatever any peer has seen of a room is on disk.
Appends are group-committed: one thread owns the connection, and every
append waiting while a commit runs goes into the next one, so the event loop
never blocks on the disk and a busy relay pays one fsync per batch, not per
update. ``synchronous=FULL`` (the default) survives power loss;
``NORMAL`` survives a crash of the process (``kill -9``) but not of the
machine.

Compaction merges a room's rows into one (``pycrdt.merge_updates``) in the
same thread, between commits, once a room has ``compact_every`` rows: the
row count of a room stays below ``compact_every + 1``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar, TypeVarTuple

import pycrdt

from relay.service import Service

__all__ = ["DEFAULT_COMPACT_EVERY", "SqliteStore", "StoreError", "StoredRoom"]

DEFAULT_COMPACT_EVERY = 500

_T = TypeVar("_T")
_A = TypeVarTuple("_A")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rooms (
    room TEXT PRIMARY KEY,
    rw_digest BLOB NOT NULL,
    ro_digest BLOB
);
CREATE TABLE IF NOT EXISTS updates (
    id INTEGER PRIMARY KEY,
    room TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS updates_room ON updates (room, id);
"""


class StoreError(Exception):
    """The store could not be opened or written."""


@dataclass(frozen=True, slots=True)
class StoredRoom:
    """A room as read back from the store.

    ``position`` is where a shared store (:class:`relay.redis_store.RedisStore`)
    stands in the room's log after these updates; ``None`` for SQLite.
    """

    room_id: str
    rw_digest: bytes
    ro_digest: bytes | None
    updates: tuple[bytes, ...]
    position: str | None = None


@dataclass(slots=True)
class _Append:
    room_id: str
    data: bytes
    future: asyncio.Future[None] = field(repr=False)


class SqliteStore(Service):
    """A SQLite store, as an async context manager; every method is a coroutine.

    Example::

        async with SqliteStore(path) as store:
            await store.append(room_id, update)
    """

    def __init__(
        self,
        path: Path | str,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        compact_every: int = DEFAULT_COMPACT_EVERY,
        on_commit: Callable[[float, int], None] | None = None,
        on_compact: Callable[[str], None] | None = None,
    ) -> None:
        """Configure a store; nothing is opened until :meth:`start`.

        Args:
            path: The database file (created with its directory if missing).
            synchronous: SQLite's ``synchronous`` setting (see the module doc).
            compact_every: Rows per room that trigger a compaction (at least 2).
            on_commit: Called on the event loop after each commit with its
                duration in seconds and the number of updates it wrote.
            on_compact: Called on the event loop after a room was compacted.
        """
        if compact_every < 2:
            raise ValueError("compact_every must be at least 2")
        self.path = Path(path)
        self._synchronous = synchronous
        self._compact_every = compact_every
        self._on_commit = on_commit
        self._on_compact = on_compact
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        self._pending: list[_Append] = []
        self._flusher: asyncio.Task[None] | None = None
        self._rows: dict[str, int] = {}
        self._was_started = False

    def set_callbacks(
        self,
        *,
        on_commit: Callable[[float, int], None] | None = None,
        on_compact: Callable[[str], None] | None = None,
    ) -> None:
        """Replace the commit and compaction callbacks (see :meth:`__init__`)."""
        self._on_commit = on_commit
        self._on_compact = on_compact

    @property
    def started(self) -> bool:
        """Whether the store is open."""
        return self._executor is not None

    async def start(self) -> None:
        """Open (and create) the database.

        Raises:
            StoreError: If it cannot be opened, or the store was started before.
        """
        if self._was_started:
            raise StoreError("store already started (a SqliteStore runs once)")
        self._was_started = True
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "collab-relay-store")
        try:
            await self._call(self._open)
        except StoreError as exc:
            self._executor.shutdown()
            self._executor = None
            raise StoreError(f"cannot open store: {exc}") from exc

    async def stop(self) -> None:
        """Write what is pending and close. Idempotent."""
        if self._executor is None:
            return
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        await self._call(self._close)
        self._executor.shutdown()
        self._executor = None

    async def load_room(self, room_id: str) -> StoredRoom | None:
        """Read a room's secrets and updates, ``None`` if the store has no such room."""
        return await self._call(self._load, room_id)

    async def save_room(self, room_id: str, rw_digest: bytes, ro_digest: bytes | None) -> None:
        """Create a room or replace its secrets' digests."""
        await self._call(self._save, room_id, rw_digest, ro_digest)

    async def append(self, room_id: str, update: bytes) -> None:
        """Append an update durably; returns once it is committed.

        Raises:
            StoreError: If the commit failed.
        """
        await self.append_nowait(room_id, update)

    def append_nowait(self, room_id: str, update: bytes) -> asyncio.Future[None]:
        """Queue an update for the next commit, without waiting.

        Appends are committed in the order they were queued.

        Returns:
            A future done once the update is committed (or failed with
            :class:`StoreError`).

        Raises:
            StoreError: If the store is not started.
        """
        if self._executor is None:
            raise StoreError("store not started")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Append(room_id, update, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="relay-store-flush")
        return future

    async def row_count(self, room_id: str) -> int:
        """The number of update rows a room has (for tests and diagnostics)."""
        return await self._call(self._count, room_id)

    # Event loop side

    async def _call(self, fn: Callable[[*_A], _T], *args: *_A) -> _T:
        if self._executor is None:
            raise StoreError("store not started")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            started = time.perf_counter()
            try:
                to_compact = await self._call(self._write, [(a.room_id, a.data) for a in batch])
            except StoreError as exc:
                error = StoreError(f"store write failed: {exc}")
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            if self._on_commit is not None:
                self._on_commit(time.perf_counter() - started, len(batch))
            for item in batch:
                if not item.future.done():
                    item.future.set_result(None)
            for room_id in to_compact:
                try:
                    await self._call(self._compact, room_id)
                except (StoreError, ValueError):
                    continue  # the rows stay; the next append retries
                if self._on_compact is not None:
                    self._on_compact(room_id)

    # Store thread side

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._synchronous}")
        db.executescript(_SCHEMA)
        self._db = db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("store not open")
        return self._db

    def _load(self, room_id: str) -> StoredRoom | None:
        db = self._conn()
        row = db.execute(
            "SELECT rw_digest, ro_digest FROM rooms WHERE room = ?", (room_id,)
        ).fetchone()
        if row is None:
            return None
        updates = tuple(
            bytes(r[0])
            for r in db.execute("SELECT data FROM updates WHERE room = ? ORDER BY id", (room_id,))
        )
        self._rows[room_id] = len(updates)
        return StoredRoom(
            room_id, bytes(row[0]), None if row[1] is None else bytes(row[1]), updates
        )

    def _save(self, room_id: str, rw_digest: bytes, ro_digest: bytes | None) -> None:
        self._conn().execute(
            "INSERT INTO rooms (room, rw_digest, ro_digest) VALUES (?, ?, ?) "
            "ON CONFLICT (room) DO UPDATE SET rw_digest = excluded.rw_digest, "
            "ro_digest = excluded.ro_digest",
            (room_id, rw_digest, ro_digest),
        )

    def _write(self, batch: list[tuple[str, bytes]]) -> list[str]:
        db = self._conn()
        db.execute("BEGIN")
        try:
            db.executemany("INSERT INTO updates (room, data) VALUES (?, ?)", batch)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        full: list[str] = []
        for room_id, _ in batch:
            count = self._rows.get(room_id)
            if count is None:
                count = self._count(room_id) - 1
            self._rows[room_id] = count + 1
            if count + 1 >= self._compact_every and room_id not in full:
                full.append(room_id)
        return full

    def _count(self, room_id: str) -> int:
        row = self._conn().execute("SELECT COUNT(*) FROM updates WHERE room = ?", (room_id,))
        return int(row.fetchone()[0])

    def _compact(self, room_id: str) -> None:
        db = self._conn()
        rows = db.execute(
            "SELECT id, data FROM updates WHERE room = ? ORDER BY id", (room_id,)
        ).fetchall()
        if len(rows) < 2:
            return
        merged = pycrdt.merge_updates(*(bytes(r[1]) for r in rows))
        last = int(rows[-1][0])
        db.execute("BEGIN")
        try:
            db.execute("DELETE FROM updates WHERE room = ? AND id < ?", (room_id, last))
            db.execute("UPDATE updates SET data = ? WHERE id = ?", (merged, last))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._rows[room_id] = 1
