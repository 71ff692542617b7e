"""Scenario 5: relay memory with many idle rooms, and a late joiner's sync time.

Both parts drive the three relays (:data:`bench.relays.RELAYS`) in turn, in the
same run, with y-websocket clients built on pycrdt documents laid out as
collab-ls lays out a session: a ``files`` ``Y.Map`` of ``Y.Text``, one per
shared file, each seeded in one transaction (as the collab-ls host seeds a
file from disk).

Idle rooms: after one warm-up room (so one-time allocations are not counted),
the relay's resident memory is read; then ``rooms`` empty rooms are opened,
and the memory read again; then ``rooms`` rooms are filled, each with one
10 KB file. Every room's client stays connected and idle (the Node relay
drops a room when its last client leaves). Memory is read once every room has
answered a SyncStep1 sent after its update (so the relay has applied it) and
a moment of quiet (a second in the full run) has passed. The growth over the
10 KB rooms, per room, is the cost of one idle room, set against the
document's size; the growth over the empty rooms splits it into the room with
its connection, and the document.

Late join: a seeding client pushes ``files`` Texts of 10 KB each through the
relay, one update per file, and stays connected. Then a fresh client connects
and the clock runs from just before ``connect`` until its own pycrdt document
holds every file with the right total length (sync and apply, as a joining
collab-ls must). Several fresh joiners are timed one after another.
"""

from __future__ import annotations

import asyncio
import gc
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pycrdt
from websockets.asyncio.client import ClientConnection, connect

from bench.common import REPO
from bench.loadgen import SYNC_STEP1_EMPTY, _encode_varuint, _varuint, update_message
from bench.relays import RELAYS, RelayProcess

DOC_BYTES = 10_000
#: A connection's Yjs messages: sync (0) with step 1 (0), step 2 (1) or update (2).
SYNC, STEP1, STEP2, UPDATE = 0, 0, 1, 2
#: Rooms filled concurrently (pycrdt-websocket splits a room several join at once;
#: these are all different rooms).
CONCURRENCY = 16
#: Quiet before each memory reading (full run).
SETTLE_S = 1.0
#: Goals from the issue.
ROOM_GOAL_RATIO = 3.0
JOIN_GOAL_S = 1.0

_WORDS = (
    "the relay room text peer edit sync update late join file line buffer cursor "
    "server client merge state vector awareness document insert delete keystroke "
    "editor neovim collab session share secret host guest latency memory"
).split()


def file_contents(n: int, size: int = DOC_BYTES, seed: int = 5) -> list[str]:
    """``n`` different ASCII texts of exactly ``size`` bytes: lines of words."""
    rng = random.Random(seed)
    lines: list[str] = []
    total = 0
    while total < size * 4:
        line = " ".join(rng.choices(_WORDS, k=rng.randint(3, 12))) + "\n"
        lines.append(line)
        total += len(line)
    corpus = "".join(lines)
    span = len(corpus) - size
    return [corpus[(i * 7919) % span :][:size] for i in range(n)]


def seed_updates(contents: list[str], client_id: int) -> tuple[list[bytes], bytes]:
    """One update per file (``files/<i>.txt`` in a ``files`` map), and the state vector."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    files: pycrdt.Map[pycrdt.Text] = doc.get("files", type=pycrdt.Map)
    raw: list[bytes] = []
    sub = doc.observe(lambda ev: raw.append(ev.update))
    for i, content in enumerate(contents):
        with doc.transaction():
            files[f"src/file{i:04d}.txt"] = pycrdt.Text(content)
    doc.unobserve(sub)
    return raw, doc.get_state()


def step1_message(state_vector: bytes) -> bytes:
    """A SyncStep1 carrying ``state_vector``."""
    return bytes([SYNC, STEP1]) + _encode_varuint(len(state_vector)) + state_vector


def sync_payload(message: bytes) -> tuple[int, bytes] | None:
    """``(kind, payload)`` of a sync step 2 or update message, else None."""
    if len(message) < 3 or message[0] != SYNC or message[1] not in (STEP2, UPDATE):
        return None
    length, i = _varuint(message, 2)
    return message[1], message[i : i + length]


def _url(relay: RelayProcess, room: str) -> str:
    return f"{relay.url}/{room}?secret=bench-secret-{room:0>24}"


async def _connect(url: str) -> ClientConnection:
    return await connect(url, compression=None, max_size=None, open_timeout=20)


async def push(ws: ClientConnection, updates: list[bytes], state_vector: bytes) -> None:
    """Send ``updates``, then a SyncStep1; return once its SyncStep2 comes back.

    Each relay handles one connection's messages in order, so the answer means
    every update before it has been applied to the room's document.
    """
    for upd in updates:
        await ws.send(update_message(upd))
    await ws.send(step1_message(state_vector))
    async with asyncio.timeout(60):
        async for msg in ws:
            if isinstance(msg, bytes) and len(msg) > 1 and msg[:2] == bytes([SYNC, STEP2]):
                return
    raise ConnectionError("the relay closed the connection before answering")


async def _rss_settled(relay: RelayProcess, settle: float) -> int:
    await asyncio.sleep(settle)
    return relay.rss()


async def idle_rooms(kind: str, rooms: int, log_dir: Path, settle: float) -> dict[str, Any]:
    """Resident memory of relay ``kind`` with ``rooms`` empty, then ``rooms`` 10 KB, idle rooms.

    One relay process: warm-up room, RSS, ``rooms`` empty rooms (the cost of a
    room and its one connection alone), RSS, ``rooms`` rooms holding one
    10 KB file each, RSS.
    """
    content = file_contents(1)[0]
    tag = random.randrange(1 << 30)
    clients: list[ClientConnection] = []
    sem = asyncio.Semaphore(CONCURRENCY)

    async def fill(room: str, text: str) -> None:
        async with sem:
            updates, sv = seed_updates([text], 1 + len(clients)) if text else ([], b"\x00")
            ws = await _connect(_url(relay, room))
            clients.append(ws)
            await push(ws, updates, sv)

    async with RelayProcess(kind, log_dir) as relay:
        try:
            await fill(f"warm-{tag}", content)
            before = await _rss_settled(relay, settle)
            await asyncio.gather(*(fill(f"empty-{tag}-{r}", "") for r in range(rooms)))
            mid = await _rss_settled(relay, settle)
            t0 = time.perf_counter()
            await asyncio.gather(*(fill(f"idle-{tag}-{r}", content) for r in range(rooms)))
            fill_s = time.perf_counter() - t0
            after = await _rss_settled(relay, settle)
            peak = relay.peak_rss()
        finally:
            await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)
    per_room = (after - mid) / rooms
    per_empty = (mid - before) / rooms
    return {
        "rooms": rooms,
        "doc_bytes": len(content),
        "rss_before_mb": round(before / 2**20, 1),
        "rss_empty_rooms_mb": round(mid / 2**20, 1),
        "rss_after_mb": round(after / 2**20, 1),
        "peak_rss_mb": round(peak / 2**20, 1),
        "per_room_bytes": round(per_room),
        "per_room_ratio": round(per_room / len(content), 2),
        "per_room_bytes_empty": round(per_empty),
        "per_room_doc_bytes": round(per_room - per_empty),
        "doc_ratio": round((per_room - per_empty) / len(content), 2),
        "fill_seconds": round(fill_s, 2),
        "settle_seconds": settle,
        "converged": len(clients) == 2 * rooms + 1,
    }


def pycrdt_doc_bytes(doc_bytes: int, count: int = 1000) -> int:
    """Resident bytes one pycrdt ``Doc`` holding one ``doc_bytes`` file costs, in this process.

    What a Python relay pays per copy of a room's document it keeps. Best in a
    fresh process (:func:`pycrdt_doc_bytes_fresh`): freed memory is reused.
    """
    updates, _ = seed_updates(file_contents(1, doc_bytes), 1)
    proc = psutil.Process()
    gc.collect()
    before = proc.memory_info().rss
    docs = []
    for _ in range(count):
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.apply_update(updates[0])
        docs.append(doc)
    gc.collect()
    used = proc.memory_info().rss - before
    del docs
    return round(used / count)


async def pycrdt_doc_bytes_fresh(doc_bytes: int) -> int:
    """:func:`pycrdt_doc_bytes` measured in a fresh Python process."""
    code = f"from bench.memory import pycrdt_doc_bytes; print(pycrdt_doc_bytes({doc_bytes}))"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 60)
    return int(output.decode().strip())


async def join_once(url: str, n_files: int, total: int) -> dict[str, float]:
    """Connect a fresh client; time until its document holds every file in full."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    files: pycrdt.Map[pycrdt.Text] = doc.get("files", type=pycrdt.Map)
    t0 = time.perf_counter()
    ws = await _connect(url)
    t_open = time.perf_counter()
    t_first = t_done = 0.0
    try:
        await ws.send(SYNC_STEP1_EMPTY)
        async with asyncio.timeout(60):
            async for msg in ws:
                if not isinstance(msg, bytes):
                    continue
                got = sync_payload(msg)
                if got is None:
                    continue
                if not t_first:
                    t_first = time.perf_counter()
                doc.apply_update(got[1])
                if len(files) == n_files and sum(len(t) for t in files.values()) == total:
                    t_done = time.perf_counter()
                    break
            else:
                raise ConnectionError("the relay closed the connection before the sync")
    finally:
        await ws.close()
    return {
        "open_s": t_open - t0,
        "first_data_s": t_first - t0,
        "synced_s": t_done - t0,
    }


async def late_join(kind: str, n_files: int, joins: int, log_dir: Path) -> dict[str, Any]:
    """Seed ``n_files`` 10 KB files through relay ``kind``, then time ``joins`` fresh joiners."""
    contents = file_contents(n_files)
    total = sum(len(c) for c in contents)
    updates, sv = seed_updates(contents, client_id=424242)
    room = f"join-{random.randrange(1 << 30)}"
    async with RelayProcess(kind, log_dir) as relay:
        url = _url(relay, room)
        seeder = await _connect(url)
        try:
            t0 = time.perf_counter()
            await push(seeder, updates, sv)
            seed_s = time.perf_counter() - t0
            await asyncio.sleep(0.5)
            runs = [await join_once(url, n_files, total) for _ in range(joins)]
            peak = relay.peak_rss()
        finally:
            await seeder.close()
    synced = [r["synced_s"] for r in runs]
    return {
        "files": n_files,
        "total_bytes": total,
        "update_bytes": sum(len(u) for u in updates),
        "seed_seconds": round(seed_s, 3),
        "joins": len(runs),
        "join_p50_s": statistics.median(synced),
        "join_max_s": max(synced),
        "first_data_p50_s": statistics.median(r["first_data_s"] for r in runs),
        "open_p50_s": statistics.median(r["open_s"] for r in runs),
        "runs": runs,
        "peak_rss_mb": round(peak / 2**20, 1),
        "converged": len(runs) == joins,
    }


async def run(quick: bool, log_dir: Path) -> dict[str, Any]:
    rooms = 50 if quick else 1000
    n_files = 50 if quick else 1000
    joins = 2 if quick else 5
    out: dict[str, Any] = {
        "idle": {},
        "join": {},
        "pycrdt_doc_bytes": await pycrdt_doc_bytes_fresh(DOC_BYTES),
    }
    for kind in RELAYS:
        out["idle"][kind] = await idle_rooms(kind, rooms, log_dir, 0.3 if quick else SETTLE_S)
    for kind in RELAYS:
        out["join"][kind] = await late_join(kind, n_files, joins, log_dir)
    out["converged"] = all(r["converged"] for part in ("idle", "join") for r in out[part].values())
    return out
