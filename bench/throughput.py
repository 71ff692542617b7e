"""Scenario 2: throughput on real typing, collab-ls against raw pycrdt.

A trace is replayed transaction by transaction (one ``didChange`` each, its
patches as ``contentChanges``) into the host's collab-ls as fast as its stdin
accepts them, until the guest's editor holds the final text, checked equal to
the trace's ``endContent``. Beside it, in the same run, the same trace
replayed into a raw pycrdt document (one transaction per trace transaction),
each update applied to a second document as a peer would: the ceiling.
The didChange messages and the UTF-8 offsets pycrdt needs are prepared before
the clock starts.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import pycrdt

from bench.common import Trace, load_trace
from bench.editor import Buffer, frame, line_col, start_session

REL = "trace.txt"
#: (trace, transactions replayed): seph-blog1 is cut to its first 30,000 transactions
#: so that the run stays bounded (collab-ls replays it at a few hundred per second).
TRACES_FULL = [("sveltecomponent.json.gz", None), ("seph-blog1.json.gz", 30_000)]
#: Seconds a replay may take before it is abandoned (reported as not converged).
REPLAY_LIMIT = 240.0


def prepare_frames(trace: Trace, uri: str) -> list[bytes]:
    """One didChange frame per transaction, versions from 2."""
    text = trace.start
    frames = []
    for version, txn in enumerate(trace.txns, start=2):
        changes = []
        for pos, ndel, ins in txn:
            sl, sc = line_col(text, pos)
            el, ec = (sl, sc) if ndel == 0 else line_col(text, pos + ndel)
            changes.append(
                {
                    "range": {
                        "start": {"line": sl, "character": sc},
                        "end": {"line": el, "character": ec},
                    },
                    "text": ins,
                }
            )
            text = text[:pos] + ins + text[pos + ndel :]
        frames.append(
            frame(
                {
                    "jsonrpc": "2.0",
                    "method": "textDocument/didChange",
                    "params": {
                        "textDocument": {"uri": uri, "version": version},
                        "contentChanges": changes,
                    },
                }
            )
        )
    return frames


def raw_pycrdt(trace: Trace) -> dict[str, Any]:
    """Replay into a pycrdt Text, every update applied to a second doc."""
    text = trace.start
    ops: list[list[tuple[int, int, str]]] = []
    for txn in trace.txns:
        out = []
        for pos, ndel, ins in txn:
            start = len(text[:pos].encode())
            nb = len(text[pos : pos + ndel].encode())
            out.append((start, nb, ins))
            text = text[:pos] + ins + text[pos + ndel :]
        ops.append(out)
    a: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    b: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    ta, tb = pycrdt.Text(trace.start), pycrdt.Text()
    a["t"] = ta
    b["t"] = tb
    b.apply_update(a.get_update())
    sub = a.observe(lambda ev: b.apply_update(ev.update))
    t0 = time.perf_counter()
    for txn_ops in ops:
        with a.transaction():
            for pos, nb, ins in txn_ops:
                if nb:
                    del ta[pos : pos + nb]
                if ins:
                    ta.insert(pos, ins)
    elapsed = time.perf_counter() - t0
    a.unobserve(sub)
    return {
        "seconds": elapsed,
        "keystrokes_per_s": len(trace.txns) / elapsed,
        "converged": str(tb) == trace.end,
    }


async def collab_ls(trace: Trace, base: Path) -> dict[str, Any]:
    host, guest = await start_session(base, 2, REL, trace.start)
    try:
        uri = host.buffer(REL).uri
        frames = prepare_frames(trace, uri)
        done = asyncio.Event()
        end_len = len(trace.end)
        finished = [0.0]

        def check(buf: Buffer, t: float) -> None:
            if len(buf.text) == end_len and buf.text == trace.end and not done.is_set():
                finished[0] = t
                done.set()

        guest.on_applied = check
        cpu0 = host.cpu_seconds(), guest.cpu_seconds()
        t0 = time.perf_counter()
        deadline = t0 + REPLAY_LIMIT
        for i in range(0, len(frames), 256):
            host.write_raw(b"".join(frames[i : i + 256]))
            await host.drain()
            if time.perf_counter() > deadline:
                break
        t_sent = time.perf_counter()
        try:
            await asyncio.wait_for(done.wait(), max(1.0, deadline - t_sent))
        except TimeoutError:
            pass
        elapsed = (finished[0] or time.perf_counter()) - t0
        return {
            "seconds": elapsed,
            "keystrokes_per_s": len(trace.txns) / elapsed,
            "accept_seconds": t_sent - t0,
            "host_cpu_s": host.cpu_seconds() - cpu0[0],
            "guest_cpu_s": guest.cpu_seconds() - cpu0[1],
            "guest_applied_edits": guest.buffer(REL).applied,
            "converged": done.is_set(),
        }
    finally:
        await asyncio.gather(host.stop(), guest.stop(), return_exceptions=True)


async def run(quick: bool, log_dir: Path) -> dict[str, Any]:
    specs = [("sveltecomponent.json.gz", 2000)] if quick else TRACES_FULL
    rows = []
    for name, limit in specs:
        trace = load_trace(name, limit)
        raw = raw_pycrdt(trace)
        with tempfile.TemporaryDirectory(dir=log_dir) as d:
            ours = await collab_ls(trace, Path(d))
        rows.append(
            {
                "trace": trace.name,
                "transactions": len(trace.txns),
                "patches": trace.patches,
                "final_chars": len(trace.end),
                "collab_ls": ours,
                "raw_pycrdt": raw,
                "ratio": ours["keystrokes_per_s"] / raw["keystrokes_per_s"],
                "converged": ours["converged"] and raw["converged"],
            }
        )
    return {"rows": rows, "converged": all(r["converged"] for r in rows)}
