#!/usr/bin/env bash
# Set up and run the whole test suite: lint, types, then unit, property,
# protocol and end-to-end tests (real Neovim, real relay, real Node Yjs client).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "== ruff" >&2
.venv/bin/ruff check collab_ls relay tests scripts bench
.venv/bin/ruff format --check collab_ls relay tests scripts bench
echo "== mypy --strict" >&2
.venv/bin/mypy --strict collab_ls relay
echo "== pytest" >&2
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
