#!/usr/bin/env bash
# Fuzzes chat-protocol's decoders with cargo-fuzz (libFuzzer, coverage-guided), then runs the
# property tests with many cases.
#
#   bash scripts/fuzz.sh [RUNS]     each target (tcrp, ucrp, v2_json, sealed) for RUNS inputs
#                                   (default 1000000), each capped at FUZZ_MAX_TIME seconds
#   bash scripts/fuzz.sh --smoke    a few seconds per target and no property stage, for CI
#
# Environment: FUZZ_MAX_TIME (seconds per target, default 600, smoke 4), PROPTEST_CASES (cases
# per property in the last stage, default 10000; 0 skips it).
#
# Every target checks, besides "no panic", that decoded values re-encode to what was decoded
# and that no decoder requests more heap than its input justifies (fuzz/src/lib.rs). Findings
# are written to fuzz/artifacts/TARGET/; reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -s none -a TARGET fuzz/artifacts/TARGET/crash-...
# The script exits 1 when any target found something.
set -euo pipefail

cd "$(dirname "$0")/.."

runs=1000000
max_time="${FUZZ_MAX_TIME:-600}"
proptest_cases="${PROPTEST_CASES:-10000}"
case "${1:-}" in
    --smoke)
        runs=1000000
        max_time="${FUZZ_MAX_TIME:-4}"
        proptest_cases=0
        ;;
    '') ;;
    *[!0-9]* | 0)
        echo "usage: bash scripts/fuzz.sh [RUNS | --smoke]" >&2
        exit 2
        ;;
    *) runs="$1" ;;
esac

# cargo-fuzz passes -Z flags (sanitizer coverage); this lets the stable toolchain accept them.
export RUSTC_BOOTSTRAP=1
fuzz_flags=(--sanitizer none --debug-assertions)

if ! command -v c++ >/dev/null 2>&1; then
    echo "installing a C++ compiler (libfuzzer-sys builds libFuzzer from source)"
    apt-get update -qq && apt-get install -y -qq g++ >/dev/null
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

echo "building fuzz targets (release, debug assertions on)"
build_log="$(mktemp)"
trap 'rm -f "$build_log"' EXIT
if ! cargo fuzz build "${fuzz_flags[@]}" >"$build_log" 2>&1; then
    cat "$build_log" >&2
    exit 1
fi

# The targets run as built above, so editing the sources meanwhile cannot change what runs.
bin_dir="fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"

declare -A max_len=([tcrp]=20000 [ucrp]=4200 [v2_json]=4200 [sealed]=4200)
declare -A dict=([tcrp]=fuzz/dictionaries/json.dict [ucrp]=fuzz/dictionaries/json.dict
    [v2_json]=fuzz/dictionaries/json.dict [sealed]=fuzz/dictionaries/json.dict)

failed=0
summary=()
for target in tcrp ucrp v2_json sealed; do
    corpus="fuzz/corpus/$target"
    artifacts="fuzz/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    cp -n fuzz/seeds/"$target"/* "$corpus"/
    log="$artifacts/last-run.log"
    before="$(find "$artifacts" -type f ! -name '*.log' | wc -l)"
    echo "fuzzing $target: up to $runs inputs or ${max_time}s"
    status=0
    "$bin_dir/$target" \
        -runs="$runs" -max_total_time="$max_time" -max_len="${max_len[$target]}" \
        -dict="${dict[$target]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1 || status=$?
    inputs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
    found="$(($(find "$artifacts" -type f ! -name '*.log' | wc -l) - before))"
    if [ "$status" -ne 0 ] || [ "$found" -gt 0 ]; then
        failed=1
        verdict="FOUND SOMETHING (exit $status, $found new artifact(s) in $artifacts; log $log)"
        grep -m 5 -E "panicked|ERROR: libFuzzer|SUMMARY" "$log" | sed 's/^/    /' || true
    else
        verdict="no crash"
    fi
    summary+=("$(printf '%-8s inputs=%-9s exec/s=%-7s %s' "$target" "${inputs:-?}" "${rate:-?}" "$verdict")")
done

if [ "$proptest_cases" -gt 0 ]; then
    echo "property tests with PROPTEST_CASES=$proptest_cases (release build)"
    if PROPTEST_CASES="$proptest_cases" cargo test --release -q -p chat-protocol \
        --test properties --test allocation; then
        summary+=("proptest cases=$proptest_cases per property: passed")
    else
        failed=1
        summary+=("proptest cases=$proptest_cases per property: FAILED")
    fi
fi

echo
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
    echo "fuzzing found problems"
    exit 1
fi
echo "fuzzing found nothing"
