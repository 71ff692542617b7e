"""Rooms shared by several relay nodes through one Redis server (``collab-relay --redis``).

Every node is equal; Redis is the only thing they share, and the only
coordination. Each room has its secrets' digests, a log (a stream of
updates), a snapshot and a pub/sub channel; :mod:`relay.redis_keys` names
them and encodes their values.

Durability: an update is appended to the room's log (``XADD``) before the node
forwards it to anyone or applies it to its room document, exactly like the
SQLite store, so a node killed with ``kill -9`` loses nothing it acknowledged:
it is in Redis. (Surviving a crash of Redis itself is Redis' persistence:
run it with ``appendonly yes`` and ``appendfsync always`` or ``everysec``.)
Appends waiting while a pipeline runs go into the next one (group commit).

Following: a node follows the rooms it holds in memory, reading their logs
for the updates other nodes wrote (:mod:`relay.redis_follow`). A node that
loads a room reads snapshot and log in one transaction and follows from there.

Compaction: once a room's log has ``compact_every`` entries, the node that
noticed merges snapshot and log (``pycrdt.merge_updates``) and, in one
``MULTI`` guarded by ``WATCH`` on the snapshot (two nodes compacting at once:
one wins, the other gives up), writes the snapshot and trims the log up to
(not including) its last merged entry. The log therefore always keeps its
newest entry, so a reader that fell behind a compaction still gets a result
for the room, sees ``upto`` past its position, and applies the snapshot,
which holds everything trimmed.

Awareness, RPC messages and secret changes go between nodes over pub/sub
(:mod:`relay.redis_events`), on the channels of the rooms a node follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import pycrdt
import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from relay.redis_events import RoomChannels, RoomFeed
from relay.redis_follow import BLOCK_MS, LogFollower
from relay.redis_keys import (
    DEFAULT_PREFIX,
    SECRETS,
    RedisKeys,
    encode_event,
    encode_secrets,
    parse_secrets,
    stream_id_key,
)
from relay.service import Service
from relay.store import DEFAULT_COMPACT_EVERY, StoredRoom, StoreError

__all__ = ["DEFAULT_PREFIX", "RedisStore", "RoomFeed", "stream_id_key"]

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Append:
    room_id: str
    data: bytes
    future: asyncio.Future[None]


class RedisStore(Service):
    """Rooms in Redis, shared with every relay node on the same Redis; an async context manager.

    It has the methods of :class:`~relay.store.SqliteStore` that the relay
    uses, plus room following (:meth:`follow`, :meth:`unfollow`) and
    awareness (:meth:`publish_awareness`).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        compact_every: int = DEFAULT_COMPACT_EVERY,
        node_id: str | None = None,
    ) -> None:
        """Configure a store; nothing connects until :meth:`start`.

        Args:
            url: ``redis://[:password@]host:port/db`` (or ``rediss://``, ``unix://``).
            prefix: The prefix of every key and channel.
            compact_every: Log entries per room that trigger a compaction (at least 2).
            node_id: This node's id in the log (default: random).
        """
        if compact_every < 2:
            raise ValueError("compact_every must be at least 2")
        self.url = url
        self._keys = RedisKeys(prefix)
        self._compact_every = compact_every
        self.node_id = node_id or secrets.token_hex(8)
        self._node = self.node_id.encode()
        self._redis: aioredis.Redis | None = None
        self._on_commit: Callable[[float, int], None] | None = None
        self._on_compact: Callable[[str], None] | None = None
        self._pending: list[_Append] = []
        self._flusher: asyncio.Task[None] | None = None
        self._compacting: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._was_started = False
        self._follower = LogFollower(
            self._keys, self.node_id, client=self._client, spawn=self._spawn
        )
        self._channels = RoomChannels(
            self._keys, self._node, followed=self._follower.positions, spawn=self._spawn
        )

    @property
    def path(self) -> str:
        """Where the rooms are, for logs (the URL without its password)."""
        head, sep, tail = self.url.rpartition("@")
        if not sep:
            return self.url
        scheme = head.partition("://")[0]
        return f"{scheme}://***@{tail}"

    @property
    def started(self) -> bool:
        """Whether the store is connected (started and not stopped)."""
        return self._redis is not None

    def set_callbacks(
        self,
        *,
        on_commit: Callable[[float, int], None] | None = None,
        on_compact: Callable[[str], None] | None = None,
    ) -> None:
        """Set the commit and compaction callbacks (see :class:`~relay.store.SqliteStore`)."""
        self._on_commit = on_commit
        self._on_compact = on_compact

    def set_feed(self, feed: RoomFeed) -> None:
        """Where updates and awareness of followed rooms go."""
        self._follower.feed = feed
        self._channels.feed = feed

    async def start(self) -> None:
        """Connect to Redis and check it answers.

        Raises:
            StoreError: If started before, or Redis cannot be reached.
        """
        if self._was_started:
            raise StoreError("store already started (a RedisStore runs once)")
        self._was_started = True
        client: aioredis.Redis = aioredis.Redis.from_url(self.url)
        # XREAD BLOCK holds its connection: the reader has its own.
        reader: aioredis.Redis = aioredis.Redis.from_url(
            self.url, single_connection_client=True, socket_timeout=BLOCK_MS / 1000 + 5
        )
        try:
            await client.ping()
            pubsub = client.pubsub()
            # get_message needs a subscription before it can wait.
            await pubsub.subscribe(self._keys.node(self.node_id, "events"))
        except (RedisError, OSError) as exc:
            await client.aclose()
            await reader.aclose()
            raise StoreError(f"cannot reach Redis at {self.path}: {exc}") from exc
        self._redis = client
        self._channels.attach(client, pubsub)
        self._follower.start(reader)
        _log.info("node %s on Redis %s", self.node_id, self.path)

    async def stop(self) -> None:
        """Flush pending appends, stop following and disconnect. Idempotent."""
        client = self._redis
        if client is None:
            return
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        await self._follower.stop()
        with contextlib.suppress(Exception):
            await client.delete(self._follower.wake_key)
        reader = self._follower.reader
        tasks = [*self._tasks, *([reader] if reader else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._redis = None
        await self._channels.close()
        with contextlib.suppress(Exception):
            await client.aclose()
        await self._follower.close()

    # Rooms and secrets

    async def load_room(self, room_id: str) -> StoredRoom | None:
        """Read a room's secrets, snapshot and log in one transaction.

        Returns:
            The room, with ``position`` the last log id its updates include;
            ``None`` if Redis has no such room.
        """
        client = self._client()
        try:
            async with client.pipeline(transaction=True) as pipe:
                pipe.get(self._keys.room(room_id, "secrets"))
                pipe.hmget(self._keys.room(room_id, "snapshot"), ["data", "upto"])
                pipe.xrange(self._keys.room(room_id, "log"))
                value, (data, upto), entries = await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"Redis: {exc}") from exc
        if value is None:
            return None
        rw, ro = parse_secrets(value)
        updates: list[bytes] = [] if data is None else [data]
        position: bytes = upto or b"0-0"
        for entry_id, fields in entries:
            if stream_id_key(entry_id) > stream_id_key(position):
                updates.append(fields[b"u"])
                position = entry_id
        return StoredRoom(room_id, rw, ro, tuple(updates), position=position.decode())

    async def create_room(
        self, room_id: str, rw_digest: bytes, ro_digest: bytes | None
    ) -> tuple[bytes, bytes | None]:
        """Create a room unless another node did first.

        Returns:
            The secrets' digests the room has in Redis: the ones given, or
            those of the node that created it first.
        """
        try:
            key, value = self._keys.room(room_id, "secrets"), encode_secrets(rw_digest, ro_digest)
            # decode_responses is off: replies are bytes (redis-py types say str too).
            old = cast("bytes | None", await self._client().set(key, value, nx=True, get=True))
        except RedisError as exc:
            raise StoreError(f"Redis: {exc}") from exc
        return (rw_digest, ro_digest) if old is None else parse_secrets(old)

    async def save_room(self, room_id: str, rw_digest: bytes, ro_digest: bytes | None) -> None:
        """Create a room or replace its secrets' digests, and tell the other nodes."""
        try:
            async with self._client().pipeline(transaction=True) as pipe:
                pipe.set(self._keys.room(room_id, "secrets"), encode_secrets(rw_digest, ro_digest))
                pipe.publish(self._keys.room(room_id, "events"), encode_event(SECRETS, self._node))
                await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"Redis: {exc}") from exc

    async def row_count(self, room_id: str) -> int:
        """The number of entries in a room's log (for tests and diagnostics)."""
        try:
            return int(await self._client().xlen(self._keys.room(room_id, "log")))
        except RedisError as exc:
            raise StoreError(f"Redis: {exc}") from exc

    # Appends

    async def append(self, room_id: str, update: bytes) -> None:
        """Append an update to the room's log; returns once Redis has it."""
        await self.append_nowait(room_id, update)

    def append_nowait(self, room_id: str, update: bytes) -> asyncio.Future[None]:
        """Queue an update for the next pipeline, in order, without waiting.

        Returns:
            A future done once Redis has the update (or failed with :class:`StoreError`).

        Raises:
            StoreError: If the store is not started.
        """
        if self._redis is None:
            raise StoreError("store not started")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Append(room_id, update, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="relay-redis-flush")
        return future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            started = time.perf_counter()
            rooms = list(dict.fromkeys(a.room_id for a in batch))
            try:
                async with self._client().pipeline(transaction=False) as pipe:
                    for item in batch:
                        pipe.xadd(
                            self._keys.room(item.room_id, "log"), {"n": self._node, "u": item.data}
                        )
                    for room_id in rooms:
                        pipe.xlen(self._keys.room(room_id, "log"))
                    results = await pipe.execute()
            except (RedisError, StoreError) as exc:
                error = StoreError(f"Redis write failed: {exc}")
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            if self._on_commit is not None:
                self._on_commit(time.perf_counter() - started, len(batch))
            for item in batch:
                if not item.future.done():
                    item.future.set_result(None)
            for room_id, length in zip(rooms, results[len(batch) :], strict=True):
                if int(length) >= self._compact_every and room_id not in self._compacting:
                    self._compacting.add(room_id)
                    self._spawn(self._compact(room_id))

    async def compact(self, room_id: str) -> bool:
        """Merge a room's log into its snapshot now.

        Returns:
            Whether this call compacted (False: nothing to merge, or another
            node compacted at the same time).
        """
        client = self._client()
        snapshot_key, log_key = (
            self._keys.room(room_id, "snapshot"),
            self._keys.room(room_id, "log"),
        )
        try:
            async with client.pipeline(transaction=True) as pipe:
                await pipe.watch(snapshot_key)
                snapshot = cast(
                    "list[bytes | None]", await pipe.hmget(snapshot_key, ["data", "upto"])
                )
                data, upto = snapshot
                lower = b"-" if upto is None else b"(" + upto
                entries = cast(
                    "list[tuple[bytes, dict[bytes, bytes]]]",
                    await pipe.xrange(log_key, min=lower, max=b"+"),
                )
                if len(entries) < 2:
                    return False
                updates = ([] if data is None else [data]) + [e[1][b"u"] for e in entries]
                merged = await asyncio.to_thread(pycrdt.merge_updates, *updates)
                last = entries[-1][0]
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.hset(snapshot_key, mapping={"data": merged, "upto": last})
                # Keep the last entry: a reader behind the trim still gets a
                # result for this room and finds the snapshot (module doc).
                pipe.xtrim(log_key, minid=last, approximate=False)
                await pipe.execute()
        except WatchError:
            return False
        _log.info("room %s compacted (%d log entries merged)", room_id, len(entries))
        if self._on_compact is not None:
            self._on_compact(room_id)
        return True

    async def _compact(self, room_id: str) -> None:
        try:
            await self.compact(room_id)
        except (RedisError, ValueError) as exc:
            _log.warning("room %s: compaction failed (retried later): %s", room_id, exc)
        finally:
            self._compacting.discard(room_id)

    # Following rooms

    def follow(self, room_id: str, position: str | None) -> None:
        """Deliver the room's updates after ``position`` (a log id) to the feed.

        ``None`` follows from the beginning of the log (a room this node
        creates: another node may have created it and written meanwhile).
        Also starts receiving the room's awareness and asks the other nodes
        for theirs.
        """
        if not self._follower.follow(room_id, position):
            return
        if self._redis is not None:
            self._spawn(self._follower.wake())
        self._channels.follow(room_id)

    def unfollow(self, room_id: str) -> None:
        """Stop following a room (evicted from this node's memory)."""
        if self._follower.unfollow(room_id):
            self._channels.unfollow(room_id)

    def publish_awareness(self, room_id: str, message: bytes) -> None:
        """Send an awareness message of this node's peers to the other nodes (fire and forget)."""
        self._channels.publish_awareness(room_id, message)

    def publish_rpc(self, room_id: str, to: int, message: bytes) -> None:
        """Send an RPC message of this node's peer to the other nodes (fire and forget).

        Args:
            room_id: The room.
            to: The recipient's awareness client id, 0 for every peer.
            message: The message as the recipients receive it.
        """
        self._channels.publish_rpc(room_id, to, message)

    async def wait_following(self, room_id: str, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until the room's awareness channel is subscribed (for tests)."""
        await self._channels.wait_following(room_id, timeout)

    def pause_reading(self) -> None:
        """Stop applying other nodes' updates until :meth:`resume_reading` (for tests)."""
        self._follower.pause()

    def resume_reading(self) -> None:
        """Apply other nodes' updates again, from where reading stopped."""
        self._follower.resume()

    # Helpers

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            raise StoreError("store not started")
        return self._redis

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("Redis background task failed: %s", task.exception())
