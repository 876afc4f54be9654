#!/usr/bin/env bash
# The failover guarantee on a loaded machine: runs the Sentinel failover
# tests with SPOOL_REDIS_MIN_REPLICAS=1 (master SIGKILLed, and frozen) RUNS
# times in a row (default 10) while two busy loops load both cores, and
# prints each run's figures. Exits 1 when any run lost an acknowledged job.
# SPOOL_STRESS_ALL=1 adds the MIN_REPLICAS=0 runs (their losses measured).
# docs/operations.md summarises its output.
#   scripts/failover-stress.sh [RUNS]
set -uo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
runs=${1:-10}
cargo build -q -p spool-tests --tests -p spool-worker --examples || exit 1
log=$(mktemp)
yes > /dev/null & b1=$!
yes > /dev/null & b2=$!
trap 'kill $b1 $b2 2>/dev/null' EXIT
failed=0
for i in $(seq 1 "$runs"); do
  filter='binary(redis_ha) & test(/with_min_replicas/)'
  [ "${SPOOL_STRESS_ALL:-0}" = 1 ] && filter='binary(redis_ha) & test(/sentinel_failover|frozen_master/)'
  cargo nextest run -p spool-tests -E "$filter" \
    --no-capture --test-threads 1 --cargo-quiet > "$log" 2>&1
  rc=$?
  echo "run $i (exit $rc):"
  grep -E "^(Kill|Freeze), min_replicas=" "$log" | sed 's/; promotions.*longest/; longest/' | sed 's/^/  /'
  if [ $rc -ne 0 ]; then
    failed=1
    grep -E "Error|lost with" "$log" | head -5 | sed 's/^/  /'
  fi
done
exit $failed
