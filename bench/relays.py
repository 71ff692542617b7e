"""Start and stop the three relays as subprocesses on free loopback ports.

:class:`RelayProcess` is an async context manager: it starts one relay, waits
until it accepts TCP connections, and reports the CPU time it used
(user + system, from psutil) and its peak resident memory (``VmHWM`` from
``/proc``; psutil's RSS where that is not available).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Self

import psutil

from bench.common import NODE_DIR, REPO, free_port

#: The relays measured side by side; ours first.
RELAYS = ("collab-relay", "y-websocket", "pycrdt-websocket")


def relay_command(kind: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start relay ``kind`` on ``port``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if kind == "collab-relay":
        bindir = Path(sys.executable).parent
        return [
            str(bindir / "collab-relay"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            # The load generator may burst; room for it before the relay drops a slow peer.
            "--max-queue",
            "100000",
            # Like for like: the reference relays keep rooms in memory and do not
            # rate-limit, so neither does ours here.
            "--no-store",
            "--rate-limit",
            "0",
        ], env
    if kind == "y-websocket":
        server = NODE_DIR / "node_modules" / "y-websocket" / "bin" / "server.js"
        return ["node", str(server)], {**env, "HOST": "127.0.0.1", "PORT": str(port)}
    if kind == "pycrdt-websocket":
        return [sys.executable, "-m", "bench.pycrdt_ws_relay", "--port", str(port)], env
    raise ValueError(f"unknown relay {kind!r}")


def peak_rss(proc: psutil.Process) -> int:
    """Peak resident set size in bytes (VmHWM), or the current RSS."""
    try:
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    rss: int = proc.memory_info().rss
    return rss


class RelayProcess:
    """One relay subprocess on a free loopback port."""

    def __init__(self, kind: str, log_dir: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self._log_path = log_dir / f"relay-{kind}-{self.port}.log"
        self._popen: subprocess.Popen[bytes] | None = None
        self.proc: psutil.Process | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        cmd, env = relay_command(self.kind, self.port)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self._log_path.open("wb")
        # Popen only forks: it does not block the loop the way waiting on it would.
        self._popen = subprocess.Popen(  # noqa: ASYNC220
            cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        log.close()
        self.proc = psutil.Process(self._popen.pid)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:
            if self._popen.poll() is not None:
                raise RuntimeError(f"{self.kind} exited: {self._log_path.read_text()[-2000:]}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return self
            except OSError:
                if loop.time() > deadline:
                    raise RuntimeError(f"{self.kind} did not listen on {self.port}") from None
                await asyncio.sleep(0.05)

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._popen is None:
            return
        self._popen.terminate()
        try:
            await asyncio.to_thread(self._popen.wait, 10)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            await asyncio.to_thread(self._popen.wait, 10)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far."""
        assert self.proc is not None
        t = self.proc.cpu_times()
        return float(t.user + t.system)

    def rss(self) -> int:
        assert self.proc is not None
        rss: int = self.proc.memory_info().rss
        return rss

    def peak_rss(self) -> int:
        assert self.proc is not None
        return peak_rss(self.proc)
