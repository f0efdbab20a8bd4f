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
