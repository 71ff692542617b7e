"""A lean LSP client acting as an editor, for timing collab-ls processes.

The test harness (``tests/lsp_editor.py``) goes through pytest-lsp and cattrs;
here every message is plain JSON on the subprocess's pipes, so the client's
own cost stays small beside what it measures. It negotiates the ``utf-32``
position encoding (columns are code points), keeps one text buffer per open
document, and answers ``workspace/applyEdit`` the VS Code way: version-gated
(``applied: false`` when stale), the echo ``didChange`` sent before the
response.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.common import REPO


def line_col(text: str, index: int) -> tuple[int, int]:
    """LSP position (utf-32) of code point ``index``."""
    line = text.count("\n", 0, index)
    col = index - (text.rfind("\n", 0, index) + 1)
    return line, col


def offset_of(text: str, line: int, col: int) -> int:
    """Code point index of an LSP position (utf-32)."""
    i = 0
    for _ in range(line):
        j = text.find("\n", i)
        if j < 0:
            return len(text)
        i = j + 1
    return min(i + col, len(text))


@dataclass
class Buffer:
    uri: str
    text: str
    version: int = 1
    applied: int = 0
    rejected: int = 0


@dataclass
class Editor:
    """One collab-ls process and the editor driving it over stdio."""

    name: str
    root: Path
    buffers: dict[str, Buffer] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    #: Called after an applyEdit was applied: (buffer, receive time).
    on_applied: Callable[[Buffer, float], None] | None = None
    #: Interpreter arguments before ``-m collab_ls`` (e.g. a profiler's).
    python_args: list[str] = field(default_factory=list)

    async def start(self, *args: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.root.parent / f"{self.name}.log"
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *self.python_args,
            "-m",
            "collab_ls",
            *args,
            "--log-file",
            str(log),
            "--log-level",
            "WARNING",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            limit=2**26,
        )
        self.ps = psutil.Process(self.proc.pid)
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader = asyncio.create_task(self._read())
        caps = {
            "general": {"positionEncodings": ["utf-32"]},
            "workspace": {"applyEdit": True, "workspaceEdit": {"documentChanges": True}},
            "textDocument": {"synchronization": {"dynamicRegistration": False}},
        }
        uri = self.root.as_uri()
        result = await self.request(
            "initialize",
            {
                "processId": os.getpid(),
                "rootUri": uri,
                "capabilities": caps,
                "workspaceFolders": [{"uri": uri, "name": self.name}],
            },
        )
        enc = result["capabilities"].get("positionEncoding", "utf-16")
        if enc != "utf-32":
            raise RuntimeError(f"collab-ls chose position encoding {enc}, not utf-32")
        self.notify("initialized", {})

    async def stop(self) -> None:
        try:
            await asyncio.wait_for(self.request("shutdown", None), 10)
            self.notify("exit", None)
            await asyncio.wait_for(self.proc.wait(), 10)
        except (TimeoutError, ConnectionError, RuntimeError):
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()

    def cpu_seconds(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    # ------------------------------------------------------------------ wire

    def _write(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        body = json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    def write_raw(self, data: bytes) -> None:
        """Write prepared frames (see :func:`frame`)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)

    async def drain(self) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.drain()

    def notify(self, method: str, params: Any) -> None:
        self._write({"jsonrpc": "2.0", "method": method, "params": params})

    async def request(self, method: str, params: Any) -> Any:
        self._next_id += 1
        rid = self._next_id
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self._write({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        return await fut

    async def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            while True:
                header = await stdout.readuntil(b"\r\n\r\n")
                length = 0
                for line in header.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await stdout.readexactly(length)
                t = time.perf_counter()
                self._dispatch(json.loads(body), t)
        except (asyncio.IncompleteReadError, ConnectionError):
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(f"{self.name}: collab-ls exited"))

    def _dispatch(self, msg: dict[str, Any], t: float) -> None:
        if "method" not in msg:
            fut = self._pending.pop(msg.get("id", -1), None)
            if fut is not None and not fut.done():
                if "error" in msg:
                    fut.set_exception(RuntimeError(str(msg["error"])))
                else:
                    fut.set_result(msg.get("result"))
            return
        method = msg["method"]
        if "id" not in msg:
            if method == "window/showMessage":
                self.messages.append(msg["params"]["message"])
            return
        result: Any = None
        if method == "workspace/applyEdit":
            result = self._apply_edit(msg["params"], t)
        self._write({"jsonrpc": "2.0", "id": msg["id"], "result": result})

    # --------------------------------------------------------------- editing

    def open(self, rel: str, text: str) -> Buffer:
        uri = (self.root / rel).as_uri()
        buf = Buffer(uri, text)
        self.buffers[uri] = buf
        self.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": uri, "languageId": "plaintext", "version": 1, "text": text}},
        )
        return buf

    def buffer(self, rel: str) -> Buffer:
        return self.buffers[(self.root / rel).as_uri()]

    def replace(self, buf: Buffer, start: int, end: int, new: str) -> None:
        """Replace code points ``[start, end)``, as a user typing would."""
        sl, sc = line_col(buf.text, start)
        el, ec = (sl, sc) if end == start else line_col(buf.text, end)
        buf.text = buf.text[:start] + new + buf.text[end:]
        buf.version += 1
        self.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": buf.uri, "version": buf.version},
                "contentChanges": [
                    {
                        "range": {
                            "start": {"line": sl, "character": sc},
                            "end": {"line": el, "character": ec},
                        },
                        "text": new,
                    }
                ],
            },
        )

    def _apply_edit(self, params: dict[str, Any], t: float) -> dict[str, Any]:
        for change in params["edit"].get("documentChanges", []):
            buf = self.buffers.get(change["textDocument"]["uri"])
            if buf is None:
                return {"applied": False, "failureReason": "no such buffer"}
            version = change["textDocument"].get("version")
            if version is not None and version != buf.version:
                buf.rejected += 1
                return {"applied": False, "failureReason": "stale version"}
            original = buf.text
            spans = []
            for e in change["edits"]:
                s, t_ = e["range"]["start"], e["range"]["end"]
                a = offset_of(original, s["line"], s["character"])
                b = offset_of(original, t_["line"], t_["character"])
                spans.append((a, b, e["newText"]))
            for a, b, new in sorted(spans, reverse=True):
                self.replace(buf, a, b, new)
            buf.applied += 1
            if self.on_applied is not None:
                self.on_applied(buf, t)
        return {"applied": True}


def frame(msg: dict[str, Any]) -> bytes:
    """One LSP frame, for messages prepared before a timed run."""
    body = json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode()
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


async def wait_for(check: Callable[[], bool], limit: float, what: str) -> None:
    """Poll ``check`` until true, for at most ``limit`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not check():
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def start_session(
    base: Path, n: int, rel: str, text: str, *, relay_url: str | None = None
) -> list[Editor]:
    """A host (``--share``) and ``n - 1`` guests, all with ``rel`` open and in sync."""
    host_root = base / "host"
    (host_root / rel).parent.mkdir(parents=True, exist_ok=True)
    (host_root / rel).write_text(text, encoding="utf-8")
    host = Editor("host", host_root)
    args = ["--share"] + (["--relay", relay_url] if relay_url else [])
    await host.start(*args)
    await wait_for(lambda: any("--join " in m for m in host.messages), 20, "the join URL")
    url = next(m for m in host.messages if "--join " in m).split("--join ", 1)[1].split()[0]
    host.open(rel, text)
    editors = [host]
    for i in range(1, n):
        guest = Editor(f"guest{i}", base / f"guest{i}")
        await guest.start("--join", url)
        guest.open(rel, "")
        editors.append(guest)
    await wait_for(
        lambda: all(e.buffer(rel).text == text for e in editors), 60, "every peer to sync"
    )
    return editors
