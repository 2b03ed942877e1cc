#!/usr/bin/env bash
# The whole test suite: lint, type check, then pytest against real registries,
# databases and bubblewrap. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff"
ruff check ligoenv server testbed tests bench scripts
echo "== mypy"
mypy ligoenv server testbed
echo "== pytest"
pytest "$@"
