"""``collab-ls doctor``: the installation checks and each step of checking a relay URL.

Against a real relay (:class:`relay.server.Relay` in-process on a free port,
``wss://`` with a test CA) and, once, through the ``collab-ls`` console script.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import sys
from pathlib import Path

import pytest

from collab_ls import doctor
from collab_ls.doctor import Check, check_installation, check_url, report
from relay.links import new_room_id, new_secret
from relay.server import Relay
from relay.tls import server_ssl_context
from tests.test_relay_tls import make_pki

COLLAB_LS = Path(sys.executable).parent / "collab-ls"


def _failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if not c.ok and c.required]


def _text(checks: list[Check]) -> tuple[bool, str]:
    out = io.StringIO()
    ok = report(checks, out)
    return ok, out.getvalue()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_installation_checks_pass_here() -> None:
    checks = check_installation()
    names = {c.name for c in checks}
    assert {"python", "package pycrdt", "package pygls", "collab-ls on PATH"} <= names
    by_name = {c.name: c for c in checks}
    assert by_name["python"].ok
    assert by_name["package pycrdt"].ok and by_name["package pycrdt"].detail.startswith("0.14")
    # The editors are optional: never a failure.
    assert all(c.required is False for c in checks if c.name in ("nvim", "vim", "emacs"))


def test_missing_collab_ls_on_path_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    by_name = {c.name: c for c in check_installation()}
    check = by_name["collab-ls on PATH"]
    assert not check.ok and "PATH" in check.hint
    ok, text = _text(list(by_name.values()))
    assert not ok and "FAIL collab-ls on PATH" in text


async def test_good_url_is_accepted_and_reports_the_peers() -> None:
    room, secret = new_room_id(), new_secret()
    async with Relay() as relay:
        relay.create_room(room, secret)
        checks = await check_url(relay.url(room, secret))
    assert not _failed(checks), checks
    assert [c.name for c in checks] == ["URL", "name lookup", "connection", "relay and secret"]
    assert "accepted" in checks[-1].detail
    assert "room is empty" in checks[-1].detail  # nobody shared anything in it


async def test_wrong_secret_is_refused_with_4403() -> None:
    room, secret = new_room_id(), new_secret()
    async with Relay() as relay:
        relay.create_room(room, secret)
        checks = await check_url(relay.url(room, new_secret()))
    last = checks[-1]
    assert last.name == "relay and secret" and not last.ok
    assert "4403" in last.detail and "refused the secret" in last.detail
    assert "current join URL" in last.hint


async def test_nothing_listening() -> None:
    port = _free_port()
    checks = await check_url(f"ws://127.0.0.1:{port}/{new_room_id()}?secret={new_secret()}")
    assert checks[-1].name == "connection" and not checks[-1].ok
    assert "nothing is listening" in checks[-1].detail


async def test_bad_url_and_unknown_host() -> None:
    checks = await check_url("http://example.org/room")
    assert len(checks) == 1 and not checks[0].ok and "ws://" in checks[0].detail
    checks = await check_url("ws://127.0.0.1:9/room")
    assert not checks[0].ok and "secret" in checks[0].detail
    checks = await check_url(
        f"ws://no-such-host.invalid:1234/r?secret={new_secret()}", step_timeout=3
    )
    assert checks[-1].name == "name lookup" and not checks[-1].ok
    assert "cannot resolve" in checks[-1].detail


async def test_something_else_on_the_port() -> None:
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        checks = await check_url(f"ws://127.0.0.1:{port}/{new_room_id()}?secret={new_secret()}")
    assert not checks[-1].ok and "HTTP 404" in checks[-1].detail


async def test_wss_needs_the_ca_and_works_with_it(pki: tuple[Path, Path, Path]) -> None:
    ca, cert, key = pki
    room, secret = new_room_id(), new_secret()
    async with Relay(ssl=server_ssl_context(cert, key)) as relay:
        relay.create_room(room, secret)
        url = relay.url(room, secret)
        assert url.startswith("wss://")
        untrusted = await check_url(url)
        trusted = await check_url(url, ca_file=ca)
        plain = await check_url(url.replace("wss://", "ws://"), step_timeout=3)
    assert untrusted[-1].name == "TLS" and not untrusted[-1].ok
    assert "not trusted" in untrusted[-1].detail and "--ca-file" in untrusted[-1].hint
    assert not _failed(trusted), trusted
    assert [c.name for c in trusted][-2:] == ["TLS", "relay and secret"]
    assert "TLSv1" in trusted[-2].detail
    assert not plain[-1].ok and "wss://" in plain[-1].hint


async def test_plain_relay_with_wss_url_says_no_tls() -> None:
    room, secret = new_room_id(), new_secret()
    async with Relay() as relay:
        relay.create_room(room, secret)
        checks = await check_url(relay.url(room, secret).replace("ws://", "wss://"), step_timeout=3)
    assert checks[-1].name == "TLS" and not checks[-1].ok
    assert "ws:// instead of wss://" in checks[-1].hint


async def test_console_script_exit_codes() -> None:
    """`collab-ls doctor URL` goes through the CLI before any LSP option parsing."""
    room, secret = new_room_id(), new_secret()
    async with Relay() as relay:
        relay.create_room(room, secret)
        results = []
        for url in (relay.url(room, secret), relay.url(room, new_secret())):
            proc = await asyncio.create_subprocess_exec(
                str(COLLAB_LS),
                "doctor",
                url,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "PATH": f"{COLLAB_LS.parent}:{os.environ.get('PATH', '')}"},
            )
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            results.append((proc.returncode, out.decode(), err.decode()))
    (good_code, good_out, good_err), (bad_code, bad_out, _) = results
    assert good_code == 0, good_out + good_err
    assert "ok   relay and secret: accepted" in good_out and "All good." in good_out
    assert bad_code == 1 and "FAIL relay and secret" in bad_out and "4403" in bad_out


def test_main_without_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{COLLAB_LS.parent}:{os.environ.get('PATH', '')}")
    code = doctor.main([])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "package websockets" in out and "All good." in out
