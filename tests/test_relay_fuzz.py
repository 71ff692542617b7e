"""Random and mutated y-sync/awareness messages against a live relay with honest peers connected."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pycrdt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from collab_ls.relay_link import RelayLink
from relay import protocol
from relay.links import new_secret
from relay.server import Relay
from tests.relay_helpers import append, files, new_room, text, wait_until

MESSAGES = 1500


def seeds() -> list[bytes]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    updates: list[bytes] = []
    sub = doc.observe(lambda event: updates.append(event.update))
    files(doc)["f.txt"] = pycrdt.Text("héllo 😀")
    append(doc, "f.txt", " world")
    doc.unobserve(sub)
    awareness = pycrdt.Awareness(doc)
    awareness.set_local_state({"user": "fuzz", "cursor": [1, 2]})
    return [
        protocol.encode_sync_step1(doc.get_state()),
        protocol.encode_sync_step2(doc.get_update()),
        *(protocol.encode_sync_update(u) for u in updates),
        protocol.encode_awareness(awareness.encode_awareness_update([doc.client_id])),
        protocol.encode_query_awareness(),
    ]


def mutate(rng: random.Random, data: bytes) -> bytes:
    raw = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        if op == 0 and raw:
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        elif op == 1 and raw:
            del raw[rng.randrange(len(raw)) :]
        elif op == 2:
            raw.insert(rng.randint(0, len(raw)), rng.randrange(256))
        elif op == 3:
            raw += rng.randbytes(rng.randint(1, 16))
        else:
            return rng.randbytes(rng.randint(0, 64))
    return bytes(raw)


@pytest.mark.parametrize("access", ["read-write", "read-only"])
async def test_fuzzed_messages_never_break_the_room_or_the_honest_peers(access: str) -> None:
    rng = random.Random(1234)
    corpus = seeds()
    async with Relay(rate_limit=None, max_message_bytes=64 * 1024) as relay:
        room, secret = new_room()
        ro_secret = new_secret()
        relay.create_room(room, secret, read_only_secret=ro_secret)
        url = relay.url(room, secret)
        fuzz_url = url if access == "read-write" else relay.url(room, ro_secret)
        doc_a, doc_b = pycrdt.Doc(), pycrdt.Doc()
        link_a = RelayLink(doc_a, url, origin="remote", backoff_initial=0.05, backoff_max=0.2)
        link_b = RelayLink(doc_b, url, origin="remote", backoff_initial=0.05, backoff_max=0.2)
        async with link_a, link_b:
            await link_a.wait_synced(5)
            await link_b.wait_synced(5)
            files(doc_a)["a.txt"] = pycrdt.Text()
            await wait_until(lambda: text(doc_b, "a.txt") == "")
            sent = kicked = accepted = oversize = 0
            ws: ClientConnection | None = None
            probe = protocol.encode_query_awareness()
            for i in range(MESSAGES):
                if ws is None:
                    ws = await connect(fuzz_url, max_size=None)
                    await ws.recv()  # the relay's SyncStep1
                if i % 100 == 99:
                    message = rng.randbytes(70 * 1024)  # oversize frame
                    oversize += 1
                else:
                    message = mutate(rng, rng.choice(corpus))
                try:
                    await ws.send(message)
                    sent += 1
                    # A probe after each message: answered if the connection
                    # survived, closed by the relay otherwise.
                    await ws.send(probe)
                    async with asyncio.timeout(5):
                        while not isinstance(
                            protocol.parse_message(await ws.recv(decode=False)),
                            protocol.AwarenessMessage,
                        ):
                            pass
                    accepted += 1
                except ConnectionClosed:
                    ws, kicked = None, kicked + 1
                if i % 10 == 0:
                    # The honest peers keep typing in between.
                    append(doc_a if i % 20 else doc_b, "a.txt", "x")
                    await asyncio.sleep(0)
            if ws is not None:
                await ws.close()
            print(
                f"fuzz: {sent} messages sent ({oversize} oversize): {accepted} harmless, "
                f"{kicked} closed their connection"
            )
            await wait_until(lambda: text(doc_a, "a.txt") == text(doc_b, "a.txt"), within=10)
            assert text(doc_a, "a.txt") == "x" * (MESSAGES // 10)
            assert relay.rooms[room].text("files", "a.txt") == text(doc_a, "a.txt")
            assert link_a.connected and link_b.connected
            await wait_until(lambda: len(relay.rooms[room].peers) == 2)
            assert sent == MESSAGES
            assert kicked > 500 and accepted + kicked == MESSAGES
            if access == "read-only":
                # Nothing the read-only attacker sent reached the room.
                honest = {doc_a.client_id, doc_b.client_id}
                clients = protocol.parse_state_vector(relay.rooms[room].doc.get_state())
                assert set(clients) <= honest
                assert relay.rooms[room].text("files", "f.txt") is None
            rejected = relay.metrics.rejected
            assert rejected.value(reason="bad_message") + rejected.value(reason="too_big") > 100
