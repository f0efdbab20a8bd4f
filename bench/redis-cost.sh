#!/usr/bin/env bash
# What one publish costs Redis: redis-server's CPU time per call (user +
# system from /proc, so its networking counts too) and the rate
# redis-benchmark reaches, for a bare XADD and for FCALL herald_publish,
# medians over ROUNDS rounds. Run it as `bench/run.sh redis-cost`. See
# docs/BENCHMARKS.md, "Reference: bench/run.sh", and the history's
# "What a publish costs Redis" (docs/benchmarks/history.md).
#
#   USERS (1000)   users (keys) the calls spread over, at random
#   FILL (100000)  calls per target before measuring, so that inboxes exist
#                  (0, with USERS=100000: 43 % of 200,000 calls are a
#                  user's first publish, "cold")
#   CALLS (200000) calls measured per target and round
#   ROUNDS (5)     rounds; each target starts from an empty Redis each round
#   HERALDS ("now=target/release/herald")  name=binary pairs: the function
#                  library each of those builds loads is measured side by
#                  side (renamed <name>_publish)
#   REVS ("")      name=commit pairs: that commit's functions.lua, with the
#                  settings the first of HERALDS filled in (no build needed),
#                  e.g. REVS="before=a5192fc" to compare with an older library
#   FLOOR (0)      1: also the parts of a publish (bench/floor.lua): an FCALL
#                  that does nothing, one that only appends, one that appends
#                  and publishes, and one that makes every call a publish
#                  makes without the field checks, read set or trimming
#   REDIS_CPUS (0) redis-server; LOAD_CPUS (1) redis-benchmark
# Needs a release build (cargo build --release --workspace --bins): it builds nothing.
set -euo pipefail

: "${USERS:=1000}" "${FILL:=100000}" "${CALLS:=200000}" "${ROUNDS:=5}"
: "${HERALDS:=now=target/release/herald}" "${REVS:=}" "${FLOOR:=0}" "${REDIS_CPUS:=0}" "${LOAD_CPUS:=1}"

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out/redis-cost-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export_secret

redis_pid='' herald_pid=''
trap 'stop_pid "$herald_pid"; stop_pid "$redis_pid"' EXIT

# renamed NAME: herald's library on stdin, renamed lib_NAME with functions
# NAME_*, so that several can be loaded at once.
renamed() {
    sed -e "s/^#!lua name=herald\$/#!lua name=lib_$1/" -e "s/'herald_\([a-z_]*\)'/'${1}_\1'/g"
}

# library NAME BINARY: the library BINARY loads into Redis (its config
# filled in), renamed.
library() {
    local name=$1 binary=$2
    launch_herald "$binary" "$(free_port)" "$OUT/herald.log"
    stop_pid "$herald_pid"
    herald_pid=
    # The code is the last field of the reply.
    redis-cli -p "$redis_port" --raw FUNCTION LIST LIBRARYNAME herald WITHCODE |
        awk '/^#!lua/ { code = 1 } code' | renamed "$name" >"$OUT/lib-$name.lua"
    redis-cli -p "$redis_port" FUNCTION DELETE herald >/dev/null
}

# library_at NAME COMMIT FILLED: COMMIT's library template with each
# `local NAME = {{...}}` line taken from the filled library FILLED.
library_at() {
    local name=$1 commit=$2 filled=$3
    git show "$commit:src/engine/redis/functions.lua" |
        awk 'NR == FNR { if ($0 ~ /^local [A-Z_]+ = /) line[$2] = $0; next }
             /^local [A-Z_]+ = .*\{\{/ && ($2 in line) { print line[$2]; next } { print }' "$filled" - |
        renamed "$name" >"$OUT/lib-$name.lua"
    if grep -q '^local .*{{' "$OUT/lib-$name.lua"; then
        echo "$commit's library has settings $filled does not fill" >&2
        exit 1
    fi
}

start_redis "$OUT/redis.log" "$REDIS_CPUS"
targets=(XADD)
for pair in $HERALDS; do
    library "${pair%%=*}" "${pair#*=}"
    targets+=("${pair%%=*}")
done
if [[ -n $REVS && -z $HERALDS ]]; then
    echo "REVS takes its settings from the first of HERALDS: set HERALDS too" >&2
    exit 1
fi
for pair in $REVS; do
    library_at "${pair%%=*}" "${pair#*=}" "$OUT/lib-${targets[1]}.lua"
    targets+=("${pair%%=*}")
done
for target in "${targets[@]:1}"; do
    redis-cli -p "$redis_port" -x FUNCTION LOAD REPLACE <"$OUT/lib-$target.lua" >/dev/null
done
if ((FLOOR)); then
    redis-cli -p "$redis_port" -x FUNCTION LOAD REPLACE <bench/floor.lua >/dev/null
    targets+=(bare append fanout core)
fi

payload=$LOAD_PAYLOAD
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$redis_pid/stat"; }
# bench N TARGET: N calls of TARGET; prints the rate.
bench() {
    local cmd
    if [[ $2 == XADD ]]; then
        cmd=(XADD 'herald:{u:load-__rand_int__}:inbox' '*' n "$payload")
    else
        cmd=(FCALL "$2_publish" 1 'herald:{u:load-__rand_int__}' "$payload")
    fi
    redis_rate "$USERS" "$1" "${cmd[@]}" | grep -o '[0-9.]* requests per second' | cut -d' ' -f1
}

{
    echo "date: $(date -u); revision: $(git describe --always --dirty 2>/dev/null || echo unknown)"
    echo "users $USERS, fill $FILL, calls $CALLS, rounds $ROUNDS; redis $(redis-server --version | cut -d' ' -f3) on cpu $REDIS_CPUS, redis-benchmark (50 clients) on cpu $LOAD_CPUS"
} | tee "$OUT/summary.txt"
: >"$OUT/rounds.txt"
for round in $(seq 1 "$ROUNDS"); do
    for target in "${targets[@]}"; do
        redis-cli -p "$redis_port" FLUSHALL >/dev/null
        if ((FILL > 0)); then bench "$FILL" "$target" >/dev/null; fi
        before=$(cpu_ticks)
        rate=$(bench "$CALLS" "$target")
        after=$(cpu_ticks)
        us=$(awk -v a="$before" -v b="$after" -v t="$ticks" -v n="$CALLS" 'BEGIN { printf "%.2f", (b - a) / t * 1e6 / n }')
        echo "$round $target $us $rate" | tee -a "$OUT/rounds.txt"
    done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
{
    printf '%-8s %14s %14s %12s\n' target 'cpu us/call' 'calls/s' 'vs XADD'
    xadd_rate=$(awk '$2 == "XADD" { print $4 }' "$OUT/rounds.txt" | median)
    for target in "${targets[@]}"; do
        us=$(awk -v t="$target" '$2 == t { print $3 }' "$OUT/rounds.txt" | median)
        rate=$(awk -v t="$target" '$2 == t { print $4 }' "$OUT/rounds.txt" | median)
        printf '%-8s %14s %14s %11.2fx\n' "$target" "$us" "$rate" "$(awk -v x="$xadd_rate" -v r="$rate" 'BEGIN { print x / r }')"
    done
} | tee -a "$OUT/summary.txt"
echo "results in $OUT"
