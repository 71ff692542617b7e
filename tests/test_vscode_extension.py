"""The VS Code extension (editor-configs/vscode) compiles and its unit tests pass.

Runs ``npm ci`` (only if node_modules is missing), ``npm run compile`` (tsc)
and ``npm test`` (Node's test runner over test/logic.test.ts: join-URL
parsing, ``$/collab/peers`` to decorations). Needs Node 20 and npm, and the
npm registry the first time; a missing npm fails with what to install.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.nvim_driver import REPO

pytestmark = [pytest.mark.timeout(300)]

EXTENSION = REPO / "editor-configs" / "vscode"


def _npm(npm: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [npm, *args, "--prefix", str(EXTENSION)],
        cwd=EXTENSION,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_vscode_extension_compiles_and_its_unit_tests_pass() -> None:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.fail(
            "npm/node not found: the VS Code extension's test needs Node.js 20 and npm "
            "(e.g. apt-get install nodejs npm, or https://nodejs.org)"
        )
    if not (EXTENSION / "node_modules").is_dir():
        ci = _npm(npm, "ci", "--no-audit", "--no-fund", timeout=240)
        assert ci.returncode == 0, f"npm ci failed:\n{ci.stdout[-3000:]}\n{ci.stderr[-3000:]}"
    compiled = _npm(npm, "run", "compile", timeout=120)
    assert compiled.returncode == 0, (
        f"tsc failed:\n{compiled.stdout[-4000:]}{compiled.stderr[-2000:]}"
    )
    assert (EXTENSION / "out" / "src" / "extension.js").is_file()
    tested = _npm(npm, "test", timeout=120)
    assert tested.returncode == 0, (
        f"npm test failed:\n{tested.stdout[-4000:]}{tested.stderr[-2000:]}"
    )
    # The runner ran the tests (a glob matching nothing would pass with 0).
    assert "# fail 0" in tested.stdout
    assert "# pass 0" not in tested.stdout and "# pass " in tested.stdout
