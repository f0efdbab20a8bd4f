#!/usr/bin/env bash
# Herald's load benchmark: one node on the redis engine, loaded by herald-load,
# everything on loopback. See docs/BENCHMARKS.md for what it measures.
#
#   bench/run.sh [full]   issue #2's floor: 10,000 streams, 5,000 notifications/s
#                         to random users for 30 s, via HTTP and via FCALL,
#                         3 runs each; prints the medians
#   bench/run.sh suite    issue #4's scenarios, Herald and Nchan side by side
#                         (bench/suite.sh; needs nginx + libnginx-mod-nchan)
#   bench/run.sh smoke    200 streams, 500/s for 3 s, each path once, with
#                         --fail-on-loss: a few seconds, for CI
#   bench/run.sh redis-cost  Redis's CPU per call: XADD vs FCALL herald_publish
#                         (bench/redis-cost.sh; HERALDS / REVS compare builds / commits)
#
# Each run gets a fresh redis-server and a fresh `herald serve` (pinned to
# SERVER_CPUS), and herald-load runs pinned to LOAD_CPUS. Everything started
# here is stopped on exit. Knobs (environment variables), defaults per mode:
#   RUNS STREAMS STREAMS_PER_USER RATE DURATION RAMP_RATE LANES GRACE
#   VIAS ("http redis")  SERVER_CPUS (0)  REDIS_CPUS (0)  LOAD_CPUS (1)
#   OUT (bench/out/<mode>-<timestamp>)  NO_BUILD=1 skips `cargo build`
#   PROFILE (release)  debug uses target/debug (CI's smoke run reuses the test
#                 build instead of compiling everything again in release)
#   QUIET_TIMEOUT  seconds to wait before each run for the machine to go idle
#                  (other builds on these cores skew the figures): full 300, smoke 0
#   PERF=<seconds>  also records a CPU profile of the server (perf record,
#                  cpu-clock, flat: no call graphs) for that long from the start of each
#                  run: $OUT/perf-<label>.data and a flat report perf-<label>.txt
#   REV=<commit>  benchmarks that commit, exported with `git archive` and built
#                 in target/bench-src (the working tree may hold unfinished work)
set -euo pipefail

mode=${1:-full}
case "$mode" in
suite)
    # Issue #4's suite, Herald and Nchan side by side: its own script.
    exec bash "$(dirname "$0")/suite.sh"
    ;;
redis-cost)
    exec bash "$(dirname "$0")/redis-cost.sh"
    ;;
full)
    : "${RUNS:=3}" "${STREAMS:=10000}" "${RATE:=5000}" "${DURATION:=30s}" "${QUIET_TIMEOUT:=300}"
    fail_on_loss=()
    ;;
smoke)
    : "${RUNS:=1}" "${STREAMS:=200}" "${RATE:=500}" "${DURATION:=3s}" "${QUIET_TIMEOUT:=0}"
    fail_on_loss=(--fail-on-loss)
    ;;
*)
    echo "usage: $0 [full|smoke|suite|redis-cost]" >&2
    exit 64
    ;;
esac
: "${STREAMS_PER_USER:=1}" "${RAMP_RATE:=2000}" "${LANES:=8}" "${GRACE:=2s}"
: "${VIAS:=http redis}" "${SERVER_CPUS:=0}" "${REDIS_CPUS:=0}" "${LOAD_CPUS:=1}"

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out/$mode-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# Each stream is an open file in herald and in herald-load (separate
# processes, so each needs about STREAMS of them).
ulimit -n "$(ulimit -Hn)"

root=$PWD
if [[ -n ${REV:-} ]]; then
    rev=$(git rev-parse --short "$REV")
    src=target/bench-src/$rev
    if [[ -z ${NO_BUILD:-} ]]; then
        rm -rf "$src"
        mkdir -p "$src"
        git archive "$rev" | tar -x -C "$src"
        (cd "$src" && CARGO_TARGET_DIR="$root/target/bench-src/target" cargo build --release --workspace --bins)
    fi
    bin=target/bench-src/target/release
    revision="$rev (clean export)"
else
    profile=${PROFILE:-release}
    if [[ -z ${NO_BUILD:-} ]]; then
        if [[ $profile == release ]]; then cargo build --release --workspace --bins; else cargo build --workspace --bins; fi
    fi
    bin=target/$profile
    revision="working tree at $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
        revision="$revision, with uncommitted changes"
    fi
fi
herald=$bin/herald
load=$bin/herald-load

export_secret

server_pid=
redis_pid=
stop() {
    # Only what this script started, by pid. herald-load has closed its
    # streams by now, so a graceful shutdown has nothing to wait for.
    stop_pid "$server_pid"
    stop_pid "$redis_pid"
    server_pid=
    redis_pid=
}
trap stop EXIT
trap 'stop; exit 130' INT TERM


{
    echo "date: $(date)"
    echo "revision: $revision"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" \
        "(family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')," \
        "model $(grep -m1 '^model[[:space:]]*:' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')," \
        "$(grep -m1 'cpu MHz' /proc/cpuinfo | cut -d: -f2 | tr -d ' ') MHz)"
    echo "kernel: $(uname -r)"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "open files: $(ulimit -n)"
    echo "rustc: $(rustc --version 2>/dev/null || echo unknown)"
    echo "redis: $(redis-server --version)"
    echo "mode: $mode; runs $RUNS; streams $STREAMS ($STREAMS_PER_USER per user); rate $RATE/s for $DURATION; ramp $RAMP_RATE/s; lanes $LANES; grace $GRACE"
    echo "cpus: herald $SERVER_CPUS, redis $REDIS_CPUS, herald-load $LOAD_CPUS"
} | tee "$OUT/machine.txt"

failures=0
for via in $VIAS; do
    for run in $(seq 1 "$RUNS"); do
        label="$via-$run"
        wait_quiet
        start_redis "$OUT/redis-$label.log" "$REDIS_CPUS"

        herald_port=$(free_port)
        launch_herald "$herald" "$herald_port" "$OUT/herald-$label.log" "$SERVER_CPUS"
        server_pid=$herald_pid

        echo "== $label"
        perf_pid=
        if [[ -n ${PERF:-} ]]; then
            perf record -q -e cpu-clock -F 2000 -p "$server_pid" -o "$OUT/perf-$label.data" \
                -- sleep "$PERF" 2>/dev/null &
            perf_pid=$!
        fi
        status=0
        taskset -c "$LOAD_CPUS" "$load" run \
            --target "127.0.0.1:$herald_port" \
            --via "$via" \
            --redis-url "redis://127.0.0.1:$redis_port" \
            --streams "$STREAMS" --streams-per-user "$STREAMS_PER_USER" \
            --ramp-rate "$RAMP_RATE" \
            --rate "$RATE" --duration "$DURATION" --lanes "$LANES" --grace "$GRACE" \
            --server-pid "$server_pid" --redis-pid "$redis_pid" \
            --label "$label" "${fail_on_loss[@]}" \
            >"$OUT/$label.txt" || status=$?
        cat "$OUT/$label.txt"
        if [[ -n $perf_pid ]]; then
            wait "$perf_pid" || true
            perf report -i "$OUT/perf-$label.data" --no-children --sort symbol --stdio 2>/dev/null \
                | grep -v '^$' | head -120 >"$OUT/perf-$label.txt" || true
        fi
        if [[ $status -ne 0 ]]; then
            echo "== $label: herald-load exited $status" >&2
            failures=$((failures + 1))
        fi
        stop
    done
done

"$load" summarize "$OUT"/*-[0-9]*.txt | tee "$OUT/summary.md"
echo "results in $OUT"
if [[ $failures -gt 0 ]]; then
    echo "$failures run(s) failed" >&2
    exit 1
fi
