#!/usr/bin/env bash
# Web Push throughput: pushes per second one Herald node sends to a fake push
# service on loopback (encrypt, sign, HTTP), beside the Node.js `web-push`
# library sending the same pushes to the same service from the same core, in
# the same run; then a worker kill (two nodes, one SIGKILLed mid-way: nothing
# may be lost). See docs/BENCHMARKS.md, "Web Push".
#
#   bench/push/run.sh [all|throughput|kill]
#
# throughput: RUNS rounds, each a fresh `herald serve` (SERVER_CPUS) publishing
#   N notifications to USERS users without a stream (N/USERS requests of
#   USERS users), timed from the first publish to the sink's N-th distinct
#   push; then web-push (SERVER_CPUS) sending the same N pushes, for each
#   VAPID mode in WEBPUSH_VAPID and each concurrency in WEBPUSH_CONCURRENCY,
#   timed from its first send to the sink's last push.
# kill: KILL_RUNS rounds, each two nodes (both on SERVER_CPUS) on one fresh
#   Redis, N notifications published through the first, the second SIGKILLed
#   once the sink has KILL_AFTER pushes; every notification must reach its
#   device (push.visibility_timeout 3 s, push.send_timeout 2 s).
#
# The sink (bench/push/sink.mjs), redis-server and the drivers run on
# OTHER_CPUS. Knobs (environment): RUNS (5) N (20000) USERS (1000)
#   WEBPUSH_CONCURRENCY ("16 64 256") WEBPUSH_VAPID ("per-request reused"; empty: Herald only)
#   HERALD_CONCURRENCY (256: push.concurrency, its default) KILL_RUNS (3) KILL_AFTER (N/4)
#   SERVER_CPUS (1) OTHER_CPUS (0) OUT (bench/out/push-<timestamp>)
#   QUIET_TIMEOUT (120: seconds to wait for an idle machine before each run)
#   MAX_OTHER (10: % of a core other processes may take during a run before it
#   is run again, at most ATTEMPTS (4) times)
#   PERF=<seconds>: also `perf record -g` each Herald run for that long
#   NO_BUILD=1  BIN_DIR=<dir with herald>  REV=<commit> (a clean `git archive`
#   export, built in target/bench-src: the working tree may hold unfinished work)
# Everything started here is stopped on exit, by pid. Exits non-zero if any
# push was lost or failed the sink's checks. Needs redis-server, redis-cli,
# node (>= 20), npm, curl, taskset.
set -euo pipefail

mode=${1:-all}
case "$mode" in all | throughput | kill) ;; *)
    echo "usage: $0 [all|throughput|kill]" >&2
    exit 64
    ;;
esac
: "${RUNS:=5}" "${N:=20000}" "${USERS:=1000}" "${HERALD_CONCURRENCY:=256}"
: "${WEBPUSH_CONCURRENCY=16 64 256}" "${WEBPUSH_VAPID=per-request reused}"
: "${KILL_RUNS:=3}" "${KILL_AFTER:=$((N / 4))}"
: "${SERVER_CPUS:=1}" "${OTHER_CPUS:=0}" "${QUIET_TIMEOUT:=120}" "${MAX_OTHER:=10}" "${ATTEMPTS:=4}"

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
source "$here/../lib.sh"
cd "$here/../.."
root=$PWD
OUT=${OUT:-bench/out/push-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

if [[ -n ${BIN_DIR:-} ]]; then
    bin=$BIN_DIR
    revision="prebuilt ($BIN_DIR)"
elif [[ -n ${REV:-} ]]; then
    rev=$(git rev-parse --short "$REV")
    src=target/bench-src/$rev
    if [[ -z ${NO_BUILD:-} ]]; then
        rm -rf "$src" && mkdir -p "$src"
        git archive "$rev" | tar -x -C "$src"
        (cd "$src" && CARGO_TARGET_DIR="$root/target/bench-src/target" cargo build --release --bin herald)
        mkdir -p "target/bench-src/bin-$rev"
        cp target/bench-src/target/release/herald "target/bench-src/bin-$rev/"
    fi
    # Per commit, so NO_BUILD=1 can never run another commit's binary.
    bin=target/bench-src/bin-$rev
    [[ -x $bin/herald ]] || { echo "no build of $rev in $bin: run without NO_BUILD" >&2; exit 1; }
    revision="$rev (clean export)"
else
    [[ -n ${NO_BUILD:-} ]] || cargo build --release --bin herald
    bin=target/release
    revision="working tree at $(git rev-parse --short HEAD)"
    [[ -z $(git status --porcelain --untracked-files=no) ]] || revision="$revision, with uncommitted changes"
fi
herald=$root/$bin/herald
[[ $bin == /* ]] && herald=$bin/herald
[[ -d $here/node_modules/web-push ]] || (cd "$here" && npm ci --no-audit --no-fund)

export_secret
"$herald" vapid --json >"$OUT/vapid.json"
HERALD__PUSH__VAPID_PRIVATE_KEY=$(node -p "JSON.parse(require('fs').readFileSync('$OUT/vapid.json')).private_key")
export HERALD__PUSH__VAPID_PRIVATE_KEY
export HERALD__PUSH__SUBJECT=mailto:bench@example.com
export HERALD__PUSH__ALLOWED_INSECURE_HOSTS=127.0.0.1
export HERALD__PUSH__CONCURRENCY=$HERALD_CONCURRENCY
export HERALD__SERVER__WORKERS=1
export HERALD__LIMITS__PUBLISH_PER_SECOND=0
HERALD_PUBLISHER_TOKEN=$("$herald" token --publisher --sub bench-publisher)
export HERALD_PUBLISHER_TOKEN

redis_pid= sink_pid= herald_pid= other_pid= perf_pid=
stop_all() {
    stop_pid "$perf_pid"
    stop_pid "$herald_pid"
    stop_pid "$other_pid"
    stop_pid "$sink_pid"
    stop_pid "$redis_pid"
}
trap stop_all EXIT
trap 'stop_all; exit 130' INT TERM

# measured LABEL KIND ARGS...: runs `KIND_run LABEL ARGS...` until it was not
# disturbed (at most ATTEMPTS times): other processes (a build, a test suite
# on this machine) took at most MAX_OTHER % of the sender's core, or of the
# other core beyond the sink, redis and the driver. A disturbed run is kept
# as LABEL.disturbed-<n>.json and left out of the medians.
measured() {
    local label=$1 kind=$2 attempt other
    shift 2
    for attempt in $(seq 1 "$ATTEMPTS"); do
        wait_quiet 50  # 25 % of one core: the sink and driver idle there
        "${kind}_run" "$label" "$@"
        other=$(node "$here/summarize.mjs" --other "$OUT/$label.json" "$SERVER_CPUS" "$OTHER_CPUS")
        node "$here/summarize.mjs" --line "$OUT/$label.json"
        if awk -v o="$other" -v m="$MAX_OTHER" 'BEGIN { exit !(o <= m) }'; then
            return 0
        fi
        echo "   disturbed: other processes took $other % of a core; running it again" >&2
        mv "$OUT/$label.json" "$OUT/$label.disturbed-$attempt.json"
    done
    echo "   $label disturbed $ATTEMPTS times; keeping the last" >&2
    mv "$OUT/$label.disturbed-$ATTEMPTS.json" "$OUT/$label.json"
}

sink_port=$(free_port)
sink_url=http://127.0.0.1:$sink_port
node "$here/devices.mjs" --users "$USERS" --sink-port "$sink_port" >"$OUT/devices.json"
taskset -c "$OTHER_CPUS" node "$here/sink.mjs" --port "$sink_port" --devices "$OUT/devices.json" \
    >"$OUT/sink.log" 2>&1 &
sink_pid=$!
wait_for sink curl -sf "$sink_url/count"

drive() { taskset -c "$OTHER_CPUS" node "$here/drive.mjs" "$@"; }

{
    echo "date: $(date -u)"
    echo "revision: $revision"
    echo "nproc: $(nproc)"
    lscpu | head -n 20 | grep -E 'Model name|^CPU\(s\)|Thread|Core|Socket|MHz|L2|L3' || true
    echo "kernel: $(uname -r)"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "node: $(node --version); web-push $(node -p "require('$here/node_modules/web-push/package.json').version")"
    echo "redis: $(redis-server --version)"
    echo "n $N pushes to $USERS users (1 device each); runs $RUNS; herald push.concurrency $HERALD_CONCURRENCY;" \
        "web-push concurrency $WEBPUSH_CONCURRENCY, vapid $WEBPUSH_VAPID"
    echo "cpus: herald and web-push $SERVER_CPUS; sink, redis and drivers $OTHER_CPUS"
} | tee "$OUT/machine.txt"

# herald_run LABEL: one Herald throughput run on the current Redis.
herald_run() {
    local label=$1 port
    port=$(free_port)
    launch_herald "$herald" "$port" "$OUT/$label.log" "$SERVER_CPUS"
    [[ -n ${subscribed:-} ]] || {
        drive subscribe --herald "http://127.0.0.1:$port" --devices "$OUT/devices.json"
        subscribed=1
    }
    if [[ -n ${PERF:-} ]]; then
        perf record -q -g -F 1999 -p "$herald_pid" -o "$OUT/perf-$label.data" -- sleep "$PERF" 2>/dev/null &
        perf_pid=$!
    fi
    redis-cli -p "$redis_port" config resetstat >/dev/null
    drive herald --herald "http://127.0.0.1:$port" --sink "$sink_url" --users "$USERS" --n "$N" \
        --pids "herald=$herald_pid,redis=$redis_pid,sink=$sink_pid" >"$OUT/$label.json"
    curl -s "http://127.0.0.1:$port/metrics" | grep '^herald_push_total' >"$OUT/$label.metrics" || true
    # Redis calls per push: how many claims (XREADGROUP) the worker made.
    redis-cli -p "$redis_port" info commandstats | grep -E 'cmdstat_(xreadgroup|xautoclaim|fcall|fcall_ro|xadd)' \
        >"$OUT/$label.redis" || true
    if [[ -n $perf_pid ]]; then
        wait "$perf_pid" || true
        perf_pid=
    fi
    stop_pid "$herald_pid"
    herald_pid=
}

# webpush_run LABEL VAPID CONCURRENCY: web-push sends the same N pushes.
webpush_run() {
    drive webpush --sink "$sink_url" --n "$N" --cpus "$SERVER_CPUS" --pids "redis=$redis_pid,sink=$sink_pid" \
        --sender="--devices $OUT/devices.json --vapid $OUT/vapid.json --n $N --concurrency $3 --vapid-mode $2" \
        >"$OUT/$1.json"
}

if [[ $mode == all || $mode == throughput ]]; then
    start_redis "$OUT/redis.log" "$OTHER_CPUS"
    subscribed=
    for run in $(seq 1 "$RUNS"); do
        echo "== run $run: herald"
        measured "herald-$run" herald
        for vapid in $WEBPUSH_VAPID; do
            for c in $WEBPUSH_CONCURRENCY; do
                echo "== run $run: web-push, vapid $vapid, concurrency $c"
                measured "webpush-$vapid-c$c-$run" webpush "$vapid" "$c"
            done
        done
    done
    stop_pid "$redis_pid"
    redis_pid=
fi

if [[ $mode == all || $mode == kill ]]; then
    for run in $(seq 1 "$KILL_RUNS"); do
        wait_quiet 50  # 25 % of one core: the sink and driver idle there
        echo "== kill run $run: two nodes, one SIGKILLed after $KILL_AFTER pushes"
        start_redis "$OUT/redis-kill-$run.log" "$OTHER_CPUS"
        port_a=$(free_port)
        HERALD__PUSH__VISIBILITY_TIMEOUT=3s HERALD__PUSH__SEND_TIMEOUT=2s \
            launch_herald "$herald" "$port_a" "$OUT/herald-kill-$run-a.log" "$SERVER_CPUS"
        survivor=$herald_pid
        port_b=$(free_port)
        HERALD__PUSH__VISIBILITY_TIMEOUT=3s HERALD__PUSH__SEND_TIMEOUT=2s \
            launch_herald "$herald" "$port_b" "$OUT/herald-kill-$run-b.log" "$SERVER_CPUS"
        other_pid=$herald_pid
        # It is SIGKILLed on purpose: no "Killed" job notice from bash.
        disown "$other_pid"
        herald_pid=$survivor
        drive subscribe --herald "http://127.0.0.1:$port_a" --devices "$OUT/devices.json"
        drive herald --herald "http://127.0.0.1:$port_a" --sink "$sink_url" --users "$USERS" --n "$N" \
            --kill "$other_pid" --kill-after "$KILL_AFTER" --timeout 120 \
            --pids "herald=$survivor,killed=$other_pid,redis=$redis_pid,sink=$sink_pid" >"$OUT/kill-$run.json"
        other_pid=
        curl -s "http://127.0.0.1:$port_a/metrics" | grep '^herald_push_total' >"$OUT/kill-$run.metrics" || true
        node "$here/summarize.mjs" --line "$OUT/kill-$run.json"
        stop_pid "$herald_pid"
        herald_pid=
        stop_pid "$redis_pid"
        redis_pid=
    done
fi

echo "results in $OUT"
# Exits non-zero if any push was lost, refused by the sink or failed its check.
node "$here/summarize.mjs" "$OUT" | tee "$OUT/summary.md"
