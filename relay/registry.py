"""The rooms a relay holds: their lifecycle, their persistence and the host's operations.

Rooms live in memory, by id. With a store (SQLite, or Redis shared by
several relay nodes) a new room's secrets are saved when it is created, a
room not in memory is loaded from the store on demand (one load per room at
a time, however many connections ask), every update a room applies directly
is appended to the store, and a room without peers is evicted from memory
after ``idle_timeout`` seconds, to be loaded again when someone comes back.
A room registered up front by the host (:meth:`RoomRegistry.create`) is
pinned: it stays in memory for the life of the relay.

The host's operations on a room are here too: rotating a secret (revoking a
link: its holders are disconnected, 4403), removing a peer, and describing
the connected peers for the admin endpoint (:mod:`relay.http`). With Redis,
another node may create the same room first or rotate its secrets:
:meth:`RoomRegistry.secrets_changed` applies what it decided.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

from relay.links import MIN_SECRET_CHARS, Access, new_secret
from relay.metrics import RelayMetrics
from relay.peer import Peer
from relay.protocol import CloseCode
from relay.redis_store import RedisStore
from relay.room import Room
from relay.store import SqliteStore

__all__ = ["RelayError", "RoomRegistry"]

# The relay's records keep the logger name they always had.
_log = logging.getLogger("relay.server")


class RelayError(Exception):
    """Misuse of a :class:`~relay.server.Relay`.

    Started twice, not started, a room conflict, no such room.
    """


class RoomRegistry:
    """The rooms of one relay, in memory and (with a store) persisted."""

    def __init__(
        self,
        store: SqliteStore | RedisStore | None,
        metrics: RelayMetrics,
        *,
        idle_timeout: float,
    ) -> None:
        """Hold no room yet.

        Args:
            store: Where rooms are saved and loaded from; ``None`` for memory only.
            metrics: The relay's metrics (rooms loaded and evicted, store writes).
            idle_timeout: Seconds after which a room without peers is evicted
                (only with a store, see :meth:`start_sweeping`).
        """
        self.store = store
        self.metrics = metrics
        self._idle_timeout = idle_timeout
        #: The rooms held in memory, by id.
        self.rooms: dict[str, Room] = {}
        self._pinned: set[str] = set()
        self._loading: dict[str, asyncio.Future[Room | None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        if store is not None:
            self._store_callbacks(store)

    # The host's operations

    def create(self, room: str, secret: str, *, read_only_secret: str | None = None) -> Room:
        """Register a room up front, pinned; see :meth:`~relay.server.Relay.create_room`."""
        existing = self.rooms.get(room)
        if existing is not None:
            if not existing.secret_matches(secret):
                raise RelayError(f"room {room} already exists with another secret")
            if read_only_secret is not None and existing.access(read_only_secret) is None:
                self._revoke(existing, Access.READ_ONLY, read_only_secret)
            self._pinned.add(room)
            return existing
        for value in (secret, read_only_secret):
            if value is not None and len(value) < MIN_SECRET_CHARS:
                raise RelayError(f"secrets must have at least {MIN_SECRET_CHARS} characters")
        created = self.add(Room(room, secret, read_only_secret))
        self._pinned.add(room)
        self.persist_secrets(created)
        return created

    async def rotate_secret(self, room: str, access: Access, secret: str | None) -> str:
        """Replace one of a room's secrets; see :meth:`~relay.server.Relay.rotate_secret`."""
        target = await self.room_for(room)
        if target is None:
            raise RelayError(f"no room {room}")
        secret = secret or new_secret()
        if len(secret) < MIN_SECRET_CHARS:
            raise RelayError(f"secrets must have at least {MIN_SECRET_CHARS} characters")
        self._revoke(target, access, secret)
        if self.store is not None:
            await self.store.save_room(target.room_id, target.rw_digest, target.ro_digest)
        return secret

    def remove_peer(self, room: str, *, client_id: int | None, peer_id: str | None) -> int:
        """Disconnect a peer (4403); see :meth:`~relay.server.Relay.remove_peer`."""
        target = self.rooms.get(room)
        if target is None:
            return 0
        removed = 0
        for handle in target.peers:
            if not isinstance(handle, Peer):
                continue
            if handle.peer_id == peer_id or (
                client_id is not None and client_id in target.awareness_clients(handle)
            ):
                handle.kick(CloseCode.FORBIDDEN, "removed from the session by the host", "removed")
                removed += 1
        return removed

    def info(self, room: str) -> dict[str, Any] | None:
        """The connected peers of a room in memory, for the admin endpoint."""
        target = self.rooms.get(room)
        if target is None:
            return None
        peers = []
        for handle in target.peers:
            access = target.peer_access(handle)
            peers.append(
                {
                    "peer": handle.peer_id,
                    "access": None if access is None else access.value,
                    "clients": target.awareness_clients(handle),
                }
            )
        return {"room": room, "read_only_link": target.ro_digest is not None, "peers": peers}

    # Lifecycle and persistence

    def add(self, room: Room, position: str | None = None) -> Room:
        """Hold ``room`` in memory; with a store, its direct updates are appended to it.

        Args:
            room: The room.
            position: With Redis, the log position the room was loaded at:
                the room follows the shared log from there.
        """
        self.rooms[room.room_id] = room
        if self.store is not None:
            store = self.store
            room_id = room.room_id
            room.on_direct_update = lambda update: self.spawn(store.append(room_id, update))
            if isinstance(store, RedisStore):
                room.on_local_awareness = lambda raw: store.publish_awareness(room_id, raw)
                # No await since the room was added: nothing written after
                # ``position`` can be missed.
                store.follow(room_id, position)
        return room

    def persist_secrets(self, room: Room) -> None:
        """Save the room's secrets in the background, if the store is open."""
        if self.store is not None and self.store.started:
            self.spawn(self.store.save_room(room.room_id, room.rw_digest, room.ro_digest))

    async def room_for(self, room_id: str) -> Room | None:
        """The room in memory, or loaded from the store; ``None`` if neither has it."""
        room = self.rooms.get(room_id)
        if room is not None or self.store is None or not self.store.started:
            return room
        pending = self._loading.get(room_id)
        if pending is None:
            pending = asyncio.ensure_future(self._load_room(self.store, room_id))
            self._loading[room_id] = pending
            pending.add_done_callback(lambda _: self._loading.pop(room_id, None))
        await asyncio.shield(pending)
        return self.rooms.get(room_id)

    async def save_new_room(self, store: SqliteStore | RedisStore, room: Room) -> None:
        """Save a room its first connection created.

        Raises:
            StoreError: If the store failed.
        """
        if not isinstance(store, RedisStore):
            await store.save_room(room.room_id, room.rw_digest, room.ro_digest)
            return
        # Another node may have created the room meanwhile: its secrets win
        # (the room's document is still synced from the shared log).
        rw, ro = await store.create_room(room.room_id, room.rw_digest, room.ro_digest)
        if (rw, ro) != (room.rw_digest, room.ro_digest):
            _log.info("room %s was created on another node first", room.room_id)
            self.secrets_changed(room, rw, ro)

    def secrets_changed(self, room: Room, rw: bytes, ro: bytes | None) -> None:
        """Adopt secret digests decided elsewhere; holders of a replaced link are kicked."""
        for access, digest, old in (
            (Access.READ_WRITE, rw, room.rw_digest),
            (Access.READ_ONLY, ro, room.ro_digest),
        ):
            if digest == old:
                continue
            for handle in room.set_digest(access, digest):
                if isinstance(handle, Peer):
                    reason = f"the {access.value} link was revoked"
                    handle.kick(CloseCode.FORBIDDEN, reason, "revoked")

    def start_sweeping(self) -> None:
        """Evict idle rooms from now on (in the background, until :meth:`cancel_tasks`)."""
        self.spawn(self._sweep_idle_rooms())

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background, owned here; its failure is logged."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    async def cancel_tasks(self) -> None:
        """Cancel the background tasks (sweeping, store writes) and wait for them."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _revoke(self, room: Room, access: Access, secret: str | None) -> None:
        for handle in room.set_secret(access, secret):
            if isinstance(handle, Peer):
                handle.kick(CloseCode.FORBIDDEN, f"the {access.value} link was revoked", "revoked")

    async def _load_room(self, store: SqliteStore | RedisStore, room_id: str) -> Room | None:
        stored = await store.load_room(room_id)
        if stored is None or room_id in self.rooms:
            return self.rooms.get(room_id)
        room = Room.from_digests(room_id, stored.rw_digest, stored.ro_digest)
        room.load(stored.updates)
        self.metrics.rooms_loaded.inc()
        _log.info("room %s loaded from the store (%d rows)", room_id, len(stored.updates))
        return self.add(room, stored.position)

    async def _sweep_idle_rooms(self) -> None:
        period = max(0.05, min(self._idle_timeout / 2, 30.0))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for room_id, room in list(self.rooms.items()):
                if room_id in self._pinned or room.peers:
                    continue
                if now - room.last_active >= self._idle_timeout:
                    del self.rooms[room_id]
                    if isinstance(self.store, RedisStore):
                        self.store.unfollow(room_id)
                    self.metrics.rooms_evicted.inc()
                    _log.info("room %s evicted from memory (idle)", room_id)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("background task failed: %s", task.exception())

    def _store_callbacks(self, store: SqliteStore | RedisStore) -> None:
        metrics = self.metrics

        def on_commit(seconds: float, count: int) -> None:
            metrics.store_write_latency.observe(seconds)

        def on_compact(room_id: str) -> None:
            metrics.compactions.inc()

        store.set_callbacks(on_commit=on_commit, on_compact=on_compact)
