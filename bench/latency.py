"""Scenario 1: edit latency end to end between collab-ls peers.

``n`` collab-ls processes (a host with its embedded relay and ``n - 1``
guests), each driven over stdio by a :class:`bench.editor.Editor`. One peer
(a guest) types at 20 keys/s, every other peer at 5 keys/s, each on its own
line. Latency is from the typist's ``didChange`` written to the pipe to the
``workspace/applyEdit`` that brings that keystroke received at every other
peer. The typist's characters come from an alphabet nobody else uses, so a
receiver tells which keystrokes an edit carried by counting them in its buffer.

Then the same between two real Neovims (:mod:`bench.nvim_latency`): a
keystroke in one to the text in the other's buffer.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import nvim_latency
from bench.common import summary_ms
from bench.editor import Buffer, Editor, start_session, wait_for

REL = "src/shared.txt"
TYPIST_ALPHABET = "ABCDEFGHJK"
OTHER_ALPHABET = "0123456789"
TYPIST_RATE = 20.0
OTHER_RATE = 5.0


def _count_typist(text: str) -> int:
    return sum(text.count(c) for c in TYPIST_ALPHABET)


async def _type(
    ed: Editor, line: int, rate: float, duration: float, alphabet: str, sent: list[float] | None
) -> None:
    buf = ed.buffer(REL)
    loop = asyncio.get_running_loop()
    start = loop.time() + random.random() / rate
    k = 0
    while k < int(rate * duration):
        delay = start + k / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        # The end of this peer's own line.
        idx = -1
        for _ in range(line + 1):
            idx = buf.text.find("\n", idx + 1)
        if sent is not None:
            sent.append(time.perf_counter())
        ed.replace(buf, idx, idx, alphabet[k % len(alphabet)])
        k += 1


async def run_peers(n: int, duration: float, base: Path) -> dict[str, Any]:
    initial = "".join(f"line {i}: \n" for i in range(n))
    editors = await start_session(base, n, REL, initial)
    try:
        typist = editors[1]
        sent: list[float] = []
        latencies: list[float] = []
        seen: dict[str, int] = {}

        def on_applied(ed: Editor) -> Any:
            def record(buf: Buffer, t: float) -> None:
                now = _count_typist(buf.text)
                for k in range(seen.get(ed.name, 0), min(now, len(sent))):
                    latencies.append(t - sent[k])
                seen[ed.name] = max(seen.get(ed.name, 0), now)

            return record

        for ed in editors:
            if ed is not typist:
                ed.on_applied = on_applied(ed)
                seen[ed.name] = 0
        await asyncio.gather(
            *(
                _type(
                    ed,
                    i,
                    TYPIST_RATE if ed is typist else OTHER_RATE,
                    duration,
                    TYPIST_ALPHABET if ed is typist else OTHER_ALPHABET,
                    sent if ed is typist else None,
                )
                for i, ed in enumerate(editors)
            )
        )
        final = typist.buffer(REL)
        try:
            await wait_for(
                lambda: all(e.buffer(REL).text == final.text for e in editors), 30, "convergence"
            )
            converged = True
        except TimeoutError:
            converged = False
        return {
            "peers": n,
            "keystrokes": len(sent),
            "converged": converged and _count_typist(final.text) == len(sent),
            "rejected_edits": sum(e.buffer(REL).rejected for e in editors),
            **summary_ms(latencies),
            "expected_samples": len(sent) * (n - 1),
        }
    finally:
        await asyncio.gather(*(e.stop() for e in editors), return_exceptions=True)


async def run(quick: bool, log_dir: Path) -> dict[str, Any]:
    counts = [2, 3] if quick else [2, 5, 10]
    duration = 2.0 if quick else 15.0
    rows = []
    for n in counts:
        with tempfile.TemporaryDirectory(dir=log_dir) as d:
            rows.append(await run_peers(n, duration, Path(d)))
    nvim = await nvim_latency.run(20 if quick else 100, log_dir)
    return {
        "rows": rows,
        "neovim": nvim,
        "converged": all(r["converged"] for r in rows) and bool(nvim["converged"]),
    }
