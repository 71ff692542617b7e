"""The benchmark harness runs end to end in quick mode (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = ("relay", "latency", "throughput", "docsize", "memory", "hover")


@pytest.mark.timeout(600)
def test_bench_quick_runs_and_converges(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "latest.json").read_text())
    for name in SCENARIOS:
        assert name in results["scenarios"], name
        assert results["scenarios"][name]["converged"] is True, (name, results["scenarios"][name])
    assert (tmp_path / "benchmarks.md").exists()
