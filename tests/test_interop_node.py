"""Interop: the reference Yjs client (y-websocket 1.5.4 on Node) through the Python relay.

Document layout: a root ``Map`` named ``files`` whose values are ``Text``
keyed by workspace-relative path. The Node side is tests/interop/yclient.mjs.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from collab_ls.relay_link import RelayLink
from relay.server import Relay

INTEROP = Path(__file__).parent / "interop"
REMOTE = "remote"


def node_client() -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the interop tests need Node 18+ on PATH")
    if not (INTEROP / "node_modules" / "y-websocket").is_dir():
        pytest.fail(
            "tests/interop/node_modules is missing: run `npm ci --prefix tests/interop` first"
        )
    return [node, str(INTEROP / "yclient.mjs")]


async def run_node(relay: Relay, room: str, secret: str, *args: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        *node_client(),
        "--server",
        f"ws://127.0.0.1:{relay.port}",
        "--room",
        room,
        "--secret",
        secret,
        "--timeout-ms",
        "10000",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(20):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, f"yclient failed ({proc.returncode}): {err.decode()}"
    result: dict[str, Any] = json.loads(out.decode())
    return result


def files(doc: pycrdt.Doc[Any]) -> pycrdt.Map[Any]:
    return doc.get("files", type=pycrdt.Map)


def text(doc: pycrdt.Doc[Any], path: str) -> str | None:
    value = files(doc).get(path)
    return None if value is None else str(value)


async def wait_until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    node_client()  # fail fast, with the fix, when Node or its packages are missing
    async with Relay() as r:
        yield r


async def test_python_edit_reaches_node_and_node_edit_reaches_python(relay: Relay) -> None:
    room, secret = secrets.token_hex(16), secrets.token_urlsafe(16)
    doc = pycrdt.Doc()
    files(doc)["src/main.py"] = pycrdt.Text("hello from python é😀")
    seen_names: list[Any] = []
    async with RelayLink(doc, relay.url(room, secret), origin=REMOTE) as link:
        await link.wait_synced(5)
        link.awareness.set_local_state({"name": "python"})
        link.awareness.observe(
            lambda topic, change: seen_names.extend(
                link.awareness.states.get(cid, {}).get("name") for cid in change[0]["added"]
            )
        )
        node, _ = await asyncio.gather(
            run_node(
                relay,
                room,
                secret,
                "--path",
                "src/main.py",
                "--wait-contains",
                "hello from python é😀",
                "--insert",
                " + node ü",
                "--awareness-name",
                "node",
                "--linger-ms",
                "300",
            ),
            wait_until(lambda: text(doc, "src/main.py") == "hello from python é😀 + node ü"),
        )
        assert node["text"] == "hello from python é😀 + node ü"
        assert {"name": "python"} in node["awareness"]
        assert "node" in seen_names
        # The Node client left: the relay removed its awareness state.
        await wait_until(lambda: len(link.awareness.states) == 1)


async def test_node_creates_a_file_python_edits_it_node_sees_it(relay: Relay) -> None:
    room, secret = secrets.token_hex(16), secrets.token_urlsafe(16)
    created = await run_node(relay, room, secret, "--path", "notes.md", "--insert", "made in node")
    assert created["text"] == "made in node"
    doc = pycrdt.Doc()
    async with RelayLink(doc, relay.url(room, secret), origin=REMOTE) as link:
        await link.wait_synced(5)
        assert text(doc, "notes.md") == "made in node"
        value = files(doc)["notes.md"]
        assert isinstance(value, pycrdt.Text)
        value += ", then python"
        late = await run_node(
            relay, room, secret, "--path", "notes.md", "--wait-contains", "then python"
        )
    assert late["text"] == "made in node, then python"


async def test_node_with_a_wrong_secret_is_refused(relay: Relay) -> None:
    room, secret = secrets.token_hex(16), secrets.token_urlsafe(16)
    relay.create_room(room, secret)
    with pytest.raises(AssertionError, match="refused by the relay: wrong or missing secret"):
        await run_node(relay, room, "wrong", "--path", "x")
