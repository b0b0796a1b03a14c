#!/usr/bin/env bash
# Copyright 2026 The passthrough-msi authors
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
#
# Runs every fuzz target for a while, one at a time, and prints per target the executions,
# the time, libFuzzer's coverage (cov: edges, ft: features) and the crashes. Exits 1 if any
# target crashed (the crash file is in fuzz/artifacts/<target>/; replay it with
# `cargo test --manifest-path fuzz/common/Cargo.toml --test regressions` after copying it
# to fuzz/common/tests/regressions/<target>/), 2 on a setup error.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default 30 s, every target)
#
# Environment: FUZZ_SANITIZER (default none; address for ASan), FUZZ_JOBS (cargo build
# jobs, default 2). Builds with the nightly toolchain (`cargo +nightly fuzz`; without one, the
# pinned stable toolchain with RUSTC_BOOTSTRAP=1), optimized
# with debug assertions and overflow checks, into fuzz/target. New inputs go to
# fuzz/corpus-work/<target>/ (not committed); fuzz/corpus/<target>/ holds the seeds.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
SECS=${1:-30}
shift || true
FUZZ_DIR=$(cd "$(dirname "$0")" && pwd)
cd "$FUZZ_DIR"
export CARGO_TARGET_DIR="$FUZZ_DIR/target"
SANITIZER=${FUZZ_SANITIZER:-none}
JOBS=${FUZZ_JOBS:-2}

if ! [[ "$SECS" =~ ^[0-9]+$ ]] || [ "$SECS" -lt 1 ]; then
    echo "run.sh: seconds per target must be a positive integer, got '$SECS'" >&2
    exit 2
fi
# cargo-fuzz needs nightly features; with no nightly installed, the pinned stable toolchain
# builds the same targets with RUSTC_BOOTSTRAP=1 (checked: same flags, same binaries).
if rustup toolchain list | grep -q '^nightly'; then
    TOOLCHAIN=(+nightly)
    TOOLCHAIN_NAME=nightly
else
    TOOLCHAIN=()
    TOOLCHAIN_NAME="stable with RUSTC_BOOTSTRAP=1 (no nightly installed)"
    export RUSTC_BOOTSTRAP=1
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "cargo-fuzz $CARGO_FUZZ_VERSION"; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    mapfile -t TARGETS < <(cargo "${TOOLCHAIN[@]}" fuzz list)
fi

start=$(date +%s)
echo "== building ${#TARGETS[@]} targets ($TOOLCHAIN_NAME, sanitizer $SANITIZER)"
CARGO_BUILD_JOBS="$JOBS" cargo "${TOOLCHAIN[@]}" fuzz build -s "$SANITIZER"
built=$(date +%s)
echo "== build took $((built - start)) s"

mkdir -p run-logs
failed=()
printf '%-12s %10s %6s %7s %7s %8s %s\n' target execs secs cov ft corpus result > run-logs/summary.txt
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus-work/$t" "corpus/$t" "artifacts/$t"
    before=$(find "artifacts/$t" -type f | wc -l)
    t0=$(date +%s)
    set +e
    CARGO_BUILD_JOBS="$JOBS" cargo "${TOOLCHAIN[@]}" fuzz run -s "$SANITIZER" "$t" "corpus-work/$t" "corpus/$t" -- \
        -max_total_time="$SECS" -print_final_stats=1 -rss_limit_mb=4096 -timeout=20 \
        -max_len=8192 > "run-logs/$t.log" 2>&1
    rc=$?
    set -e
    t1=$(date +%s)
    after=$(find "artifacts/$t" -type f | wc -l)
    execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "run-logs/$t.log" | grep -Eo '[0-9]+$' | tail -1)
    line=$(grep -E '^#[0-9]+' "run-logs/$t.log" | tail -1 || true)
    cov=$(echo "$line" | grep -Eo 'cov: [0-9]+' | grep -Eo '[0-9]+' || true)
    ft=$(echo "$line" | grep -Eo 'ft: [0-9]+' | grep -Eo '[0-9]+' || true)
    corp=$(echo "$line" | grep -Eo 'corp: [0-9]+' | grep -Eo '[0-9]+' || true)
    if [ "$rc" -ne 0 ] || [ "$after" -gt "$before" ]; then
        result="CRASH (rc $rc, $((after - before)) new artifacts; run-logs/$t.log)"
        failed+=("$t")
        grep -E "panicked at|^Error|SUMMARY|Test unit written" "run-logs/$t.log" | head -5 || true
    else
        result=ok
    fi
    printf '%-12s %10s %6s %7s %7s %8s %s\n' "$t" "${execs:-?}" "$((t1 - t0))" \
        "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result" | tee -a run-logs/summary.txt
done
end=$(date +%s)
echo "== total $((end - start)) s (build $((built - start)) s)" | tee -a run-logs/summary.txt
cat run-logs/summary.txt
if [ ${#failed[@]} -ne 0 ]; then
    echo "== crashes in: ${failed[*]}" >&2
    exit 1
fi
