"""Scenario 3: per-keystroke CPU time in collab-ls against document size.

One collab-ls host (``--share``, its embedded relay with nobody else in the
room) holds a document of a given size open; the editor types ``N`` single
characters at a cursor in the middle of it, paced lightly, then waits for a
request round trip (edits are handled in order, so every keystroke has been
processed). The host's CPU time (psutil, user + system) over the typing, less
its idle rate measured just before, divided by ``N``, is the figure.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import pycrdt

from bench.editor import Editor, frame, start_session
from collab_ls.relay_link import RelayLink

REL = "big.txt"


def code_like(size: int, seed: int = 1) -> str:
    """About ``size`` bytes of lines of 0-80 characters, one in 20 non-ASCII."""
    rng = random.Random(seed)
    words = ["def", "return", "self", "value", "x", "=", "(", ")", "if", "for", "in", "#"]
    out: list[str] = []
    total = 0
    while total < size:
        line = " " * rng.choice([0, 4, 8]) + " ".join(rng.choices(words, k=rng.randint(0, 12)))
        if rng.random() < 0.05:
            line += " # café 中文 😀"
        out.append(line + "\n")
        total += len(line.encode()) + 1
    return "".join(out)


async def _idle_rate(ed: Editor, seconds: float, settle_limit: float = 60.0) -> float:
    """The CPU share used while idle, once the open's work has settled (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle_limit
    while True:
        c0, t0 = ed.cpu_seconds(), time.perf_counter()
        await asyncio.sleep(seconds)
        rate = (ed.cpu_seconds() - c0) / (time.perf_counter() - t0)
        if rate < 0.05 or loop.time() > deadline:
            return rate


async def _session_line(host: Editor, line: int) -> str | None:
    """Line ``line`` of the shared text as a fresh peer joining the session sees it."""
    url = next(m for m in host.messages if "--join " in m).split("--join ", 1)[1].split()[0]
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    async with RelayLink(doc, url, origin="bench") as link:
        await link.wait_synced(60)
        shared = doc.get("files", type=pycrdt.Map).get(REL)
        return None if shared is None else str(shared).split("\n")[line]


def _keystroke_frames(uri: str, line: int, n: int) -> list[bytes]:
    """``n`` one-character didChanges typed at the start of ``line``, prepared up front.

    Built before the clock starts so the editor side costs the same whatever
    the document's size: an editor that rebuilt a 10 MB buffer per keystroke
    would pace the keystrokes out, and a collab-ls woken once per isolated
    keystroke spends several times the CPU of one handling a burst (measured:
    about 700 us against 130 us per keystroke at 10 KB), which would be
    mistaken for a cost of the document's size.
    """
    return [
        frame(
            {
                "jsonrpc": "2.0",
                "method": "textDocument/didChange",
                "params": {
                    "textDocument": {"uri": uri, "version": 2 + k},
                    "contentChanges": [
                        {
                            "range": {
                                "start": {"line": line, "character": k},
                                "end": {"line": line, "character": k},
                            },
                            "text": "abcdefghij"[k % 10],
                        }
                    ],
                },
            }
        )
        for k in range(n)
    ]


async def measure(label: str, text: str, n: int, base: Path) -> dict[str, Any]:
    (host,) = await start_session(base, 1, REL, text)
    try:
        buf = host.buffer(REL)
        idle = await _idle_rate(host, 1.0)
        middle = len(text) // 2
        line = text.count("\n", 0, middle)
        frames = _keystroke_frames(buf.uri, line, n)
        c0, t0 = host.cpu_seconds(), time.perf_counter()
        for k, data in enumerate(frames):
            host.write_raw(data)
            if k % 10 == 9:  # bursts of ten, at the same pace for every size
                await host.drain()
                await asyncio.sleep(0.002)
        await host.request(
            "workspace/executeCommand", {"command": "collab.status", "arguments": []}
        )
        await asyncio.sleep(0.2)  # the update's trip to the relay
        elapsed = time.perf_counter() - t0
        cpu = host.cpu_seconds() - c0 - idle * elapsed
        typed = "".join("abcdefghij"[k % 10] for k in range(n))
        lines = text.split("\n")
        expected_line = typed + lines[line]
        converged = await _session_line(host, line) == expected_line
        return {
            "document": label,
            "bytes": len(text.encode()),
            "lines": text.count("\n") + 1,
            "keystrokes": n,
            "cpu_us_per_keystroke": cpu / n * 1e6,
            "idle_cpu_share": idle,
            "converged": converged,
        }
    finally:
        await host.stop()


async def run(quick: bool, log_dir: Path) -> dict[str, Any]:
    n = 50 if quick else 500
    docs = [
        ("10 KB", code_like(10_000)),
        ("1 MB", code_like(1_000_000)),
        ("10 MB", code_like(10_000_000)),
        ("one 1 MB line", ("x = value if self else return " * 40_000)[:1_000_000]),
    ]
    if quick:
        docs = [docs[0], docs[1], docs[3]]
    rows = []
    for label, text in docs:
        with tempfile.TemporaryDirectory(dir=log_dir) as d:
            rows.append(await measure(label, text, n, Path(d)))
    base = rows[0]["cpu_us_per_keystroke"]
    for r in rows:
        r["ratio_to_10kb"] = r["cpu_us_per_keystroke"] / base if base > 0 else float("nan")
    return {"rows": rows, "converged": all(r["converged"] for r in rows)}
