#!/usr/bin/env bash
# Fuzzes Herald's outside-input entry points with AFL++ (cargo-afl, stable
# Rust), each target for a bounded time, and fails if any found a crash.
# Targets (fuzz/src/checks.rs says what each asserts): cursor, publish, sse.
#
# Usage: bash scripts/fuzz.sh                   (60 s per target)
#        FUZZ_SECONDS=600 bash scripts/fuzz.sh  (longer)
#        FUZZ_TARGETS="sse cursor" bash scripts/fuzz.sh
#
# A crash is printed with the command that copies it to
# fuzz/regressions/<target>/, where tests/it/fuzz_regressions.rs replays it
# through the same check on every test run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=${FUZZ_SECONDS:-60}
targets=(${FUZZ_TARGETS:-cursor publish sse})
# The instrumented build has its own flags: kept apart from the server's
# build, so neither invalidates the other.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}/fuzz"
runs="$CARGO_TARGET_DIR/runs"

log() { printf '\n==> %s\n' "$*"; }

command -v cargo-afl >/dev/null || cargo install --locked cargo-afl
# Builds AFL++ from the source cargo-afl bundles, once per toolchain (the
# install usually does it already; then this says so and fails harmlessly).
if ! out=$(cargo afl config --build 2>&1); then
  grep -q "already built" <<<"$out" || { echo "$out" >&2; exit 1; }
fi

log "building targets (${targets[*]})"
cargo afl build --release --locked --manifest-path fuzz/Cargo.toml

# Non-interactive, as root, in a container: no UI; no CPU frequency or
# core_pattern set-up (read-only here); no pinning to a core (the machine
# is shared); stop at the time limit even if the queue is still new.
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
export AFL_FAST_CAL=1

failed=0
for target in "${targets[@]}"; do
  log "fuzzing $target for ${seconds}s"
  rm -rf "${runs:?}/$target"
  mkdir -p "$runs"
  cargo afl fuzz -V "$seconds" -i "fuzz/corpus/$target" -o "$runs/$target" \
    -- "$CARGO_TARGET_DIR/release/$target" >"$runs/$target.log" 2>&1 || {
    tail -n 40 "$runs/$target.log" >&2
    echo "afl-fuzz failed for $target (log: $runs/$target.log)" >&2
    exit 1
  }
  stats="$runs/$target/default/fuzzer_stats"
  stat() { sed -n "s/^$1 *: //p" "$stats"; }
  echo "$target: $(stat execs_done) execs in $(stat run_time)s, $(stat execs_per_sec) execs/s," \
    "corpus $(stat corpus_count), edges $(stat edges_found)/$(stat total_edges), crashes $(stat saved_crashes)"
  crashes=("$runs/$target"/default/crashes/id:*)
  [ -e "${crashes[0]}" ] || continue
  failed=1
  # Often one bug, many inputs: the first few are enough to start from.
  for crash in "${crashes[@]:0:3}"; do
    echo "CRASH in $target: $crash" >&2
    od -A d -c "$crash" | head -n 20 >&2
  done
  echo "$target: ${#crashes[@]} crashing inputs in $runs/$target/default/crashes/; keep one per bug as a" \
    "regression test: cp <file> fuzz/regressions/$target/<what-it-found> && cargo nextest run --test it fuzz_regressions" >&2
done

if [ "$failed" -ne 0 ]; then
  echo "fuzzing found crashes (above)" >&2
  exit 1
fi
echo "fuzzing found no crash"
