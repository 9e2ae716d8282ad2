#!/usr/bin/env bash
# README's first command: install what is missing, bring up the local lab and show its pods.
# (It grows into the whole main job — set up a pod, start a model, talk to it — as those land.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH=$PWD/.venv/bin:$PATH
pi lab up
pi lab status
