#!/usr/bin/env bash
# README's test command: install what is missing, lint, then run every test (the lab tests need root).
#   scripts/test.sh              everything: unit, roles, lab, end to end, faults
#   scripts/test.sh ARGS...      pytest ARGS (one stream), e.g. scripts/test.sh tests/unit -k fit
# Everything runs in three steps: the lab's own tests alone (they take the whole lab down and up again),
# then two streams at once on separate pods (most of the time is spent waiting on SSH and engines, so two
# streams use the machine's two cores): unit + roles + end to end (fleets on pods of their own) on the lab's
# six pods, and the fault suite on pods of its own. PI_TEST_KEEP_LAB=1 keeps the lab up afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH=$PWD/.venv/bin:$PATH
echo "==> ruff"
ruff check pi_ansible tests bench plugins
PYTEST=(pytest -q -p no:cacheprovider --timeout=900)
if [ "$#" -gt 0 ]; then
    echo "==> pytest $*"
    exec "${PYTEST[@]}" "$@"
fi

keep=${PI_TEST_KEEP_LAB:-}
export PI_TEST_KEEP_LAB=1
echo "==> pytest: the lab itself"
"${PYTEST[@]}" tests/lab

log=$(mktemp /tmp/pi-ansible-tests.XXXXXX)
echo "==> pytest: the fault suite (on pods of its own; output below when done)"
"${PYTEST[@]}" tests/faults >"$log" 2>&1 &
faults_pid=$!
cleanup() { kill "$faults_pid" 2>/dev/null || true; }
trap cleanup INT TERM
echo "==> pytest: unit, roles, end to end (fleets on pods of their own)"
status=0
"${PYTEST[@]}" tests/unit tests/roles tests/e2e || status=$?
faults_status=0
wait "$faults_pid" || faults_status=$?
trap - INT TERM
echo "==> pytest: the fault suite"
cat "$log"
rm -f "$log"
if [ -z "$keep" ]; then
    pi lab down >/dev/null 2>&1 || true
fi
if [ "$status" -ne 0 ] || [ "$faults_status" -ne 0 ]; then
    echo "FAILED: unit/roles/e2e exit $status, faults exit $faults_status"
    exit 1
fi
echo "All tests passed."
