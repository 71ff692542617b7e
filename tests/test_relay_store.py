"""Durable rooms: the SQLite store, reload after restart or eviction, kill -9 of collab-relay."""

from __future__ import annotations

import asyncio
import os
import random
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

from collab_ls.relay_link import LinkStatus, RelayLink
from relay import protocol
from relay.links import Access, new_room_id, new_secret
from relay.messages import SyncStep1, SyncStep2, SyncUpdate
from relay.protocol import parse_message
from relay.server import Relay
from relay.store import SqliteStore
from tests.relay_helpers import append, files, text, wait_until


def link(doc: pycrdt.Doc[Any], url: str) -> RelayLink:
    return RelayLink(doc, url, origin="remote", backoff_initial=0.05, backoff_max=0.3)


def updates_of(n: int) -> tuple[pycrdt.Doc[Any], list[bytes]]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    out: list[bytes] = []
    sub = doc.observe(lambda event: out.append(event.update))
    value = pycrdt.Text()
    files(doc)["a.txt"] = value
    for i in range(n):
        value += str(i % 10)
    doc.unobserve(sub)
    return doc, out


async def test_store_appends_loads_and_compacts(tmp_path: Path) -> None:
    source, updates = updates_of(120)
    commits: list[int] = []
    async with SqliteStore(
        tmp_path / "s.db", compact_every=50, on_commit=lambda s, n: commits.append(n)
    ) as store:
        await store.save_room("r", b"rw" * 16, None)
        await asyncio.gather(*(store.append("r", u) for u in updates))
        rows = await store.row_count("r")
        assert 1 <= rows < 50
        assert sum(commits) == len(updates)
        assert len(commits) < len(updates)  # group commit: several updates per commit
        assert await store.load_room("missing") is None
    async with SqliteStore(tmp_path / "s.db") as store:
        stored = await store.load_room("r")
    assert stored is not None
    assert stored.rw_digest == b"rw" * 16 and stored.ro_digest is None
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    for update in stored.updates:
        doc.apply_update(update)
    assert text(doc, "a.txt") == text(source, "a.txt")


async def test_rooms_and_secrets_survive_a_relay_restart(tmp_path: Path) -> None:
    room, rw, ro = new_room_id(), new_secret(), new_secret()
    db = tmp_path / "relay.db"
    async with Relay(store=db) as relay:
        links = relay.links(room, rw, ro)
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        async with link(doc, links.host) as a:
            await a.wait_synced(5)
            files(doc)["a.txt"] = pycrdt.Text("persisted")
            append(doc, "a.txt", " twice")
            await wait_until(lambda: relay.rooms[room].text("files", "a.txt") == "persisted twice")
        new_ro = await relay.rotate_secret(room, Access.READ_ONLY)
        port = relay.port
    async with Relay(port=port, store=db) as relay:
        assert relay.rooms == {}
        fresh: pycrdt.Doc[Any] = pycrdt.Doc()
        async with link(fresh, relay.url(room, new_ro)) as guest:
            await guest.wait_synced(5)
            assert text(fresh, "a.txt") == "persisted twice"
        assert relay.rooms[room].access(ro) is None
        assert relay.rooms[room].access(rw) is Access.READ_WRITE
        assert relay.metrics.rooms_loaded.value() == 1


async def test_idle_rooms_are_evicted_and_reloaded(tmp_path: Path) -> None:
    room, rw = new_room_id(), new_secret()
    async with Relay(store=tmp_path / "relay.db", idle_timeout=0.2) as relay:
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        async with link(doc, relay.url(room, rw)) as a:
            await a.wait_synced(5)
            files(doc)["a.txt"] = pycrdt.Text("kept")
            await wait_until(lambda: relay.rooms[room].text("files", "a.txt") == "kept")
            await asyncio.sleep(0.5)
            assert room in relay.rooms  # a room with peers stays
        await wait_until(lambda: room not in relay.rooms)
        assert relay.metrics.rooms_evicted.value() == 1
        other: pycrdt.Doc[Any] = pycrdt.Doc()
        async with link(other, relay.url(room, rw)) as b:
            await b.wait_synced(5)
            assert text(other, "a.txt") == "kept"
        async with connect(relay.url(room, "wrong-" + rw)) as ws:
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.recv()
            assert ws.close_code == 4403


async def test_compaction_keeps_rows_bounded_in_a_live_room(tmp_path: Path) -> None:
    room, rw = new_room_id(), new_secret()
    store = SqliteStore(tmp_path / "relay.db", compact_every=20)
    async with Relay(store=store) as relay:
        doc_a, doc_b = pycrdt.Doc(), pycrdt.Doc()
        async with link(doc_a, relay.url(room, rw)) as a, link(doc_b, relay.url(room, rw)) as b:
            await a.wait_synced(5)
            await b.wait_synced(5)
            files(doc_a)["a.txt"] = pycrdt.Text()
            await wait_until(lambda: text(doc_b, "a.txt") == "")
            for i in range(300):
                append(doc_a if i % 2 else doc_b, "a.txt", "x")
                if i % 10 == 0:
                    await asyncio.sleep(0)
            await wait_until(lambda: len(text(doc_b, "a.txt") or "") == 300)
            await wait_until(lambda: relay.rooms[room].text("files", "a.txt") == "x" * 300)
            assert await store.row_count(room) < 21
            assert relay.metrics.compactions.value() >= 1
    async with SqliteStore(tmp_path / "relay.db") as reopened:
        stored = await reopened.load_room(room)
    assert stored is not None
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    for update in stored.updates:
        doc.apply_update(update)
    assert text(doc, "a.txt") == "x" * 300


# kill -9 of a real collab-relay process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_relay(port: int, db: Path, log: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "relay.cli",
            "--port",
            str(port),
            "--store",
            str(db),
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


async def test_acknowledged_updates_survive_kill_9(tmp_path: Path) -> None:
    """What the relay forwarded to one peer is on disk: raw clients, no resync to hide a loss."""
    port, db = free_port(), tmp_path / "relay.db"
    room, rw = new_room_id(), new_secret()
    url = f"ws://127.0.0.1:{port}/{room}?secret={rw}"
    proc = start_relay(port, db, tmp_path / "relay.log")
    try:
        source: pycrdt.Doc[Any] = pycrdt.Doc()
        sent: list[bytes] = []
        sub = source.observe(lambda event: sent.append(event.update))
        files(source)["a.txt"] = pycrdt.Text()
        for i in range(50):
            append(source, "a.txt", chr(ord("a") + i % 26))
        source.unobserve(sub)
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
        proc = start_relay(port, db, tmp_path / "relay2.log")
        async with connect(url) as reader:
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


async def test_two_typists_lose_nothing_when_the_relay_is_killed(tmp_path: Path) -> None:
    port, db = free_port(), tmp_path / "relay.db"
    room, rw = new_room_id(), new_secret()
    url = f"ws://127.0.0.1:{port}/{room}?secret={rw}"
    proc = start_relay(port, db, tmp_path / "relay.log")
    rng = random.Random(5)
    typed: dict[str, list[str]] = {"A": [], "B": []}
    try:
        doc_a, doc_b = pycrdt.Doc(), pycrdt.Doc()
        async with link(doc_a, url) as a, link(doc_b, url) as b:
            await a.wait_synced(5)
            files(doc_a)["a.txt"] = pycrdt.Text()
            await wait_until(lambda: text(doc_b, "a.txt") == "")
            await b.wait_synced(5)

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
            await asyncio.sleep(0.4)
            kill9(proc)
            killed_at = time.monotonic()
            await wait_until(lambda: a.status is not LinkStatus.CONNECTED, within=5)
            await asyncio.sleep(0.3)
            proc = start_relay(port, db, tmp_path / "relay2.log")
            restarted_after = time.monotonic() - killed_at
            await typing
            await a.wait_synced(10)
            await b.wait_synced(10)
            await wait_until(lambda: text(doc_a, "a.txt") == text(doc_b, "a.txt"), within=10)
        final = text(doc_a, "a.txt") or ""
        keystrokes = typed["A"] + typed["B"]
        lost = [k for k in keystrokes if k not in final]
        print(
            f"kill -9 test: {len(keystrokes)} keystrokes typed, {len(lost)} lost, "
            f"relay down {restarted_after:.2f} s"
        )
        assert len(keystrokes) == 600
        assert lost == []
        assert len(final) == sum(len(k) for k in keystrokes)
    finally:
        if proc.poll() is None:
            kill9(proc)
