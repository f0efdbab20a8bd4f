#!/usr/bin/env bash
# Issue #4's suite: Herald (redis engine) and Nchan (nginx + nchan, Redis
# backend, one worker) side by side, in one run on this machine. Run it as
# `bench/run.sh suite` (or directly). See docs/BENCHMARKS.md, "Reference: bench/run.sh".
#
#   P1 capacity   P1_STREAMS idle streams (19,000): RSS per stream, idle CPU
#                 over P1_IDLE (20s), then a short publish to check they live;
#                 for each of P1_TARGETS ("herald nchan")
#   P3 latency    P3_STREAMS (10,000) streams, P3_RATE (5,000)/s to random
#                 users for P3_DURATION (30s): Herald via HTTP and FCALL, Nchan
#   P2 ceiling    P2_STREAMS (1,000) streams, the rate stepped through P2_RATES
#                 (each step P2_DURATION, 5s, a fresh server); a target stops at
#                 its first step with loss, a shortfall or p99 >= 50 ms
#   raw Redis     redis-benchmark: XADD, PUBLISH, FCALL herald_publish, over
#                 100,000 users (43 % of the calls a user's first publish:
#                 "cold"), then XADD
#                 and FCALL over 1,000 users with inboxes ("warm", as P2)
#   P4 reconnect  each of P4_TARGETS ("herald nchan"): P4_STREAMS (10,000)
#                 streams, publishing at P4_RATE (1,000)/s for P4_DURATION (20s)
#                 (Herald: FCALL herald_publish, straight into Redis; Nchan:
#                 POST /pub/<user>, its only publish path, so publishes fail
#                 while nginx is down and are counted as failed, not expected);
#                 P4_CUT (5s) into it the server is killed (P4_SIGNAL, KILL: for
#                 Nchan nginx's master and then its worker) and started again on
#                 the same port with the same Redis; herald-load reconnects
#                 every stream with the Last-Event-ID it last saw
#   B1 broadcast  B1_STREAMS (19,000) followers of one topic (Nchan: one
#                 channel): Nchan stepped through B1_RATES messages/s until a
#                 step fails (loss, a shortfall, or p99 time-to-last-follower
#                 >= B1_MAX_P99_MS, 1,000: it fell behind); its highest passing
#                 step is the rate Nchan sustains, and each of B1_TARGETS
#                 ("herald-http herald-redis") runs at it, B1_DURATION (10s)
#   B2 broadcast  B2_STREAMS (10,000) followers: each of TARGETS stepped
#                 through B2_RATES (B2_DURATION, 5s, each) until a step loses
#                 anything, falls short or has p99 time-to-last-follower
#                 >= B2_MAX_P99_MS (100)
#
# Placement: every server (herald or nginx) on SERVER_CPUS (0), its
# redis-server on REDIS_CPUS (the same by default), herald-load and
# redis-benchmark on LOAD_CPUS (1); "raw" keeps Redis on SERVER_CPUS, off the
# benchmark's core, whatever REDIS_CPUS says. Each run
# gets a fresh redis-server and a fresh server on free loopback ports; all
# that this script starts is stopped on exit, by pid. SCENARIOS ("p1 p3 p2
# raw p4", and b1 b2) picks scenarios; NO_BUILD=1 skips the build; BIN_DIR=<dir> takes
# herald and herald-load from there; OUT sets the output dir.
set -euo pipefail

: "${SCENARIOS:=p1 p3 p2 raw p4}"
: "${P1_STREAMS:=19000}" "${P1_IDLE:=20s}"
: "${P3_STREAMS:=10000}" "${P3_RATE:=5000}" "${P3_DURATION:=30s}"
: "${P2_STREAMS:=1000}" "${P2_RATES:=5000 7500 10000 12500 15000 20000 25000 30000 35000 40000 50000}" "${P2_DURATION:=5s}"
: "${P4_STREAMS:=10000}" "${P4_RATE:=1000}" "${P4_DURATION:=20s}" "${P4_CUT:=5}" "${P4_SIGNAL:=KILL}"
: "${P4_TARGETS:=herald nchan}" "${P1_TARGETS:=herald nchan}"
: "${P2_LANES:=32}" "${P2_MAX_P99_MS:=50}"
: "${B1_STREAMS:=19000}" "${B1_RATES:=1 2 3 4 5 6 7 8 10 12}" "${B1_DURATION:=10s}" "${B1_MAX_P99_MS:=1000}"
: "${B1_TARGETS:=herald-http herald-redis}"
: "${B2_STREAMS:=10000}" "${B2_RATES:=1 2 3 5 7 10 12 15 20 25 30 40}" "${B2_DURATION:=5s}" "${B2_MAX_P99_MS:=100}"
: "${RAMP_RATE:=2000}" "${LANES:=8}" "${GRACE:=2s}"
: "${SERVER_CPUS:=0}" "${LOAD_CPUS:=1}" "${TARGETS:=herald-http herald-redis nchan}"
: "${REDIS_CPUS:=$SERVER_CPUS}"

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out/suite-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ulimit -n "$(ulimit -Hn)"

profile=${PROFILE:-release}
if [[ -n ${BIN_DIR:-} ]]; then
    bin=$(cd "$BIN_DIR" && pwd) # prebuilt, e.g. from a clean export
elif [[ -z ${NO_BUILD:-} ]]; then
    if [[ $profile == release ]]; then cargo build --release --workspace --bins; else cargo build --workspace --bins; fi
fi
bin=${bin:-$PWD/target/$profile}
herald=$bin/herald
load=$bin/herald-load
nginx_template=$PWD/bench/nchan/nginx.conf
for tool in redis-server redis-cli redis-benchmark nginx curl jq taskset; do
    command -v "$tool" >/dev/null || {
        echo "$tool is missing (nginx: apt-get install nginx libnginx-mod-nchan)" >&2
        exit 1
    }
done

export_secret

server_pid= # herald, or nginx's master
worker_pid= # the process to sample: herald, or nginx's one worker
redis_pid=
stop() {
    stop_pid "$server_pid"
    # nginx's worker outlives a master that had to be SIGKILLed.
    [[ $worker_pid == "$server_pid" ]] || stop_pid "$worker_pid"
    stop_pid "$redis_pid"
    server_pid='' worker_pid='' redis_pid=''
}
trap stop EXIT
trap 'stop; exit 130' INT TERM


# start_herald LABEL: herald on SERVER_CPUS, at $server_port, on $redis_port.
start_herald() {
    launch_herald "$herald" "$server_port" "$OUT/herald-$1.log" "$SERVER_CPUS"
    server_pid=$herald_pid
    worker_pid=$server_pid
}

# start_server KIND LABEL [REDIS_CPUS]: herald or nchan on SERVER_CPUS, on a
# fresh Redis.
start_server() {
    local kind=$1 label=$2
    start_redis "$OUT/redis-$label.log" "${3:-$REDIS_CPUS}"
    server_port=$(free_port)
    case "$kind" in
    herald)
        start_herald "$label"
        ;;
    nchan)
        local dir=$OUT/nginx-$label
        mkdir -p "$dir"
        sed -e "s#@RUN_DIR@#$dir#g" -e "s#@PORT@#$server_port#g" -e "s#@REDIS_PORT@#$redis_port#g" \
            "$nginx_template" >"$dir/nginx.conf"
        start_nginx "$label"
        ;;
    esac
}

# start_nginx LABEL: nginx + Nchan on SERVER_CPUS with the config that
# start_server wrote for LABEL (so at $server_port, on $redis_port).
start_nginx() {
    local dir=$OUT/nginx-$1
    taskset -c "$SERVER_CPUS" nginx -p "$dir" -c "$dir/nginx.conf" >>"$dir/stderr.log" 2>&1 &
    server_pid=$!
    wait_for nginx curl -sf "http://127.0.0.1:$server_port/ready"
    worker_pid=$(pgrep -P "$server_pid" | head -1)
    [[ -n $worker_pid ]] || {
        echo "nginx has no worker; see $dir" >&2
        return 1
    }
}

# gone PID: the process has exited (a zombie counts as gone: its sockets are
# closed). For nginx's worker, which is not this shell's child.
gone() {
    local state
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 0
    [[ -z $state || $state == Z || $state == X ]]
}

# cut_server KIND: kills the server abruptly (P4_SIGNAL) and waits (bounded:
# 5 s) until every process of it is gone; the pids go to $cut_pids. nginx:
# the master first, so that it cannot fork a new worker, then its worker(s).
cut_server() {
    local pids=("$server_pid")
    if [[ $1 == nchan ]]; then
        mapfile -t -O 1 pids < <(pgrep -P "$server_pid")
    fi
    kill "-$P4_SIGNAL" "${pids[@]}" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        local left=0 pid
        for pid in "${pids[@]}"; do gone "$pid" || left=1; done
        ((left)) || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        gone "$pid" || echo "pid $pid still there 5 s after kill -$P4_SIGNAL" >&2
    done
    cut_pids=${pids[*]}
    server_pid='' worker_pid=''
}

# load LABEL KIND VIA ARGS...: one herald-load run; its JSON line goes to
# $OUT/LABEL.json, its report to $OUT/LABEL.txt. Never fails the script.
load() {
    local label=$1 kind=$2 via=$3
    shift 3
    echo "== $label" >&2
    taskset -c "$LOAD_CPUS" "$load" run --server "$kind" --via "$via" \
        --target "127.0.0.1:$server_port" --redis-url "redis://127.0.0.1:$redis_port" \
        --server-pid "$worker_pid" --redis-pid "$redis_pid" --label "$label" "$@" \
        >"$OUT/$label.txt" 2>"$OUT/$label.err" || echo "== $label: herald-load exited $?" >&2
    tail -n 12 "$OUT/$label.txt" | grep -v '^{' >&2 || true
    tail -n 1 "$OUT/$label.txt" | grep '^{' >"$OUT/$label.json" || echo '{}' >"$OUT/$label.json"
}

kind_of() { [[ $1 == nchan ]] && echo nchan || echo herald; }

# broadcast LABEL TARGET STREAMS RATE DURATION MAX_P99_MS: one broadcast run
# on a fresh server, its figures appended to $OUT/broadcast.tsv; sets
# broadcast_verdict to ok when it passed (nothing lost, the rate achieved,
# p99 time-to-last under MAX_P99_MS). Not called in a subshell, so that the
# EXIT trap knows the server's pids.
broadcast() {
    local label=$1 target=$2 streams=$3 rate=$4 duration=$5 max=$6
    start_server "$(kind_of "$target")" "$label"
    load "$label" "$(kind_of "$target")" "$(via_of "$target")" --topic bench-news --streams "$streams" \
        --ramp-rate "$RAMP_RATE" --rate "$rate" --duration "$duration" --lanes 1 --grace 5s
    stop
    local verdict
    verdict=$(jq -r --argjson rate "$rate" --argjson max "$max" '
        if .passed == true and .publish.achieved_rate >= 0.98 * $rate
           and .to_last_stream_ms.p99 < $max then "ok" else "fail" end' "$OUT/$label.json")
    jq -r --arg t "$target" --arg v "$verdict" '[$t, .streams.opened, .publish.rate, .publish.achieved_rate,
        .delivery.lost, .delivery.duplicated, .to_last_stream_ms.p50, .to_last_stream_ms.p99,
        .delivery.per_second, .server.cpu_us_per_delivery, .server.cpu_publish_pct, .load.cpu_us_per_delivery,
        .load.cpu_publish_pct, $v] | @tsv' "$OUT/$label.json" >>"$OUT/broadcast.tsv" ||
        printf '%s\t-\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\tfail\n' "$target" "$rate" >>"$OUT/broadcast.tsv"
    broadcast_verdict=$verdict
}

# broadcast_ceiling SCENARIO TARGET STREAMS DURATION MAX_P99_MS RATES...:
# steps the rate until a step fails; sets ceiling to the highest passing
# rate (0: none).
broadcast_ceiling() {
    local scenario=$1 target=$2 streams=$3 duration=$4 max=$5 rate
    shift 5
    ceiling=0
    for rate in "$@"; do
        broadcast "$scenario-$target-$rate" "$target" "$streams" "$rate" "$duration" "$max"
        [[ $broadcast_verdict == ok ]] || break
        ceiling=$rate
    done
    echo "$scenario $target: $streams followers, highest sustained step $ceiling/s" | tee -a "$OUT/broadcast-ceiling.txt" >&2
}
via_of() { [[ $1 == herald-redis ]] && echo redis || echo http; }

{
    echo "date: $(date -u)"
    echo "binaries: $bin"
    echo "revision: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$([[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]] && echo ' (working tree has uncommitted changes)')"
    echo "nproc: $(nproc); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "kernel: $(uname -r); memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo); open files: $(ulimit -n)"
    echo "redis: $(redis-server --version | cut -d' ' -f3); nginx: $(nginx -v 2>&1 | cut -d/ -f2); nchan: $(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null || echo unknown)"
    echo "cpus: servers $SERVER_CPUS, redis $REDIS_CPUS, herald-load $LOAD_CPUS; scenarios: $SCENARIOS; targets: $TARGETS; p4 targets: $P4_TARGETS"
} | tee "$OUT/machine.txt" >&2

for scenario in $SCENARIOS; do
    case "$scenario" in
    p1)
        # Idle capacity: the publish afterwards (100/s for 2 s) only checks
        # that the streams are live.
        for target in $P1_TARGETS; do
            label=p1-$target
            start_server "$target" "$label"
            load "$label" "$target" http --streams "$P1_STREAMS" --ramp-rate "$RAMP_RATE" --settle 2s \
                --idle "$P1_IDLE" --rate 100 --duration 2s --lanes "$LANES" --grace "$GRACE"
            stop
        done
        ;;
    p3)
        for target in $TARGETS; do
            label=p3-$target
            start_server "$(kind_of "$target")" "$label"
            load "$label" "$(kind_of "$target")" "$(via_of "$target")" --streams "$P3_STREAMS" \
                --ramp-rate "$RAMP_RATE" --rate "$P3_RATE" --duration "$P3_DURATION" --lanes "$LANES" --grace "$GRACE"
            stop
        done
        ;;
    p2)
        : >"$OUT/p2.tsv"
        for target in $TARGETS; do
            best=0
            for rate in $P2_RATES; do
                label=p2-$target-$rate
                start_server "$(kind_of "$target")" "$label"
                load "$label" "$(kind_of "$target")" "$(via_of "$target")" --streams "$P2_STREAMS" \
                    --ramp-rate "$RAMP_RATE" --rate "$rate" --duration "$P2_DURATION" --lanes "$P2_LANES" \
                    --grace "$GRACE"
                stop
                # Sustained: everything delivered once and in order, the
                # whole schedule acknowledged at ≥ 98% of the rate, p99
                # (from the scheduled send, so queueing in the tool counts)
                # under P2_MAX_P99_MS.
                verdict=$(jq -r --argjson rate "$rate" --argjson max "$P2_MAX_P99_MS" '
                    if .passed == true and .publish.achieved_rate >= 0.98 * $rate
                       and .latency_from_schedule_ms.p99 < $max then "ok" else "fail" end' "$OUT/$label.json")
                jq -r --arg t "$target" --arg v "$verdict" '[$t, .publish.rate, .publish.achieved_rate,
                    .delivery.lost, .latency_ms.p99, .latency_from_schedule_ms.p99, .server.cpu_publish_pct,
                    .redis.cpu_publish_pct, .load.cpu_publish_pct, $v] | @tsv' "$OUT/$label.json" >>"$OUT/p2.tsv" ||
                    printf '%s\t%s\t-\t-\t-\t-\t-\t-\t-\tfail\n' "$target" "$rate" >>"$OUT/p2.tsv"
                if [[ $verdict != ok ]]; then
                    break
                fi
                best=$rate
            done
            echo "p2 $target: highest sustained step $best/s" | tee -a "$OUT/p2-ceiling.txt" >&2
        done
        ;;
    raw)
        # Redis's own ceiling on one core, for the FCALL path's reference.
        # herald is started only so that it loads its functions.
        start_server herald raw "$SERVER_CPUS"
        payload=$LOAD_PAYLOAD
        # rb LABEL USERS N COMMAND...: one redis-benchmark line, labelled.
        rb() {
            local label=$1
            shift
            redis_rate "$@" | sed "s/^/$label /"
        }
        {
            rb cold 100000 200000 XADD 'bench:{__rand_int__}' MAXLEN '~' 100 '*' f "$payload"
            rb cold 100000 200000 PUBLISH 'ch:__rand_int__' "$payload"
            rb cold 100000 200000 FCALL herald_publish 1 'herald:{u:load-__rand_int__}' "$payload"
            # Warm: 1,000 users, as many as P2's, whose inboxes exist (the
            # first pass fills them; the second is the one to read).
            redis-cli -p "$redis_port" flushall >/dev/null
            for pass in fill warm; do
                rb "$pass" 1000 100000 XADD 'herald:{u:load-__rand_int__}:inbox' '*' n "$payload"
                rb "$pass" 1000 100000 FCALL herald_publish 1 'herald:{u:load-__rand_int__}' "$payload"
            done
        } | tee "$OUT/raw-redis.txt" >&2
        stop
        ;;
    p4)
        # Cut P4_CUT seconds into publishing: after the ramp and the settle.
        cut_after=$(awk -v n="$P4_STREAMS" -v r="$RAMP_RATE" -v c="$P4_CUT" 'BEGIN { print n / r + 1 + c }')
        for target in $P4_TARGETS; do
            label=p4-$target
            case "$target" in
            herald) via=redis ;; # FCALL: publishing goes on while the node is down
            nchan) via=http ;;   # POST /pub/<user>: fails while nginx is down
            *)
                echo "unknown P4 target $target (herald nchan)" >&2
                exit 64
                ;;
            esac
            start_server "$target" "$label"
            echo "== $label" >&2
            # No --server-pid: the server's pid changes at the cut.
            taskset -c "$LOAD_CPUS" "$load" run --server "$target" --via "$via" \
                --target "127.0.0.1:$server_port" --redis-url "redis://127.0.0.1:$redis_port" \
                --redis-pid "$redis_pid" --label "$label" --streams "$P4_STREAMS" --ramp-rate "$RAMP_RATE" \
                --rate "$P4_RATE" --duration "$P4_DURATION" --lanes "$LANES" --grace 10s --reconnect 250ms \
                >"$OUT/$label.txt" 2>"$OUT/$label.err" &
            load_pid=$!
            sleep "$cut_after"
            cut_at=$(date -u +%T.%N)
            cut_server "$target"
            restart_started=$(date +%s.%N)
            echo "== $label: kill -$P4_SIGNAL $target (pids $cut_pids) at $cut_at, gone by $(date -u +%T.%N); starting it again" >&2
            case "$target" in
            herald) start_herald "$label" ;;
            nchan) start_nginx "$label" ;;
            esac
            echo "== $label: $target ready again after $(awk -v a="$restart_started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }') s" >&2
            wait "$load_pid" || echo "== $label: herald-load exited $?" >&2
            grep -v '^{' "$OUT/$label.txt" >&2 || true
            tail -n 1 "$OUT/$label.txt" | grep '^{' >"$OUT/$label.json" || echo '{}' >"$OUT/$label.json"
            stop
        done
        ;;
    b1)
        # Nchan's sustained rate first; Herald then runs at that rate.
        # shellcheck disable=SC2086 # B1_RATES is a list
        broadcast_ceiling b1 nchan "$B1_STREAMS" "$B1_DURATION" "$B1_MAX_P99_MS" $B1_RATES
        b1_rate=$ceiling
        ((b1_rate > 0)) || b1_rate=${B1_RATES%% *}
        for target in $B1_TARGETS; do
            broadcast "b1-$target-at-$b1_rate" "$target" "$B1_STREAMS" "$b1_rate" "$B1_DURATION" "$B1_MAX_P99_MS"
        done
        ;;
    b2)
        for target in $TARGETS; do
            # shellcheck disable=SC2086 # B2_RATES is a list
            broadcast_ceiling b2 "$target" "$B2_STREAMS" "$B2_DURATION" "$B2_MAX_P99_MS" $B2_RATES
        done
        ;;
    *)
        echo "unknown scenario $scenario (p1 p2 p3 raw p4 b1 b2)" >&2
        exit 64
        ;;
    esac
done

# One table per scenario, from the JSON lines.
{
    echo "## $(head -1 "$OUT/machine.txt")"
    for f in "$OUT"/p1-*.json "$OUT"/p3-*.json "$OUT"/p4-*.json; do
        [[ -s $f ]] || continue
        jq -r '"\(.label)\tstreams \(.streams.opened)/\(.streams.requested) failed \(.streams.failed)\trss/stream \(.server.rss_per_stream_bytes) B (at the end \(.server.rss_per_stream_end_bytes) B)\tidle cpu \(.server.cpu_idle_pct)%\tacked \(.publish.acked) lost \(.delivery.lost) dup \(.delivery.duplicated) ooo \(.delivery.out_of_order)\tp50 \(.latency_ms.p50) p99 \(.latency_ms.p99) p999 \(.latency_ms.p999) max \(.latency_ms.max) ms\tsched p99 \(.latency_from_schedule_ms.p99)\tcpu server \(.server.cpu_publish_pct)% redis \(.redis.cpu_publish_pct)% load \(.load.cpu_publish_pct)% other \(.machine.other_cpu_publish_pct)%"' "$f" 2>/dev/null || true
    done
    # `if`, not `&&`: a scenario left out of SCENARIOS must not fail the run.
    if [[ -s $OUT/p2.tsv ]]; then
        echo "p2: target rate achieved lost p99 sched_p99 server% redis% load% verdict"
        cat "$OUT/p2.tsv"
        cat "$OUT/p2-ceiling.txt"
    fi
    if [[ -s $OUT/raw-redis.txt ]]; then cat "$OUT/raw-redis.txt"; fi
    if [[ -s $OUT/broadcast.tsv ]]; then
        echo "broadcast: target followers rate achieved lost dup to_last_p50 to_last_p99 deliveries/s server_us/delivery server% load_us/delivery load% verdict"
        cat "$OUT/broadcast.tsv"
        cat "$OUT/broadcast-ceiling.txt"
    fi
    for f in "$OUT"/p4-herald.json "$OUT"/p4-nchan.json; do
        [[ -s $f ]] || continue
        # Publishes that failed (Nchan while nginx is down) are not expected
        # anywhere; one that failed yet was delivered counts as unexpected.
        jq -r '.reconnect as $r | "\(.label): resumed \($r.resumes) of \($r.disconnects) disconnects, still down \($r.still_down); down p50 \($r.down_ms.p50) p99 \($r.down_ms.p99) max \($r.down_ms.max) ms; first down -> last resume \($r.span_ms) ms; without a cursor \($r.without_cursor) (lost on those \($r.lost_without_cursor)); publishes acked \(.publish.acked) failed \(.publish.failed); lost \(.delivery.lost) dup \(.delivery.duplicated) ooo \(.delivery.out_of_order) unexpected \(.delivery.unexpected); streams failed \(.streams.failed)"' "$f" 2>/dev/null ||
            echo "$(basename "$f" .json): no result"
    done
} | tee "$OUT/summary.txt"
echo "results in $OUT"
