#!/usr/bin/env bash
# Set up and run the live demo: two real headless Neovims sharing a file
# through collab-ls's embedded relay, typing at the same time.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
