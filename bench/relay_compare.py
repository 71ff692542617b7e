"""Scenario 4: the project's relay against y-websocket's and pycrdt-websocket's.

The same load generator (:mod:`bench.loadgen`) drives each relay in turn, in
the same run: fixed loads (rooms x clients at a rate each), then a ramp of the
per-client rate to find each relay's maximum deliveries/s. CPU time and peak
memory of each relay process come from :class:`bench.relays.RelayProcess`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.loadgen import make_updates, run_load
from bench.relays import RELAYS, RelayProcess

#: (rooms, clients per room, updates/s per client)
FIXED_LOADS = [(4, 5, 50.0), (2, 20, 50.0)]
RAMP_SHAPE = (2, 10)
RAMP_RATES = [50.0, 100.0, 200.0, 400.0, 800.0]
#: A ramp step that delivers less than this share of what was offered, loses
#: updates, or has a p99 above RAMP_MAX_P99_MS is the relay's limit.
RAMP_KEEP_UP = 0.9
RAMP_MAX_P99_MS = 250.0


async def run(quick: bool, log_dir: Path) -> dict[str, Any]:
    duration = 1.0 if quick else 8.0
    ramp_step = 0.5 if quick else 3.0
    loads = FIXED_LOADS[:1] if quick else FIXED_LOADS
    rates = RAMP_RATES[:2] if quick else RAMP_RATES
    n_max = max(r * c for r, c, _ in [*loads, (*RAMP_SHAPE, 0.0)])
    per_client = int(max(max(rate for *_, rate in loads) * duration, max(rates) * ramp_step)) + 1
    updates = make_updates(n_max, per_client)
    out: dict[str, Any] = {"loads": [], "ramp": {}, "relays": {}}
    for rooms, clients, rate in loads:
        row: dict[str, Any] = {"rooms": rooms, "clients": clients, "rate": rate, "by_relay": {}}
        for kind in RELAYS:
            async with RelayProcess(kind, log_dir) as relay:
                cpu0 = relay.cpu_seconds()
                res = await run_load(relay.url, rooms, clients, rate, duration, updates)
                cpu = relay.cpu_seconds() - cpu0
                row["by_relay"][kind] = {
                    **res.as_dict(),
                    "cpu_s": round(cpu, 3),
                    "cpu_us_per_delivery": round(cpu / max(res.deliveries, 1) * 1e6, 2),
                    "peak_rss_mb": round(relay.peak_rss() / 2**20, 1),
                }
        out["loads"].append(row)
    rooms, clients = RAMP_SHAPE
    for kind in RELAYS:
        steps = []
        async with RelayProcess(kind, log_dir) as relay:
            for rate in rates:
                cpu0 = relay.cpu_seconds()
                res = await run_load(relay.url, rooms, clients, rate, ramp_step, updates)
                step = {
                    "rate": rate,
                    **res.as_dict(),
                    "cpu_s": round(relay.cpu_seconds() - cpu0, 3),
                }
                steps.append(step)
                if (
                    res.deliveries < res.expected_deliveries
                    or res.deliveries_per_s < RAMP_KEEP_UP * res.offered_per_s
                    or step["p99_ms"] > RAMP_MAX_P99_MS
                ):
                    break
            peak = relay.peak_rss()
        out["ramp"][kind] = {
            "rooms": rooms,
            "clients": clients,
            "steps": steps,
            "max_deliveries_per_s": max(s["deliveries_per_s"] for s in steps),
            "peak_rss_mb": round(peak / 2**20, 1),
        }
    # Our relay must deliver everything; a reference that drops updates under
    # load (pycrdt-websocket at 2 x 20) is reported in its row, not a failed run.
    out["converged"] = all(row["by_relay"]["collab-relay"]["converged"] for row in out["loads"])
    out["references_converged"] = {
        name: all(row["by_relay"][name]["converged"] for row in out["loads"])
        for name in out["loads"][0]["by_relay"]
    }
    return out
