"""Scale-out: several relay nodes sharing rooms through one real Redis server.

Each test module starts its own ``redis-server`` on a free loopback port (no
persistence: the durability under test is the node's, not Redis'), and each
test uses its own key prefix.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from collab_ls.relay_link import (
    LinkStatus,
    RelayLink,
    RelayUrlError,
    parse_relay_urls,
)
from relay import protocol
from relay.links import Access, new_room_id, new_secret
from relay.messages import SyncStep1, SyncStep2, SyncUpdate
from relay.protocol import parse_message
from relay.redis_store import RedisStore
from relay.server import Relay
from tests.relay_helpers import append, files, text, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node(redis_url: str, prefix: str, **options: Any) -> Relay:
    store = RedisStore(redis_url, prefix=prefix, compact_every=options.pop("compact_every", 500))
    return Relay(store=store, **options)


def link(doc: pycrdt.Doc[Any], url: str, **options: Any) -> RelayLink:
    return RelayLink(doc, url, origin="remote", backoff_initial=0.05, backoff_max=0.3, **options)


def other_states(lnk: RelayLink) -> dict[int, Any]:
    return {k: v for k, v in lnk.awareness.states.items() if k != lnk.awareness.client_id}


async def test_clients_on_two_nodes_converge_both_ways_with_awareness(redis_url: str) -> None:
    prefix = secrets.token_hex(4)
    room, rw = new_room_id(), new_secret()
    async with node(redis_url, prefix) as n1, node(redis_url, prefix) as n2:
        doc_a, doc_b = pycrdt.Doc(), pycrdt.Doc()
        async with link(doc_a, n1.url(room, rw)) as a:
            await a.wait_synced(5)
            files(doc_a)["a.txt"] = pycrdt.Text("from A")
            async with link(doc_b, n2.url(room, rw)) as b:
                await b.wait_synced(5)
                await wait_until(lambda: text(doc_b, "a.txt") == "from A")
                append(doc_b, "a.txt", ", from B")
                await wait_until(lambda: text(doc_a, "a.txt") == "from A, from B")
                append(doc_a, "a.txt", ", A again")
                await wait_until(lambda: text(doc_b, "a.txt") == "from A, from B, A again")
                # Both nodes' room documents have everything.
                for relay in (n1, n2):
                    await wait_until(
                        lambda r=relay: (
                            r.rooms[room].text("files", "a.txt")  # type: ignore[misc]
                            == "from A, from B, A again"
                        )
                    )
                # Awareness crosses nodes both ways.
                a.awareness.set_local_state({"user": "alice"})
                b.awareness.set_local_state({"user": "bob"})
                await wait_until(lambda: {"user": "alice"} in other_states(b).values())
                await wait_until(lambda: {"user": "bob"} in other_states(a).values())
            # B left node 2: node 1's peer A learns B's state is gone.
            await wait_until(lambda: {"user": "bob"} not in other_states(a).values())


async def test_awareness_of_earlier_peers_reaches_a_node_joining_later(redis_url: str) -> None:
    prefix = secrets.token_hex(4)
    room, rw = new_room_id(), new_secret()
    async with node(redis_url, prefix) as n1:
        doc_a: pycrdt.Doc[Any] = pycrdt.Doc()
        async with link(doc_a, n1.url(room, rw)) as a:
            await a.wait_synced(5)
            a.awareness.set_local_state({"user": "alice"})
            await wait_until(lambda: n1.rooms[room].awareness_states != {})
            async with node(redis_url, prefix) as n2:
                doc_b: pycrdt.Doc[Any] = pycrdt.Doc()
                async with link(doc_b, n2.url(room, rw)) as b:
                    await b.wait_synced(5)
                    # Node 2 asked node 1 to republish its peers' states.
                    await wait_until(lambda: {"user": "alice"} in other_states(b).values())


async def test_room_created_on_one_node_checks_secrets_on_another(redis_url: str) -> None:
    prefix = secrets.token_hex(4)
    room, rw, ro = new_room_id(), new_secret(), new_secret()
    async with node(redis_url, prefix) as n1, node(redis_url, prefix) as n2:
        host_doc: pycrdt.Doc[Any] = pycrdt.Doc()
        async with link(host_doc, n1.links(room, rw, ro).host) as host:
            await host.wait_synced(5)
            files(host_doc)["a.txt"] = pycrdt.Text("secret text")
            # Right secrets on node 2: read-write and read-only.
            guest_doc: pycrdt.Doc[Any] = pycrdt.Doc()
            async with link(guest_doc, n2.url(room, rw)) as guest:
                await guest.wait_synced(5)
                await wait_until(lambda: text(guest_doc, "a.txt") == "secret text")
            ro_doc: pycrdt.Doc[Any] = pycrdt.Doc()
            async with link(ro_doc, n2.links(room, rw, ro).read_only) as reader:
                await reader.wait_synced(5)
                assert n2.rooms[room].access(ro) is Access.READ_ONLY
                # Wrong secrets on node 2 (which holds the room now) and on a
                # node that must read it from Redis are refused with 4403.
                for url in (n2.url(room, "wrong-" + rw), n2.url(room, ro[:-1] + "x")):
                    async with connect(url) as ws:
                        with pytest.raises(ConnectionClosed):
                            while True:
                                await ws.recv()
                        assert ws.close_code == 4403
                # A link rotated on node 1 is revoked on node 2.
                await n1.rotate_secret(room, Access.READ_ONLY)
                await wait_until(lambda: reader.status is LinkStatus.REFUSED)
        async with node(redis_url, prefix) as n3, connect(n3.url(room, new_secret())) as ws:
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.recv()
            assert ws.close_code == 4403
        assert n3.rooms == {} or n3.rooms[room].access(rw) is Access.READ_WRITE


async def test_late_joiner_on_a_third_node_gets_the_full_state_and_the_log_stays_bounded(
    redis_url: str,
) -> None:
    prefix = secrets.token_hex(4)
    room, rw = new_room_id(), new_secret()
    every = 20
    async with (
        node(redis_url, prefix, compact_every=every) as n1,
        node(redis_url, prefix, compact_every=every) as n2,
    ):
        doc_a, doc_b = pycrdt.Doc(), pycrdt.Doc()
        async with link(doc_a, n1.url(room, rw)) as a, link(doc_b, n2.url(room, rw)) as b:
            await a.wait_synced(5)
            await b.wait_synced(5)
            files(doc_a)["a.txt"] = pycrdt.Text()
            await wait_until(lambda: text(doc_b, "a.txt") == "")
            for i in range(300):
                append(doc_a if i % 2 else doc_b, "a.txt", "ab"[i % 2])
                if i % 10 == 0:
                    await asyncio.sleep(0.005)
            await wait_until(lambda: len(text(doc_a, "a.txt") or "") == 300, within=10)
            await wait_until(lambda: text(doc_a, "a.txt") == text(doc_b, "a.txt"), within=10)
            store = n1.store
            assert isinstance(store, RedisStore)
            compactions = n1.metrics.compactions.value() + n2.metrics.compactions.value()
            assert compactions >= 1
            length = await store.row_count(room)
            print(f"redis log after 300 updates, compact_every={every}: {length} entries")
            assert length <= 2 * every
            # Node 3 loads the room from snapshot + log.
            async with node(redis_url, prefix) as n3:
                doc_c: pycrdt.Doc[Any] = pycrdt.Doc()
                async with link(doc_c, n3.url(room, rw)) as c:
                    await c.wait_synced(5)
                    assert text(doc_c, "a.txt") == text(doc_a, "a.txt")
                    append(doc_c, "a.txt", "!")
                    await wait_until(lambda: (text(doc_a, "a.txt") or "").endswith("!"))
                    await wait_until(lambda: (text(doc_b, "a.txt") or "").endswith("!"))


async def test_a_node_behind_a_compaction_catches_up_from_the_snapshot(redis_url: str) -> None:
    prefix = secrets.token_hex(4)
    room, rw = new_room_id(), new_secret()
    async with node(redis_url, prefix) as n1, node(redis_url, prefix) as n2:
        doc_a, doc_b = pycrdt.Doc(), pycrdt.Doc()
        async with link(doc_a, n1.url(room, rw)) as a, link(doc_b, n2.url(room, rw)) as b:
            await a.wait_synced(5)
            await b.wait_synced(5)
            store1, store2 = n1.store, n2.store
            assert isinstance(store1, RedisStore) and isinstance(store2, RedisStore)
            # Node 2 stops reading; node 1 writes and compacts meanwhile, so
            # entries node 2 never read are trimmed away.
            store2.pause_reading()
            await asyncio.sleep(0.2)
            files(doc_a)["a.txt"] = pycrdt.Text()
            for _ in range(30):
                append(doc_a, "a.txt", "x")
                await asyncio.sleep(0.002)
            await wait_until(lambda: n1.rooms[room].text("files", "a.txt") == "x" * 30)
            assert await store1.compact(room)
            assert await store1.row_count(room) == 1
            store2.resume_reading()
            await wait_until(lambda: text(doc_b, "a.txt") == "x" * 30)


# kill -9 of a real collab-relay node


def start_node(port: int, redis_url: str, prefix: str, log: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "relay.cli",
            "--port",
            str(port),
            "--redis",
            redis_url,
            "--redis-prefix",
            prefix,
            "--compact-every",
            "50",
            "--log-file",
            str(log),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert line.startswith("collab-relay listening on"), line
    return proc


def kill9(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


async def test_acknowledged_updates_survive_kill_9_of_a_node(
    redis_url: str, tmp_path: Path
) -> None:
    """What node 1 forwarded is in Redis: read back through node 2, raw clients, no resync."""
    prefix = secrets.token_hex(4)
    port = free_port()
    room, rw = new_room_id(), new_secret()
    proc = start_node(port, redis_url, prefix, tmp_path / "node1.log")
    try:
        source: pycrdt.Doc[Any] = pycrdt.Doc()
        sent: list[bytes] = []
        sub = source.observe(lambda event: sent.append(event.update))
        files(source)["a.txt"] = pycrdt.Text()
        for i in range(120):
            append(source, "a.txt", chr(ord("a") + i % 26))
        source.unobserve(sub)
        url = f"ws://127.0.0.1:{port}/{room}?secret={rw}"
        async with connect(url) as writer, connect(url) as watcher:
            assert isinstance(parse_message(await watcher.recv(decode=False)), SyncStep1)
            for update in sent:
                await writer.send(protocol.encode_sync_update(update))
            got = 0
            async with asyncio.timeout(10):
                while got < len(sent):
                    if isinstance(parse_message(await watcher.recv(decode=False)), SyncUpdate):
                        got += 1
            kill9(proc)  # every update was forwarded, hence acknowledged
        async with node(redis_url, prefix) as n2, connect(n2.url(room, rw)) as reader:
            assert isinstance(parse_message(await reader.recv(decode=False)), SyncStep1)
            await reader.send(protocol.encode_sync_step1(b"\x00"))
            reply = parse_message(await reader.recv(decode=False))
            assert isinstance(reply, SyncStep2)
        restored: pycrdt.Doc[Any] = pycrdt.Doc()
        restored.apply_update(reply.update)
        assert text(restored, "a.txt") == text(source, "a.txt")
    finally:
        if proc.poll() is None:
            kill9(proc)


async def test_two_typists_lose_nothing_when_a_node_is_killed_and_one_fails_over(
    redis_url: str, tmp_path: Path
) -> None:
    prefix = secrets.token_hex(4)
    port1, port2 = free_port(), free_port()
    room, rw = new_room_id(), new_secret()
    url1 = f"ws://127.0.0.1:{port1}/{room}?secret={rw}"
    url2 = f"ws://127.0.0.1:{port2}/{room}?secret={rw}"
    proc1 = start_node(port1, redis_url, prefix, tmp_path / "node1.log")
    proc2 = start_node(port2, redis_url, prefix, tmp_path / "node2.log")
    rng = random.Random(7)
    typed: dict[str, list[str]] = {"A": [], "B": []}
    try:
        doc_a, doc_b = pycrdt.Doc(), pycrdt.Doc()
        # A is on node 1 with node 2 as its fallback; B is on node 2 only.
        async with link(doc_a, url1, fallback_urls=[url2]) as a, link(doc_b, url2) as b:
            await a.wait_synced(5)
            files(doc_a)["a.txt"] = pycrdt.Text()
            await b.wait_synced(5)
            await wait_until(lambda: text(doc_b, "a.txt") == "")

            async def typist(name: str, doc: pycrdt.Doc[Any], count: int) -> None:
                for i in range(count):
                    key = f"{name}{i:03d};"
                    value = files(doc)["a.txt"]
                    assert isinstance(value, pycrdt.Text)
                    # Keys are 5 ASCII bytes, inserted at key boundaries: they stay whole.
                    value.insert(rng.randint(0, len(value) // 5) * 5, key)
                    typed[name].append(key)
                    await asyncio.sleep(0.005)

            typing = asyncio.gather(typist("A", doc_a, 300), typist("B", doc_b, 300))
            await asyncio.sleep(0.5)
            kill9(proc1)
            killed_at = time.monotonic()
            # Failing over can be quicker than a poll: watch where A is synced.
            await wait_until(lambda: a.url.port == port2 and a.connected, within=10)
            failover = time.monotonic() - killed_at
            await typing
            await wait_until(lambda: text(doc_a, "a.txt") == text(doc_b, "a.txt"), within=10)
        final = text(doc_a, "a.txt") or ""
        keystrokes = typed["A"] + typed["B"]
        lost = [k for k in keystrokes if k not in final]
        print(
            f"redis kill -9 test: {len(keystrokes)} keystrokes typed, {len(lost)} lost, "
            f"failover to node 2 in {failover:.2f} s"
        )
        assert len(keystrokes) == 600
        assert lost == []
        assert len(final) == sum(len(k) for k in keystrokes)
        # And Redis has it all: a fresh node serves the same text.
        async with node(redis_url, prefix) as n3:
            doc_c: pycrdt.Doc[Any] = pycrdt.Doc()
            async with link(doc_c, n3.url(room, rw)) as c:
                await c.wait_synced(5)
                assert text(doc_c, "a.txt") == final
    finally:
        for proc in (proc1, proc2):
            if proc.poll() is None:
                kill9(proc)


# Relay URL lists (no Redis needed, but they belong to scale-out)


def test_relay_url_lists() -> None:
    room, rw = new_room_id(), new_secret()
    one = f"ws://127.0.0.1:1/{room}?secret={rw}"
    two = f"ws://127.0.0.1:2/{room}?secret={rw}"
    assert [u.port for u in parse_relay_urls(f"{one},{two}")] == [1, 2]
    assert [u.port for u in parse_relay_urls(one, [two, one])] == [1, 2]
    with pytest.raises(RelayUrlError, match="different rooms"):
        parse_relay_urls(one, [f"ws://127.0.0.1:2/other?secret={rw}"])
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    lnk = link(doc, f"{one}, {two}")
    assert [u.port for u in lnk.urls] == [1, 2] and lnk.url.port == 1
    rotated = new_secret()
    lnk.set_url(f"ws://127.0.0.1:1/{room}?secret={rotated}")
    assert [(u.port, u.secret) for u in lnk.urls] == [(1, rotated), (2, rotated)]


async def test_link_moves_to_the_next_url_when_a_node_is_unreachable(redis_url: str) -> None:
    prefix = secrets.token_hex(4)
    room, rw = new_room_id(), new_secret()
    dead = f"ws://127.0.0.1:{free_port()}/{room}?secret={rw}"
    async with node(redis_url, prefix) as n1:
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        async with link(doc, dead, fallback_urls=[n1.url(room, rw)]) as lnk:
            await lnk.wait_synced(5)
            assert lnk.url.port == n1.port
