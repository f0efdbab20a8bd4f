# shellcheck shell=bash
# Shell helpers shared by bench/run.sh, bench/suite.sh and bench/redis-cost.sh
# (sourced).

# A free port below the ephemeral range (32768+), which herald-load's
# thousands of client sockets use.
free_port() {
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    echo "no free port found" >&2
    return 1
}

# Waits (bounded: 10 s) until `$@` succeeds. Needs OUT for the message.
wait_for() {
    local what=$1
    shift
    for _ in $(seq 1 100); do
        if "$@" >/dev/null 2>&1; then
            return
        fi
        sleep 0.1
    done
    echo "$what did not come up; see $OUT" >&2
    return 1
}

# Stops one process this script started: SIGTERM, up to 5 s, then SIGKILL.
stop_pid() {
    local pid=$1
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "pid $pid did not exit within 5 s of SIGTERM; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# start_redis LOG CPUS: a fresh redis-server (no persistence) on a free port,
# pinned to CPUS, logging to LOG; sets redis_port and redis_pid.
# shellcheck disable=SC2034 # redis_pid is for the caller
start_redis() {
    redis_port=$(free_port)
    taskset -c "$2" redis-server --port "$redis_port" --bind 127.0.0.1 \
        --save '' --appendonly no --logfile "$1" &
    redis_pid=$!
    wait_for redis redis-cli -p "$redis_port" ping
}

# Exports a random HERALD__AUTH__SECRET for the gateways this run starts.
export_secret() {
    HERALD__AUTH__SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    export HERALD__AUTH__SECRET
}

# launch_herald BINARY PORT LOG [CPUS]: `BINARY serve` on the redis engine
# at $redis_port, listening on 127.0.0.1:PORT, appending to LOG, pinned to
# CPUS if given; waits until /readyz answers and sets herald_pid.
# shellcheck disable=SC2034 # herald_pid is for the caller
launch_herald() {
    local pin=()
    [[ -n ${4:-} ]] && pin=(taskset -c "$4")
    HERALD__ENGINE__KIND=redis \
        HERALD__ENGINE__REDIS_URL="redis://127.0.0.1:$redis_port" \
        HERALD__SERVER__LISTEN="127.0.0.1:$2" \
        HERALD__LOG__LEVEL=warn \
        "${pin[@]}" "$1" serve >>"$3" 2>&1 &
    herald_pid=$!
    wait_for herald curl -sf "http://127.0.0.1:$2/readyz"
}

# The notification the Redis-side benchmarks publish.
# shellcheck disable=SC2034 # for the scripts that source this
LOAD_PAYLOAD='{"type":"load.test","title":"t","data":{"run":1,"u":1,"seq":1,"due_us":1,"sent_us":1}}'

# redis_rate USERS N COMMAND...: N calls of COMMAND by redis-benchmark (50
# clients, keys over USERS random values, on LOAD_CPUS, at most 300 s)
# against $redis_port; prints its final "… requests per second" line.
redis_rate() {
    local users=$1 n=$2
    shift 2
    timeout 300 taskset -c "$LOAD_CPUS" redis-benchmark -p "$redis_port" -q -n "$n" -c 50 -r "$users" "$@" 2>&1 |
        tr '\r' '\n' | grep 'requests per second' | tail -n 1
}

# Busy CPU ticks (1/100 s) of the whole machine: all but idle and iowait.
busy_ticks() {
    awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# wait_quiet [MAX_TICKS]: waits, at most QUIET_TIMEOUT seconds, until the
# machine was busy for at most MAX_TICKS ticks over 2 s (20, the default:
# 10 % of one core): a build on these cores skews every figure.
wait_quiet() {
    local max=${1:-20} start=$SECONDS before after
    while ((SECONDS - start < QUIET_TIMEOUT)); do
        before=$(busy_ticks)
        sleep 2
        after=$(busy_ticks)
        if ((after - before <= max)); then
            return
        fi
    done
    if ((QUIET_TIMEOUT > 0)); then
        echo "the machine is still busy after ${QUIET_TIMEOUT} s; running anyway" \
            "(see the other processes' CPU in the results)" >&2
    fi
}
