"""Following the room logs that other relay nodes write to Redis.

A node follows the rooms it holds in memory, with one reader task doing
``XREAD BLOCK`` over all their logs from the last id it applied, and hands
updates written by other nodes to its :class:`~relay.redis_events.RoomFeed`.
A node that loads a room reads snapshot and log in one transaction and
follows from there (:meth:`relay.redis_store.RedisStore.load_room`).

An ``XREAD BLOCK`` in progress does not include a room followed since, and
cancelling it can leave redis-py's connection hanging: an entry in this
node's wake stream (part of every ``XREAD``) ends it instead.

A compaction may trim log entries a node has not read yet. It always keeps
the log's newest entry, so the reader still gets a result for the room, sees
the snapshot's ``upto`` past its position, and applies the snapshot, which
holds everything trimmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from relay.redis_events import RETRY, RoomFeed
from relay.redis_keys import RedisKeys, stream_id_key
from relay.store import StoreError

__all__ = ["BLOCK_MS", "LogFollower"]

#: Log entries read per room per round.
_READ_COUNT = 1000
#: Milliseconds an idle XREAD blocks before it loops (it is restarted on new
#: rooms); the reader's socket timeout is a few seconds longer.
BLOCK_MS = 2000

# The records keep the logger name they always had.
_log = logging.getLogger("relay.redis_store")


class LogFollower:
    """The reader of a :class:`~relay.redis_store.RedisStore`: other nodes' updates, in order.

    Attributes:
        feed: Where updates of followed rooms go.
        positions: The last log id applied, per followed room.
        reader: The reader task, once started; the store cancels it on stop.
        wake_key: This node's wake stream.
    """

    def __init__(
        self,
        keys: RedisKeys,
        node_id: str,
        *,
        client: Callable[[], aioredis.Redis],
        spawn: Callable[[Any], asyncio.Task[Any]],
    ) -> None:
        """Set up a follower; nothing is read until :meth:`start`.

        Args:
            keys: The store's key names.
            node_id: This node's id (its own updates are not fed back).
            client: The store's connection (for waking the reader).
            spawn: Runs a coroutine as one of the store's tasks.
        """
        self._keys = keys
        self._node = node_id.encode()
        self._client = client
        self._spawn = spawn
        self.wake_key = keys.node(node_id, "wake")
        self.feed: RoomFeed | None = None
        self.positions: dict[str, bytes] = {}
        self.reader: asyncio.Task[None] | None = None
        self._redis: aioredis.Redis | None = None
        self._reading = asyncio.Event()
        self._reading.set()
        self._stopping = False
        self._wake_position = b"0-0"

    def start(self, reader: aioredis.Redis) -> None:
        """Start the reader task on ``reader``, its own connection (``XREAD BLOCK`` holds one)."""
        self._redis = reader
        self.reader = asyncio.create_task(self._read_loop(), name="relay-redis-reader")

    async def stop(self) -> None:
        """Have the reader leave by itself and wait for it (a while).

        A cancelled redis-py read can hang on its connection.
        """
        self._stopping = True
        self._reading.set()
        if self.reader is not None:
            await self.wake()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                async with asyncio.timeout(BLOCK_MS / 1000 + 1):
                    await self.reader

    async def close(self) -> None:
        """Close the reader's connection."""
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()

    def follow(self, room_id: str, position: str | None) -> bool:
        """Follow a room from ``position`` (``None``: the beginning); False if it already was."""
        if room_id in self.positions:
            return False
        self.positions[room_id] = (position or "0-0").encode()
        return True

    def unfollow(self, room_id: str) -> bool:
        """Stop following a room; False if it was not."""
        return self.positions.pop(room_id, None) is not None

    def pause(self) -> None:
        """Stop applying other nodes' updates until :meth:`resume`."""
        self._reading.clear()
        self._spawn(self.wake())

    def resume(self) -> None:
        """Apply other nodes' updates again, from where reading stopped."""
        self._reading.set()

    async def wake(self) -> None:
        """End the reader's ``XREAD BLOCK`` in progress (see the module doc)."""
        try:
            async with self._client().pipeline(transaction=False) as pipe:
                pipe.xadd(self.wake_key, {"w": b"1"}, maxlen=1, approximate=False)
                pipe.expire(self.wake_key, 86400)
                await pipe.execute()
        except (RedisError, StoreError) as exc:
            _log.warning("waking the Redis reader failed: %s", exc)

    async def _read_loop(self) -> None:
        client = self._redis
        assert client is not None
        while not self._stopping:
            await self._reading.wait()
            streams: dict[Any, Any] = {
                self._keys.room(r, "log"): p for r, p in self.positions.items()
            }
            streams[self.wake_key] = self._wake_position
            try:
                result = await client.xread(streams, count=_READ_COUNT, block=BLOCK_MS)
                if result and not self._stopping and self._reading.is_set():
                    await self._apply_round(client, result)
            except (RedisError, OSError) as exc:
                _log.warning("reading room logs from Redis failed (retrying): %s", exc)
                await asyncio.sleep(RETRY)

    async def _apply_round(self, client: aioredis.Redis, result: Any) -> None:
        rooms: list[tuple[str, list[tuple[bytes, dict[bytes, bytes]]]]] = []
        wake = self.wake_key.encode()
        for key, entries in result:
            if key == wake:
                self._wake_position = entries[-1][0]
                continue
            room_id = self._keys.room_of(key)
            if room_id in self.positions:
                rooms.append((room_id, entries))
        if not rooms:
            return
        # A compaction may have trimmed entries this node had not read yet:
        # then the snapshot (which holds them) is past our position.
        async with client.pipeline(transaction=False) as pipe:
            for room_id, _ in rooms:
                pipe.hmget(self._keys.room(room_id, "snapshot"), ["data", "upto"])
            snapshots = await pipe.execute()
        feed = self.feed
        for (room_id, entries), (data, upto) in zip(rooms, snapshots, strict=True):
            position = self.positions.get(room_id)
            if position is None:
                continue  # unfollowed meanwhile
            if upto is not None and stream_id_key(upto) > stream_id_key(position):
                if feed is not None and data is not None:
                    feed.remote_update(room_id, data)
                position = upto
            for entry_id, fields in entries:
                if stream_id_key(entry_id) <= stream_id_key(position):
                    continue
                position = entry_id
                if fields.get(b"n") != self._node and feed is not None:
                    feed.remote_update(room_id, fields[b"u"])
            self.positions[room_id] = position
