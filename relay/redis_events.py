"""What relay nodes sharing one Redis tell each other over pub/sub.

Awareness goes through pub/sub only (it is ephemeral): a node publishes what
its own peers announce, and when it starts following a room it asks the
other nodes to republish their peers' states. RPC messages (see
:mod:`relay.routing`) go the same way, fire and forget: a node publishes the
message as its peers will receive it (``from`` and ``flags`` stamped by the
sender's node) with the awareness client id it is addressed to. A node that
changes a room's secrets says so on the room's channel, and the others
reload them.

:class:`RoomChannels` is the pub/sub half of a
:class:`~relay.redis_store.RedisStore`: it subscribes to the channels of the
rooms the store follows and hands what other nodes publish to the
:class:`RoomFeed`. The channel and message formats are in
:mod:`relay.redis_keys`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Container
from typing import Any, Protocol, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from relay.redis_keys import (
    AWARENESS,
    QUERY,
    RPC,
    SECRETS,
    RedisKeys,
    encode_event,
    encode_rpc_event,
    parse_event,
    parse_rpc_event,
    parse_secrets,
)
from relay.store import StoreError

__all__ = ["RoomChannels", "RoomFeed"]

#: Seconds between retries when Redis is unreachable.
RETRY = 0.5

# The records keep the logger name they always had.
_log = logging.getLogger("relay.redis_store")


class RoomFeed(Protocol):
    """What a :class:`~relay.redis_store.RedisStore` tells the relay about rooms it follows."""

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


class RoomChannels:
    """This node's side of the rooms' pub/sub channels.

    It publishes only while attached (between :meth:`attach` and
    :meth:`close`); its background tasks belong to the store that ``spawn``
    gives them to.
    """

    def __init__(
        self,
        keys: RedisKeys,
        node: bytes,
        *,
        followed: Container[str],
        spawn: Callable[[Any], asyncio.Task[Any]],
    ) -> None:
        """Set up the channels; nothing is subscribed until :meth:`attach`.

        Args:
            keys: The store's key names.
            node: This node's id.
            followed: The rooms the store follows (messages for others are dropped).
            spawn: Runs a coroutine as one of the store's tasks.
        """
        self._keys = keys
        self._node = node
        self._followed = followed
        self._spawn = spawn
        self.feed: RoomFeed | None = None
        self._redis: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._rpc_pending: list[tuple[str, bytes]] = []
        self._rpc_flusher: asyncio.Task[Any] | None = None
        self._subscribed: dict[str, asyncio.Event] = {}

    def attach(self, client: aioredis.Redis, pubsub: Any) -> None:
        """Start publishing through ``client`` and listening on ``pubsub``."""
        self._redis, self._pubsub = client, pubsub
        self._spawn(self._listen())

    async def close(self) -> None:
        """Stop publishing and close the pub/sub connection (the store cancelled the listener)."""
        self._redis = None
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()

    def follow(self, room_id: str) -> None:
        """Subscribe to a room's channel, then ask the other nodes for their awareness."""
        if self._redis is not None:
            self._spawn(self._subscribe(room_id))

    def unfollow(self, room_id: str) -> None:
        """Unsubscribe from a room's channel."""
        self._subscribed.pop(room_id, None)
        if self._pubsub is not None and self._redis is not None:
            self._spawn(self._pubsub.unsubscribe(self._keys.room(room_id, "events")))

    def publish_awareness(self, room_id: str, message: bytes) -> None:
        """Send an awareness message of this node's peers to the other nodes (fire and forget)."""
        if self._redis is not None:
            self._spawn(self._publish(room_id, encode_event(AWARENESS, self._node, message)))

    def publish_rpc(self, room_id: str, to: int, message: bytes) -> None:
        """Send an RPC message of this node's peer to the other nodes (fire and forget).

        Args:
            room_id: The room.
            to: The recipient's awareness client id, 0 for every peer.
            message: The message as the recipients receive it.
        """
        if self._redis is None:
            return
        # One task publishes them, in one pipeline per batch: in order (a
        # request and its cancellation must not cross).
        self._rpc_pending.append((room_id, encode_rpc_event(self._node, to, message)))
        if self._rpc_flusher is None or self._rpc_flusher.done():
            self._rpc_flusher = self._spawn(self._flush_rpc())

    async def wait_following(self, room_id: str, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until the room's channel is subscribed (for tests)."""
        event = self._subscribed.get(room_id)
        if event is not None:
            async with asyncio.timeout(timeout):
                await event.wait()

    async def _subscribe(self, room_id: str) -> None:
        event = self._subscribed.setdefault(room_id, asyncio.Event())
        channel = self._keys.room(room_id, "events")
        await self._pubsub.subscribe(channel)
        # The listener sets the event once Redis confirmed the subscription:
        # only then can the other nodes' answers to our query reach us.
        async with asyncio.timeout(10):
            await event.wait()
        await self._publish(room_id, encode_event(QUERY, self._node))

    async def _publish(self, room_id: str, payload: bytes) -> None:
        try:
            await self._client().publish(self._keys.room(room_id, "events"), payload)
        except (RedisError, StoreError) as exc:
            _log.warning("room %s: publishing to Redis failed: %s", room_id, exc)

    async def _flush_rpc(self) -> None:
        while self._rpc_pending:
            batch, self._rpc_pending = self._rpc_pending, []
            try:
                async with self._client().pipeline(transaction=False) as pipe:
                    for room_id, payload in batch:
                        pipe.publish(self._keys.room(room_id, "events"), payload)
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
                await asyncio.sleep(RETRY)
                continue
            if message is not None:
                self._on_pubsub(message)

    def _on_pubsub(self, message: dict[str, Any]) -> None:
        channel = message.get("channel")
        if not isinstance(channel, bytes) or not channel.endswith(b"}:events"):
            return
        room_id = self._keys.room_of(channel)
        if message.get("type") == "subscribe":
            event = self._subscribed.get(room_id)
            if event is not None:
                event.set()
            return
        data = message.get("data")
        feed = self.feed
        if message.get("type") != "message" or not isinstance(data, bytes) or feed is None:
            return
        if room_id not in self._followed:
            return
        kind, sender, payload = parse_event(data, len(self._node))
        if sender == self._node:
            return
        if kind == AWARENESS:
            feed.remote_awareness(room_id, payload)
        elif kind == QUERY:
            mine = feed.local_awareness(room_id)
            if mine is not None:
                self.publish_awareness(room_id, mine)
        elif kind == SECRETS:
            self._spawn(self._reload_secrets(room_id))
        elif kind == RPC and (rpc := parse_rpc_event(payload)) is not None:
            feed.remote_rpc(room_id, *rpc)

    async def _reload_secrets(self, room_id: str) -> None:
        value = cast("bytes | None", await self._client().get(self._keys.room(room_id, "secrets")))
        if value is not None and self.feed is not None:
            self.feed.secrets_changed(room_id, *parse_secrets(value))

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            raise StoreError("store not started")
        return self._redis
