#!/usr/bin/env bash
# The full abuse run of tests/tests/abuse.rs, in release mode, with its figures: an abusive
# client sends random and mutated datagrams (from its own registered member and from an address
# the server never saw) and random TCP requests while two honest version-2 members chat.
#
#   bash scripts/abuse.sh
#
# Environment: ABUSE_DATAGRAMS (default 100000), ABUSE_TCP_REQUESTS (default 10000),
# ABUSE_MESSAGES (honest messages, default 300), ABUSE_SECONDS (cut-off for the whole run,
# default 900). The abuse is spread over the conversation's planned length (30 ms a message).
#
# Prints the datagrams sent and what the server counted as received and dropped, the bytes
# sent to the unknown address (only rate-limited "this room no longer exists" answers, never
# more bytes than it sent), the TCP outcomes, and the server's resident memory (baseline,
# highest sample, and the kernel's peak VmHWM). Then rooms that fill their replay caches
# against --memory-budget. Exits non-zero if the honest conversation was disturbed, the
# unknown address was answered beyond that, or memory outgrew the budget.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${ABUSE_SECONDS:-900}"
echo "== building (release)"
cargo build --release -p chat-server
cargo test --release -p chat-tests --test abuse --no-run
cargo test --release -p chat-tests --test memory_budget --no-run

# The whole output is kept for a post-mortem; only the figures are printed.
output="target/abuse.log"
mkdir -p target
echo "== abuse: ${ABUSE_DATAGRAMS:-100000} datagrams, ${ABUSE_TCP_REQUESTS:-10000} TCP requests, ${ABUSE_MESSAGES:-300} honest messages"
status=0
timeout "$seconds" \
    cargo test --release -p chat-tests --test abuse -- \
        --ignored --nocapture --test-threads 1 long_abuse >"$output" 2>&1 || status=$?
grep -E "^FIGURES|^test result|panicked" "$output" || true
if [ "$status" -ne 0 ]; then
    echo "abuse.sh: FAILED (exit $status); the last lines of $output follow" >&2
    tail -n 60 "$output" >&2
    exit 1
fi
echo "abuse.sh: the honest conversation was complete and the unknown address was sent no more than it sent"

# Rooms that fill their replay caches with the largest messages: resident memory against the
# budget (MEMORY_ROOMS, default 300; MEMORY_BUDGET_MIB, default 256).
echo "== memory budget: ${MEMORY_ROOMS:-300} rooms of 256 messages of 3,900 bytes, budget ${MEMORY_BUDGET_MIB:-256} MiB"
memory_output="target/memory-budget.log"
status=0
timeout "$seconds" \
    cargo test --release -p chat-tests --test memory_budget -- \
        --ignored --nocapture --test-threads 1 long_full_replay_caches >"$memory_output" 2>&1 || status=$?
# The figure follows the test's name on its line, so it is cut out rather than matched at the start.
grep -oE "FIGURES.*|^test result.*|panicked.*" "$memory_output" || true
if [ "$status" -ne 0 ]; then
    echo "abuse.sh: the memory budget run FAILED (exit $status); see $memory_output" >&2
    exit 1
fi
