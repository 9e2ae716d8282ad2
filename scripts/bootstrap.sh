#!/usr/bin/env bash
# Install everything pi-ansible and its lab need on a fresh Debian 12 machine (idempotent).
# apt: the lab's container/SSH tools; PyPI: the project and its dev tools in ./.venv (via uv).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for cmd in debootstrap:debootstrap systemd-nspawn:systemd-container sshd:openssh-server ssh:openssh-client \
           ip:iproute2 rg:ripgrep tmux:tmux pgrep:procps; do
  command -v "${cmd%%:*}" >/dev/null 2>&1 || need_apt+=("${cmd#*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v uv >/dev/null 2>&1 && [ ! -x .venv/bin/uv ]; then
  echo "==> pip install uv"
  python3 -m pip install -q uv
fi
UV=$(command -v uv || echo .venv/bin/uv)
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$UV" venv -q .venv --python python3
fi
echo "==> installing pi-ansible and dev tools into .venv"
VIRTUAL_ENV=$PWD/.venv "$UV" pip install -q -e '.[dev]'
