#!/usr/bin/env bash
# Runs every fuzz target (or those named as arguments) for a bounded time
# each, on stable Rust without a sanitizer, and fails if any target finds
# a crash, a timeout or an allocation over its budget.
#
#   SECONDS_PER_TARGET=30 fuzz/run.sh            # all targets, 30 s each
#   SECONDS_PER_TARGET=600 fuzz/run.sh sse_decode
#   RUNS_PER_TARGET=40000 fuzz/run.sh            # the reproducible smoke
#
# A timed run explores: new inputs go to fuzz/target/corpus/<target>/
# (ignored by git), read together with the committed seeds in
# fuzz/corpus/<target>/. RUNS_PER_TARGET instead runs a fixed number of
# inputs from a fixed seed over the committed seeds only (what CI wants): a
# bounded, repeatable budget, though not an identical run every time (the
# coverage that steers the mutations depends on hash seeds), so a smoke
# run can still find something new. JOBS (default: the number of cores)
# targets run at once. Crashes are
# written to fuzz/artifacts/<target>/. A crash worth keeping becomes
# fuzz/regressions/<target>/<short-name>, which `cargo test` replays.
# RUSTC_BOOTSTRAP=1 SANITIZER=address runs under AddressSanitizer.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds=${SECONDS_PER_TARGET:-30}
runs=${RUNS_PER_TARGET:-}
sanitizer=${SANITIZER:-none}

# A debug build of the tool installs faster; it only drives cargo.
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --debug
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

# One build for all targets, so that the timed runs below only fuzz.
cargo fuzz build --sanitizer "$sanitizer"

mkdir -p fuzz/target/logs fuzz/target/verdicts
rm -f fuzz/target/verdicts/*

# run_target TARGET: one target's run; its verdict goes to
# fuzz/target/verdicts/TARGET, its output to its log.
run_target() {
    local target=$1 log="fuzz/target/logs/$1.log" scratch budget summary
    if [ -n "$runs" ]; then
        scratch="fuzz/target/smoke/$target"
        rm -rf "$scratch"
        budget=(-runs="$runs" -seed=1)
        summary="$runs inputs from seed 1"
    else
        scratch="fuzz/target/corpus/$target"
        budget=(-max_total_time="$seconds")
        summary="${seconds}s"
    fi
    mkdir -p "$scratch"
    if cargo fuzz run --sanitizer "$sanitizer" "$target" "$scratch" "fuzz/corpus/$target" -- \
        "${budget[@]}" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1; then
        echo "== $target: $summary (log: $log)"
        grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" || true
        echo ok >"fuzz/target/verdicts/$target"
    else
        echo "== $target: $summary: FAILED (log: $log)"
        tail -n 40 "$log" >&2
        echo failed >"fuzz/target/verdicts/$target"
    fi
}

# Each target runs on one core: JOBS of them at once (the machine's cores
# by default) divide the wall time without changing any target's inputs.
jobs=${JOBS:-$(nproc)}
for target in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
        wait -n || true
    done
    run_target "$target" &
done
wait

failed=()
for target in "${targets[@]}"; do
    [ "$(cat "fuzz/target/verdicts/$target" 2>/dev/null)" = ok ] || failed+=("$target")
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz targets that failed: ${failed[*]}" >&2
    exit 1
fi
if [ -n "$runs" ]; then
    echo "all ${#targets[@]} targets ran $runs inputs each without a finding"
else
    echo "all ${#targets[@]} targets ran ${seconds}s each without a finding"
fi
