#!/usr/bin/env bash
# The long kill -9 loops of tests/tests/faults.rs, in release mode, with their figures.
#
#   bash scripts/kill-loop.sh [ITERATIONS]     default 50 per loop
#
# 1. State file: a burst of concurrent joins, kill -9 in the middle of it, restart; every
#    token that was answered must be in the state file and register over UDP, after its own
#    restart and again after the last one.
# 2. History: a version-2 member sends with up to 16 messages unacked, kill -9 right after an
#    ack, restart, resend the unacked ones; every acked message must be stored exactly once
#    with the id it was acked with.
#
# Environment: KILL_LOOP_SECONDS (time limit of each loop, default 600; a loop that reaches it
# stops early and says how many iterations it survived). The script as a whole is cut off by
# `timeout` at twice that plus a build allowance. Exits non-zero when anything was lost.
set -euo pipefail
cd "$(dirname "$0")/.."

iterations="${1:-${KILL_LOOP_ITERATIONS:-50}}"
seconds="${KILL_LOOP_SECONDS:-600}"
case "$iterations$seconds" in
    *[!0-9]*) echo "kill-loop.sh: ITERATIONS and KILL_LOOP_SECONDS must be whole numbers" >&2; exit 2 ;;
esac

echo "== building (release)"
cargo build --release -p chat-server
cargo test --release -p chat-tests --test faults --no-run

# The whole output is kept for a post-mortem; only the figures are printed.
output="target/kill-loop.log"
mkdir -p target
echo "== kill -9 loops: $iterations iterations each, at most ${seconds}s each"
status=0
KILL_LOOP_ITERATIONS="$iterations" KILL_LOOP_SECONDS="$seconds" \
    timeout "$((2 * seconds + 300))" \
    cargo test --release -p chat-tests --test faults -- \
        --ignored --nocapture --test-threads 1 long_kill_loop >"$output" 2>&1 || status=$?
grep -E "^FIGURES|^test result|panicked" "$output" || true
if [ "$status" -ne 0 ]; then
    echo "kill-loop.sh: FAILED (exit $status); the last lines of $output follow" >&2
    tail -n 60 "$output" >&2
    exit 1
fi
echo "kill-loop.sh: nothing lost"
