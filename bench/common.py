"""Small helpers shared by the scenarios: ports, percentiles, the machine, traces."""

from __future__ import annotations

import gzip
import json
import os
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
TRACES = REPO.parent / "shared" / "traces"
NODE_DIR = REPO / "bench" / "node"
TRACE_ATTRIBUTION = (
    "The editing traces are from Joseph Gentle's `editing-traces` collection "
    "(https://github.com/josephg/editing-traces, `sequential_traces/`), used under CC BY 4.0."
)


def free_port() -> int:
    """A free TCP port on the loopback interface (racy, but fine on a quiet machine)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary_ms(values_s: list[float]) -> dict[str, float | int]:
    """p50 / p99 / max in milliseconds of latencies given in seconds."""
    return {
        "n": len(values_s),
        "p50_ms": percentile(values_s, 50) * 1e3,
        "p99_ms": percentile(values_s, 99) * 1e3,
        "max_ms": max(values_s) * 1e3 if values_s else float("nan"),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unavailable"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import pycrdt

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "node": _version(["node", "--version"]),
        "pycrdt": getattr(pycrdt, "__version__", "?"),
    }


@dataclass(frozen=True)
class Trace:
    """One editing trace: positions in code points, patches in applicable order."""

    name: str
    start: str
    end: str
    txns: list[list[tuple[int, int, str]]]

    @property
    def patches(self) -> int:
        return sum(len(t) for t in self.txns)


def load_trace(name: str, limit: int | None = None) -> Trace:
    """Load ``name`` from the shared traces; ``limit`` keeps the first transactions only."""
    with gzip.open(TRACES / name, "rt", encoding="utf-8") as f:
        data = json.load(f)
    txns = [[(int(p[0]), int(p[1]), str(p[2])) for p in t["patches"]] for t in data["txns"]]
    end = data["endContent"]
    if limit is not None and limit < len(txns):
        txns = txns[:limit]
        text = data["startContent"]
        for txn in txns:
            for pos, ndel, ins in txn:
                text = text[:pos] + ins + text[pos + ndel :]
        end = text
    return Trace(name.removesuffix(".json.gz"), data["startContent"], end, txns)
