"""Rooms shared by several relay nodes through one Redis server (``collab-relay --redis``).

Every node is equal; Redis is the only thing they share, and the only
coordination. Keys, per room (the ``{room}`` hash tag keeps a room's keys in
one Redis Cluster slot)::

    <prefix>:{<room>}:secrets    string: SHA-256 of the read-write secret (32 bytes),
                                 then that of the read-only secret if any (32 bytes)
    <prefix>:{<room>}:log        stream of updates: fields n (node id), u (the update)
    <prefix>:{<room>}:snapshot   hash: data (merged update), upto (last log id merged in)
    <prefix>:{<room>}:events     pub/sub channel: awareness, awareness queries, secret
                                 changes, RPC messages
    <prefix>:node:<id>:wake      stream (one entry) that wakes this node's reader

Durability: an update is appended to the room's log (``XADD``) before the node
forwards it to anyone or applies it to its room document, exactly like the
SQLite store, so a node killed with ``kill -9`` loses nothing it acknowledged:
it is in Redis. (Surviving a crash of Redis itself is Redis' persistence:
run it with ``appendonly yes`` and ``appendfsync always`` or ``everysec``.)
Appends waiting while a pipeline runs go into the next one (group commit).

Following: a node follows the rooms it holds in memory, with one reader task
doing ``XREAD BLOCK`` over all their logs from the last id it applied, and
hands updates written by other nodes to its :class:`RoomFeed`. A node that
loads a room reads snapshot and log in one transaction and follows from there.

Compaction: once a room's log has ``compact_every`` entries, the node that
noticed merges snapshot and log (``pycrdt.merge_updates``) and, in one
``MULTI`` guarded by ``WATCH`` on the snapshot (two nodes compacting at once:
one wins, the other gives up), writes the snapshot and trims the log up to
(not including) its last merged entry. The log therefore always keeps its
newest entry, so a reader that fell behind a compaction still gets a result
for the room, sees ``upto`` past its position, and applies the snapshot,
which holds everything trimmed.

Awareness goes through pub/sub only (it is ephemeral): a node publishes what
its own peers announce, and when it starts following a room it asks the
other nodes to republish their peers' states. RPC messages (see
:mod:`relay.routing`) go the same way, fire and forget: a node publishes the
message as its peers will receive it (``from`` and ``flags`` stamped by the
sender's node) with the awareness client id it is addressed to.

Pub/sub messages on a room's channel are one kind byte and the sending
node's id, then: ``A`` an awareness message (y-websocket framing); ``Q``
nothing (republish your awareness); ``S`` nothing (reload the secrets);
``R`` the recipient's client id (8 bytes, big-endian; 0 for everyone) and
the RPC message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import pycrdt
import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from relay.service import Service
from relay.store import DEFAULT_COMPACT_EVERY, StoredRoom, StoreError

__all__ = ["DEFAULT_PREFIX", "RedisStore", "RoomFeed", "stream_id_key"]

DEFAULT_PREFIX = "collab-relay"
#: Log entries read per room per round.
_READ_COUNT = 1000
#: Milliseconds an idle XREAD blocks before it loops (it is restarted on new
#: rooms); the reader's socket timeout is a few seconds longer.
_BLOCK_MS = 2000
#: Seconds between retries when Redis is unreachable.
_RETRY = 0.5
_DIGEST_BYTES = 32

# Pub/sub messages: one kind byte, the sender's node id, then the payload.
_AWARENESS = b"A"
_QUERY = b"Q"
_SECRETS = b"S"
_RPC = b"R"
_RPC_TO_BYTES = 8

_log = logging.getLogger(__name__)


class RoomFeed(Protocol):
    """What a :class:`RedisStore` tells the relay about rooms it follows."""

    def remote_update(self, room_id: str, update: bytes) -> None:
        """An update another node wrote (or a snapshot holding several)."""
        ...

    def remote_awareness(self, room_id: str, message: bytes) -> None:
        """An awareness message (y-websocket framing) from another node's peers."""
        ...

    def local_awareness(self, room_id: str) -> bytes | None:
        """The awareness message of this node's own peers in the room, if any."""
        ...

    def remote_rpc(self, room_id: str, to: int, message: bytes) -> None:
        """An RPC message (as delivered to clients) from another node's peer, for ``to``."""
        ...

    def secrets_changed(self, room_id: str, rw_digest: bytes, ro_digest: bytes | None) -> None:
        """Another node changed (rotated) the room's secrets."""
        ...


def stream_id_key(stream_id: bytes | str) -> tuple[int, int]:
    """A Redis stream id (``ms-seq``) as a sortable pair."""
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _secrets_value(rw_digest: bytes, ro_digest: bytes | None) -> bytes:
    return rw_digest + (ro_digest or b"")


def _parse_secrets(value: bytes) -> tuple[bytes, bytes | None]:
    if len(value) not in (_DIGEST_BYTES, 2 * _DIGEST_BYTES):
        raise StoreError(f"corrupt room secrets in Redis ({len(value)} bytes)")
    return value[:_DIGEST_BYTES], value[_DIGEST_BYTES:] or None


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
        self._prefix = prefix
        self._compact_every = compact_every
        self.node_id = node_id or secrets.token_hex(8)
        self._node = self.node_id.encode()
        self._redis: aioredis.Redis | None = None
        self._reader_redis: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._feed: RoomFeed | None = None
        self._on_commit: Callable[[float, int], None] | None = None
        self._on_compact: Callable[[str], None] | None = None
        self._pending: list[_Append] = []
        self._flusher: asyncio.Task[None] | None = None
        self._rpc_pending: list[tuple[str, bytes]] = []
        self._rpc_flusher: asyncio.Task[Any] | None = None
        self._positions: dict[str, bytes] = {}
        self._subscribed: dict[str, asyncio.Event] = {}
        self._compacting: set[str] = set()
        self._reader: asyncio.Task[None] | None = None
        self._reading = asyncio.Event()
        self._reading.set()
        self._stopping = False
        self._wake_position = b"0-0"
        self._tasks: set[asyncio.Task[Any]] = set()
        self._was_started = False

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
        self._feed = feed

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
            self.url, single_connection_client=True, socket_timeout=_BLOCK_MS / 1000 + 5
        )
        try:
            await client.ping()
            pubsub = client.pubsub()
            # get_message needs a subscription before it can wait.
            await pubsub.subscribe(self._key("node", self.node_id, "events"))
        except (RedisError, OSError) as exc:
            await client.aclose()
            await reader.aclose()
            raise StoreError(f"cannot reach Redis at {self.path}: {exc}") from exc
        self._redis, self._reader_redis, self._pubsub = client, reader, pubsub
        self._spawn(self._listen())
        self._reader = asyncio.create_task(self._read_loop(), name="relay-redis-reader")
        _log.info("node %s on Redis %s", self.node_id, self.path)

    async def stop(self) -> None:
        """Flush pending appends, stop following and disconnect. Idempotent."""
        client = self._redis
        if client is None:
            return
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        # A cancelled redis-py read can hang on its connection: have the
        # reader leave by itself.
        self._stopping = True
        self._reading.set()
        if self._reader is not None:
            await self._wake()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                async with asyncio.timeout(_BLOCK_MS / 1000 + 1):
                    await self._reader
        with contextlib.suppress(Exception):
            await client.delete(self._wake_key)
        tasks = [*self._tasks, *([self._reader] if self._reader else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._redis = None
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        with contextlib.suppress(Exception):
            await client.aclose()
        if self._reader_redis is not None:
            with contextlib.suppress(Exception):
                await self._reader_redis.aclose()

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
                pipe.get(self._key(room_id, "secrets"))
                pipe.hmget(self._key(room_id, "snapshot"), ["data", "upto"])
                pipe.xrange(self._key(room_id, "log"))
                value, (data, upto), entries = await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"Redis: {exc}") from exc
        if value is None:
            return None
        rw, ro = _parse_secrets(value)
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
            key, value = self._key(room_id, "secrets"), _secrets_value(rw_digest, ro_digest)
            # decode_responses is off: replies are bytes (redis-py types say str too).
            old = cast("bytes | None", await self._client().set(key, value, nx=True, get=True))
        except RedisError as exc:
            raise StoreError(f"Redis: {exc}") from exc
        return (rw_digest, ro_digest) if old is None else _parse_secrets(old)

    async def save_room(self, room_id: str, rw_digest: bytes, ro_digest: bytes | None) -> None:
        """Create a room or replace its secrets' digests, and tell the other nodes."""
        try:
            async with self._client().pipeline(transaction=True) as pipe:
                pipe.set(self._key(room_id, "secrets"), _secrets_value(rw_digest, ro_digest))
                pipe.publish(self._key(room_id, "events"), _SECRETS + self._node)
                await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"Redis: {exc}") from exc

    async def row_count(self, room_id: str) -> int:
        """The number of entries in a room's log (for tests and diagnostics)."""
        try:
            return int(await self._client().xlen(self._key(room_id, "log")))
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
                        pipe.xadd(self._key(item.room_id, "log"), {"n": self._node, "u": item.data})
                    for room_id in rooms:
                        pipe.xlen(self._key(room_id, "log"))
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
        snapshot_key, log_key = self._key(room_id, "snapshot"), self._key(room_id, "log")
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
        if room_id in self._positions:
            return
        self._positions[room_id] = (position or "0-0").encode()
        if self._redis is not None:
            self._spawn(self._wake())
            self._spawn(self._subscribe(room_id))

    def unfollow(self, room_id: str) -> None:
        """Stop following a room (evicted from this node's memory)."""
        if self._positions.pop(room_id, None) is None:
            return
        self._subscribed.pop(room_id, None)
        if self._pubsub is not None and self._redis is not None:
            self._spawn(self._pubsub.unsubscribe(self._key(room_id, "events")))

    def publish_awareness(self, room_id: str, message: bytes) -> None:
        """Send an awareness message of this node's peers to the other nodes (fire and forget)."""
        if self._redis is not None:
            self._spawn(self._publish(room_id, _AWARENESS + self._node + message))

    def publish_rpc(self, room_id: str, to: int, message: bytes) -> None:
        """Send an RPC message of this node's peer to the other nodes (fire and forget).

        Args:
            room_id: The room.
            to: The recipient's awareness client id, 0 for every peer.
            message: The message as the recipients receive it.
        """
        if self._redis is None:
            return
        recipient = to.to_bytes(_RPC_TO_BYTES, "big")
        # One task publishes them, in one pipeline per batch: in order (a
        # request and its cancellation must not cross).
        self._rpc_pending.append((room_id, _RPC + self._node + recipient + message))
        if self._rpc_flusher is None or self._rpc_flusher.done():
            self._rpc_flusher = self._spawn(self._flush_rpc())

    async def wait_following(self, room_id: str, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until the room's awareness channel is subscribed (for tests)."""
        event = self._subscribed.get(room_id)
        if event is not None:
            async with asyncio.timeout(timeout):
                await event.wait()

    def pause_reading(self) -> None:
        """Stop applying other nodes' updates until :meth:`resume_reading` (for tests)."""
        self._reading.clear()
        self._spawn(self._wake())

    def resume_reading(self) -> None:
        """Apply other nodes' updates again, from where reading stopped."""
        self._reading.set()

    @property
    def _wake_key(self) -> str:
        return self._key("node", self.node_id, "wake")

    async def _wake(self) -> None:
        # An XREAD BLOCK in progress does not include a room followed since:
        # an entry in this node's wake stream (part of every XREAD) ends it.
        # (Cancelling it instead can leave redis-py's connection hanging.)
        try:
            async with self._client().pipeline(transaction=False) as pipe:
                pipe.xadd(self._wake_key, {"w": b"1"}, maxlen=1, approximate=False)
                pipe.expire(self._wake_key, 86400)
                await pipe.execute()
        except (RedisError, StoreError) as exc:
            _log.warning("waking the Redis reader failed: %s", exc)

    async def _read_loop(self) -> None:
        client = self._reader_redis
        assert client is not None
        while not self._stopping:
            await self._reading.wait()
            streams: dict[Any, Any] = {self._key(r, "log"): p for r, p in self._positions.items()}
            streams[self._wake_key] = self._wake_position
            try:
                result = await client.xread(streams, count=_READ_COUNT, block=_BLOCK_MS)
                if result and not self._stopping and self._reading.is_set():
                    await self._apply_round(client, result)
            except (RedisError, OSError) as exc:
                _log.warning("reading room logs from Redis failed (retrying): %s", exc)
                await asyncio.sleep(_RETRY)

    async def _apply_round(self, client: aioredis.Redis, result: Any) -> None:
        rooms: list[tuple[str, list[tuple[bytes, dict[bytes, bytes]]]]] = []
        wake = self._wake_key.encode()
        for key, entries in result:
            if key == wake:
                self._wake_position = entries[-1][0]
                continue
            room_id = self._room_of(key)
            if room_id in self._positions:
                rooms.append((room_id, entries))
        if not rooms:
            return
        # A compaction may have trimmed entries this node had not read yet:
        # then the snapshot (which holds them) is past our position.
        async with client.pipeline(transaction=False) as pipe:
            for room_id, _ in rooms:
                pipe.hmget(self._key(room_id, "snapshot"), ["data", "upto"])
            snapshots = await pipe.execute()
        feed = self._feed
        for (room_id, entries), (data, upto) in zip(rooms, snapshots, strict=True):
            position = self._positions.get(room_id)
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
            self._positions[room_id] = position

    # Pub/sub

    async def _subscribe(self, room_id: str) -> None:
        event = self._subscribed.setdefault(room_id, asyncio.Event())
        channel = self._key(room_id, "events")
        await self._pubsub.subscribe(channel)
        # The listener sets the event once Redis confirmed the subscription:
        # only then can the other nodes' answers to our query reach us.
        async with asyncio.timeout(10):
            await event.wait()
        await self._publish(room_id, _QUERY + self._node)

    async def _publish(self, room_id: str, payload: bytes) -> None:
        try:
            await self._client().publish(self._key(room_id, "events"), payload)
        except (RedisError, StoreError) as exc:
            _log.warning("room %s: publishing to Redis failed: %s", room_id, exc)

    async def _flush_rpc(self) -> None:
        while self._rpc_pending:
            batch, self._rpc_pending = self._rpc_pending, []
            try:
                async with self._client().pipeline(transaction=False) as pipe:
                    for room_id, payload in batch:
                        pipe.publish(self._key(room_id, "events"), payload)
                    await pipe.execute()
            except (RedisError, StoreError) as exc:
                _log.warning("publishing %d RPC messages to Redis failed: %s", len(batch), exc)

    async def _listen(self) -> None:
        pubsub = self._pubsub
        while True:
            try:
                message = await pubsub.get_message(timeout=1.0)
            except (RedisError, OSError) as exc:
                _log.warning("Redis pub/sub failed (retrying): %s", exc)
                await asyncio.sleep(_RETRY)
                continue
            if message is not None:
                self._on_pubsub(message)

    def _on_pubsub(self, message: dict[str, Any]) -> None:
        channel = message.get("channel")
        if not isinstance(channel, bytes) or not channel.endswith(b"}:events"):
            return
        room_id = self._room_of(channel)
        if message.get("type") == "subscribe":
            event = self._subscribed.get(room_id)
            if event is not None:
                event.set()
            return
        data = message.get("data")
        feed = self._feed
        if message.get("type") != "message" or not isinstance(data, bytes) or feed is None:
            return
        if room_id not in self._positions:
            return
        kind, sender, payload = data[:1], data[1 : 1 + len(self._node)], data[1 + len(self._node) :]
        if sender == self._node:
            return
        if kind == _AWARENESS:
            feed.remote_awareness(room_id, payload)
        elif kind == _QUERY:
            mine = feed.local_awareness(room_id)
            if mine is not None:
                self.publish_awareness(room_id, mine)
        elif kind == _SECRETS:
            self._spawn(self._reload_secrets(room_id))
        elif kind == _RPC and len(payload) > _RPC_TO_BYTES:
            to = int.from_bytes(payload[:_RPC_TO_BYTES], "big")
            feed.remote_rpc(room_id, to, payload[_RPC_TO_BYTES:])

    async def _reload_secrets(self, room_id: str) -> None:
        value = cast("bytes | None", await self._client().get(self._key(room_id, "secrets")))
        if value is not None and self._feed is not None:
            self._feed.secrets_changed(room_id, *_parse_secrets(value))

    # Helpers

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            raise StoreError("store not started")
        return self._redis

    def _key(self, *parts: str) -> str:
        if len(parts) == 2:
            return f"{self._prefix}:{{{parts[0]}}}:{parts[1]}"
        return ":".join((self._prefix, *parts))

    def _room_of(self, key: bytes | str) -> str:
        text = key.decode() if isinstance(key, bytes) else key
        return text[len(self._prefix) + 2 : text.rindex("}")]

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("Redis background task failed: %s", task.exception())
