"""Random and mutated y-sync/awareness messages against a live relay with honest peers connected."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from collab_ls.relay_link import RelayLink
from relay import protocol
from relay.links import new_secret, session_links
from relay.messages import AwarenessMessage
from relay.server import Relay
from tests.relay_helpers import append, files, new_room, text, wait_until

MESSAGES = 1500
#: The subprocess relay of the memory test gets this many fuzzed messages after
#: a warm-up of MEMORY_WARMUP (which lets the allocator and caches settle).
MEMORY_MESSAGES = 4000
MEMORY_WARMUP = 500
#: What the relay process's resident memory may grow by while it is fuzzed,
#: beyond the size of the honest peers' document. Measured: under 1 MiB (the
#: oversize frames are refused from their header, never buffered; a fuzzing
#: connection's state is freed when the relay closes it). 8 MiB leaves room
#: for allocator noise and still catches a leak of 2 KiB per message, or of
#: one buffered oversize frame (up to 1 MiB each, 40 of them).
MEMORY_GROWTH_BOUND = 8 * 1024 * 1024
#: Oversize frames: between the relay's limit and 16 times it.
MAX_MESSAGE_BYTES = 64 * 1024


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


@dataclass
class FuzzCounts:
    """What a fuzzing run sent and what the relay made of it."""

    sent: int = 0
    oversize: int = 0
    accepted: int = 0
    kicked: int = 0

    def __str__(self) -> str:
        return (
            f"{self.sent} messages sent ({self.oversize} oversize): {self.accepted} harmless, "
            f"{self.kicked} closed their connection"
        )


async def fuzz(
    url: str,
    rng: random.Random,
    count: int,
    counts: FuzzCounts,
    *,
    oversize: Callable[[random.Random], int] = lambda rng: 70 * 1024,
    between: Callable[[int], None] = lambda i: None,
) -> None:
    """Send ``count`` fuzzed messages (every 100th an oversize frame) on connections to ``url``.

    A connection the relay closes is replaced by a new one. After each message
    a probe (QueryAwareness) tells whether the connection survived: it is
    answered if so, and the connection is closed by the relay otherwise.
    ``between(i)`` runs after message ``i`` (the honest peers type there).
    """
    corpus = seeds()
    probe = protocol.encode_query_awareness()
    ws: ClientConnection | None = None
    try:
        for i in range(count):
            if ws is None:
                ws = await connect(url, max_size=None)
                await ws.recv()  # the relay's SyncStep1
            if i % 100 == 99:
                message = rng.randbytes(oversize(rng))
                counts.oversize += 1
            else:
                message = mutate(rng, rng.choice(corpus))
            counts.sent += 1
            try:
                await ws.send(message)  # an oversize frame may fail half sent
                await ws.send(probe)
                async with asyncio.timeout(5):
                    while not isinstance(
                        protocol.parse_message(await ws.recv(decode=False)),
                        AwarenessMessage,
                    ):
                        pass
                counts.accepted += 1
            except ConnectionClosed:
                ws, counts.kicked = None, counts.kicked + 1
            between(i)
            if i % 10 == 0:
                await asyncio.sleep(0)
    finally:
        if ws is not None:
            await ws.close()


@pytest.mark.parametrize("access", ["read-write", "read-only"])
async def test_fuzzed_messages_never_break_the_room_or_the_honest_peers(access: str) -> None:
    rng = random.Random(1234)
    async with Relay(rate_limit=None, max_message_bytes=MAX_MESSAGE_BYTES) as relay:
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

            def type_between(i: int) -> None:
                # The honest peers keep typing in between.
                if i % 10 == 0:
                    append(doc_a if i % 20 else doc_b, "a.txt", "x")

            counts = FuzzCounts()
            await fuzz(fuzz_url, rng, MESSAGES, counts, between=type_between)
            print(f"fuzz ({access}): {counts}")
            await wait_until(lambda: text(doc_a, "a.txt") == text(doc_b, "a.txt"), within=10)
            assert text(doc_a, "a.txt") == "x" * (MESSAGES // 10)
            assert relay.rooms[room].text("files", "a.txt") == text(doc_a, "a.txt")
            assert link_a.connected and link_b.connected
            await wait_until(lambda: len(relay.rooms[room].peers) == 2)
            assert counts.sent == MESSAGES
            assert counts.kicked > 500 and counts.accepted + counts.kicked == MESSAGES
            if access == "read-only":
                # Nothing the read-only attacker sent reached the room.
                honest = {doc_a.client_id, doc_b.client_id}
                clients = protocol.parse_state_vector(relay.rooms[room].doc.get_state())
                assert set(clients) <= honest
                assert relay.rooms[room].text("files", "f.txt") is None
            rejected = relay.metrics.rejected
            assert rejected.value(reason="bad_message") + rejected.value(reason="too_big") > 100


def rss_bytes(pid: int) -> tuple[int, int]:
    """The resident set size of a process and its peak (VmRSS, VmHWM), in bytes."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def mib(n: float) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
async def test_fuzzing_a_relay_process_keeps_its_memory_bounded(tmp_path: Path) -> None:
    """Thousands of fuzzed messages and oversize frames against ``collab-relay``.

    The relay runs as its own process (with its SQLite store, as deployed), so
    its resident memory is measured whole (pycrdt's Rust heap included, which
    tracemalloc would miss). It must stay within MEMORY_GROWTH_BOUND of its
    size after a warm-up, plus the honest peers' document; and still serve.
    """
    rng = random.Random(4321)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay.cli",
        "--port",
        "0",
        "--store",
        str(tmp_path / "relay.sqlite3"),
        "--rate-limit",
        "0",
        "--max-message-bytes",
        str(MAX_MESSAGE_BYTES),
        "--log-file",
        str(tmp_path / "relay.log"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(30):
            line = (await proc.stderr.readline()).decode()
        prefix = "collab-relay listening on "
        assert line.startswith(prefix), line
        base_url = line[len(prefix) :].strip()
        room, secret = new_room()
        ro_secret = new_secret()
        links = session_links(base_url, room, secret, ro_secret)
        assert links.read_only is not None
        fuzz_urls = (links.read_write, links.read_only)
        doc_a, doc_b = pycrdt.Doc(), pycrdt.Doc()
        link_a = RelayLink(doc_a, links.host, origin="remote", backoff_initial=0.05)
        link_b = RelayLink(doc_b, links.read_write, origin="remote", backoff_initial=0.05)
        async with link_a, link_b:
            await link_a.wait_synced(10)
            await link_b.wait_synced(10)
            files(doc_a)["a.txt"] = pycrdt.Text()
            await wait_until(lambda: text(doc_b, "a.txt") == "")
            rss_start, _ = rss_bytes(proc.pid)
            typed = 0

            def type_between(i: int) -> None:
                nonlocal typed
                if i % 10 == 0:
                    append(doc_a if i % 20 else doc_b, "a.txt", f"{i:08d}\n")
                    typed += 9

            counts = FuzzCounts()
            big = (MAX_MESSAGE_BYTES + 1, 16 * MAX_MESSAGE_BYTES)
            for url in fuzz_urls:
                await fuzz(url, rng, MEMORY_WARMUP // 2, counts, oversize=lambda r: r.randint(*big))
            await wait_until(lambda: len(text(doc_b, "a.txt") or "") == typed, within=10)
            rss_warm, _ = rss_bytes(proc.pid)
            doc_before = len(doc_a.get_update())
            warm = FuzzCounts(**vars(counts))
            # Half the fuzzing on the read-write link, half on the read-only one.
            for url in fuzz_urls:
                await fuzz(
                    url,
                    rng,
                    MEMORY_MESSAGES // 2,
                    counts,
                    oversize=lambda r: r.randint(*big),
                    between=type_between,
                )
            await wait_until(lambda: text(doc_a, "a.txt") == text(doc_b, "a.txt"), within=10)
            assert len(text(doc_a, "a.txt") or "") == typed
            # The relay still serves: a newcomer syncs the honest peers' text.
            doc_c: pycrdt.Doc[Any] = pycrdt.Doc()
            async with RelayLink(doc_c, links.read_only, origin="remote") as link_c:
                await link_c.wait_synced(10)
                await wait_until(lambda: text(doc_c, "a.txt") == text(doc_a, "a.txt"))
            assert link_a.connected and link_b.connected
            rss_after, rss_peak = rss_bytes(proc.pid)
            doc_growth = len(doc_a.get_update()) - doc_before
        growth = rss_after - rss_warm
        print(
            f"fuzz (relay process): warm-up {warm}; then {counts.sent - warm.sent} more, in all "
            f"{counts}; RSS before fuzzing {mib(rss_start)}, after warm-up {mib(rss_warm)}, "
            f"after fuzzing {mib(rss_after)} "
            f"(growth {mib(growth)}, peak {mib(rss_peak)}); honest document grew "
            f"{doc_growth} bytes ({typed} characters typed)"
        )
        assert counts.sent == MEMORY_WARMUP + MEMORY_MESSAGES
        assert counts.oversize >= (MEMORY_WARMUP + MEMORY_MESSAGES) // 100 - 2
        assert counts.kicked > MEMORY_MESSAGES // 4 and counts.accepted > MEMORY_MESSAGES // 4
        assert growth < MEMORY_GROWTH_BOUND + doc_growth, mib(growth)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0
