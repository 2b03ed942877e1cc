#!/usr/bin/env bash
# The demo: the whole ligoenv pipeline on embedded defaults. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
