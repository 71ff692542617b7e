"""Profile a collab-ls host and guest (pyinstrument) while a trace is replayed.

Usage: ``python -m bench.profile [trace] [transactions] [--out DIR]``. Writes
``host.txt`` and ``guest.txt`` (pyinstrument's text report) into DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.common import REPO, load_trace
from bench.editor import Buffer, Editor, wait_for
from bench.throughput import REL, prepare_frames


async def _main(trace_name: str, limit: int, out: Path) -> None:
    trace = load_trace(trace_name, limit)
    with tempfile.TemporaryDirectory() as d:
        base = Path(d)
        (base / "host").mkdir()
        (base / "host" / REL).write_text(trace.start)

        def prof(name: str) -> list[str]:
            return ["-m", "pyinstrument", "-r", "text", "--show-all", "-o", str(out / name)]

        host = Editor("host", base / "host", python_args=prof("host.txt"))
        await host.start("--share")
        await wait_for(lambda: any("--join " in m for m in host.messages), 20, "join URL")
        url = next(m for m in host.messages if "--join " in m).split("--join ", 1)[1].split()[0]
        host.open(REL, trace.start)
        guest = Editor("guest", base / "guest", python_args=prof("guest.txt"))
        await guest.start("--join", url)
        guest.open(REL, "")
        await wait_for(lambda: guest.buffer(REL).text == trace.start, 30, "guest sync")
        done = asyncio.Event()

        def check(buf: Buffer, t: float) -> None:
            if buf.text == trace.end:
                done.set()

        guest.on_applied = check
        frames = prepare_frames(trace, host.buffer(REL).uri)
        t0 = time.perf_counter()
        for i in range(0, len(frames), 256):
            host.write_raw(b"".join(frames[i : i + 256]))
            await host.drain()
        await asyncio.wait_for(done.wait(), 300)
        n = len(frames)
        print(f"{n} transactions in {time.perf_counter() - t0:.2f} s")
        await asyncio.gather(host.stop(), guest.stop())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("trace", nargs="?", default="sveltecomponent.json.gz")
    parser.add_argument("transactions", nargs="?", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "profile")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(_main(args.trace, args.transactions, args.out))


if __name__ == "__main__":
    main()
