"""collab-ls on a two-node relay cluster (Redis): a node dies, the editors carry on."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from tests.lsp_editor import LspEditor, eventually
from tests.test_relay_redis import free_port, kill9, start_node
from tests.test_server_lsp import INITIAL, REL, _converged, _guest, _host

pytestmark = pytest.mark.timeout(120)


async def test_editors_fail_over_to_another_node_and_lose_nothing(
    redis_url: str, tmp_path: Path
) -> None:
    prefix = secrets.token_hex(4)
    ports = [free_port(), free_port()]
    nodes = [
        await asyncio.to_thread(start_node, p, redis_url, prefix, tmp_path / f"node{i}.log")
        for i, p in enumerate(ports)
    ]
    editors: list[LspEditor] = []
    try:
        relays = ",".join(f"ws://127.0.0.1:{p}" for p in ports)
        host = await _host(tmp_path, "neovim", "--relay", relays)
        editors.append(host)
        host.open(REL)
        url: str = await host.command("collab.shareUrl")
        assert url.count("ws://") == 2  # one link per node
        guest = await _guest(tmp_path, "guest", url)
        editors.append(guest)
        guest.open(REL)
        await eventually(lambda: _converged([host, guest]), what="initial sync")
        await asyncio.to_thread(kill9, nodes[0])  # both were on the first node
        host.type(REL, 0, "after the crash ")
        guest.type(REL, len(guest.buffers[REL].text), "guest too\n")
        await eventually(lambda: _converged([host, guest]), timeout=30, what="fail-over")
        assert host.buffers[REL].text == "after the crash " + INITIAL + "guest too\n"
    finally:
        await asyncio.gather(*(e.stop() for e in editors), return_exceptions=True)
        for proc in nodes:
            if proc.poll() is None:
                await asyncio.to_thread(kill9, proc)
