#!/usr/bin/env bash
# README's test command: install what is missing, lint, then run every test (the lab tests need root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH=$PWD/.venv/bin:$PATH
echo "==> ruff"
ruff check pi_ansible tests bench
echo "==> pytest"
exec pytest -q -p no:cacheprovider --timeout=900 "$@"
