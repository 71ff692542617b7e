"""End-to-end: ``:CollabHealth`` (``:checkhealth collab``) in a real Neovim with the config."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.nvim_driver import Neovim, fleet, make_project

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

REL = "notes/a.txt"


def _health(nvim: Neovim) -> str:
    nvim.nvim.command("CollabHealth")
    text = "\n".join(nvim.nvim.current.buffer[:])
    nvim.nvim.command("bwipeout!")
    return text


def test_collab_health_reports_binary_version_and_session(tmp_path: Path) -> None:
    with fleet(tmp_path / "work") as f:
        host = f.start("host", make_project(tmp_path / "host", {REL: "hello\n"}))
        host.edit(REL)
        before = _health(host)
        assert "collab.nvim" in before and "Neovim 0.1" in before
        assert "collab-ls 0.1.0" in before  # the binary from setup{ cmd }, asked its version
        assert "no session: :CollabShare" in before
        assert "ERROR" not in before, before

        url = host.share()
        host.wait_connected(REL)
        after = _health(host)
        assert "host, connected to ws://127.0.0.1:" in after, after
        secret = url.split("secret=")[1]
        assert secret not in after  # the secret is not shown
        assert f"1 shared document(s): {REL}" in after, after
        assert "ERROR" not in after and "WARNING" not in after, after
        assert "0 peer(s) visible" in after

        # A broken cmd is an error with advice, not a crash.
        host.lua("require('collab').config.cmd = { '/nonexistent/collab-ls' }")
        broken = _health(host)
        assert "/nonexistent/collab-ls not found" in broken, broken
        assert "pip install collab-ls" in broken
