#!/usr/bin/env bash
# README's first command: install what is missing, then the main job on the local lab:
# bring up test pods, set up a pod, start a model, ask it a question. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH=$PWD/.venv/bin:$PATH

echo "==> pi lab up"
pi lab up
eval "$(pi lab env h100x2)"   # PI_INDEX_URL and HF_ENDPOINT point at the lab; PI_LAB_SSH is the pod's ssh string
# Secrets for the demo only; with real pods export your own HF_TOKEN and PI_API_KEY.
export HF_TOKEN=${HF_TOKEN:-hf_lab_demo_token}
if [ -z "${PI_API_KEY:-}" ]; then
  key_file=${PI_CONFIG_DIR:-$HOME/.pi}/lab-demo-api-key
  mkdir -p "$(dirname "$key_file")"
  [ -s "$key_file" ] || (umask 077; python3 -c 'import secrets; print(secrets.token_hex(16))' > "$key_file")
  PI_API_KEY=$(cat "$key_file"); export PI_API_KEY
fi

echo "==> pi pods setup lab-h100 \"$PI_LAB_SSH\" --models-path /mnt/models"
pi pods setup lab-h100 "$PI_LAB_SSH" --models-path /mnt/models
pi pods active lab-h100

if ! pi list --pod lab-h100 --json | python3 -c 'import json,sys; sys.exit(0 if any(m["name"]=="coder" and m["state"]=="running" for m in json.load(sys.stdin)["models"]) else 1)'; then
  echo "==> pi start Qwen/Qwen3-Coder-30B-A3B-Instruct --name coder --context 32k"
  pi start Qwen/Qwen3-Coder-30B-A3B-Instruct --name coder --context 32k
fi

echo "==> pi agent coder \"...\""
pi agent coder "In one sentence: what is a GPU pod?"
echo "==> pi list"
pi list
