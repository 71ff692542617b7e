"""Protocol tests: real collab-ls processes over stdio, a real relay on loopback."""

from __future__ import annotations

import asyncio
import random
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.lsp_editor import LspEditor, Style, eventually

pytestmark = pytest.mark.timeout(120)

REL = "src/main.txt"
INITIAL = "first line\nsecond: é中😀\nthird\n"


def _workspace(tmp: Path, name: str, content: str = INITIAL) -> Path:
    root = tmp / name
    (root / "src").mkdir(parents=True)
    (root / REL).write_text(content)
    return root


async def _host(tmp: Path, style: Style = "neovim", *extra: str) -> LspEditor:
    host = LspEditor("host", _workspace(tmp, "host"), style)
    await host.start("--share", *extra)
    await eventually(lambda: any("--join" in m for m in host.messages), what="the join URL")
    return host


async def _guest(tmp: Path, name: str, url: str, style: Style = "visual-studio-code") -> LspEditor:
    guest = LspEditor(name, _workspace(tmp, name, content="stale copy\n"), style)
    await guest.start("--join", url)
    return guest


async def _pair(
    tmp: Path, editors: list[LspEditor], *host_args: str, guest_style: Style = "visual-studio-code"
) -> tuple[LspEditor, LspEditor]:
    """A host and a guest, both with REL open and in sync."""
    host = await _host(tmp, "neovim", *host_args)
    editors.append(host)
    host.open(REL)
    url = await host.command("collab.shareUrl")
    guest = await _guest(tmp, "guest", url, guest_style)
    editors.append(guest)
    guest.open(REL)
    await eventually(lambda: _converged([host, guest]), what="initial sync")
    return host, guest


@pytest.fixture
async def editors() -> AsyncIterator[list[LspEditor]]:
    started: list[LspEditor] = []
    yield started
    await asyncio.gather(*(e.stop() for e in started), return_exceptions=True)


async def _random_typing(ed: LspEditor, rnd: random.Random, n: int, alphabet: str) -> list[str]:
    typed = []
    for _ in range(n):
        buf = ed.buffers[REL]
        ch = rnd.choice(alphabet) + str(len(typed) % 10)
        # Type into the same line as the others: the start of line 1.
        idx = buf.text.find("\n") + 1 + rnd.randint(0, 3)
        idx = min(idx, len(buf.text))
        ed.type(REL, idx, ch)
        typed.append(ch)
        await asyncio.sleep(rnd.uniform(0, 0.004))
    return typed


def _converged(eds: list[LspEditor]) -> bool:
    texts = {e.buffers[REL].text for e in eds}
    return len(texts) == 1


async def test_share_url_shown_and_returned(tmp_path: Path, editors: list[LspEditor]) -> None:
    host = await _host(tmp_path)
    editors.append(host)
    url = await host.command("collab.shareUrl")
    assert url.startswith("ws://127.0.0.1:") and "secret=" in url
    assert any(url in m for m in host.messages)
    assert url in host.log()
    status = await host.command("collab.status")
    assert status["role"] == "host"


@pytest.mark.parametrize("guest_style", ["visual-studio-code", "neovim"])
async def test_two_peers_type_concurrently_into_one_line(
    tmp_path: Path, editors: list[LspEditor], guest_style: Style
) -> None:
    host = await _host(tmp_path)
    editors.append(host)
    host.open(REL)
    url = await host.command("collab.shareUrl")
    guest = await _guest(tmp_path, "guest", url, guest_style)
    editors.append(guest)
    guest.open(REL)
    # The guest's stale copy is replaced by the session's text.
    await eventually(lambda: guest.buffers[REL].text == INITIAL, what="guest gets session text")
    rnd = random.Random(7)
    typed_h, typed_g = await asyncio.gather(
        _random_typing(host, rnd, 60, "abc😀"), _random_typing(guest, rnd, 60, "xyz中")
    )
    await eventually(lambda: _converged([host, guest]), what="convergence")
    final = host.buffers[REL].text
    # Nothing lost, nothing duplicated: every character typed is there exactly once.
    assert Counter(final) == Counter(INITIAL + "".join(typed_h + typed_g))
    assert "newer than edits" not in host.log()
    # At the default log level no message body is logged: the shared text stays out
    # of the logs (and out of the editor's, which keeps a server's stderr).
    for log in (host.log(), guest.log()):
        assert "second: " not in log and "Sending data" not in log


async def test_three_peers_and_a_late_joiner(tmp_path: Path, editors: list[LspEditor]) -> None:
    host = await _host(tmp_path)
    editors.append(host)
    host.open(REL)
    url = await host.command("collab.shareUrl")
    g1 = await _guest(tmp_path, "g1", url, "visual-studio-code")
    g2 = await _guest(tmp_path, "g2", url, "neovim")
    editors.extend([g1, g2])
    g1.open(REL)
    g2.open(REL)
    await eventually(lambda: _converged([host, g1, g2]), what="three peers open")
    rnd = random.Random(3)
    await asyncio.gather(
        _random_typing(host, rnd, 30, "ab"),
        _random_typing(g1, rnd, 30, "cd"),
        _random_typing(g2, rnd, 30, "😀é"),
    )
    await eventually(lambda: _converged([host, g1, g2]), what="three peers converge")
    expected_len = len(host.buffers[REL].text)
    late = await _guest(tmp_path, "late", url, "neovim")
    editors.append(late)
    late.open(REL)
    await eventually(
        lambda: late.buffers[REL].text == host.buffers[REL].text, what="late joiner in sync"
    )
    assert len(late.buffers[REL].text) == expected_len == len(INITIAL) + 90 * 2


async def test_wrong_secret_is_refused(tmp_path: Path, editors: list[LspEditor]) -> None:
    host = await _host(tmp_path)
    editors.append(host)
    url: str = await host.command("collab.shareUrl")
    bad = url.split("secret=")[0] + "secret=not-the-secret"
    guest = await _guest(tmp_path, "intruder", bad)
    editors.append(guest)
    await eventually(
        lambda: any("refused" in m for m in guest.messages), what="refusal shown to the user"
    )
    assert "secret" in " ".join(guest.messages)
    host.open(REL)
    guest.open(REL)
    guest.type(REL, 0, "evil")
    await asyncio.sleep(0.3)
    assert "evil" not in host.buffers[REL].text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_relay(port: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "relay.cli",
            "--port",
            str(port),
            "--log-file",
            str(log),
            "--store",
            str(log.with_suffix(".sqlite3")),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _wait_port(port: int) -> None:
    for _ in range(200):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"relay did not listen on {port}")


async def test_relay_restart_reconnects_and_keeps_everything(
    tmp_path: Path, editors: list[LspEditor]
) -> None:
    port = _free_port()
    relay = _start_relay(port, tmp_path / "relay1.log")
    try:
        await _wait_port(port)
        host, guest = await _pair(tmp_path, editors, "--relay", f"ws://127.0.0.1:{port}")
        relay.kill()
        relay.wait(10)
        await eventually(
            lambda: any("lost the link" in m for m in host.messages), what="user told of the drop"
        )
        host.type(REL, 0, "HOST-OFFLINE ")
        guest.type(REL, len(guest.buffers[REL].text), "guest offline\n")
        await asyncio.sleep(0.3)
        relay = _start_relay(port, tmp_path / "relay2.log")
        await _wait_port(port)
        await eventually(lambda: _converged([host, guest]), timeout=30, what="reconvergence")
        final = host.buffers[REL].text
        assert final.startswith("HOST-OFFLINE first line")
        assert final.endswith("third\nguest offline\n")
        assert any("connected" in m for m in host.messages[-3:])
    finally:
        relay.kill()
        relay.wait(10)


async def test_bad_input_is_reported_and_text_survives(
    tmp_path: Path, editors: list[LspEditor]
) -> None:
    host, guest = await _pair(tmp_path, editors)
    # Out-of-range position: reported, and the guest's buffer is re-synchronised.
    guest.send_raw_change(
        REL,
        99,
        [
            {
                "range": {
                    "start": {"line": 500, "character": 0},
                    "end": {"line": 501, "character": 0},
                },
                "text": "x",
            }
        ],
    )
    # Malformed change: reported.
    guest.send_raw_change(REL, 100, [{"range": {"start": {"line": "a"}}, "text": 3}])
    await eventually(lambda: len(guest.messages) >= 2, what="errors shown")
    assert any("invalid" in m or "ignored" in m for m in guest.messages)
    # The session goes on: both can still edit and converge.
    host.type(REL, 0, "still here ")
    await eventually(
        lambda: guest.buffers[REL].text.startswith("still here first line"), what="edits flow"
    )
    assert host.buffers[REL].text == guest.buffers[REL].text
    assert "Traceback" not in host.log() + guest.log()


async def test_guest_edit_to_file_host_has_not_open_reaches_disk(
    tmp_path: Path, editors: list[LspEditor]
) -> None:
    host = await _host(tmp_path)
    editors.append(host)
    url = await host.command("collab.shareUrl")
    guest = await _guest(tmp_path, "guest", url)
    editors.append(guest)
    guest.open(REL)
    # The host seeds the file from its disk: the guest's stale copy is replaced.
    await eventually(lambda: guest.buffers[REL].text == INITIAL, what="seeded from host disk")
    guest.type(REL, 0, "guest was here\n")
    host_file = host.root / REL
    await eventually(
        lambda: host_file.read_text().startswith("guest was here\nfirst line"), what="disk write"
    )
    assert not list(host_file.parent.glob("*.collab-tmp"))


async def test_read_only_guest_sees_everything_and_changes_nothing(
    tmp_path: Path, editors: list[LspEditor]
) -> None:
    host = await _host(tmp_path)
    editors.append(host)
    host.open(REL)
    status = await host.command("collab.status")
    ro_url = status["readOnlyUrl"]
    assert ro_url and ro_url != status["url"]
    assert any(ro_url in m for m in host.messages)
    viewer = await _guest(tmp_path, "viewer", ro_url)
    editors.append(viewer)
    viewer.open(REL)
    await eventually(lambda: viewer.buffers[REL].text == INITIAL, what="viewer gets the text")
    assert (await viewer.command("collab.status"))["readOnly"] is True
    host.type(REL, 0, "live ")
    await eventually(lambda: viewer.buffers[REL].text == "live " + INITIAL, what="live edit")
    viewer.type(REL, 0, "VANDAL ")
    # The viewer's change is undone in its buffer and never reaches the host.
    await eventually(
        lambda: viewer.buffers[REL].text == "live " + INITIAL, what="viewer's change undone"
    )
    host.type(REL, 0, "still ")
    await eventually(
        lambda: viewer.buffers[REL].text == "still live " + INITIAL, what="edits keep flowing"
    )
    assert "VANDAL" not in host.buffers[REL].text


async def test_wss_relay_with_a_trusted_ca(tmp_path: Path, editors: list[LspEditor]) -> None:
    from tests.test_relay_tls import make_pki

    ca, cert, key = make_pki(tmp_path)
    port = _free_port()
    relay = _start_relay(port, tmp_path / "relay.log", "--cert", str(cert), "--key", str(key))
    try:
        await _wait_port(port)
        base = f"wss://127.0.0.1:{port}"
        host = await _host(tmp_path, "neovim", "--relay", base, "--ca-file", str(ca))
        editors.append(host)
        host.open(REL)
        url = await host.command("collab.shareUrl")
        assert url.startswith("wss://")
        # Certificates are verified by default: without the CA the guest is told why.
        untrusting = LspEditor("untrusting", _workspace(tmp_path, "untrusting"))
        await untrusting.start("--join", url)
        editors.append(untrusting)
        await eventually(
            lambda: any("CERTIFICATE_VERIFY_FAILED" in m for m in untrusting.messages),
            what="certificate failure shown",
        )
        guest = LspEditor("guest", _workspace(tmp_path, "guest", "stale\n"))
        await guest.start("--join", url, "--ca-file", str(ca))
        editors.append(guest)
        guest.open(REL)
        await eventually(lambda: _converged([host, guest]), what="sync over wss")
        guest.type(REL, 0, "tls ")
        await eventually(lambda: host.buffers[REL].text.startswith("tls "), what="edit over wss")
    finally:
        relay.kill()
        relay.wait(10)
