"""LspProcess against the real pylsp and a scripted server (tests/fixtures/scripted_server.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from collab_ls.lsp_process import (
    REQUEST_CANCELLED,
    REQUEST_FAILED,
    LspError,
    LspProcess,
    LspProcessGone,
)

SCRIPTED = [sys.executable, str(Path(__file__).parent / "fixtures" / "scripted_server.py")]
PYLSP = [sys.executable, "-m", "pylsp"]
WAIT = 10.0


@dataclass
class Recorder:
    """Collects what the process hands us and lets a test wait for it."""

    notifications: list[tuple[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, Any]] = field(default_factory=list)
    exits: list[int | None] = field(default_factory=list)
    answers: dict[str, Callable[[Any], Any]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_notification(self, method: str, params: Any) -> None:
        self.notifications.append((method, params))
        self.changed.set()

    async def on_request(self, method: str, params: Any) -> Any:
        self.requests.append((method, params))
        self.changed.set()
        answer = self.answers.get(method)
        return answer(params) if answer is not None else None

    def on_exit(self, returncode: int | None) -> None:
        self.exits.append(returncode)
        self.changed.set()

    async def wait_for(self, predicate: Callable[[], Any], within: float = WAIT) -> Any:
        async with asyncio.timeout(within):
            while not (found := predicate()):
                self.changed.clear()
                await self.changed.wait()
            return found

    async def notification(self, method: str, within: float = WAIT) -> Any:
        def find() -> list[Any]:
            return [params for m, params in self.notifications if m == method]

        return (await self.wait_for(find, within))[0]

    def process(self, argv: list[str], **kwargs: Any) -> LspProcess:
        return LspProcess(
            argv,
            on_notification=self.on_notification,
            on_request=self.on_request,
            on_exit=self.on_exit,
            logger=logging.getLogger("test.lsp_process"),
            **kwargs,
        )


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
async def scripted(rec: Recorder) -> AsyncIterator[LspProcess]:
    async with rec.process(SCRIPTED) as lsp:
        yield lsp


def assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# The real pylsp


async def test_pylsp_session(rec: Recorder, tmp_path: Path) -> None:
    source = 'def greet():\n    """Say hello warmly."""\n\ngreet()\nprint(undefined_name)\n'
    path = tmp_path / "mod.py"
    path.write_text(source)
    uri = path.as_uri()
    async with rec.process(PYLSP, cwd=tmp_path) as lsp:
        assert lsp.started and lsp.running
        pid = lsp.pid
        assert pid is not None
        init = await lsp.request(
            "initialize",
            {
                "processId": os.getpid(),
                "rootUri": tmp_path.as_uri(),
                "capabilities": {"textDocument": {"hover": {"contentFormat": ["plaintext"]}}},
            },
            timeout=30,
        )
        assert init["capabilities"]["hoverProvider"] is True
        assert init["serverInfo"]["name"] == "pylsp"
        lsp.notify("initialized", {})
        lsp.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": source}},
        )

        def diagnostics() -> list[Any]:
            return [
                d
                for m, p in rec.notifications
                if m == "textDocument/publishDiagnostics" and p["uri"] == uri
                for d in p["diagnostics"]
                if d.get("source") == "pyflakes"
            ]

        found = await rec.wait_for(diagnostics, within=30)
        assert any("undefined name 'undefined_name'" in d["message"] for d in found)
        assert found[0]["range"]["start"]["line"] == 4

        hover = await lsp.request(
            "textDocument/hover",
            {"textDocument": {"uri": uri}, "position": {"line": 3, "character": 1}},
            timeout=30,
        )
        assert "Say hello warmly." in json.dumps(hover["contents"])
    assert not lsp.started and not lsp.running
    assert lsp.returncode == 0  # shutdown + exit honoured, not terminated
    assert rec.exits == [0]
    assert_gone(pid)
    with pytest.raises(LspProcessGone):
        await lsp.request("textDocument/hover", {}, timeout=1)


# Raw JSON passes through


async def test_raw_result_is_untouched(rec: Recorder) -> None:
    result = {
        "capabilities": {"hoverProvider": True, "x-future": {"deep": [1, None, "é"]}},
        "serverInfo": {"name": "scripted", "version": "0"},
        "x-custom": {"a": 1},
        "nullField": None,
    }
    env = {**os.environ, "SCRIPTED_INIT_RESULT": json.dumps(result)}
    async with rec.process(SCRIPTED, env=env) as lsp:
        got = await lsp.request("initialize", {"capabilities": {}}, timeout=WAIT)
    assert got == result
    assert list(got) == list(result)


async def test_error_response(scripted: LspProcess) -> None:
    with pytest.raises(LspError) as caught:
        await scripted.request("test/error", None, timeout=WAIT)
    assert type(caught.value) is LspError
    assert (caught.value.code, caught.value.message) == (-32001, "scripted failure")
    assert caught.value.data == {"why": [1, 2]}
    with pytest.raises(LspError) as caught:
        await scripted.request("test/unknown", {}, timeout=WAIT)
    assert caught.value.code == -32601


async def test_notifications_keep_order_with_requests(scripted: LspProcess) -> None:
    for n in range(50):
        scripted.notify(f"test/note{n}", {"n": n})
    methods = await scripted.request("test/methods", None, timeout=WAIT)
    assert methods == [f"test/note{n}" for n in range(50)] + ["test/methods"]


async def test_concurrent_requests(scripted: LspProcess) -> None:
    results = await asyncio.gather(
        *(scripted.request("test/methods", None, timeout=WAIT) for _ in range(20))
    )
    assert sorted(len(r) for r in results) == list(range(1, 21))


# Server-to-client requests


async def test_server_request_round_trip(rec: Recorder, scripted: LspProcess) -> None:
    rec.answers["workspace/configuration"] = lambda params: [
        {"section": item["section"], "x-raw": [1, {"b": None}]} for item in params["items"]
    ]
    ask = {"method": "workspace/configuration", "params": {"items": [{"section": "pylsp"}]}}
    await scripted.request("test/ask", {**ask, "id": "cfg-1"}, timeout=WAIT)
    await scripted.request("test/ask", {**ask, "id": 5}, timeout=WAIT)
    await rec.wait_for(lambda: len([m for m, _ in rec.notifications if m == "test/response"]) == 2)
    responses = [p for m, p in rec.notifications if m == "test/response"]
    expected = [{"section": "pylsp", "x-raw": [1, {"b": None}]}]
    assert responses == [
        {"jsonrpc": "2.0", "id": "cfg-1", "result": expected},
        {"jsonrpc": "2.0", "id": 5, "result": expected},
    ]
    assert rec.requests == [("workspace/configuration", ask["params"])] * 2


async def test_server_request_errors(rec: Recorder, scripted: LspProcess) -> None:
    def refuse(params: Any) -> Any:
        raise LspError(-32001, "no thanks", {"k": 1})

    def crash(params: Any) -> Any:
        raise RuntimeError("boom")

    rec.answers["test/refuse"] = refuse
    rec.answers["test/crash"] = crash
    await scripted.request(
        "test/ask", {"method": "test/refuse", "params": {}, "id": 1}, timeout=WAIT
    )
    await scripted.request(
        "test/ask", {"method": "test/crash", "params": {}, "id": 2}, timeout=WAIT
    )
    await rec.wait_for(lambda: len([m for m, _ in rec.notifications if m == "test/response"]) == 2)
    first, second = [p for m, p in rec.notifications if m == "test/response"]
    assert first == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": -32001, "message": "no thanks", "data": {"k": 1}},
    }
    assert second["id"] == 2
    assert second["error"]["code"] == -32603
    assert "boom" in second["error"]["message"]


@pytest.mark.parametrize("delay", [0.0, 0.3])
async def test_server_cancels_its_request(rec: Recorder, delay: float) -> None:
    outcome: list[str] = []

    async def on_request(method: str, params: Any) -> Any:
        outcome.append("called")
        try:
            await asyncio.sleep(WAIT * 3)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        return "too late"

    lsp = LspProcess(SCRIPTED, on_notification=rec.on_notification, on_request=on_request)
    async with lsp:
        await lsp.request("test/askThenCancel", {"delay": delay}, timeout=WAIT)
        response = await rec.notification("test/response")
    assert response == {
        "jsonrpc": "2.0",
        "id": 77,
        "error": {"code": REQUEST_CANCELLED, "message": "test/hang cancelled"},
    }
    if delay:  # cancelled while running (with no delay it may be cancelled before it starts)
        assert outcome == ["called", "cancelled"]


async def test_notification_handler_errors_are_logged(
    rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def on_notification(method: str, params: Any) -> None:
        seen.append(method)
        if method == "test/received":
            raise ValueError("handler bug")

    lsp = LspProcess(SCRIPTED, on_notification=on_notification, on_request=rec.on_request)
    async with lsp:
        with pytest.raises(TimeoutError):
            await lsp.request("test/slow", None, timeout=0.5)
        await lsp.request("test/methods", None, timeout=WAIT)
    assert seen == ["test/received", "test/cancelled"]
    assert "handler bug" in caplog.text


# Exit and kill


async def test_kill_fails_pending_request(rec: Recorder, scripted: LspProcess) -> None:
    pid = scripted.pid
    assert pid is not None
    pending = asyncio.create_task(scripted.request("test/slow", None))
    await rec.notification("test/received")
    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(LspProcessGone) as caught:
        await asyncio.wait_for(pending, WAIT)
    assert loop.time() - killed_at < 2.0
    assert caught.value.code == REQUEST_FAILED
    await rec.wait_for(lambda: rec.exits)
    assert rec.exits == [-signal.SIGKILL]
    assert not scripted.running and scripted.returncode == -signal.SIGKILL
    started = loop.time()
    with pytest.raises(LspProcessGone):
        await scripted.request("test/methods", None)
    assert loop.time() - started < 0.1
    scripted.notify("test/dropped", {})  # dropped, no error
    await scripted.stop()
    assert rec.exits == [-signal.SIGKILL]  # once
    assert_gone(pid)


async def test_server_exits_by_itself(rec: Recorder, scripted: LspProcess) -> None:
    with pytest.raises(LspProcessGone):
        await scripted.request("test/exit", {"code": 3}, timeout=WAIT)
    await rec.wait_for(lambda: rec.exits)
    assert rec.exits == [3]
    assert scripted.returncode == 3


async def test_stop_kills_a_server_that_ignores_shutdown(rec: Recorder, tmp_path: Path) -> None:
    deaf = tmp_path / "deaf.py"
    deaf.write_text(
        "import signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "sys.stdin.read()\ntime.sleep(60)\n"
    )
    lsp = rec.process([sys.executable, str(deaf)])
    await lsp.start()
    pid = lsp.pid
    assert pid is not None
    await asyncio.sleep(0.3)  # let it install its SIGTERM handler
    async with asyncio.timeout(WAIT):
        await lsp.stop(timeout=0.5)
    assert lsp.returncode == -signal.SIGKILL
    assert rec.exits == [-signal.SIGKILL]
    assert_gone(pid)


async def test_lifecycle_errors(rec: Recorder) -> None:
    lsp = rec.process(SCRIPTED)
    with pytest.raises(LspProcessGone):
        await lsp.request("initialize", {})
    assert not lsp.started and lsp.pid is None
    await lsp.stop()  # not started: nothing to do
    async with lsp:
        with pytest.raises(RuntimeError):
            await lsp.start()
    missing = rec.process([str(Path("/nonexistent/language-server"))])
    with pytest.raises(FileNotFoundError):
        await missing.start()
    await missing.stop()


# Cancellation and timeouts


async def test_cancelling_the_caller_sends_cancel_request(
    rec: Recorder, scripted: LspProcess
) -> None:
    task = asyncio.create_task(scripted.request("test/slow", {"a": 1}))
    received = await rec.notification("test/received")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cancelled = await rec.notification("test/cancelled")
    assert cancelled == {"id": received["id"]}
    # The server's late RequestCancelled answer is ignored; the connection works on.
    methods = await scripted.request("test/methods", None, timeout=WAIT)
    assert methods[-2:] == ["$/cancelRequest", "test/methods"]


async def test_timeout_raises_and_cancels(rec: Recorder, scripted: LspProcess) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await scripted.request("test/slow", None, timeout=0.3)
    assert loop.time() - started < 2.0
    received = await rec.notification("test/received")
    assert await rec.notification("test/cancelled") == {"id": received["id"]}
    assert scripted.running


# Malformed output and stderr


async def test_malformed_output_is_skipped(
    rec: Recorder, scripted: LspProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="test.lsp_process")
    result = await scripted.request("test/garbage", None, timeout=WAIT)
    assert result == "still here"
    assert [m for m, _ in rec.notifications] == ["test/afterGarbage"]
    assert rec.notifications[0][1] == {"ok": True}
    assert scripted.running
    text = caplog.text
    assert "bad Content-Length" in text
    assert "not JSON" in text
    assert "garbage" in text
    assert "malformed header line" in text
    assert "not an object" in text
    assert await scripted.request("test/methods", None, timeout=WAIT)


async def test_unrecoverable_output_means_gone(rec: Recorder, scripted: LspProcess) -> None:
    pid = scripted.pid
    assert pid is not None
    with pytest.raises(LspProcessGone) as caught:
        await scripted.request("test/hugeLength", None, timeout=WAIT)
    assert "unrecoverable" in str(caught.value)
    # The server still runs with a stream we cannot read: it is killed.
    await rec.wait_for(lambda: rec.exits)
    assert rec.exits == [-signal.SIGKILL]
    assert_gone(pid)


async def test_stderr_goes_to_the_logger(rec: Recorder, capsys: pytest.CaptureFixture[str]) -> None:
    logged: list[logging.LogRecord] = []
    arrived = asyncio.Event()

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record)
            if "hello from" in record.getMessage():
                arrived.set()

    logger = logging.getLogger("test.lsp_process.stderr")
    logger.setLevel(logging.INFO)
    handler = Handler()
    logger.addHandler(handler)
    lsp = LspProcess(
        SCRIPTED, on_notification=rec.on_notification, on_request=rec.on_request, logger=logger
    )
    try:
        async with lsp:
            await lsp.request(
                "test/stderr", {"text": "hello from the server's stderr"}, timeout=WAIT
            )
            await asyncio.wait_for(arrived.wait(), WAIT)
    finally:
        logger.removeHandler(handler)
    message = next(r.getMessage() for r in logged if "hello from" in r.getMessage())
    name = os.path.basename(sys.executable)
    assert message == f"[{name} pid {lsp.pid}] stderr: hello from the server's stderr"
    assert "hello from" not in capsys.readouterr().out
