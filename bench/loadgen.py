"""The relay load generator: y-websocket clients sending real Yjs updates.

Every client is a plain websocket speaking the y-websocket protocol (sync
step 1/2, then sync updates). Its updates are prepared beforehand with
pycrdt: one-character inserts, each a real Yjs v1 update from the client's own
document, so every relay can apply them. A delivered update is recognised by
its first struct's ``(client id, clock)``, which survives the re-encoding the
Node and pycrdt-websocket relays do, so the same generator measures all three.

Latency is from just before ``send`` at the sender to the moment the receiving
client's read loop gets the message (one process, one monotonic clock).
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from dataclasses import dataclass, field
from typing import Any

import pycrdt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.common import summary_ms

SYNC_STEP1_EMPTY = b"\x00\x00\x01\x00"
SYNC_STEP2_EMPTY = b"\x00\x01\x02\x00\x00"

Key = tuple[int, int]


def _varuint(data: bytes, i: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _encode_varuint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def update_message(update: bytes) -> bytes:
    """A y-websocket sync Update message carrying ``update``."""
    return b"\x00\x02" + _encode_varuint(len(update)) + update


def update_key(message: bytes) -> Key | None:
    """``(client, clock)`` of the first struct of a sync Update message, else None."""
    if len(message) < 6 or message[0] != 0 or message[1] != 2:
        return None
    _, i = _varuint(message, 2)  # payload length
    n_clients, i = _varuint(message, i)
    if n_clients == 0:
        return None
    _, i = _varuint(message, i)  # structs of this client
    client, i = _varuint(message, i)
    clock, _ = _varuint(message, i)
    return client, clock


def make_updates(n_clients: int, per_client: int, seed: int = 1) -> list[list[tuple[Key, bytes]]]:
    """``per_client`` one-character insert messages for each of ``n_clients`` clients."""
    rng = random.Random(seed)
    out: list[list[tuple[Key, bytes]]] = []
    for _ in range(n_clients):
        doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc(client_id=rng.randrange(1, 2**31))
        text = pycrdt.Text()
        doc["t"] = text
        raw: list[bytes] = []
        sub = doc.observe(lambda ev, raw=raw: raw.append(ev.update))
        base = len(raw)
        for k in range(per_client):
            text.insert(0, "abcdefghij"[k % 10])
        doc.unobserve(sub)
        msgs = []
        for upd in raw[base:]:
            msg = update_message(upd)
            key = update_key(msg)
            assert key is not None
            msgs.append((key, msg))
        out.append(msgs)
    return out


@dataclass
class _Client:
    ws: ClientConnection
    index: int
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    received: int = 0


@dataclass
class LoadResult:
    """What one load run measured."""

    offered_per_s: float
    sent: int
    expected_deliveries: int
    deliveries: int
    deliveries_per_s: float
    latencies: list[float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "offered_deliveries_per_s": round(self.offered_per_s, 1),
            "sent": self.sent,
            "expected_deliveries": self.expected_deliveries,
            "deliveries": self.deliveries,
            "deliveries_per_s": round(self.deliveries_per_s, 1),
            "converged": self.deliveries == self.expected_deliveries,
            **summary_ms(self.latencies),
        }


async def run_load(
    url: str,
    rooms: int,
    clients_per_room: int,
    rate: float,
    duration: float,
    updates: list[list[tuple[Key, bytes]]],
    drain_timeout: float = 5.0,
) -> LoadResult:
    """Drive ``rooms`` x ``clients_per_room`` clients each sending ``rate`` updates/s.

    Args:
        url: The relay's base URL, ``ws://host:port``.
        updates: From :func:`make_updates`, at least one list per client and
            ``rate * duration`` messages in each.
    """
    n = rooms * clients_per_room
    per_client = int(rate * duration)
    assert len(updates) >= n and all(len(u) >= per_client for u in updates[:n])
    sent_at: dict[Key, float] = {}
    # The Node and pycrdt-websocket relays echo updates to their sender too: not a delivery.
    sender = {key: i for i in range(n) for key, _ in updates[i][:per_client]}
    last_delivery = [0.0]
    latencies: list[float] = []
    clients: list[_Client] = []
    tag = random.randrange(1 << 30)

    async def reader(c: _Client) -> None:
        clock = time.perf_counter
        try:
            async for msg in c.ws:
                t = clock()
                if not isinstance(msg, bytes):
                    continue
                key = update_key(msg)
                if key is not None:
                    t0 = sent_at.get(key)
                    if t0 is not None and sender[key] != c.index:
                        latencies.append(t - t0)
                        c.received += 1
                        last_delivery[0] = t
                    continue
                if len(msg) > 1 and msg[0] == 0:
                    if msg[1] == 1:
                        c.synced.set()
                    elif msg[1] == 0:
                        await c.ws.send(SYNC_STEP2_EMPTY)
        except ConnectionClosed:
            pass

    readers: list[asyncio.Task[None]] = []
    try:
        for r in range(rooms):
            for _ in range(clients_per_room):
                ws = await connect(
                    f"{url}/bench-{tag}-{r}?secret=bench-secret-{r:024d}",
                    compression=None,
                    max_size=None,
                )
                c = _Client(ws, len(clients))
                clients.append(c)
                readers.append(asyncio.create_task(reader(c)))
                await ws.send(SYNC_STEP1_EMPTY)
                await asyncio.wait_for(c.synced.wait(), 10)
        schedule: list[tuple[float, int, int]] = []
        for i in range(n):
            offset = random.random() / rate
            schedule.extend((offset + k / rate, i, k) for k in range(per_client))
        schedule.sort()
        gc.collect()
        gc.disable()
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.2)
        start = loop.time()
        t_first = time.perf_counter()
        for at, i, k in schedule:
            delay = start + at - loop.time()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            key, msg = updates[i][k]
            sent_at[key] = time.perf_counter()
            await clients[i].ws.send(msg)
        expected = len(schedule) * (clients_per_room - 1)
        deadline = loop.time() + drain_timeout
        # Polling: deliveries are counted in the hot read loop, which should not signal.
        while sum(c.received for c in clients) < expected and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        received = sum(c.received for c in clients)
        # The rate over the time deliveries took: first send to last delivery.
        span = max(last_delivery[0] - t_first, 1e-9)
        return LoadResult(
            offered_per_s=rate * n * (clients_per_room - 1),
            sent=len(schedule),
            expected_deliveries=expected,
            deliveries=received,
            deliveries_per_s=received / span,
            latencies=latencies,
        )
    finally:
        gc.enable()
        for c in clients:
            await c.ws.close()
        for t in readers:
            t.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
