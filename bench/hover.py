"""Scenario 6: hover latency through the host's shared language server.

The same ``textDocument/hover`` (same file, same position: the call of a
documented function) asked three ways, side by side in one run:

- **direct**: an LSP client talking straight to ``pylsp`` over stdio, the
  baseline an editor gets without collab-ls;
- **host**: the host's editor asking ``collab-ls --share -- pylsp``, which
  passes the request to its ``pylsp`` child and the answer back;
- **guest**: a guest's editor asking ``collab-ls --join URL``: guest collab-ls
  → relay (embedded in the host's collab-ls) → host collab-ls → ``pylsp`` and
  back, URIs rewritten between the two roots.

Each client is a lean JSON-RPC client on the process's pipes (no pygls, no
cattrs), negotiating ``utf-16`` everywhere (the host's server's encoding, so no
position conversion on the way). pylsp runs with its signature formatter off
(``pylsp.signature.formatter = ""`` in ``initializationOptions``, which the
host's collab-ls passes on untouched; pylsp's settings merge ignores a null):
by default it runs ``black`` in a subprocess on every hover to format the
signature, which costs far more than everything else here and would drown it.

Once every server answers and has linted the document, requests go round-robin
over the three paths after a warm-up, one outstanding at a time, the order
rotating every round so drift and background noise fall on all three alike.
Latency: request written to the pipe → response read from it. Every answer
must carry the function's docstring and be the same on all three paths. A
path's overhead is the median over rounds of its latency minus the direct
request's in the same round.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.common import summary_ms

PYLSP = [sys.executable, "-m", "pylsp"]
PATHS = ("direct", "host", "guest")
REL = "main.py"
DOCSTRING = "Say hello to someone"

LIB = '''"""Helpers."""


def greet(name: str) -> str:
    """Say hello to someone.

    Args:
        name: who to greet.
    """
    return "hello " + name


class Counter:
    """Counts things."""

    def __init__(self) -> None:
        self.count = 0

    def bump(self) -> int:
        """One more."""
        self.count += 1
        return self.count
'''

MAIN = """from lib import Counter, greet

counter = Counter()
for who in ("world", "é中😀"):
    message = greet(who)
    print(message, counter.bump())
"""
#: The `greet` of `message = greet(who)` (ASCII before it: the same in every encoding).
POSITION = {"line": 4, "character": len("    message = gr")}
#: The server's own options (pylsp reads ``initializationOptions["pylsp"]``).
INIT_OPTIONS = {"pylsp": {"signature": {"formatter": ""}}}
START_TIMEOUT = 60.0
REQUEST_TIMEOUT = 30.0


class StdioClient:
    """An editor's side of one language server process: raw JSON-RPC on its pipes."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        root: Path,
        log: Path | None = None,
        init_options: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.root = root
        self.log = log
        self.init_options = INIT_OPTIONS if init_options is None else init_options
        self.messages: list[str] = []
        self.diagnosed: set[str] = set()
        self.encoding = "utf-16"
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[tuple[float, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        stderr = self.log.open("ab") if self.log is not None else asyncio.subprocess.DEVNULL
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                cwd=self.root,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                limit=2**24,
            )
        finally:
            if not isinstance(stderr, int):
                stderr.close()
        self._reader = asyncio.create_task(self._read())
        uri = self.root.as_uri()
        caps = {
            "general": {"positionEncodings": ["utf-16"]},
            "workspace": {"applyEdit": True, "workspaceEdit": {"documentChanges": True}},
            "textDocument": {
                "synchronization": {"dynamicRegistration": False},
                "hover": {"contentFormat": ["markdown", "plaintext"]},
            },
        }
        async with asyncio.timeout(START_TIMEOUT):
            result = await self.request(
                "initialize",
                {
                    "processId": os.getpid(),
                    "rootUri": uri,
                    "capabilities": caps,
                    "initializationOptions": self.init_options,
                    "workspaceFolders": [{"uri": uri, "name": self.name}],
                },
            )
        self.encoding = result["capabilities"].get("positionEncoding", "utf-16")
        self.notify("initialized", {})

    async def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        try:
            async with asyncio.timeout(10):
                await self.request("shutdown", None)
                self.notify("exit", None)
                await proc.wait()
        except (TimeoutError, ConnectionError, RuntimeError):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    def _write(self, msg: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        body = json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    def notify(self, method: str, params: Any) -> None:
        self._write({"jsonrpc": "2.0", "method": method, "params": params})

    async def timed(self, method: str, params: Any) -> tuple[float, Any]:
        """Send a request; (seconds from the write to the response read, result).

        Unbounded: callers bound it (``asyncio.timeout``).
        """
        self._next_id += 1
        rid = self._next_id
        fut: asyncio.Future[tuple[float, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        t0 = time.perf_counter()
        self._write({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        try:
            t1, result = await fut
        finally:
            self._pending.pop(rid, None)
        return t1 - t0, result

    async def request(self, method: str, params: Any) -> Any:
        return (await self.timed(method, params))[1]

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        stdout = self.proc.stdout
        try:
            while True:
                header = await stdout.readuntil(b"\r\n\r\n")
                length = 0
                for line in header.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await stdout.readexactly(length)
                self._dispatch(json.loads(body), time.perf_counter())
        except (asyncio.IncompleteReadError, ConnectionError):
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(f"{self.name}: the server exited"))

    def _dispatch(self, msg: dict[str, Any], t: float) -> None:
        method = msg.get("method")
        if method is None:
            fut = self._pending.get(msg.get("id", -1))
            if fut is not None and not fut.done():
                if "error" in msg:
                    fut.set_exception(RuntimeError(f"{self.name}: {msg['error']}"))
                else:
                    fut.set_result((t, msg.get("result")))
            return
        if "id" not in msg:
            if method == "window/showMessage":
                self.messages.append(str(msg["params"].get("message", "")))
            elif method == "textDocument/publishDiagnostics":
                self.diagnosed.add(str(msg["params"].get("uri")))
            return
        # Server requests (registerCapability, workDoneProgress/create...): a null answer.
        # No edit is expected: every peer opens the same text and nobody types.
        result: Any = None
        if method == "workspace/applyEdit":
            result = {"applied": False, "failureReason": "the benchmark does not edit"}
        self._write({"jsonrpc": "2.0", "id": msg["id"], "result": result})

    def open(self, rel: str, text: str) -> str:
        uri = (self.root / rel).as_uri()
        self.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}},
        )
        return uri


def _hover_text(result: Any) -> str:
    if not isinstance(result, dict):
        return ""
    contents = result.get("contents")
    if isinstance(contents, dict):
        return str(contents.get("value", ""))
    if isinstance(contents, list):
        return "\n".join(c if isinstance(c, str) else str(c.get("value", "")) for c in contents)
    return str(contents or "")


async def _wait(check: Any, limit: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not check():
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _hover_ready(client: StdioClient, uri: str, limit: float) -> None:
    """Ask until the answer carries the docstring (servers still starting say null or fail)."""
    last: Any = None
    try:
        async with asyncio.timeout(limit):
            while True:
                try:
                    last = await client.request(
                        "textDocument/hover", {"textDocument": {"uri": uri}, "position": POSITION}
                    )
                    if DOCSTRING in _hover_text(last):
                        return
                except RuntimeError as exc:
                    last = str(exc)
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise TimeoutError(
            f"{client.name}: no hover with the docstring in {limit:g} s; last answer: {last!r}"
        ) from None


def _project(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "lib.py").write_text(LIB, encoding="utf-8")
    (root / REL).write_text(MAIN, encoding="utf-8")
    return root


async def measure(base: Path, requests: int, warmup: int, default_requests: int) -> dict[str, Any]:
    """Start pylsp, a sharing host and a guest under ``base``; time the hovers."""
    host_root, guest_root = _project(base / "host"), _project(base / "guest")
    collab = [sys.executable, "-m", "collab_ls", "--log-level", "WARNING", "--log-file"]
    clients = {
        "direct": StdioClient("direct", PYLSP, host_root, base / "direct-pylsp.log"),
        "host": StdioClient(
            "host", [*collab, str(base / "host.log"), "--share", "--", *PYLSP], host_root
        ),
    }
    # pylsp as it comes (black formats each hover's signature), timed apart: what the
    # formatter costs, beside what the paths add.
    default = StdioClient("default", PYLSP, host_root, base / "default-pylsp.log", {})
    started: list[StdioClient] = []
    try:
        for client in clients.values():
            started.append(client)  # stopped (or killed) whatever happens next
            await client.start()
        host = clients["host"]
        await _wait(lambda: any("--join " in m for m in host.messages), 20, "the join URL")
        url = next(m for m in host.messages if "--join " in m).split("--join ", 1)[1].split()[0]
        guest = StdioClient("guest", [*collab, str(base / "guest.log"), "--join", url], guest_root)
        clients["guest"] = guest
        started.append(guest)
        await guest.start()
        uris = {name: c.open(REL, MAIN) for name, c in clients.items()}
        for name, c in clients.items():
            await _hover_ready(c, uris[name], START_TIMEOUT)
        # pylsp lints a document it opens in a thread, after a debounce: let both servers
        # finish (the guest gets the host's diagnostics) before anything is timed.
        for name, c in clients.items():
            await _wait(lambda c=c, u=uris[name]: u in c.diagnosed, START_TIMEOUT, "diagnostics")
        params = {
            name: {"textDocument": {"uri": uris[name]}, "position": POSITION} for name in PATHS
        }
        samples: dict[str, list[float]] = {name: [] for name in PATHS}
        wrong: dict[str, int] = {name: 0 for name in PATHS}
        first: dict[str, str] = {}
        for i in range(warmup + requests):
            order = PATHS[i % 3 :] + PATHS[: i % 3]
            for name in order:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    seconds, result = await clients[name].timed("textDocument/hover", params[name])
                text = _hover_text(result)
                first.setdefault(name, text)
                if DOCSTRING not in text or text != first[name]:
                    wrong[name] += 1
                if i >= warmup:
                    samples[name].append(seconds)
        encodings = {name: c.encoding for name, c in clients.items()}
        # Started only now: its start and its linting must not disturb the figures above.
        started.append(default)
        await default.start()
        default_uri = default.open(REL, MAIN)
        await _hover_ready(default, default_uri, START_TIMEOUT)
        default_samples = []
        for _ in range(default_requests):
            async with asyncio.timeout(REQUEST_TIMEOUT):
                seconds, result = await default.timed(
                    "textDocument/hover",
                    {"textDocument": {"uri": default_uri}, "position": POSITION},
                )
            if DOCSTRING in _hover_text(result):
                default_samples.append(seconds)
    finally:
        # Guests first, the host (and its embedded relay) last.
        for client in reversed(started):
            with contextlib.suppress(Exception):
                await client.stop()
    paths: dict[str, dict[str, Any]] = {name: summary_ms(samples[name]) for name in PATHS}
    for name in ("host", "guest"):
        # Paired by round: the same moment's direct request is the baseline.
        extra = [a - b for a, b in zip(samples[name], samples["direct"], strict=True)]
        paths[name]["overhead_p50_ms"] = statistics.median(extra) * 1e3 if extra else None
    direct = paths["direct"]
    ratios = {
        f"{name}_{q}": paths[name][f"{q}_ms"] / direct[f"{q}_ms"] if direct[f"{q}_ms"] else None
        for name in ("host", "guest")
        for q in ("p50", "p99")
    }
    return {
        "paths": paths,
        "ratios": ratios,
        "wrong_answers": wrong,
        "same_answer_everywhere": len(set(first.values())) == 1,
        "encodings": encodings,
        "pylsp_default_formatter": summary_ms(default_samples),
        "converged": not any(wrong.values())
        and len(set(first.values())) == 1
        and all(len(samples[n]) == requests for n in PATHS),
    }


async def run(quick: bool, log_dir: Path) -> dict[str, Any]:
    requests, warmup, default_requests = (30, 10, 5) if quick else (500, 20, 20)
    with tempfile.TemporaryDirectory(dir=log_dir) as d:
        res = await measure(Path(d), requests, warmup, default_requests)
    return {
        "requests": requests,
        "warmup": warmup,
        "server": "python -m pylsp",
        "pylsp_version": metadata.version("python-lsp-server"),
        "file": REL,
        "position": POSITION,
        **res,
    }
