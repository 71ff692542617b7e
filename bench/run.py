"""Run every benchmark scenario, write the raw JSON, the plots and docs/benchmarks.md.

Usage::

    python -m bench.run            # the full run (about 13 minutes): six scenarios
    python -m bench.run --quick    # small counts: checks that it all runs and converges

Results go to ``--out`` (default ``bench/results``) as ``<timestamp>.json`` and
``latest.json``. A full run also regenerates ``docs/benchmarks.md`` and its
plots in ``docs/``; a quick run writes its report next to its JSON only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import docsize, hover, latency, memory, relay_compare, throughput
from bench.common import REPO, machine

Scenario = Callable[[bool, Path], Awaitable[dict[str, Any]]]

#: In the order they run: the relay comparison first.
SCENARIOS: dict[str, Scenario] = {
    "relay": relay_compare.run,
    "latency": latency.run,
    "throughput": throughput.run,
    "docsize": docsize.run,
    "memory": memory.run,
    "hover": hover.run,
}


async def run_all(quick: bool, work: Path, only: list[str] | None) -> dict[str, Any]:
    results: dict[str, Any] = {
        "quick": quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "scenarios": {},
    }
    for name, fn in SCENARIOS.items():
        if only and name not in only:
            continue
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            res = await fn(quick, work)
        except Exception as exc:
            traceback.print_exc()
            res = {"error": f"{type(exc).__name__}: {exc}", "converged": False}
        res["wall_seconds"] = round(time.perf_counter() - t0, 1)
        results["scenarios"][name] = res
        print(f"bench: {name} done in {res['wall_seconds']} s", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts, a minute or two")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--only", nargs="*", choices=list(SCENARIOS), help="run these only")
    parser.add_argument(
        "--docs", type=Path, default=None, help="where benchmarks.md and plots go (full: docs/)"
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    results = asyncio.run(run_all(args.quick, work, args.only))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = json.dumps(results, indent=1, sort_keys=False)
    (out / f"{stamp}.json").write_text(text)
    (out / "latest.json").write_text(text)
    from bench import report

    docs = args.docs or (out if args.quick else REPO / "docs")
    report.write(results, docs)
    print(f"bench: results in {out / 'latest.json'}, report in {docs / 'benchmarks.md'}")
    ok = all(s.get("converged") for s in results["scenarios"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
